package ops

import (
	"fmt"
	"hash"
	"math"
	"sort"
	"strings"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// CapacityPlanOf builds the plan node of expert indices [T,K] int32 over numExperts experts that keeps
// at most capacity >= 1 slots per expert: DropPosition keeps each expert's first slots in slot order
// t*K + j (token order: the Switch Transformer rule for K = 1); DropProbs keeps the slots with the
// largest weights [T,K] (ties to the lower slot; weights is nil for DropPosition). The plan has the
// dropless layout (plan_layout.go) with the dropped slots' rows after every kept row, so Dispatch,
// GroupedMatMul and Combine keep their shapes ([T*K,H] expert-major buffers, whatever the capacity):
// dropped rows are zero, take no part in Combine and get zero gradients. The capacity is a graph-build
// constant; capacity >= T*K drops nothing. Errors: ErrShape, ErrConfig (capacity, policy); at run time
// ErrExpertIndex and (DropProbs) ErrNaN for a NaN weight.
func CapacityPlanOf(indices, weights *G.Node, numExperts, capacity int, policy DropPolicy) (*G.Node, error) {
	if err := nodeCheck("capacity plan", "indices", indices, 2, tensor.Int32); err != nil {
		return nil, err
	}
	if numExperts < 1 {
		return nil, failf(ErrConfig, "capacity plan: number of experts must be >= 1, got %d", numExperts)
	}
	if capacity < 1 || capacity > maxSlots {
		return nil, failf(ErrConfig, "capacity plan: capacity must be in [1, 2^31), got %d", capacity)
	}
	nT, k := indices.Shape()[0], indices.Shape()[1]
	if err := checkSizes("capacity plan", nT, k, numExperts, 1); err != nil {
		return nil, err
	}
	op := &capacityPlanOp{k: k, e: numExperts, capacity: capacity, policy: policy}
	switch policy {
	case DropPosition:
		if weights != nil {
			return nil, failf(ErrConfig, "capacity plan: the position policy takes no weights")
		}
		return G.ApplyOp(op, indices)
	case DropProbs:
		if err := nodeCheck("capacity plan", "weights", weights, 2, anyFloat); err != nil {
			return nil, err
		}
		if !weights.Shape().Eq(indices.Shape()) {
			return nil, failf(ErrShape, "capacity plan: weights %v and indices %v must have the same shape", weights.Shape(), indices.Shape())
		}
		return G.ApplyOp(op, indices, weights)
	}
	return nil, failf(ErrConfig, "capacity plan: unknown drop policy %d", int(policy))
}

// capacityPlanOp: indices [T,K] int32 (and weights [T,K] for DropProbs) -> plan [PlanLen(T,K,E)] int32.
type capacityPlanOp struct {
	opBase
	k, e, capacity int
	policy         DropPolicy
}

func (op *capacityPlanOp) Arity() int {
	if op.policy == DropProbs {
		return 2
	}
	return 1
}
func (op *capacityPlanOp) Type() hm.Type {
	if op.policy == DropProbs {
		return hm.NewFnType(int32T(2), floatT(2), int32T(1))
	}
	return hm.NewFnType(int32T(2), int32T(1))
}
func (op *capacityPlanOp) String() string {
	return fmt.Sprintf("CapacityPlan{K=%d,E=%d,C=%d,%v}", op.k, op.e, op.capacity, op.policy)
}
func (op *capacityPlanOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *capacityPlanOp) Hashcode() uint32      { return hashOf(op) }
func (op *capacityPlanOp) DiffWRT(n int) []bool  { return make([]bool, n) }
func (op *capacityPlanOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, failf(ErrUnsupported, "%v is not differentiable", op)
}

// DoDiff: the plan carries no gradient.
func (op *capacityPlanOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error { return noDiff() }

func (op *capacityPlanOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if len(s) != 2 || s[1] != op.k {
		return nil, failf(ErrShape, "capacity plan: indices shape %v, want [T,%d]", s, op.k)
	}
	return tensor.Shape{PlanLen(s[0], op.k, op.e)}, nil
}

func (op *capacityPlanOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *capacityPlanOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, op.Arity(), vs); err != nil {
		return nil, err
	}
	idx, err := arg("capacity plan", "indices", vs[0], tensor.Int32, -1, op.k)
	if err != nil {
		return nil, err
	}
	nT := idx.Shape()[0]
	if err := checkSizes("capacity plan", nT, op.k, op.e, 1); err != nil {
		return nil, err
	}
	var w *tensor.Dense
	if op.policy == DropProbs {
		if w, err = arg("capacity plan", "weights", vs[1], anyFloat, nT, op.k); err != nil {
			return nil, err
		}
	}
	b, err := backendOf(op.String(), idx, w)
	if err != nil {
		return nil, err
	}
	out, err := output(b, prealloc, tensor.Int32, PlanLen(nT, op.k, op.e))
	if err != nil {
		return nil, err
	}
	return out, b.CapacityPlan(idx, w, op.e, op.capacity, op.policy, out)
}

// RouteStatsLen is the length of the float64 vector RoutingStatsOf's node holds for E experts:
//
//	[0, E)    routed slots per expert (the router's choice, before any capacity)
//	[E, 2E)   kept slots per expert (equal to the routed ones without a capacity)
//	2E        dropped slots
//	2E+1      mean router entropy over tokens (nats; see RoutingBackend.RouteStats)
func RouteStatsLen(e int) int { return 2*e + 2 }

// RoutingStatsOf adds a node with the routing diagnostics of r (a float64 vector of RouteStatsLen(E)
// elements, on r's backend: reading it from a device synchronises). Read it with ReadRoutingStats after
// each step. It needs the logits (a routing made by Route or RouteBiased: ErrConfig otherwise).
func RoutingStatsOf(r *Routing) (*G.Node, error) {
	if err := checkRouting("routing stats", r); err != nil {
		return nil, err
	}
	if r.Logits == nil {
		return nil, failf(ErrConfig, "routing stats: the routing has no logits (made by NewRouting?); build it with Route")
	}
	return G.ApplyOp(&routeStatsOp{cfg: r.Config, k: r.K(), e: r.E}, r.Logits, r.Plan)
}

// routeStatsOp: (logits [T,E], plan) -> float64 [RouteStatsLen(E)]. Not differentiable.
type routeStatsOp struct {
	opBase
	cfg  RouteConfig
	k, e int
}

func (op *routeStatsOp) Arity() int { return 2 }
func (op *routeStatsOp) Type() hm.Type {
	return hm.NewFnType(floatT(2), int32T(1), G.TensorType{Dims: 1, Of: tensor.Float64})
}
func (op *routeStatsOp) String() string {
	return fmt.Sprintf("RoutingStats{%v,K=%d,E=%d}", op.cfg, op.k, op.e)
}
func (op *routeStatsOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *routeStatsOp) Hashcode() uint32      { return hashOf(op) }
func (op *routeStatsOp) DiffWRT(n int) []bool  { return make([]bool, n) }
func (op *routeStatsOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, failf(ErrUnsupported, "%v is not differentiable", op)
}
func (op *routeStatsOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error { return noDiff() }

func (op *routeStatsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if len(s) != 2 || s[1] != op.e {
		return nil, failf(ErrShape, "routing stats: logits shape %v, want [T,%d]", s, op.e)
	}
	return tensor.Shape{RouteStatsLen(op.e)}, nil
}

func (op *routeStatsOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *routeStatsOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 2, vs); err != nil {
		return nil, err
	}
	logits, err := arg("routing stats", "logits", vs[0], anyFloat, -1, op.e)
	if err != nil {
		return nil, err
	}
	nT := logits.Shape()[0]
	plan, err := arg("routing stats", "plan", vs[1], tensor.Int32, PlanLen(nT, op.k, op.e))
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), logits, plan)
	if err != nil {
		return nil, err
	}
	out, err := output(b, prealloc, tensor.Float64, RouteStatsLen(op.e))
	if err != nil {
		return nil, err
	}
	return out, b.RouteStats(logits, plan, op.cfg, out)
}

