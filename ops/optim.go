package ops

import (
	"math"
	"strconv"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// AdamConfig configures Adam and AdamW (PyTorch's torch.optim.Adam / AdamW update rules).
type AdamConfig struct {
	LR    float64 // learning rate, >= 0
	Beta1 float64 // first-moment decay, in [0, 1)
	Beta2 float64 // second-moment decay, in [0, 1)
	Eps   float64 // added to sqrt(v̂), > 0
	// WeightDecay >= 0: added to the gradient (L2, torch Adam) or, with Decoupled, applied to the weights
	// directly (p -= LR·WeightDecay·p, torch AdamW).
	WeightDecay float64
	Decoupled   bool
	// MaxGradNorm > 0 clips the global L2 norm of all gradients of a Step to at most MaxGradNorm
	// (torch.nn.utils.clip_grad_norm_, computed on the backend without a host read); 0 disables clipping.
	MaxGradNorm float64
}

// DefaultAdam returns PyTorch's defaults (betas 0.9, 0.999, eps 1e-8, no weight decay) with the given
// learning rate.
func DefaultAdam(lr float64) AdamConfig {
	return AdamConfig{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

func (c AdamConfig) params(step int) AdamParams {
	return AdamParams{LR: c.LR, Beta1: c.Beta1, Beta2: c.Beta2, Eps: c.Eps, WeightDecay: c.WeightDecay,
		DecoupledWeightDecay: c.Decoupled, Step: step}
}

// Validate checks the ranges documented on AdamConfig.
func (c AdamConfig) Validate() error {
	if err := c.params(1).Validate(); err != nil {
		return err
	}
	return checkMaxNorm(c.MaxGradNorm)
}

// Validate checks the hyper-parameters of one AdamStep.
func (p AdamParams) Validate() error {
	switch {
	case !finiteNonNeg(p.LR):
		return failf(ErrConfig, "adam: learning rate must be finite and >= 0, got %v", p.LR)
	case !(p.Beta1 >= 0 && p.Beta1 < 1) || !(p.Beta2 >= 0 && p.Beta2 < 1):
		return failf(ErrConfig, "adam: betas must lie in [0, 1), got %v, %v", p.Beta1, p.Beta2)
	case !(p.Eps > 0) || math.IsInf(p.Eps, 0):
		return failf(ErrConfig, "adam: eps must be finite and > 0, got %v", p.Eps)
	case !finiteNonNeg(p.WeightDecay):
		return failf(ErrConfig, "adam: weight decay must be finite and >= 0, got %v", p.WeightDecay)
	case p.Step < 1:
		return failf(ErrConfig, "adam: step counts from 1, got %d", p.Step)
	}
	return nil
}

// SGDConfig configures stochastic gradient descent with momentum (PyTorch's torch.optim.SGD without
// dampening).
type SGDConfig struct {
	LR          float64 // learning rate, >= 0
	Momentum    float64 // >= 0; 0 keeps no state
	Nesterov    bool    // Nesterov momentum; needs Momentum > 0
	WeightDecay float64 // >= 0, added to the gradient (L2)
	MaxGradNorm float64 // as in AdamConfig; 0 disables clipping
}

func (c SGDConfig) params() SGDParams {
	return SGDParams{LR: c.LR, Momentum: c.Momentum, WeightDecay: c.WeightDecay, Nesterov: c.Nesterov}
}

// Validate checks the ranges documented on SGDConfig.
func (c SGDConfig) Validate() error {
	if err := c.params().Validate(); err != nil {
		return err
	}
	return checkMaxNorm(c.MaxGradNorm)
}

// Validate checks the hyper-parameters of one SGDStep.
func (p SGDParams) Validate() error {
	switch {
	case !finiteNonNeg(p.LR):
		return failf(ErrConfig, "sgd: learning rate must be finite and >= 0, got %v", p.LR)
	case !finiteNonNeg(p.Momentum):
		return failf(ErrConfig, "sgd: momentum must be finite and >= 0, got %v", p.Momentum)
	case p.Nesterov && p.Momentum == 0:
		return failf(ErrConfig, "sgd: Nesterov momentum needs a momentum > 0")
	case !finiteNonNeg(p.WeightDecay):
		return failf(ErrConfig, "sgd: weight decay must be finite and >= 0, got %v", p.WeightDecay)
	}
	return nil
}

func finiteNonNeg(v float64) bool { return v >= 0 && !math.IsInf(v, 0) }

func checkMaxNorm(v float64) error {
	if !finiteNonNeg(v) {
		return failf(ErrConfig, "MaxGradNorm must be finite and >= 0 (0: no clipping), got %v", v)
	}
	return nil
}

// Adam is a gorgonia Solver for Adam and AdamW that runs on the backend owning the parameters: one
// fused AdamStep kernel per parameter, moments kept in that backend's memory (allocated at the first
// Step, persisted across training steps on a StepScoper backend).
//
// Gradients are read with ValueGrad.Grad() (Node.Grad() for nodes): do not bind dual values
// (G.BindDualValues), which zeroes gradients through host loops. Gradients are not zeroed after the update
// (a TapeMachine recomputes them on every run).
//
// Non-finite gradients never reach the weights unnoticed: every Step first computes the global
// gradient norm on the backend (GradNormScale). On the CPU a NaN or Inf gradient makes Step return an
// error wrapping ErrNaN before any parameter or moment changes. On an asynchronous device the same
// check writes a NaN clipping factor, the update kernels then leave every parameter and moment
// unchanged, and ErrNaN is reported at the next synchronisation (a loss read, ToHost or Synchronize);
// the step counter still advances.
type Adam struct {
	cfg  AdamConfig
	step int
	st   solverState
}

// NewAdam returns an Adam solver; cfg is validated.
func NewAdam(cfg AdamConfig) (*Adam, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Adam{cfg: cfg}, nil
}

// Step applies one update to every parameter in vgs. The list must be the same parameters, in the same
// order, at every step (Reset starts over).
func (a *Adam) Step(vgs []G.ValueGrad) error {
	ps, gs, err := a.st.prepare("adam", vgs, 2)
	if err != nil {
		return err
	}
	scale, err := a.st.clipScale(gs, a.cfg.MaxGradNorm)
	if err != nil {
		return err
	}
	a.step++
	hp := a.cfg.params(a.step)
	for i := range ps {
		if err := a.st.b.AdamStep(ps[i], gs[i], a.st.bufs[i][0], a.st.bufs[i][1], hp, scale); err != nil {
			return errorf("adam: parameter %s: %w", a.st.names[i], err)
		}
	}
	return nil
}

// SetLR changes the learning rate from the next Step on (for schedules).
func (a *Adam) SetLR(lr float64) error {
	c := a.cfg
	c.LR = lr
	if err := c.Validate(); err != nil {
		return err
	}
	a.cfg = c
	return nil
}

// Steps returns the number of updates applied so far.
func (a *Adam) Steps() int { return a.step }

// Reset forgets the moments and the step count; the next Step starts from zero state.
func (a *Adam) Reset() { a.step, a.st = 0, solverState{} }

// SGD is a gorgonia Solver for SGD with optional (Nesterov) momentum on the backend owning the
// parameters: one fused SGDStep kernel per parameter, the momentum buffer in that backend's memory.
// Gradients are read and checked as in Adam (non-finite gradients: ErrNaN on the CPU before any change;
// on a device the update is skipped and ErrNaN reported at the next synchronisation).
type SGD struct {
	cfg  SGDConfig
	step int
	st   solverState
}

// NewSGD returns an SGD solver; cfg is validated.
func NewSGD(cfg SGDConfig) (*SGD, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &SGD{cfg: cfg}, nil
}

// Step applies one update to every parameter in vgs (the same parameters, in the same order, at every
// step).
func (s *SGD) Step(vgs []G.ValueGrad) error {
	nbuf := 0
	if s.cfg.Momentum > 0 {
		nbuf = 1
	}
	ps, gs, err := s.st.prepare("sgd", vgs, nbuf)
	if err != nil {
		return err
	}
	scale, err := s.st.clipScale(gs, s.cfg.MaxGradNorm)
	if err != nil {
		return err
	}
	s.step++
	hp := s.cfg.params()
	for i := range ps {
		var buf *tensor.Dense
		if nbuf > 0 {
			buf = s.st.bufs[i][0]
		}
		if err := s.st.b.SGDStep(ps[i], gs[i], buf, hp, scale); err != nil {
			return errorf("sgd: parameter %s: %w", s.st.names[i], err)
		}
	}
	return nil
}

// SetLR changes the learning rate from the next Step on.
func (s *SGD) SetLR(lr float64) error {
	c := s.cfg
	c.LR = lr
	if err := c.Validate(); err != nil {
		return err
	}
	s.cfg = c
	return nil
}

// Steps returns the number of updates applied so far.
func (s *SGD) Steps() int { return s.step }

// Reset forgets the momentum buffers and the step count.
func (s *SGD) Reset() { s.step, s.st = 0, solverState{} }

// solverState is the per-parameter state of a solver on one backend.
type solverState struct {
	b      Backend
	params []*tensor.Dense   // the parameter tensors of the first step, to detect a changed list
	names  []string          // for error messages
	bufs   [][]*tensor.Dense // per parameter: the optimizer's state tensors (zero-filled at creation)
	scale  *tensor.Dense     // one float64: the clipping factor GradNormScale writes
}

// prepare reads and validates the parameters and gradients of a step and allocates the state at the
// first step (nbuf tensors per parameter plus the clipping factor) on the parameters' backend.
func (s *solverState) prepare(solver string, vgs []G.ValueGrad, nbuf int) (ps, gs []*tensor.Dense, err error) {
	if len(vgs) == 0 {
		return nil, nil, failf(ErrConfig, "%s: no parameters", solver)
	}
	ps = make([]*tensor.Dense, len(vgs))
	gs = make([]*tensor.Dense, len(vgs))
	names := make([]string, len(vgs))
	var b Backend
	for i, vg := range vgs {
		names[i] = paramName(vg, i)
		p, ok := vg.Value().(*tensor.Dense)
		if !ok || p == nil {
			return nil, nil, failf(ErrDtype, "%s: parameter %s has no tensor value (%T)", solver, names[i], vg.Value())
		}
		gv, err := vg.Grad()
		if err != nil {
			return nil, nil, failf(ErrConfig, "%s: parameter %s has no gradient (is it in the graph's G.Grad?): %v", solver, names[i], err)
		}
		g, ok := gv.(*tensor.Dense)
		if !ok || g == nil {
			return nil, nil, failf(ErrDtype, "%s: the gradient of %s is %T, want a tensor", solver, names[i], gv)
		}
		if isBF16(p.Dtype()) {
			return nil, nil, failf(ErrDtype, "%s: parameter %s is bfloat16; solvers update float32 master weights: keep the parameter float32 and Cast it to bfloat16 where the graph uses it", solver, names[i])
		}
		if err := checkElementwise(solver+": parameter "+names[i]+" and its gradient", p, g); err != nil {
			return nil, nil, err
		}
		if err := checkDtype(solver, "parameter "+names[i], p.Dtype(), anyFloat); err != nil {
			return nil, nil, err
		}
		pb, err := backendOf(solver+": parameter "+names[i]+" and its gradient", p, g)
		if err != nil {
			return nil, nil, err
		}
		if b == nil {
			b = pb
		} else if pb.Name() != b.Name() {
			return nil, nil, failf(ErrMixedBackends, "%s: parameter %s is on %s, %s on %s", solver, names[i], pb.Name(), names[0], b.Name())
		}
		ps[i], gs[i] = p, g
	}
	if s.b == nil {
		return ps, gs, s.init(b, ps, names, nbuf)
	}
	if b.Name() != s.b.Name() || len(ps) != len(s.params) {
		return nil, nil, failf(ErrConfig, "%s: the parameters changed since the first step (%d on %s, now %d on %s); Reset the solver", solver, len(s.params), s.b.Name(), len(ps), b.Name())
	}
	for i, p := range ps {
		if p != s.params[i] {
			return nil, nil, failf(ErrConfig, "%s: parameter %d (%s) is not the tensor it was at the first step; Reset the solver", solver, i, names[i])
		}
	}
	return ps, gs, nil
}

func (s *solverState) init(b Backend, ps []*tensor.Dense, names []string, nbuf int) error {
	scoper, _ := b.(StepScoper)
	alloc := func(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
		t, err := b.New(dt, shape...)
		if err == nil && scoper != nil {
			err = scoper.Persist(t)
		}
		return t, err
	}
	st := solverState{b: b, params: ps, names: names, bufs: make([][]*tensor.Dense, len(ps))}
	var err error
	if st.scale, err = alloc(tensor.Float64, 1); err != nil {
		return err
	}
	for i, p := range ps {
		for j := 0; j < nbuf; j++ {
			t, err := alloc(p.Dtype(), p.Shape()...)
			if err != nil {
				return errorf("optimizer state of %s: %w", names[i], err)
			}
			st.bufs[i] = append(st.bufs[i], t)
		}
	}
	*s = st
	return nil
}

// clipScale runs GradNormScale over all gradients (maxNorm 0: no clipping, the check for non-finite
// gradients only) and returns the clipping-factor tensor for the update kernels.
func (s *solverState) clipScale(gs []*tensor.Dense, maxNorm float64) (*tensor.Dense, error) {
	if maxNorm == 0 {
		maxNorm = math.Inf(1)
	}
	if err := s.b.GradNormScale(gs, maxNorm, s.scale); err != nil {
		return nil, errorf("gradients of %d parameters, no parameter changed: %w", len(gs), err)
	}
	return s.scale, nil
}

func paramName(vg G.ValueGrad, i int) string {
	if n, ok := vg.(G.Namer); ok && n.Name() != "" {
		return n.Name()
	}
	return "#" + strconv.Itoa(i)
}
