package ops

import "gorgonia.org/tensor"

// TrainingBackend is the part of Backend that a whole training step needs besides routing: the dense
// matrix product (router, any model), the task losses, the fused SwiGLU and the optimizer updates. With
// these on a device backend, a training step runs without touching host memory (see docs/device-engine.md).
//
// Conventions are Backend's: inputs validated by the op, outputs preallocated and fully overwritten,
// float32/float64 (one dtype per call), deterministic (no float atomics, fixed summation orders).
// "Scalar" outputs are one-element tensors of this backend (they stay on the device); an upstream
// gradient g is a one-element tensor of this backend, or nil meaning 1.
type TrainingBackend interface {
	// MatMul writes out = op(a) · op(b), op(m) = m, or mᵀ when the flag is set. a [M,K] ([K,M] when
	// transA), b [K,N] ([N,K] when transB), out [M,N]. K may be 0 (out is then zero).
	MatMul(a, b *tensor.Dense, transA, transB bool, out *tensor.Dense) error

	// MSELoss writes loss = mean over all n >= 1 elements of (pred - target)^2. pred and target share a
	// shape.
	MSELoss(pred, target *tensor.Dense, loss *tensor.Dense) error
	// MSELossGrad writes dpred = scale * g * 2 (pred - target) / n.
	MSELossGrad(pred, target *tensor.Dense, scale float64, g, dpred *tensor.Dense) error
	// SoftmaxCrossEntropy writes loss = mean over counted rows n of logsumexp(logits[n,:]) -
	// logits[n, labels[n]]. logits [N,C], labels [N] int32 in [0,C), or -1 for a row that is ignored (not
	// counted). No counted row gives loss 0. A label outside [0,C) ∪ {-1} is an error (ErrLabel; reported at
	// the next synchronisation on asynchronous backends).
	SoftmaxCrossEntropy(logits, labels *tensor.Dense, loss *tensor.Dense) error
	// SoftmaxCrossEntropyGrad writes dlogits[n,:] = scale * g * (softmax(logits[n,:]) - onehot(labels[n])) /
	// counted rows, and 0 for ignored rows.
	SoftmaxCrossEntropyGrad(logits, labels *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error

	// SwiGLU writes out = silu(gate) * up elementwise, silu(a) = a * sigmoid(a). gate, up, out share a shape.
	SwiGLU(gate, up *tensor.Dense, out *tensor.Dense) error
	// SwiGLUGrad writes dgate = dout * up * silu'(gate) and dup = dout * silu(gate).
	SwiGLUGrad(gate, up, dout *tensor.Dense, dgate, dup *tensor.Dense) error

	// GradNormScale writes scale = min(1, maxNorm / (sqrt(sum over all grads of g^2) + 1e-6)) into the
	// one-element float64 tensor scale: the global-norm gradient clipping factor, computed on the backend
	// (summed in float64 in a fixed order). maxNorm > 0; maxNorm = +Inf gives 1 (the solvers' check for
	// non-finite gradients without clipping). Non-finite gradients (or a sum of squares that overflows
	// float64) write NaN into scale and are reported as ErrNaN: by the call on the CPU, at the next
	// synchronisation on asynchronous backends. grads may mix float32 and float64 tensors.
	GradNormScale(grads []*tensor.Dense, maxNorm float64, scale *tensor.Dense) error
	// AdamStep updates one parameter in place (one fused pass): with gr = clip * g (clip = clipScale[0], or 1
	// when clipScale is nil), gr += WeightDecay * p unless DecoupledWeightDecay,
	// m = Beta1 m + (1-Beta1) gr, v = Beta2 v + (1-Beta2) gr^2,
	// p -= LR * ( (m / (1-Beta1^Step)) / (sqrt(v / (1-Beta2^Step)) + Eps) + (DecoupledWeightDecay ? WeightDecay p : 0) ).
	// p, g, m, v share dtype and shape; m and v are this backend's state (zero before the first step).
	// clipScale is nil or a one-element float64 tensor; when it holds NaN or ±Inf (GradNormScale saw a
	// non-finite gradient) the call leaves p, m and v unchanged, so a bad gradient never reaches the
	// weights even before the error surfaces. Arithmetic in float64 per element, stored in p's dtype
	// (CPU; a device may use float32 for float32 parameters).
	AdamStep(p, g, m, v *tensor.Dense, hp AdamParams, clipScale *tensor.Dense) error
	// SGDStep updates one parameter in place: gr = clip * g + WeightDecay * p; with Momentum > 0,
	// buf = Momentum * buf + gr (buf zero before the first step) and gr = buf (or gr + Momentum*buf when
	// Nesterov); p -= LR * gr. buf may be nil when Momentum is 0. A non-finite clipScale leaves p and buf
	// unchanged (as in AdamStep).
	SGDStep(p, g, buf *tensor.Dense, hp SGDParams, clipScale *tensor.Dense) error
}

// AdamParams are the hyper-parameters of one AdamStep. Step counts from 1.
type AdamParams struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
	DecoupledWeightDecay               bool // AdamW
	Step                               int
}

// SGDParams are the hyper-parameters of one SGDStep.
type SGDParams struct {
	LR, Momentum, WeightDecay float64
	Nesterov                  bool
}

// TensorEngineProvider is implemented by device backends: TensorEngine returns the gorgonia.org/tensor
// engine over the backend's memory, which implements tensor's arithmetic interfaces (Adder, Muler, ...)
// for device tensors. A Gorgonia machine running a device graph must use it
// (G.NewTapeMachine(g, G.WithEngine(e))) so that Gorgonia's built-in elementwise ops and the gradient sums
// that Grad inserts run on the device.
type TensorEngineProvider interface {
	TensorEngine() (tensor.Engine, error)
}

// StepScoper is implemented by device backends whose memory is released explicitly per training step:
// Gorgonia and the tensor package allocate every step's intermediate values through the engine and never
// free them. Memory allocated between BeginStep and EndStep (by ops, the tensor engine, Gorgonia) belongs
// to the step and goes back to the allocator at EndStep, except tensors passed to Persist. Tensors of a
// finished step must not be used: reading one is an error, never stale data.
type StepScoper interface {
	BeginStep() error
	EndStep() error
	// Persist moves t (allocated in the current step) out of the step, e.g. optimizer state created lazily
	// or a value the caller reads after EndStep. Persisting a tensor that belongs to no step (allocated
	// outside BeginStep/EndStep, or persisted before) is a no-op: the solvers persist their state without
	// knowing whether a step is open.
	Persist(t *tensor.Dense) error
}