// RoutingStats are the load diagnostics of one routing step (ReadRoutingStats).
type RoutingStats struct {
	T, K, E   int
	Counts    []int     // routed slots per expert (before any capacity); they sum to T*K
	Kept      []int     // kept slots per expert (Counts without a capacity)
	Fractions []float64 // Counts[e] / (T*K): each expert's share of the routed slots
	// MaxLoad is the largest routed count, MeanLoad = T*K/E, MaxOverMean their ratio (1: perfectly
	// balanced), CV the coefficient of variation of the routed counts (population standard deviation /
	// mean; 0: perfectly balanced).
	MaxLoad               int
	MeanLoad, MaxOverMean float64
	CV                    float64
	Dropped               int     // dropped slots (0 without a capacity)
	Entropy               float64 // mean router entropy per token (nats; log E is the uniform maximum)
}

// ReadRoutingStats reads the value of a RoutingStatsOf node (a float64 tensor of RouteStatsLen(E)
// elements of any backend; a device value is copied to the host, which synchronises) for T tokens and K
// experts per token.
func ReadRoutingStats(v G.Value, T, K int) (RoutingStats, error) {
	d, ok := v.(*tensor.Dense)
	if !ok || d.Dtype() != tensor.Float64 || d.Shape().Dims() != 1 || d.Shape()[0] < 4 || d.Shape()[0]%2 != 0 {
		return RoutingStats{}, failf(ErrShape, "routing stats: want a float64 vector of 2E+2 elements, got %T", v)
	}
	if !d.IsNativelyAccessible() {
		b, err := BackendFor(d)
		if err != nil {
			return RoutingStats{}, err
		}
		if d, err = b.ToHost(d); err != nil {
			return RoutingStats{}, err
		}
	}
	vals := d.Data().([]float64)
	nE := len(vals)/2 - 1
	if T < 1 || K < 1 {
		return RoutingStats{}, failf(ErrConfig, "routing stats: need T >= 1 and K >= 1, got %d and %d", T, K)
	}
	s := RoutingStats{T: T, K: K, E: nE, Counts: make([]int, nE), Kept: make([]int, nE), Fractions: make([]float64, nE),
		Dropped: int(vals[2*nE]), Entropy: vals[2*nE+1]}
	slots := float64(T * K)
	s.MeanLoad = slots / float64(nE)
	var ss float64
	for e := 0; e < nE; e++ {
		s.Counts[e], s.Kept[e] = int(vals[e]), int(vals[nE+e])
		s.Fractions[e] = vals[e] / slots
		s.MaxLoad = max(s.MaxLoad, s.Counts[e])
		ss += (vals[e] - s.MeanLoad) * (vals[e] - s.MeanLoad)
	}
	s.MaxOverMean = float64(s.MaxLoad) / s.MeanLoad
	s.CV = math.Sqrt(ss/float64(nE)) / s.MeanLoad
	return s, nil
}

