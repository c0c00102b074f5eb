//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// Backend implements ops.Backend over device tensors of one Device handle: every kernel method checks
// that its tensors live on this device with the documented dtypes and shapes (errors wrap
// ops.ErrShape, ops.ErrDtype, ops.ErrMixedBackends), then launches its kernels on the device's stream
// and returns without waiting. Errors that depend on data (an expert index outside [0, E):
// ops.ErrExpertIndex; a logits row with a NaN or +Inf, or all -Inf: ops.ErrNaN) are raised on the
// device and reported by the next ToHost, loss value or Synchronize, unless the handle's option
// SyncChecks makes the kernels that validate data wait and report at once.
//
// Linking this package registers with ops one backend per CUDA device present, named "cuda:N" (device
// 0's also answers to "cuda": ops.LookupBackend), which opens its device on first use, with default
// options unless OpenRegistered chose others first. Ops pick the registered backend that owns their
// tensors; a backend over a device of Open (NewBackend) is used by graphs once registered with ops.
type Backend struct {
	ord        int
	name       string
	registered bool // one of the backends this package registers (opened lazily)

	mu    sync.Mutex  // guards opening
	ready atomic.Bool // dev and eng are set (never changed afterwards)
	dev   *Device
	eng   *Engine
	err   error // why the device did not open
}

// registered holds the backends registered at init, by ordinal (set once by init, then only read).
var registered []*Backend

func init() {
	n, err := cu.NumDevices()
	if err != nil || n < 1 {
		n = 1 // device 0's backend reports the error when it is first used
	}
	for i := 0; i < n; i++ {
		b := &Backend{ord: i, name: fmt.Sprintf("cuda:%d", i), registered: true}
		if err := ops.Register(b); err != nil {
			b.err = err
		}
		registered = append(registered, b)
	}
}

// registeredBackend returns the registered backend of device ordinal (one that reports an error when
// there is no such device).
func registeredBackend(ordinal int) *Backend {
	if ordinal >= 0 && ordinal < len(registered) {
		return registered[ordinal]
	}
	return &Backend{ord: ordinal, name: fmt.Sprintf("cuda:%d", ordinal),
		err: fmt.Errorf("cudaops: no CUDA device %d (%d present): %w", ordinal, len(registered), ops.ErrConfig)}
}

// Registered returns the registered backend of device 0 (ops names "cuda:0" and "cuda").
func Registered() *Backend { return registeredBackend(0) }

// RegisteredBackend returns the registered backend of device ordinal (ops name "cuda:N").
func RegisteredBackend(ordinal int) (*Backend, error) {
	b := registeredBackend(ordinal)
	if b.err != nil && !b.ready.Load() {
		return nil, b.err
	}
	return b, nil
}

// OpenRegistered opens the device of the registered backend of ordinal with opts, so that every graph
// on its tensors runs with those options; call it before anything uses that backend. When the device
// is open already it returns it if its options are the ones asked for, else an error wrapping
// ops.ErrConfig (a device's options are fixed when it opens; Device.With gives other handles).
func OpenRegistered(ordinal int, opts ...Option) (*Device, error) {
	b := registeredBackend(ordinal)
	want, err := Options{}.apply(gemmVariantNames(), opts...)
	if err != nil {
		return nil, err
	}
	d, err := b.openWith(want)
	if err != nil {
		return nil, err
	}
	if d.opts != want {
		return nil, fmt.Errorf("cudaops: the registered device %d is open already, with options %v (asked: %v): %w", ordinal, d.opts, want, ops.ErrConfig)
	}
	return d, nil
}

// NewBackend returns a backend over an open device handle, named "cuda:N{options}" (N the ordinal,
// options as Options.String); it is not registered with ops (ops.Register does that).
func NewBackend(d *Device) *Backend {
	b := &Backend{ord: d.ord, name: fmt.Sprintf("cuda:%d{%v}", d.ord, d.opts), dev: d, eng: NewEngine(d)}
	b.ready.Store(true)
	return b
}

