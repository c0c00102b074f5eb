// Package ep runs a Mixture-of-Experts layer with expert parallelism: the E experts are split over W
// ranks (E/W consecutive experts each, rank q holds [q*E/W, (q+1)*E/W)), every rank routes its own
// tokens over all E experts, sends each routed row to the rank that owns its expert, runs its local
// experts on the rows it receives, and sends the results back to be combined. The router is replicated
// on every rank.
//
// # Pieces
//
// A Transport moves rows between ranks (all-to-all with per-peer segments, all-gather, all-reduce,
// barrier, abort). Group is the in-process implementation (goroutine ranks, a test double used by CI
// and single-GPU tests); package moe/ep/epcuda (build tag expertrt_cuda) is the NCCL one, one process
// per GPU.
//
// Exchange is the expert-parallel core of one layer as Gorgonia nodes: the counts exchange, the
// dispatch-side all-to-all (ToExperts), the grouped product over the local experts (GroupedMatMul) and
// the combine-side all-to-all (FromExperts). Each all-to-all's gradient is the other one over the same
// counts. Layer builds the Mixtral-style SwiGLU layer (moe.Layer's parameters and configuration) from
// these pieces.
//
// # Shapes and dtypes
//
// T tokens per rank (the same on every rank), H hidden, F FFN width, E experts, K experts per token,
// W ranks, L = E/W local experts, R receive rows (below). Floats are float32 or float64.
//
//	x [T,H] -> logits [T,E] -> ops.Route -> ops.Dispatch -> [T*K,H] expert-major over all E experts
//	Counts: host int32 [W,E], C[p][e] = rows rank p routes to expert e (all-gathered)
//	ToExperts [T*K,H] -> [R,H]: local expert l's rows from rank 0, then rank 1, ... (token order)
//	GroupedMatMul [R,In] x [L,In,Out] -> [R,Out]; SwiGLU experts as in moe.ExpertFFN
//	FromExperts [R,H] -> [T*K,H] in this rank's expert-major order -> ops.Combine -> y [T,H]
//
// Expert e's received rows are, bitwise and in the same order, the rows of expert e's segment in the
// single-rank layer run on the ranks' concatenated tokens (rank 0's first): the forward output and
// every gradient equal that layer's up to the rounding of the expert products (which see the same
// rows in the same order; the CPU tests require 1e-12 relative in float64).
//
// # Fixed shapes, data-dependent counts, memory
//
// Gorgonia fixes node shapes when the graph is built, but how many rows a rank receives depends on the
// routing. The receive buffers therefore have R rows, the first n of them valid (n is data: the counts,
// which every rank knows after the all-gather); the grouped products run on the first n rows only, and
// rows past n are zero and never sent back. By default R = W*T*min(K, L), the most any routing can send
// to one rank (every token of every rank choosing only this rank's experts), so no token is ever
// dropped. The price is memory: every [R,·] activation on a rank (received rows, the expert's gate, up
// and hidden activations [R,F], its output, and their gradients) is as large as in a single-GPU layer
// over all W*T tokens, while balanced routing fills only T*K of the R rows (1/W of them when L >= K).
// For fp32, T=4096, K=2, H=4096, F=14336, E=64 and W=8: R = 65536 rows, 1 GiB per [R,H] buffer and 3.5 GiB
// per [R,F] buffer, against 128 MiB and 448 MiB actually used under perfect balance.
// Options.RecvRows caps R (for example 2*T*K for a capacity factor of 2); a step whose routing would
// send more rows to one rank then fails on every rank with ErrCapacity — no token is dropped silently.
// The elementwise parts of the experts (SwiGLU) run over all R rows.
//
// # Objective and gradients
//
// The group's objective is the sum of the ranks' costs. An expert's gradient, which lives on one rank,
// receives every rank's contribution through the backward exchange; the replicated router's gradient
// must be summed over ranks before the optimizer step (Layer.AllReduceRouterGrad). To train on the mean
// loss over all W*T tokens, scale each rank's mean loss by Layer.LossScale (1/W): Output.Cost(task) does
// so with ops.ScaleLoss and adds the router losses with ops.AddLosses, so the cost runs on a device
// backend too (Config.Backend places the rank's weights there). The router losses are
// per-rank shares that add up to the single-rank losses of all W*T tokens: the load-balancing loss uses
// the counts summed over ranks with coefficient coef/W², the z-loss coefficient coef/W.
//
// # Collectives, errors, timeouts
//
// Every exchange is a collective: all ranks run the same graph, so its collectives come in the same
// order. The counts exchange first compares the layer sizes (W, E, T, K, H, dtype, R) of all ranks:
// ranks built differently fail with an error naming the difference (wrapping ops.ErrConfig), never
// exchanging garbage. A rank that dies, aborts, leaves or stops calling makes the others' collectives
// fail within the transport's timeout with an error wrapping ErrTransport. Errors from a Gorgonia
// machine hide these sentinels from errors.Is; run machines with ops.RunAll (or pass their errors
// through ops.MachineError; ops.Runner and ops.Trainer do):
//
//	if err := ops.RunAll(m); errors.Is(err, ep.ErrTransport) { ... }
//
// # Determinism
//
// Data movement is exact (bitwise), the row order on every rank is fixed by the counts, and the
// in-process all-reduce sums in rank order, so two runs give bitwise-identical results.
package ep