// String summarises the diagnostics in one line; with more than 8 experts it names only the three
// busiest and the three idlest experts instead of listing every share.
func (s RoutingStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "max/mean %.3f cv %.3f entropy %.3f/%.3f nats", s.MaxOverMean, s.CV, s.Entropy, math.Log(float64(s.E)))
	if s.Dropped > 0 {
		fmt.Fprintf(&b, " dropped %d (%.2f%%)", s.Dropped, 100*float64(s.Dropped)/float64(s.T*s.K))
	}
	order := make([]int, s.E)
	for e := range order {
		order[e] = e
	}
	if s.E <= 8 {
		b.WriteString(" shares")
		for e, f := range s.Fractions {
			fmt.Fprintf(&b, " e%d:%.1f%%", e, 100*f)
		}
		return b.String()
	}
	sort.SliceStable(order, func(i, j int) bool { return s.Counts[order[i]] > s.Counts[order[j]] })
	b.WriteString(" busiest")
	for _, e := range order[:3] {
		fmt.Fprintf(&b, " e%d:%.1f%%", e, 100*s.Fractions[e])
	}
	b.WriteString(" idlest")
	for _, e := range order[s.E-3:] {
		fmt.Fprintf(&b, " e%d:%.1f%%", e, 100*s.Fractions[e])
	}
	return b.String()
}

// UpdateBalanceBias applies one step of DeepSeek-V3's aux-loss-free balancing to a selection bias in
// place: bias[e] += rate * sign(T*K/E - counts[e]), counts[e] the slots the plan routed to expert e
// (see RoutingBackend.UpdateBalanceBias). Call it after each training step with the bias tensor bound
// to the RouteBiased bias node and the step's plan value (Routing.Plan.Value(), read before the step's
// device memory is released); both must live on one backend, and the update runs there (on the device
// when the plan is on the device, without synchronising). rate must be finite (ErrConfig).
func UpdateBalanceBias(bias, plan *tensor.Dense, rate float64) error {
	if bias == nil || plan == nil {
		return failf(ErrShape, "balance bias: bias and plan are required")
	}
	if rate != rate || math.IsInf(rate, 0) {
		return failf(ErrConfig, "balance bias: rate must be finite, got %v", rate)
	}
	if bias.Dtype() != tensor.Float32 && bias.Dtype() != tensor.Float64 || bias.Shape().Dims() != 1 {
		return failf(ErrDtype, "balance bias: bias must be a float32 or float64 vector, got %v %v", bias.Dtype(), bias.Shape())
	}
	if plan.Dtype() != tensor.Int32 || plan.Shape().Dims() != 1 {
		return failf(ErrDtype, "balance bias: plan must be an int32 vector, got %v %v", plan.Dtype(), plan.Shape())
	}
	nE := bias.Shape()[0]
	if rest := plan.Shape()[0] - 2*nE - 1; nE < 1 || rest < 2 || rest%2 != 0 {
		return failf(ErrShape, "balance bias: a plan of %d elements does not fit E = %d", plan.Shape()[0], nE)
	}
	b, err := BackendFor(bias, plan)
	if err != nil {
		return err
	}
	return b.UpdateBalanceBias(bias, plan, rate)
}

// UpdateBias applies UpdateBalanceBias to r's bias node's value with r's plan value after a step.
func (r *Routing) UpdateBias(rate float64) error {
	if r == nil || r.Bias == nil || r.Plan == nil {
		return failf(ErrConfig, "balance bias: the routing has no bias (build it with RouteBiased)")
	}
	bias, ok1 := r.Bias.Value().(*tensor.Dense)
	plan, ok2 := r.Plan.Value().(*tensor.Dense)
	if !ok1 || !ok2 {
		return failf(ErrConfig, "balance bias: the bias and plan nodes hold no tensor values (run the graph first)")
	}
	return UpdateBalanceBias(bias, plan, rate)
}