// openWith opens the backend's device with opts if nothing opened it yet, and returns it.
func (b *Backend) openWith(opts Options) (*Device, error) {
	if b.ready.Load() {
		return b.dev, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ready.Load() {
		return b.dev, nil
	}
	if b.err != nil {
		return nil, b.err
	}
	d, err := Open(b.ord, WithOptions(opts))
	if err != nil {
		b.err = err
		return nil, err
	}
	b.dev, b.eng = d, NewEngine(d)
	b.ready.Store(true)
	return d, nil
}

func (b *Backend) open() error {
	_, err := b.openWith(Options{})
	return err
}

// Device opens (on first use) and returns the backend's device.
func (b *Backend) Device() (*Device, error) { return b.openWith(Options{}) }

// Engine opens (on first use) and returns the tensor engine of the backend's device.
func (b *Backend) Engine() (*Engine, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	return b.eng, nil
}

// Synchronize waits for the device and reports pending device faults.
func (b *Backend) Synchronize() error {
	if err := b.open(); err != nil {
		return err
	}
	return b.dev.Synchronize()
}

// Name is "cuda:N" for the registered backend of device N, "cuda:N{options}" for one of NewBackend.
func (b *Backend) Name() string { return b.name }

// Aliases lists the other names of the backend for ops.LookupBackend: "cuda" for the registered
// backend of device 0.
func (b *Backend) Aliases() []string {
	if b.registered && b.ord == 0 {
		return []string{"cuda"}
	}
	return nil
}

// Owns reports whether t is a dense tensor over this device's memory. It goes by address, not by
// engine: Gorgonia's VMs relabel every value with the machine's engine, so a device tensor may carry
// another engine by the time an op sees it (device and host addresses never overlap: CUDA uses one
// virtual address space with the process, and device tensor addresses carry a generation tag). A
// tensor whose memory was released (freed, or its training step ended) is still this device's, so that
// the kernel methods report it (devengine.ErrReleased) rather than the CPU backend reading it.
func (b *Backend) Owns(t tensor.Tensor) bool {
	if !b.ready.Load() {
		return false // nothing can live on a device that was never opened
	}
	return b.eng.Owns(t)
}

// New allocates a zero-filled device tensor. A shape whose byte count overflows is refused
// (ops.ErrShape) before anything is allocated.
func (b *Backend) New(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	if len(shape) == 0 {
		return nil, fmt.Errorf("cudaops: New needs a shape: %w", ops.ErrShape)
	}
	if err := checkBytes(dt, shape); err != nil {
		return nil, err
	}
	t, err := b.eng.NewDense(dt, shape...)
	if err != nil {
		return nil, err
	}
	n := int64(tensor.Shape(shape).TotalSize()) * int64(dt.Size())
	if n > 0 {
		if err := b.dev.fill(cu.DevicePtr(devengine.Untag(t.Uintptr())), n, 1, 0); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Free returns the memory of a tensor made by New or FromHost to the allocator now (instead of when
// the tensor is garbage-collected or its step ends). t and its views must not be used afterwards.
func (b *Backend) Free(t *tensor.Dense) error {
	if err := b.open(); err != nil {
		return err
	}
	return b.eng.FreeTensor(t)
}

// View returns a device tensor of the given shape over t's memory from element offset on (no copy).
// The view keeps t's memory alive.
func (b *Backend) View(t *tensor.Dense, offset int, shape ...int) (*tensor.Dense, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	return b.eng.View(t, offset, shape...)
}

// ViewAs returns a tensor of dtype dt over t's memory from byteOffset on (ops.Reinterpreter; no copy).
func (b *Backend) ViewAs(t *tensor.Dense, dt tensor.Dtype, byteOffset int, shape ...int) (*tensor.Dense, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	return b.eng.ViewAs(t, dt, byteOffset, shape...)
}

// FromHost copies a contiguous host tensor to a new device tensor (synchronous).
func (b *Backend) FromHost(t *tensor.Dense) (*tensor.Dense, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	return b.eng.FromHost(t)
}

// ToHost copies a device tensor into a new host tensor (waits for the device; reports device faults).
func (b *Backend) ToHost(t *tensor.Dense) (*tensor.Dense, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	return b.eng.ToHost(t)
}

// buf validates a kernel operand: a contiguous tensor over live memory of this device with dtype dt
// (any dtype when dt is the zero Dtype and the dtype is checked elsewhere) and, when given, exactly this
// shape. It returns the real device address.
func (b *Backend) buf(what, name string, t *tensor.Dense, dt tensor.Dtype, shape ...int) (cu.DevicePtr, error) {
	if t == nil {
		return 0, fmt.Errorf("cudaops: %s: %s is nil: %w", what, name, ops.ErrShape)
	}
	if !b.Owns(t) {
		return 0, fmt.Errorf("cudaops: %s: %s is not a tensor of device %d (copy it with FromHost): %w", what, name, b.ord, ops.ErrMixedBackends)
	}
	if (dt != tensor.Dtype{}) && t.Dtype() != dt {
		return 0, fmt.Errorf("cudaops: %s: %s has dtype %v, want %v: %w", what, name, t.Dtype(), dt, ops.ErrDtype)
	}
	if len(shape) > 0 && !t.Shape().Eq(tensor.Shape(shape)) {
		return 0, fmt.Errorf("cudaops: %s: %s has shape %v, want %v: %w", what, name, t.Shape(), shape, ops.ErrShape)
	}
	// Zero-element operands are accepted (contiguous by definition; the kernels then touch nothing).
	p, _, err := b.eng.Resolve(what, name, t)
	if err != nil {
		return 0, fmt.Errorf("cudaops: %w", err)
	}
	return cu.DevicePtr(p), nil
}

func floatDtype(what string, t *tensor.Dense) (tensor.Dtype, error) {
	if t == nil {
		return tensor.Dtype{}, fmt.Errorf("cudaops: %s: nil tensor: %w", what, ops.ErrShape)
	}
	if dt := t.Dtype(); dt == tensor.Float32 || dt == tensor.Float64 {
		return dt, nil
	}
	return tensor.Dtype{}, fmt.Errorf("cudaops: %s: dtype %v, want float32 or float64: %w", what, t.Dtype(), ops.ErrDtype)
}

func dims2(what, name string, t *tensor.Dense) (int, int, error) {
	if t == nil || t.Shape().Dims() != 2 {
		return 0, 0, fmt.Errorf("cudaops: %s: %s must be a matrix: %w", what, name, ops.ErrShape)
	}
	return t.Shape()[0], t.Shape()[1], nil
}

// planExperts returns E from the plan length for T tokens and K experts per token.
func planExperts(what string, plan *tensor.Dense, T, K int) (int, error) {
	if plan == nil || plan.Shape().Dims() != 1 {
		return 0, fmt.Errorf("cudaops: %s: plan must be a vector: %w", what, ops.ErrShape)
	}
	rest := plan.Shape()[0] - 1 - 2*T*K
	if rest < 2 || rest%2 != 0 {
		return 0, fmt.Errorf("cudaops: %s: plan has %d elements, not 2E+1+2TK for T=%d, K=%d: %w", what, plan.Shape()[0], T, K, ops.ErrShape)
	}
	return rest / 2, nil
}

func (b *Backend) faultCheck() error {
	if b.dev.opts.SyncChecks {
		return b.dev.Synchronize()
	}
	return nil
}

// RouteIndices: idx [T,K] int32 = the K best experts of each token (see ops.Scoring), ties to the lower
// index.
func (b *Backend) RouteIndices(logits *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	return b.Route(logits, cfg, idx, nil)
}

// Route is the fused router: idx [T,K] and (when w is non-nil) w [T,K] in one kernel (RouteBiased
// without a bias).
func (b *Backend) Route(logits *tensor.Dense, cfg ops.RouteConfig, idx, w *tensor.Dense) error {
	return b.RouteBiased(logits, nil, cfg, idx, w)
}

// RouteBiased is the fused router with a selection bias [E] (Sigmoid scoring; nil: none).
func (b *Backend) RouteBiased(logits, bias *tensor.Dense, cfg ops.RouteConfig, idx, w *tensor.Dense) error {
	const what = "route"
	dt, err := floatDtype(what, logits)
	if err != nil {
		return err
	}
	T, E, err := dims2(what, "logits", logits)
	if err != nil {
		return err
	}
	if err := cfg.Validate(E); err != nil {
		return err
	}
	pl, err := b.buf(what, "logits", logits, dt, T, E)
	if err != nil {
		return err
	}
	pi, err := b.buf(what, "idx", idx, tensor.Int32, T, cfg.K)
	if err != nil {
		return err
	}
	var pw, pb cu.DevicePtr
	if w != nil {
		if pw, err = b.buf(what, "w", w, dt, T, cfg.K); err != nil {
			return err
		}
	}
	if cfg.Scoring == ops.Sigmoid {
		if bias != nil {
			if pb, err = b.buf(what, "bias", bias, dt, E); err != nil {
				return err
			}
		}
		if err := b.dev.RouteSigmoid(dt, pl, pb, pi, pw, T, E, cfg); err != nil {
			return err
		}
		return b.faultCheck()
	}
	if bias != nil {
		return fmt.Errorf("cudaops: route: a selection bias needs sigmoid scoring, got %v: %w", cfg.Scoring, ops.ErrConfig)
	}
	if err := b.dev.Route(dt, pl, pi, pw, T, E, cfg.K, !cfg.EffectiveRenormalize(), cfg.EffectiveScale()); err != nil {
		return err
	}
	return b.faultCheck()
}

// logitsIdxArgs validates the logits [T,E] and indices [T,K] operands shared by the route-weight kernels.
func (b *Backend) logitsIdxArgs(what string, logits, idx *tensor.Dense) (dt tensor.Dtype, pl, pi cu.DevicePtr, T, E, K int, err error) {
	if dt, err = floatDtype(what, logits); err != nil {
		return
	}
	if T, E, err = dims2(what, "logits", logits); err != nil {
		return
	}
	if _, K, err = dims2(what, "idx", idx); err != nil {
		return
	}
	if pl, err = b.buf(what, "logits", logits, dt, T, E); err != nil {
		return
	}
	pi, err = b.buf(what, "idx", idx, tensor.Int32, T, K)
	return
}

func (b *Backend) RouteWeights(logits, idx *tensor.Dense, cfg ops.RouteConfig, w *tensor.Dense) error {
	const what = "route weights"
	dt, pl, pi, T, E, K, err := b.logitsIdxArgs(what, logits, idx)
	if err != nil {
		return err
	}
	pw, err := b.buf(what, "w", w, dt, T, K)
	if err != nil {
		return err
	}
	if err := b.dev.RouteWeights(dt, pl, pi, pw, T, E, K, weightMode(cfg), cfg.EffectiveScale()); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) RouteWeightsGrad(logits, idx, dw *tensor.Dense, cfg ops.RouteConfig, dlogits *tensor.Dense) error {
	const what = "route weights grad"
	dt, pl, pi, T, E, K, err := b.logitsIdxArgs(what, logits, idx)
	if err != nil {
		return err
	}
	pdw, err := b.buf(what, "dw", dw, dt, T, K)
	if err != nil {
		return err
	}
	pdl, err := b.buf(what, "dlogits", dlogits, dt, T, E)
	if err != nil {
		return err
	}
	if err := b.dev.RouteWeightsGrad(dt, pl, pi, pdw, pdl, T, E, K, weightMode(cfg), cfg.EffectiveScale()); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) Plan(idx *tensor.Dense, numExperts int, plan *tensor.Dense) error {
	const what = "plan"
	T, K, err := dims2(what, "idx", idx)
	if err != nil {
		return err
	}
	if numExperts < 1 {
		return fmt.Errorf("cudaops: plan: number of experts must be >= 1, got %d: %w", numExperts, ops.ErrConfig)
	}
	pi, err := b.buf(what, "idx", idx, tensor.Int32, T, K)
	if err != nil {
		return err
	}
	pp, err := b.buf(what, "plan", plan, tensor.Int32, ops.PlanLen(T, K, numExperts))
	if err != nil {
		return err
	}
	if err := b.dev.Plan(pi, pp, T, K, numExperts); err != nil {
		return err
	}
	return b.faultCheck()
}

// permuteArgs validates the operands shared by dispatch and combine: tokens [T,H], packed [T*K,H],
// optional w [T,K], plan.
func (b *Backend) permuteArgs(what string, tokens, packed, w, plan *tensor.Dense) (dt tensor.Dtype, pt, pp, pw, rowOf, kept cu.DevicePtr, T, K, H int, err error) {
	if dt, err = floatDtype(what, tokens); err != nil {
		return
	}
	if T, H, err = dims2(what, "token rows", tokens); err != nil {
		return
	}
	var N, H2 int
	if N, H2, err = dims2(what, "expert-major rows", packed); err != nil {
		return
	}
	if H2 != H || T == 0 || N%T != 0 {
		err = fmt.Errorf("cudaops: %s: shapes %v and %v are not [T,H] and [T*K,H]: %w", what, tokens.Shape(), packed.Shape(), ops.ErrShape)
		return
	}
	K = N / T
	var E int
	if E, err = planExperts(what, plan, T, K); err != nil {
		return
	}
	if pt, err = b.buf(what, "token rows", tokens, dt, T, H); err != nil {
		return
	}
	if pp, err = b.buf(what, "expert-major rows", packed, dt, N, H); err != nil {
		return
	}
	if w != nil {
		if pw, err = b.buf(what, "w", w, dt, T, K); err != nil {
			return
		}
	}
	var pplan cu.DevicePtr
	if pplan, err = b.buf(what, "plan", plan, tensor.Int32, ops.PlanLen(T, K, E)); err != nil {
		return
	}
	var offsets cu.DevicePtr
	_, offsets, rowOf, _ = PlanSections(pplan, T, K, E)
	kept = offsetPtr(offsets, int64(E)*4)
	return
}

func (b *Backend) Dispatch(x, w, plan *tensor.Dense, out *tensor.Dense) error {
	dt, px, pout, pw, rowOf, kept, T, K, H, err := b.permuteArgs("dispatch", x, out, w, plan)
	if err != nil {
		return err
	}
	return b.dev.Dispatch(dt, px, pw, rowOf, kept, pout, T, K, H)
}

func (b *Backend) Combine(ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	dt, pout, pye, pw, rowOf, kept, T, K, H, err := b.permuteArgs("combine", out, ye, w, plan)
	if err != nil {
		return err
	}
	return b.dev.Combine(dt, pye, pw, rowOf, kept, pout, T, K, H)
}

func (b *Backend) CombineGradWeights(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	dt, pdy, pye, _, rowOf, kept, T, K, H, err := b.permuteArgs("combine grad weights", dy, ye, nil, plan)
	if err != nil {
		return err
	}
	pdw, err := b.buf("combine grad weights", "dw", dw, dt, T, K)
	if err != nil {
		return err
	}
	return b.dev.CombineBackward(dt, pdy, pye, 0, rowOf, kept, pdw, 0, T, K, H)
}

// CombineBackward is the fused backward of Combine: dye [T*K,H] = Dispatch(dy, w) and
// dw [T,K] = CombineGradWeights(dy, ye) in one pass over dy and ye (bitwise equal to the two calls).
func (b *Backend) CombineBackward(dy, ye, w, plan *tensor.Dense, dye, dw *tensor.Dense) error {
	const what = "combine backward"
	dt, pdy, pye, pw, rowOf, kept, T, K, H, err := b.permuteArgs(what, dy, ye, w, plan)
	if err != nil {
		return err
	}
	if w == nil {
		return fmt.Errorf("cudaops: %s: w is nil: %w", what, ops.ErrShape)
	}
	pdw, err := b.buf(what, "dw", dw, dt, T, K)
	if err != nil {
		return err
	}
	pdye, err := b.buf(what, "dye", dye, dt, T*K, H)
	if err != nil {
		return err
	}
	return b.dev.CombineBackward(dt, pdy, pye, pw, rowOf, kept, pdw, pdye, T, K, H)
}

// lossArgs validates logits [T,E], and (when plan is non-nil) a plan of T tokens over E experts with
// K >= 1 experts per token and an optional token mask [T] int32.
func (b *Backend) lossArgs(what string, logits, plan, mask *tensor.Dense) (dt tensor.Dtype, pl, pp, pm cu.DevicePtr, T, K, E int, err error) {
	if dt, err = floatDtype(what, logits); err != nil {
		return
	}
	if T, E, err = dims2(what, "logits", logits); err != nil {
		return
	}
	if pl, err = b.buf(what, "logits", logits, dt, T, E); err != nil {
		return
	}
	if plan == nil {
		return
	}
	if plan.Shape().Dims() != 1 || plan.Shape()[0] < 2*E+1 || (plan.Shape()[0]-2*E-1)%(2*T) != 0 || plan.Shape()[0] == 2*E+1 {
		err = fmt.Errorf("cudaops: %s: plan of shape %v is not a plan for T=%d, E=%d: %w", what, plan.Shape(), T, E, ops.ErrShape)
		return
	}
	K = (plan.Shape()[0] - 2*E - 1) / (2 * T)
	if pp, err = b.buf(what, "plan", plan, tensor.Int32); err != nil {
		return
	}
	if mask != nil {
		pm, err = b.buf(what, "mask", mask, tensor.Int32, T)
	}
	return
}

// scalarArg validates a one-element output or upstream-gradient tensor of dtype dt (g may be nil).
func (b *Backend) scalarArg(what, name string, t *tensor.Dense, dt tensor.Dtype, optional bool) (cu.DevicePtr, error) {
	if t == nil && optional {
		return 0, nil
	}
	if t == nil || t.Shape().TotalSize() != 1 {
		return 0, fmt.Errorf("cudaops: %s: %s must be a one-element tensor: %w", what, name, ops.ErrShape)
	}
	return b.buf(what, name, t, dt)
}

func (b *Backend) LoadBalancingLoss(logits, plan, mask *tensor.Dense, coef float64, loss *tensor.Dense) error {
	const what = "load-balancing loss"
	if plan == nil {
		return fmt.Errorf("cudaops: %s: plan is nil: %w", what, ops.ErrShape)
	}
	dt, pl, pp, pm, T, K, E, err := b.lossArgs(what, logits, plan, mask)
	if err != nil {
		return err
	}
	po, err := b.scalarArg(what, "loss", loss, dt, false)
	if err != nil {
		return err
	}
	if err := b.dev.LoadBalancingLoss(dt, pl, pp, pm, po, T, K, E, coef); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) LoadBalancingLossGrad(logits, plan, mask *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	const what = "load-balancing loss grad"
	if plan == nil {
		return fmt.Errorf("cudaops: %s: plan is nil: %w", what, ops.ErrShape)
	}
	dt, pl, pp, pm, T, K, E, err := b.lossArgs(what, logits, plan, mask)
	if err != nil {
		return err
	}
	pg, err := b.scalarArg(what, "upstream gradient", g, dt, true)
	if err != nil {
		return err
	}
	pd, err := b.buf(what, "dlogits", dlogits, dt, T, E)
	if err != nil {
		return err
	}
	if err := b.dev.LoadBalancingLossGrad(dt, pl, pp, pm, pg, pd, T, K, E, scale); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) ZLoss(logits *tensor.Dense, coef float64, loss *tensor.Dense) error {
	const what = "z-loss"
	dt, pl, _, _, T, _, E, err := b.lossArgs(what, logits, nil, nil)
	if err != nil {
		return err
	}
	po, err := b.scalarArg(what, "loss", loss, dt, false)
	if err != nil {
		return err
	}
	if err := b.dev.ZLoss(dt, pl, po, T, E, coef); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) ZLossGrad(logits *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	const what = "z-loss grad"
	dt, pl, _, _, T, _, E, err := b.lossArgs(what, logits, nil, nil)
	if err != nil {
		return err
	}
	pg, err := b.scalarArg(what, "upstream gradient", g, dt, true)
	if err != nil {
		return err
	}
	pd, err := b.buf(what, "dlogits", dlogits, dt, T, E)
	if err != nil {
		return err
	}
	if err := b.dev.ZLossGrad(dt, pl, pg, pd, T, E, scale); err != nil {
		return err
	}
	return b.faultCheck()
}

var _ ops.Backend = (*Backend)(nil)
