//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// Backend implements ops.Backend over device tensors of one Device: every kernel method checks that its
// tensors live on this device with the documented dtypes and shapes, then launches its kernels on the
// device's stream and returns without waiting. Errors that depend on data (an expert index outside
// [0, E)) are raised on the device and reported by the next ToHost, loss value or Synchronize, unless
// SetSyncChecks(true) makes the kernels that validate indices wait and report at once.
//
// The backend registered with ops.Register (name "cuda") opens device 0 on first use.
type Backend struct {
	once sync.Once
	ord  int
	dev  *Device
	eng  *Engine
	err  error

	syncChecks bool
}

var registered = &Backend{ord: 0}

func init() { ops.Register(registered) }

// Registered returns the backend registered with ops under the name "cuda" (device 0).
func Registered() *Backend { return registered }

// NewBackend returns a backend over an open device (not registered with ops).
func NewBackend(d *Device) *Backend {
	b := &Backend{ord: d.ord, dev: d, eng: NewEngine(d)}
	b.once.Do(func() {})
	return b
}

func (b *Backend) open() error {
	b.once.Do(func() {
		var d *Device
		if d, b.err = Default(); b.err == nil {
			b.dev, b.eng = d, NewEngine(d)
		}
	})
	return b.err
}

// Device opens (on first use) and returns the backend's device.
func (b *Backend) Device() (*Device, error) { return b.dev, b.open() }

// Engine opens (on first use) and returns the tensor engine of the backend's device.
func (b *Backend) Engine() (*Engine, error) { return b.eng, b.open() }

// SetSyncChecks makes Plan, RouteWeights and RouteWeightsGrad synchronise and return device faults
// (out-of-range expert indices) from the call itself. Off by default: the plan is then built without
// any host synchronisation and faults surface at the next synchronising call.
func (b *Backend) SetSyncChecks(on bool) { b.syncChecks = on }

// Synchronize waits for the device and reports pending device faults.
func (b *Backend) Synchronize() error {
	if err := b.open(); err != nil {
		return err
	}
	return b.dev.Synchronize()
}

func (b *Backend) Name() string { return "cuda" }

// Owns reports whether t is a dense tensor whose memory lies in a live block of this device. It goes by
// address, not by engine: Gorgonia's VMs relabel every value with the machine's engine, so a device
// tensor may carry another engine by the time an op sees it (device and host addresses never overlap:
// CUDA uses one virtual address space with the process).
func (b *Backend) Owns(t tensor.Tensor) bool {
	if b.dev == nil {
		return false // nothing can live on a device that was never opened
	}
	d, ok := t.(*tensor.Dense)
	if !ok || d == nil || d.IsNativelyAccessible() {
		return false
	}
	return b.eng.IsDevice(d.Uintptr())
}

// New allocates a zero-filled device tensor.
func (b *Backend) New(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	t, err := b.eng.NewDense(dt, shape...)
	if err != nil {
		return nil, err
	}
	b.eng.Memclr(devMem{t.Uintptr(), uintptr(t.Shape().TotalSize() * int(dt.Size()))})
	return t, nil
}

// Free returns the memory of a tensor made by New or FromHost to the allocator now (instead of when
// the tensor is garbage-collected). t must not be used afterwards.
func (b *Backend) Free(t *tensor.Dense) error {
	if !b.Owns(t) {
		return fmt.Errorf("cudaops: Free: tensor is not a device tensor of %s", b.Name())
	}
	return b.eng.Free(devMem{t.Uintptr(), 0}, 0)
}

// View returns a device tensor of the given shape over t's memory from element offset on (no copy).
// The view keeps t's memory alive.
func (b *Backend) View(t *tensor.Dense, offset int, shape ...int) (*tensor.Dense, error) {
	if t == nil || !b.Owns(t) {
		return nil, fmt.Errorf("cudaops: View: tensor is not a device tensor of %s", b.Name())
	}
	n := tensor.Shape(shape).TotalSize()
	if offset < 0 || n < 0 || offset+n > t.Shape().TotalSize() {
		return nil, fmt.Errorf("cudaops: View: elements [%d, %d) out of range of shape %v", offset, offset+n, t.Shape())
	}
	return b.eng.View(t, offset, shape...), nil
}

