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

func (b *Backend) faultCheck() error {
	if b.dev.opts.SyncChecks {
		return b.dev.Synchronize()
	}
	return nil
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

var _ ops.Backend = (*Backend)(nil)

// numel is the element count of a tensor (1 for a scalar shape).
func numel(t *tensor.Dense) int {
	if t.Shape().IsScalar() {
		return 1
	}
	return t.Shape().TotalSize()
}

// shapeOf is t's shape, nil for a nil tensor (for messages).
func shapeOf(t *tensor.Dense) tensor.Shape {
	if t == nil {
		return nil
	}
	return t.Shape()
}
