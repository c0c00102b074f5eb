package ops

import (
	"strings"
	"sync"

	"gorgonia.org/tensor"
)

// Backend is the kernel set behind the op types: every op validates shapes and dtypes, allocates its
// output with New and calls exactly one Backend method. The CPU backend (CPU()) is the reference; a GPU
// backend (package cudaops, build tag expertrt_cuda) implements the same interface over device memory and
// registers itself with Register. Ops pick the backend that owns their inputs (see BackendFor).
//
// Conventions for every kernel method:
//   - Inputs were validated by the op (shapes, dtypes, k <= E); kernels still return errors for
//     data-dependent faults, with the same sentinel on every backend: expert indices outside [0,E)
//     (ErrExpertIndex), router logit rows that hold a NaN or +Inf or are all -Inf (ErrNaN).
//     Asynchronous backends report them at the next synchronisation (Synchronizer).
//   - out is preallocated with the right shape and dtype; the kernel overwrites all of it.
//   - Float tensors are float32 or float64 (all float inputs of one call share the dtype); idx and plan are int32.
//     bfloat16 operands follow the rules of MixedPrecisionBackend.
//   - T, K and E are implied by shapes: x/y [T,H], packed [T*K,H], w [T,K], idx [T,K], plan [PlanLen(T,K,E)].
//   - Results are deterministic: no atomics on floats, fixed summation orders.
type Backend interface {
	// Name is a short identifier, unique among registered backends ("cpu", "cuda:0").
	Name() string
	// Owns reports whether t's memory belongs to this backend. It must not rely on t.Engine() alone:
	// Gorgonia's TapeMachine relabels every op result with the machine's engine (setEngine in
	// vm_tape_nocuda.go; G.WithEngine sets it), so identify device memory by address (e.g. the
	// allocator's ranges) or by both.
	Owns(t tensor.Tensor) bool
	// New allocates a zero-filled tensor in this backend's memory.
	New(dt tensor.Dtype, shape ...int) (*tensor.Dense, error)
	// FromHost copies a host tensor into a new tensor owned by this backend.
	FromHost(t *tensor.Dense) (*tensor.Dense, error)
	// ToHost copies a tensor owned by this backend into a new host tensor.
	ToHost(t *tensor.Dense) (*tensor.Dense, error)
	// View returns a tensor of the given shape over t's memory from element offset on (no copy); the
	// view keeps t's memory alive. offset + prod(shape) must not exceed t's size.
	View(t *tensor.Dense, offset int, shape ...int) (*tensor.Dense, error)

	// RouteIndices writes idx[t,:] = the K experts of token t in decreasing score order, ties to the
	// lower expert index. logits [T,E] float, idx [T,K] int32. Softmax scorings: a row with a NaN or +Inf
	// logit, or whose logits are all -Inf, is an error (ErrNaN); -Inf logits are otherwise allowed (never
	// selected before a finite one). Sigmoid scoring follows RouteIndicesBias with no bias.
	RouteIndices(logits *tensor.Dense, cfg RouteConfig, idx *tensor.Dense) error
	// RouteWeights writes w[t,j] = the routing weight of expert idx[t,j] (see Scoring), times
	// cfg.EffectiveScale(). w [T,K].
	RouteWeights(logits, idx *tensor.Dense, cfg RouteConfig, w *tensor.Dense) error
	// RouteWeightsGrad writes dlogits[T,E] = d(sum dw*w)/dlogits.
	RouteWeightsGrad(logits, idx, dw *tensor.Dense, cfg RouteConfig, dlogits *tensor.Dense) error
	// Plan builds the routing plan (layout in plan_layout.go) of idx [T,K] over E experts.
	Plan(idx *tensor.Dense, numExperts int, plan *tensor.Dense) error

	// Dispatch writes out[r] = scale(s) * x[s/K] for every expert-major row r, s = slotOf[r], where
	// scale(s) = w[s] (w [T,K]) or 1 when w is nil. x [T,H], out [T*K,H].
	// With w == nil this is the dispatch forward; with w it is the combine backward w.r.t. expert outputs.
	Dispatch(x, w, plan *tensor.Dense, out *tensor.Dense) error
	// Combine writes out[t] = sum_{j=0..K-1} scale(t,j) * ye[rowOf[t*K+j]], summed in increasing j,
	// where scale = w[t,j] or 1 when w is nil. ye [T*K,H], out [T,H].
	// With w it is the combine forward; with w == nil it is the dispatch backward.
	Combine(ye, w, plan *tensor.Dense, out *tensor.Dense) error
	// CombineGradWeights writes dw[t,j] = <dy[t], ye[rowOf[t*K+j]]>. dy [T,H], ye [T*K,H], dw [T,K].
	CombineGradWeights(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error

	// GroupedMatMul writes out[r] = x[r] · W[e] (or W[e]^T when transposeW) for every row r of expert e's
	// segment [offsets[e], offsets[e+1]). x [N,In], W [E,In,Out] (or [E,Out,In] transposed), out [N,Out].
	GroupedMatMul(x, w, plan *tensor.Dense, transposeW bool, out *tensor.Dense) error
	// GroupedMatMulGradW writes dW[e] = x_e^T · dy_e over expert e's segment. x [N,In], dy [N,Out], dW [E,In,Out].
	GroupedMatMulGradW(x, dy, plan *tensor.Dense, dW *tensor.Dense) error

	// LoadBalancingLoss writes loss = coef * E * sum_e f_e * P_e (HF Mixtral / Switch convention) into
	// loss, a one-element tensor of logits' dtype owned by this backend. Without a mask (mask nil),
	// f_e = counts[e]/T and P_e = mean_t softmax(logits)[t,e]. With a token mask [T] int32 (0: padding,
	// excluded; anything else: counted, as transformers' attention_mask), f_e and P_e count only the
	// n >= 0 counted tokens: f_e = (slots of counted tokens routed to e)/n, P_e = (sum over counted t of
	// softmax(logits)[t,e])/n; no counted token gives loss 0. Logits of a counted token that are NaN,
	// +Inf or all -Inf are an error (ErrNaN; reported at the next synchronisation on asynchronous
	// backends). Asynchronous backends do not synchronise: the value stays on the device until read.
	LoadBalancingLoss(logits, plan, mask *tensor.Dense, coef float64, loss *tensor.Dense) error
	// LoadBalancingLossGrad writes dlogits = scale * g * d(LoadBalancingLoss with coef 1)/dlogits (0 for
	// rows of padding tokens), where g is the upstream gradient: g[0] when g is a one-element tensor of
	// this backend, 1 when g is nil.
	LoadBalancingLossGrad(logits, plan, mask *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error
	// ZLoss writes loss = coef * mean_t logsumexp(logits[t,:])^2 into the one-element tensor loss.
	// Non-finite logit rows (NaN, +Inf, all -Inf) are an error (ErrNaN) as in LoadBalancingLoss.
	ZLoss(logits *tensor.Dense, coef float64, loss *tensor.Dense) error
	// ZLossGrad writes dlogits = scale * g * d(ZLoss with coef 1)/dlogits (g as in LoadBalancingLossGrad).
	ZLossGrad(logits *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error

	TrainingBackend
	RoutingBackend
	MixedPrecisionBackend
}

// CombineBackwarder is an optional fused kernel: one pass over dy writes both gradients of the weighted
// combine, dye = Dispatch(dy, w, plan) and dw = CombineGradWeights(dy, ye, plan). Backends without it
// get the two separate kernels (dy is then read twice).
type CombineBackwarder interface {
	CombineBackward(dy, ye, w, plan *tensor.Dense, dye, dw *tensor.Dense) error
}

// Synchronizer is implemented by asynchronous backends: Synchronize waits for all queued work and
// reports device faults raised since the last check (e.g. out-of-range expert indices on a GPU).
type Synchronizer interface {
	Synchronize() error
}

// The kernel registry is the only package-level mutable state: GPU backends add themselves at init.
var registry struct {
	mu       sync.RWMutex
	backends []Backend
}

// Aliased is implemented by backends known under more names than Name (the CUDA backend of device 0 is
// "cuda:0" and "cuda").
type Aliased interface {
	Aliases() []string
}

// names returns a backend's name and aliases.
func names(b Backend) []string {
	out := []string{b.Name()}
	if a, ok := b.(Aliased); ok {
		out = append(out, a.Aliases()...)
	}
	return out
}

// Register adds a non-CPU backend. Ops use the first registered backend that owns all their inputs.
// A backend whose name or alias is taken (by a registered backend or "cpu"), or that is nil or
// unnamed, is refused with an error wrapping ErrConfig.
func Register(b Backend) error {
	if b == nil {
		return failf(ErrConfig, "register: nil backend")
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	taken := map[string]bool{CPU().Name(): true}
	for _, have := range registry.backends { // (no == on backends: a backend type may not be comparable)
		for _, n := range names(have) {
			taken[n] = true
		}
	}
	for _, n := range names(b) {
		if n == "" {
			return failf(ErrConfig, "register: a backend needs a name")
		}
		if taken[n] {
			return failf(ErrConfig, "register: a backend named %q is registered already (names: %s)", n, strings.Join(backendNames(), ", "))
		}
		taken[n] = true
	}
	registry.backends = append(registry.backends, b)
	return nil
}

// Backends lists the registered backends, CPU first.
func Backends() []Backend {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	return append([]Backend{CPU()}, registry.backends...)
}

// LookupBackend returns the backend called name ("cpu", or a registered backend's name or alias, such
// as "cuda:0" or "cuda"). An unknown name is an error wrapping ErrConfig that lists the known ones.
func LookupBackend(name string) (Backend, error) {
	if name == CPU().Name() {
		return CPU(), nil
	}
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	for _, b := range registry.backends {
		for _, n := range names(b) {
			if n == name {
				return b, nil
			}
		}
	}
	return nil, failf(ErrConfig, "no backend named %q (registered: %s)", name, strings.Join(backendNames(), ", "))
}

// backendNames lists "cpu" and every registered name and alias; the caller holds the registry lock.
func backendNames() []string {
	out := []string{CPU().Name()}
	for _, b := range registry.backends {
		out = append(out, names(b)...)
	}
	return out
}

// BackendFor returns the backend that owns every tensor in ts. Host tensors belong to the CPU backend.
// Tensors of different backends in one call are an error (ErrMixedBackends): copies between devices
// are explicit.
func BackendFor(ts ...tensor.Tensor) (Backend, error) { return backendFor("", ts) }

// backendFor is BackendFor with the error naming op (when not "").
func backendFor(op string, ts []tensor.Tensor) (Backend, error) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	for _, b := range registry.backends {
		owned := 0
		for _, t := range ts {
			if t != nil && b.Owns(t) {
				owned++
			}
		}
		switch {
		case owned == 0:
			continue
		case owned != countNonNil(ts):
			if op != "" {
				op += ": "
			}
			return nil, failf(ErrMixedBackends, "%sinputs mix %s tensors with tensors of another backend; copy them explicitly (Backend.FromHost / ToHost)", op, b.Name())
		default:
			return b, nil
		}
	}
	return CPU(), nil
}

func countNonNil(ts []tensor.Tensor) int {
	n := 0
	for _, t := range ts {
		if t != nil {
			n++
		}
	}
	return n
}