// FromHost copies a contiguous host tensor to a new device tensor (synchronous).
func (b *Backend) FromHost(t *tensor.Dense) (*tensor.Dense, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("cudaops: FromHost of nil tensor")
	}
	if !t.IsNativelyAccessible() {
		return nil, fmt.Errorf("cudaops: FromHost: source is not host memory")
	}
	if t.IsMaterializable() {
		t = t.Materialize().(*tensor.Dense)
	}
	shape := t.Shape().Clone()
	if len(shape) == 0 {
		shape = tensor.Shape{1}
	}
	out, err := b.eng.NewDense(t.Dtype(), shape...)
	if err != nil {
		return nil, err
	}
	n := int64(shape.TotalSize() * int(t.Dtype().Size()))
	if n > 0 {
		if int64(len(t.Raw)) < n {
			return nil, fmt.Errorf("cudaops: FromHost: source holds %d bytes, shape %v needs %d", len(t.Raw), shape, n)
		}
		err = b.dev.copyHtoD(cu.DevicePtr(out.Uintptr()), unsafe.Pointer(&t.Raw[0]), n)
		runtime.KeepAlive(t)
	}
	return out, err
}

// ToHost copies a device tensor into a new host tensor (waits for the device; reports device faults).
func (b *Backend) ToHost(t *tensor.Dense) (*tensor.Dense, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	p, err := b.buf("ToHost", "t", t, tensor.Dtype{})
	if err != nil {
		return nil, err
	}
	out := tensor.New(tensor.Of(t.Dtype()), tensor.WithShape(t.Shape().Clone()...))
	n := int64(t.Shape().TotalSize() * int(t.Dtype().Size()))
	if n == 0 {
		return out, b.dev.Synchronize()
	}
	err = b.dev.copyDtoH(unsafe.Pointer(&out.Raw[0]), p, n)
	runtime.KeepAlive(out)
	return out, err
}

// buf validates a kernel operand: a contiguous device tensor of this backend with dtype dt (any float
// when dt is the zero Dtype and the dtype is checked elsewhere) and, when given, exactly this shape.
func (b *Backend) buf(what, name string, t *tensor.Dense, dt tensor.Dtype, shape ...int) (cu.DevicePtr, error) {
	if t == nil {
		return 0, fmt.Errorf("cudaops: %s: %s is nil", what, name)
	}
	if !b.Owns(t) {
		return 0, fmt.Errorf("cudaops: %s: %s is not a tensor of device %d (copy it with FromHost)", what, name, b.ord)
	}
	if (dt != tensor.Dtype{}) && t.Dtype() != dt {
		return 0, fmt.Errorf("cudaops: %s: %s has dtype %v, want %v", what, name, t.Dtype(), dt)
	}
	if len(shape) > 0 && !t.Shape().Eq(tensor.Shape(shape)) {
		return 0, fmt.Errorf("cudaops: %s: %s has shape %v, want %v", what, name, t.Shape(), shape)
	}
	if t.IsMaterializable() {
		return 0, fmt.Errorf("cudaops: %s: %s is a non-contiguous view", what, name)
	}
	p := t.Uintptr()
	bytes := uintptr(t.Shape().TotalSize() * int(t.Dtype().Size()))
	b.dev.mu.Lock()
	base, size, ok := b.dev.alloc.block(p)
	b.dev.mu.Unlock()
	if !ok || p+bytes > uintptr(base)+uintptr(size) {
		return 0, fmt.Errorf("cudaops: %s: %s (%d bytes at %#x) is not inside a live device block", what, name, bytes, p)
	}
	return cu.DevicePtr(p), nil
}

func floatDtype(what string, t *tensor.Dense) (tensor.Dtype, error) {
	if t == nil {
		return tensor.Dtype{}, fmt.Errorf("cudaops: %s: nil tensor", what)
	}
	if dt := t.Dtype(); dt == tensor.Float32 || dt == tensor.Float64 {
		return dt, nil
	}
	return tensor.Dtype{}, fmt.Errorf("cudaops: %s: dtype %v, want float32 or float64", what, t.Dtype())
}

func dims2(what, name string, t *tensor.Dense) (int, int, error) {
	if t == nil || t.Shape().Dims() != 2 {
		return 0, 0, fmt.Errorf("cudaops: %s: %s must be a matrix", what, name)
	}
	return t.Shape()[0], t.Shape()[1], nil
}

