package ops

import "gorgonia.org/tensor"

// RoutingBackend is the part of Backend behind the routing policies beyond dropless softmax routing:
// the selection bias and group-limited selection of Sigmoid scoring, capacity plans, aux-loss-free
// bias balancing and routing diagnostics.
//
// Conventions are Backend's (validated inputs, preallocated and fully overwritten outputs, float32 or
// float64 with one dtype per call, int32 indices and plans, deterministic integer or fixed-order
// arithmetic, data faults reported with the same sentinel on every backend).
//
// Capacity plans (CapacityPlan) have the layout of plan_layout.go with rows of dropped slots after
// every kept row: a slot s is dropped when rowOf[s] >= offsets[E]. Every Backend kernel that takes a
// plan honours this (a dropless plan has offsets[E] = T*K, so nothing changes for it): Dispatch writes
// zero rows for dropped slots; Combine leaves them out of the sum; CombineGradWeights and the fused
// combine backward give them a zero weight gradient and a zero row gradient; GroupedMatMul multiplies
// the kept segments and writes zeros into rows from offsets[E] on; GroupedMatMulGradW reads the kept
// segments only; the load-balancing loss counts every routed slot (the router's choice, dropped or
// not), as the Switch Transformer does.
type RoutingBackend interface {
	// RouteIndicesBias is RouteIndices with a selection bias [E] (logits' dtype; nil for none) added to
	// the sigmoid scores (Sigmoid scoring only: the op refuses a bias for the softmax scorings). A NaN
	// logit, or a NaN or infinite bias, is an error (ErrNaN).
	RouteIndicesBias(logits, bias *tensor.Dense, cfg RouteConfig, idx *tensor.Dense) error

	// CapacityPlan builds the plan of idx [T,K] over numExperts experts keeping at most capacity >= 1
	// slots per expert, chosen by policy (DropPosition: the first in slot order; DropProbs: the largest
	// w [T,K], ties to the lower slot; w is nil for DropPosition). Layout (plan_layout.go): counts[e] =
	// slots routed to e (kept or not); offsets = exclusive scan of the kept counts min(counts[e],
	// capacity), so offsets[E] = kept slots; rows of one expert's kept segment in increasing slot order;
	// rows [offsets[E], T*K) hold the dropped slots, expert by expert, in increasing slot order. A NaN
	// weight under DropProbs is an error (ErrNaN); indices outside [0,E) are ErrExpertIndex.
	CapacityPlan(idx, w *tensor.Dense, numExperts, capacity int, policy DropPolicy, plan *tensor.Dense) error

	// ClearDroppedRows writes zeros into the rows [offsets[E], N) of rows [N,W] (N = T*K rows of a
	// plan's expert-major buffer): the rows of dropped slots. It follows a GroupedMatMul over a capacity
	// plan on backends whose GroupedMatMul leaves those rows unwritten.
	ClearDroppedRows(rows, plan *tensor.Dense) error

	// UpdateBalanceBias applies one step of aux-loss-free balancing (DeepSeek-V3) in place:
	// bias[e] += rate * sign(T*K/E - counts[e]) with counts the plan's routed slots per expert (an
	// overloaded expert's bias goes down, an underloaded one's up; sign(0) = 0). bias [E] float, plan of
	// T tokens and K experts per token (T*K is read from the plan's length). rate is finite.
	UpdateBalanceBias(bias, plan *tensor.Dense, rate float64) error

	// RouteStats writes the routing diagnostics of logits [T,E] and their plan into stats, a float64
	// vector of RouteStatsLen(E) elements (layout: RouteStats): routed slots per expert, kept slots per
	// expert, dropped slots, and the mean over tokens of the entropy (nats) of the router's distribution
	// over the E experts: softmax(logits) for the softmax scorings, the sigmoid scores divided by their
	// sum for Sigmoid (a row of zero scores has entropy 0). Entropies are summed in float64 in token
	// order. A logits row whose distribution is undefined (softmax: NaN, +Inf or all -Inf; sigmoid:
	// NaN) is an error (ErrNaN).
	RouteStats(logits, plan *tensor.Dense, cfg RouteConfig, stats *tensor.Dense) error
}
