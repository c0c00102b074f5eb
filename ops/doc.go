// Package ops makes Mixture-of-Experts routing first-class Gorgonia operations: route, routing plan,
// dispatch, combine, grouped expert matmul and the router losses, each an Op with symbolic gradients
// (SDOp) so a whole MoE layer trains with G.Grad and a TapeMachine.
//
// # Shapes and dtypes
//
// T tokens, H hidden size, E experts, K experts per token (1 <= K <= E). Floats are float32 or float64
// (all float inputs of one op share the dtype); indices and plans are int32. Activations may also be
// bfloat16 (BFloat16: mixed precision with float32 master weights, routing weights and losses; Cast,
// DispatchTo, CombineTo, MatMulTo; see bf16.go and MixedPrecisionBackend for the rules).
//
//	Route(logits [T,E])                -> Routing{Indices [T,K] int32, Weights [T,K], Plan [2E+1+2TK] int32}
//	PlanOf(indices [T,K], E)           -> plan (layout: counts[E] | offsets[E+1] | rowOf[TK] | slotOf[TK])
//	Dispatch(x [T,H], r)               -> [T*K,H] expert-major, dropless, stable (token order per expert)
//	GroupedMatMul(x [T*K,In], w [E,In,Out], r) -> [T*K,Out]
//	Combine(ye [T*K,H], r)             -> [T,H] = sum_j w[t,j] * ye[rowOf(t,j)]
//	LoadBalancingLoss(r, coef), LoadBalancingLossMasked(r, mask [T] int32, coef), ZLoss(logits, coef) -> scalars
//
//	RouteBiased(logits, bias [E], cfg) -> Routing with a selection bias (Sigmoid scoring)
//	CapacityPlanOf(indices, weights, E, C, policy) -> a plan keeping at most C slots per expert
//	RoutingStatsOf(r)                  -> float64 [2E+2] diagnostics (ReadRoutingStats)
//	UpdateBalanceBias(bias, plan, rate)   aux-loss-free balancing step (a function, not a node)
//
// # Routing rules
//
// Selection takes the K largest scores per token in decreasing order; equal scores go to the lower
// expert index (vLLM / TensorRT-LLM behaviour). Weights: SoftmaxTopK takes softmax over all E then the
// selected K probabilities, optionally renormalised to sum 1 (Mixtral); TopKSoftmax takes softmax over
// the K selected logits (equal to SoftmaxTopK with renormalisation); Sigmoid (DeepSeek-V3) selects by
// sigmoid(logits) + a selection bias within the best groups of experts and weighs by the unbiased
// sigmoid scores, optionally renormalised; every weight is multiplied by RouteConfig.Scale. A capacity
// drops the slots beyond C per expert (by position or by weight): they get zero rows, no share in the
// combine and zero gradients, with unchanged buffer shapes. Indices and the plan carry no gradient;
// weights are differentiable w.r.t. the logits. docs/routing-policies.md has the exact semantics.
//
// # Errors
//
// Every error for a bad input wraps one of the sentinel errors (errors.go) — ErrShape, ErrDtype,
// ErrExpertIndex, ErrNaN, ErrConfig, ErrMixedBackends, ErrUnsupported — with the same sentinel on every
// backend. Node builders check ranks, dtypes (naming the inputs as the user made them), K, E, loss
// coefficients (finite, >= 0) and sizes (T*K must fit the int32 plan: T*K < 2^31) when the graph is
// built. Ops check the values they are given at run time and kernels report data faults: expert indices
// outside [0,E) (ErrExpertIndex) and router logit rows that hold a NaN or +Inf or are all -Inf (ErrNaN:
// their softmax is undefined). A single -Inf logit is valid: it is never chosen before a finite one and
// gets weight 0. Nothing panics inside Do. Gorgonia's machines hide an op's error from errors.Is; run them
// with RunAll (or pass their error through MachineError).
//
// # Machines
//
// The TapeMachine with G.Grad is the primary machine. Every op also implements DoDiff, so the
// LispMachine's gradients equal the TapeMachine's on the CPU; create it with NewLispMachine, which refuses
// graphs the LispMachine would get wrong (G.Grad nodes, differentiable ops without DoDiff, unused
// non-scalar nodes). Second derivatives are not supported through the gradients of Combine,
// GroupedMatMul (weights), the route weights and the router losses: G.Grad fails naming the op.
//
// # Concurrency
//
// The backend registry is the only package-level mutable state (locked). Ops and backends may be used
// from several goroutines; a Gorgonia graph and its machine belong to one goroutine at a time.
//
// # Determinism
//
// Every kernel sums in a fixed order (combine: increasing j per token; dot products: fixed partial
// sums) and splits work by row ranges fixed by the sizes: the same inputs give bitwise-identical
// outputs and gradients on a backend.
//
// # Training
//
// The ops a whole training step needs besides routing, each working on every backend:
//
//	MatMul(a [M,K], b [K,N], transA, transB) -> [M,N]   dense product (router logits: MatMul(x, router, false, true))
//	SwiGLU(gate, up)          -> silu(gate) ⊙ up          fused, with one fused backward node
//	MSELoss(pred, target)     -> scalar mean((pred-target)^2)
//	SoftmaxCrossEntropy(logits [N,C], labels [N] int32, -1 ignored) -> scalar mean cross-entropy
//	AddLosses(l1, l2, ...)    -> scalar sum of losses (G.Add cannot add device scalars)
//	ScaleLoss(l, coef)        -> scalar coef * l (G.Mul by a constant cannot take a device scalar)
//
// Loss nodes hold a host scalar on the CPU and a one-element tensor on a device (read either with
// Float). Adam (AdamW, global-norm clipping) and SGD (momentum, Nesterov) are gorgonia Solvers that update
// each parameter with one fused kernel on its backend and refuse non-finite gradients (ErrNaN).
// CheckDeviceGraph and CheckDeviceVM reject what cannot run on device memory; Runner and Trainer run a
// graph step by step on any backend (tensor engine, host feeds copied in, per-step memory release;
// WithCallerSteps when several runners share one device). Every op has symbolic gradients (SymDiff, for
// G.Grad and the TapeMachine) and DoDiff (for the LispMachine, CPU only: NewLispMachine).
//
// # Backends
//
// Ops call a Backend (backend.go): CPU() is the reference; the CUDA backend in package cudaops (build
// tag expertrt_cuda) registers itself and is chosen when the op's inputs live in device memory.
package ops