// planDims returns E from the plan length for T tokens and K experts per token.
func planExperts(what string, plan *tensor.Dense, T, K int) (int, error) {
	if plan == nil || plan.Shape().Dims() != 1 {
		return 0, fmt.Errorf("cudaops: %s: plan must be a vector", what)
	}
	rest := plan.Shape()[0] - 1 - 2*T*K
	if rest < 2 || rest%2 != 0 {
		return 0, fmt.Errorf("cudaops: %s: plan has %d elements, not 2E+1+2TK for T=%d, K=%d", what, plan.Shape()[0], T, K)
	}
	return rest / 2, nil
}

func (b *Backend) faultCheck() error {
	if b.syncChecks {
		return b.dev.Synchronize()
	}
	return nil
}

// RouteIndices: idx [T,K] int32 = the K largest logits of each token, ties to the lower index.
func (b *Backend) RouteIndices(logits *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	return b.Route(logits, cfg, idx, nil)
}

// Route is the fused router: idx [T,K] and (when w is non-nil) w [T,K] in one kernel.
func (b *Backend) Route(logits *tensor.Dense, cfg ops.RouteConfig, idx, w *tensor.Dense) error {
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
	var pw cu.DevicePtr
	if w != nil {
		if pw, err = b.buf(what, "w", w, dt, T, cfg.K); err != nil {
			return err
		}
	}
	return b.dev.Route(dt, pl, pi, pw, T, E, cfg.K, !cfg.EffectiveRenormalize())
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
	if err := b.dev.RouteWeights(dt, pl, pi, pw, T, E, K, !cfg.EffectiveRenormalize()); err != nil {
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
	if err := b.dev.RouteWeightsGrad(dt, pl, pi, pdw, pdl, T, E, K, !cfg.EffectiveRenormalize()); err != nil {
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
		return fmt.Errorf("cudaops: plan: number of experts must be >= 1, got %d", numExperts)
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
func (b *Backend) permuteArgs(what string, tokens, packed, w, plan *tensor.Dense) (dt tensor.Dtype, pt, pp, pw, rowOf cu.DevicePtr, T, K, H int, err error) {
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
		err = fmt.Errorf("cudaops: %s: shapes %v and %v are not [T,H] and [T*K,H]", what, tokens.Shape(), packed.Shape())
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
	_, _, rowOf, _ = PlanSections(pplan, T, K, E)
	return
}

func (b *Backend) Dispatch(x, w, plan *tensor.Dense, out *tensor.Dense) error {
	dt, px, pout, pw, rowOf, T, K, H, err := b.permuteArgs("dispatch", x, out, w, plan)
	if err != nil {
		return err
	}
	return b.dev.Dispatch(dt, px, pw, rowOf, pout, T, K, H)
}

func (b *Backend) Combine(ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	dt, pout, pye, pw, rowOf, T, K, H, err := b.permuteArgs("combine", out, ye, w, plan)
	if err != nil {
		return err
	}
	return b.dev.Combine(dt, pye, pw, rowOf, pout, T, K, H)
}

func (b *Backend) CombineGradWeights(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	dt, pdy, pye, _, rowOf, T, K, H, err := b.permuteArgs("combine grad weights", dy, ye, nil, plan)
	if err != nil {
		return err
	}
	pdw, err := b.buf("combine grad weights", "dw", dw, dt, T, K)
	if err != nil {
		return err
	}
	return b.dev.CombineBackward(dt, pdy, pye, 0, rowOf, pdw, 0, T, K, H)
}

// CombineBackward is the fused backward of Combine: dye [T*K,H] = Dispatch(dy, w) and
// dw [T,K] = CombineGradWeights(dy, ye) in one pass over dy and ye (bitwise equal to the two calls).
func (b *Backend) CombineBackward(dy, ye, w, plan *tensor.Dense, dye, dw *tensor.Dense) error {
	const what = "combine backward"
	dt, pdy, pye, pw, rowOf, T, K, H, err := b.permuteArgs(what, dy, ye, w, plan)
	if err != nil {
		return err
	}
	if w == nil {
		return fmt.Errorf("cudaops: %s: w is nil", what)
	}
	pdw, err := b.buf(what, "dw", dw, dt, T, K)
	if err != nil {
		return err
	}
	pdye, err := b.buf(what, "dye", dye, dt, T*K, H)
	if err != nil {
		return err
	}
	return b.dev.CombineBackward(dt, pdy, pye, pw, rowOf, pdw, pdye, T, K, H)
}

// lossArgs validates logits [T,E] and a plan whose counts section is read (plan length 2E+1+2TK for
// some K >= 1).
func (b *Backend) lossArgs(what string, logits, plan *tensor.Dense) (tensor.Dtype, cu.DevicePtr, cu.DevicePtr, int, int, error) {
	dt, err := floatDtype(what, logits)
	if err != nil {
		return dt, 0, 0, 0, 0, err
	}
	T, E, err := dims2(what, "logits", logits)
	if err != nil {
		return dt, 0, 0, 0, 0, err
	}
	pl, err := b.buf(what, "logits", logits, dt, T, E)
	if err != nil {
		return dt, 0, 0, 0, 0, err
	}
	var pc cu.DevicePtr
	if plan != nil {
		if plan.Shape().Dims() != 1 || plan.Shape()[0] < 2*E+1 || (plan.Shape()[0]-2*E-1)%(2*T) != 0 {
			return dt, 0, 0, 0, 0, fmt.Errorf("cudaops: %s: plan of shape %v is not a plan for T=%d, E=%d", what, plan.Shape(), T, E)
		}
		if pc, err = b.buf(what, "plan", plan, tensor.Int32); err != nil {
			return dt, 0, 0, 0, 0, err
		}
	}
	return dt, pl, pc, T, E, nil
}

// scalarArgs validates a one-element output or upstream-gradient tensor of dtype dt (g may be nil).
func (b *Backend) scalarArg(what, name string, t *tensor.Dense, dt tensor.Dtype, optional bool) (cu.DevicePtr, error) {
	if t == nil && optional {
		return 0, nil
	}
	if t == nil || t.Shape().TotalSize() != 1 {
		return 0, fmt.Errorf("cudaops: %s: %s must be a one-element tensor: %w", what, name, ops.ErrShape)
	}
	return b.buf(what, name, t, dt)
}

func (b *Backend) LoadBalancingLoss(logits, plan *tensor.Dense, coef float64, loss *tensor.Dense) error {
	const what = "load-balancing loss"
	dt, pl, pc, T, E, err := b.lossArgs(what, logits, plan)
	if err != nil {
		return err
	}
	if plan == nil {
		return fmt.Errorf("cudaops: %s: plan is nil", what)
	}
	po, err := b.scalarArg(what, "loss", loss, dt, false)
	if err != nil {
		return err
	}
	return b.dev.LoadBalancingLoss(dt, pl, pc, po, T, E, coef)
}

func (b *Backend) LoadBalancingLossGrad(logits, plan *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	const what = "load-balancing loss grad"
	dt, pl, pc, T, E, err := b.lossArgs(what, logits, plan)
	if err != nil {
		return err
	}
	if plan == nil {
		return fmt.Errorf("cudaops: %s: plan is nil", what)
	}
	pg, err := b.scalarArg(what, "upstream gradient", g, dt, true)
	if err != nil {
		return err
	}
	pd, err := b.buf(what, "dlogits", dlogits, dt, T, E)
	if err != nil {
		return err
	}
	return b.dev.LoadBalancingLossGrad(dt, pl, pc, pg, pd, T, E, scale)
}

func (b *Backend) ZLoss(logits *tensor.Dense, coef float64, loss *tensor.Dense) error {
	const what = "z-loss"
	dt, pl, _, T, E, err := b.lossArgs(what, logits, nil)
	if err != nil {
		return err
	}
	po, err := b.scalarArg(what, "loss", loss, dt, false)
	if err != nil {
		return err
	}
	return b.dev.ZLoss(dt, pl, po, T, E, coef)
}

func (b *Backend) ZLossGrad(logits *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	const what = "z-loss grad"
	dt, pl, _, T, E, err := b.lossArgs(what, logits, nil)
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
	return b.dev.ZLossGrad(dt, pl, pg, pd, T, E, scale)
}

var _ ops.Backend = (*Backend)(nil)
