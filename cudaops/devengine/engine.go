package devengine

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Engine is a tensor.Engine over the memory of one device: a *tensor.Dense created with
// tensor.WithEngine(engine) allocates in device memory through the pool, its data pointer is a tagged
// device address, and it is flagged natively inaccessible. Host <-> device copies happen only through
// Memcpy between a host and a device Memory, or FromHost / ToHost. The arithmetic methods (see the
// package documentation) run the device's Kernels.
type Engine struct {
	pool *Pool
	k    Kernels
}

// NewEngine returns the engine of a device given its pool and kernels.
func NewEngine(pool *Pool, k Kernels) *Engine { return &Engine{pool: pool, k: k} }

// Pool returns the engine's memory pool.
func (e *Engine) Pool() *Pool { return e.pool }

// Kernels returns the device kernels the engine runs.
func (e *Engine) Kernels() Kernels { return e.k }

// mem is a tensor.Memory over a (tagged) device address.
type mem struct{ p, n uintptr }

func (m mem) Uintptr() uintptr { return m.p }
func (m mem) MemSize() uintptr { return m.n }

func (e *Engine) errorf(format string, args ...any) error {
	return fmt.Errorf(e.pool.name+" engine: "+format, args...)
}

// AllocAccessible reports false: device memory is not addressable from Go.
func (e *Engine) AllocAccessible() bool { return false }

// Alloc allocates size bytes of device memory: owned by the current training step, or, outside a step,
// by the caller until Free (tensor's internal allocations, e.g. Clone, are never freed by the tensor
// package: run training steps between BeginStep and EndStep).
func (e *Engine) Alloc(size int64) (tensor.Memory, error) {
	p, err := e.pool.Alloc(size)
	if err != nil {
		return nil, err
	}
	return mem{p, uintptr(size)}, nil
}

// Free returns memory from Alloc (or the memory of a tensor from NewDense) to the pool now.
func (e *Engine) Free(m tensor.Memory, size int64) error {
	if err := e.pool.Free(m.Uintptr()); err != nil {
		return e.errorf("Free: %w", err)
	}
	return nil
}

// where classifies an address range: live memory of this device (real address returned), host memory,
// or an error (released memory, another device's).
func (e *Engine) where(p uintptr, bytes int64) (real uintptr, device bool, err error) {
	if tagOf(p) == 0 {
		if e.pool.containsReal(p) {
			return 0, false, fmt.Errorf("%#x is internal memory of %s, not a tensor's: %w", p, e.pool.name, ops.ErrMixedBackends)
		}
		return 0, false, nil
	}
	real, err = e.pool.Resolve(p, bytes)
	return real, true, err
}

// Memset fills device memory with val (float32, float64, any integer type, or bool); host memory is
// filled on the host.
func (e *Engine) Memset(m tensor.Memory, val interface{}) error {
	var bits uint64
	var width int64
	switch v := val.(type) {
	case float32:
		bits, width = uint64(math.Float32bits(v)), 4
	case float64:
		bits, width = math.Float64bits(v), 8
	case int32:
		bits, width = uint64(uint32(v)), 4
	case uint32:
		bits, width = uint64(v), 4
	case int64:
		bits, width = uint64(v), 8
	case uint64:
		bits, width = v, 8
	case int:
		bits, width = uint64(v), 8
	case uint:
		bits, width = uint64(v), 8
	case int16:
		bits, width = uint64(uint16(v)), 2
	case uint16:
		bits, width = uint64(v), 2
	case int8:
		bits, width = uint64(uint8(v)), 1
	case uint8:
		bits, width = uint64(v), 1
	case bool:
		if v {
			bits = 1
		}
		width = 1
	default:
		return e.errorf("Memset: unsupported value type %T: %w", val, ops.ErrDtype)
	}
	n := int64(m.MemSize())
	if n%width != 0 {
		return e.errorf("Memset: %d bytes is not a multiple of the %d-byte value: %w", n, width, ops.ErrShape)
	}
	real, dev, err := e.where(m.Uintptr(), n)
	if err != nil {
		return e.errorf("Memset: %w", err)
	}
	if !dev {
		return HostKernels{}.Fill(m.Uintptr(), n/width, width, bits)
	}
	if n == 0 {
		return nil
	}
	return e.k.Fill(real, n/width, width, bits)
}

// Memclr zeroes memory (on the device for device memory). tensor.Engine gives it no error result: it
// panics on released memory or another device's memory rather than leave it unzeroed silently.
func (e *Engine) Memclr(m tensor.Memory) {
	n := int64(m.MemSize())
	real, dev, err := e.where(m.Uintptr(), n)
	if err == nil {
		if !dev {
			err = HostKernels{}.Fill(m.Uintptr(), n, 1, 0)
		} else if n > 0 {
			err = e.k.Fill(real, n, 1, 0)
		}
	}
	if err != nil {
		panic(e.errorf("Memclr: %w", err))
	}
}

// Memcpy copies between memories of equal size; either side may be host memory (a copy to the host
// waits for the device).
func (e *Engine) Memcpy(dst, src tensor.Memory) error {
	n := int64(dst.MemSize())
	if s := int64(src.MemSize()); s != n {
		return e.errorf("Memcpy: sizes differ (dst %d, src %d bytes): %w", n, s, ops.ErrShape)
	}
	dr, dd, err := e.where(dst.Uintptr(), n)
	if err != nil {
		return e.errorf("Memcpy destination: %w", err)
	}
	sr, sd, err := e.where(src.Uintptr(), n)
	if err != nil {
		return e.errorf("Memcpy source: %w", err)
	}
	if n == 0 {
		return nil
	}
	switch {
	case dd && sd:
		return e.k.Copy(dr, sr, n)
	case dd:
		return e.k.Upload(dr, hostPtr(src.Uintptr()), n)
	case sd:
		return e.k.Download(hostPtr(dst.Uintptr()), sr, n)
	}
	return HostKernels{}.Copy(dst.Uintptr(), src.Uintptr(), n)
}

// Accessible always fails: device memory cannot be handed to Go code; copy it with ToHost.
func (e *Engine) Accessible(m tensor.Memory) (tensor.Memory, error) {
	return nil, e.errorf("device memory at %#x is not accessible from the host; copy it with ToHost: %w", m.Uintptr(), ops.ErrUnsupported)
}

// WorksWith reports whether the kernels can use data in this order: row-major, contiguous.
func (e *Engine) WorksWith(order tensor.DataOrder) bool {
	return order.IsRowMajor() && order.IsContiguous()
}

// addrOf is the data address of a dense tensor (also for zero elements, where Uintptr panics).
func addrOf(t *tensor.Dense) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(t.Raw))) }

// numel is the number of elements of a dense tensor (1 for a scalar shape).
func numel(t *tensor.Dense) int {
	if t.Shape().IsScalar() {
		return 1
	}
	return t.Shape().TotalSize()
}

func bytesOf(t *tensor.Dense) int64 { return int64(numel(t)) * int64(t.Dtype().Size()) }

// Owns reports whether t is a tensor over this device's memory (live or released), by address.
func (e *Engine) Owns(t tensor.Tensor) bool {
	d, ok := t.(*tensor.Dense)
	return ok && d != nil && e.pool.Owns(addrOf(d))
}

// NewDense allocates an uninitialised device tensor (shape () for a scalar). Outside a training step
// the tensor owns its memory until it is garbage-collected or freed; inside a step the memory is the
// step's.
func (e *Engine) NewDense(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	n := 1
	for _, s := range shape {
		if s < 0 {
			return nil, e.errorf("NewDense: negative dimension in shape %v: %w", shape, ops.ErrShape)
		}
		n *= s
	}
	if dt.Type == nil || dt.Size() == 0 {
		return nil, e.errorf("NewDense: unsupported dtype %v: %w", dt, ops.ErrDtype)
	}
	bytes := int64(n) * int64(dt.Size())
	p, err := e.pool.Alloc(bytes)
	if err != nil {
		return nil, err
	}
	t := e.wrap(dt, shape, p, uintptr(bytes))
	if err := e.pool.Adopt(p, t); err != nil {
		return nil, err
	}
	return t, nil
}

// wrap makes a *tensor.Dense over existing device memory (no ownership).
func (e *Engine) wrap(dt tensor.Dtype, shape []int, p, bytes uintptr) *tensor.Dense {
	if len(shape) == 0 {
		return tensor.New(tensor.Of(dt), tensor.FromMemory(p, bytes), tensor.WithEngine(e))
	}
	return tensor.New(tensor.Of(dt), tensor.WithShape(shape...), tensor.FromMemory(p, bytes), tensor.WithEngine(e))
}

// View returns a tensor of the given shape over base's memory from element offset on (no copy); the
// view keeps base alive. offset + prod(shape) must not exceed base's size.
func (e *Engine) View(base *tensor.Dense, offset int, shape ...int) (*tensor.Dense, error) {
	if base == nil {
		return nil, e.errorf("View of a nil tensor: %w", ops.ErrShape)
	}
	n := tensor.Shape(shape).TotalSize()
	for _, s := range shape {
		if s < 0 {
			return nil, e.errorf("View: negative dimension in shape %v: %w", shape, ops.ErrShape)
		}
	}
	if offset < 0 || offset+n > numel(base) {
		return nil, e.errorf("View: elements [%d, %d) out of range of shape %v: %w", offset, offset+n, base.Shape(), ops.ErrShape)
	}
	if _, err := e.pool.Resolve(addrOf(base), bytesOf(base)); err != nil {
		return nil, e.errorf("View: %w", err)
	}
	sz := uintptr(base.Dtype().Size())
	v := e.wrap(base.Dtype(), shape, addrOf(base)+uintptr(offset)*sz, uintptr(n)*sz)
	// The pending cleanup holds base, so base (and the memory it owns) lives as long as the view.
	runtime.AddCleanup(v, func(*tensor.Dense) {}, base)
	return v, nil
}

// ViewAs returns a tensor of dtype dt and the given shape over base's memory from byteOffset on (no
// copy; the view keeps base alive): base's bytes read as another type (ops.Reinterpreter). The view
// must lie inside base and start aligned to dt's size.
func (e *Engine) ViewAs(base *tensor.Dense, dt tensor.Dtype, byteOffset int, shape ...int) (*tensor.Dense, error) {
	if base == nil {
		return nil, e.errorf("ViewAs of a nil tensor: %w", ops.ErrShape)
	}
	n := int64(tensor.Shape(shape).TotalSize())
	for _, s := range shape {
		if s < 0 {
			return nil, e.errorf("ViewAs: negative dimension in shape %v: %w", shape, ops.ErrShape)
		}
	}
	sz := int64(dt.Size())
	if sz == 0 || byteOffset < 0 || int64(byteOffset) > bytesOf(base) || n > (bytesOf(base)-int64(byteOffset))/sz {
		return nil, e.errorf("ViewAs: %v %v from byte %d is out of range of %v %v: %w", dt, shape, byteOffset, base.Dtype(), base.Shape(), ops.ErrShape)
	}
	p := addrOf(base) + uintptr(byteOffset)
	if p%uintptr(sz) != 0 {
		return nil, e.errorf("ViewAs: byte %d of the tensor is not aligned for %v: %w", byteOffset, dt, ops.ErrShape)
	}
	if _, err := e.pool.Resolve(addrOf(base), bytesOf(base)); err != nil {
		return nil, e.errorf("ViewAs: %w", err)
	}
	v := e.wrap(dt, shape, p, uintptr(n*sz))
	// The pending cleanup holds base, so base (and the memory it owns) lives as long as the view.
	runtime.AddCleanup(v, func(*tensor.Dense) {}, base)
	return v, nil
}

// FromHost copies a host tensor into a new device tensor (shape () becomes [1]).
func (e *Engine) FromHost(h *tensor.Dense) (*tensor.Dense, error) {
	if h == nil {
		return nil, e.errorf("FromHost of a nil tensor: %w", ops.ErrShape)
	}
	if tagOf(addrOf(h)) != 0 || e.pool.containsReal(addrOf(h)) {
		return nil, e.errorf("FromHost: the source is device memory, not a host tensor: %w", ops.ErrMixedBackends)
	}
	if !Contiguous(h) {
		if !h.IsNativelyAccessible() {
			return nil, e.errorf("FromHost: the source is a non-contiguous view labelled inaccessible; materialise it first: %w", ops.ErrUnsupported)
		}
		h = h.Materialize().(*tensor.Dense)
	}
	shape := h.Shape().Clone()
	if len(shape) == 0 {
		shape = tensor.Shape{1}
	}
	out, err := e.NewDense(h.Dtype(), shape...)
	if err != nil {
		return nil, err
	}
	n := int64(shape.TotalSize()) * int64(h.Dtype().Size())
	if n == 0 {
		return out, nil
	}
	if int64(len(h.Raw)) < n {
		return nil, e.errorf("FromHost: the source holds %d bytes, shape %v needs %d: %w", len(h.Raw), shape, n, ops.ErrShape)
	}
	err = e.k.Upload(Untag(addrOf(out)), unsafe.Pointer(&h.Raw[0]), n)
	runtime.KeepAlive(h)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ToHost copies a device tensor into a new host tensor (waits for the device; reports device faults).
func (e *Engine) ToHost(t *tensor.Dense) (*tensor.Dense, error) {
	if t == nil {
		return nil, e.errorf("ToHost of a nil tensor: %w", ops.ErrShape)
	}
	real, err := e.resolveContiguous("ToHost", "t", t)
	if err != nil {
		return nil, err
	}
	var out *tensor.Dense
	if t.Shape().IsScalar() {
		out = tensor.New(tensor.Of(t.Dtype()), tensor.WithShape())
	} else {
		out = tensor.New(tensor.Of(t.Dtype()), tensor.WithShape(t.Shape().Clone()...))
	}
	n := bytesOf(t)
	if n == 0 {
		return out, e.k.Download(nil, 0, 0)
	}
	err = e.k.Download(unsafe.Pointer(&out.Raw[0]), real, n)
	runtime.KeepAlive(out)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Contiguous reports whether a kernel can take t's data as one dense row-major block: t is not a
// transposed, strided or masked view. A tensor of zero elements always is (the tensor package reports
// zero-size tensors as needing an iterator, but there is nothing to iterate over).
func Contiguous(t *tensor.Dense) bool { return numel(t) == 0 || !t.RequiresIterator() }

// Resolve checks that t is a contiguous tensor (Contiguous) over live memory of this device and returns
// the real address of its data and its size in bytes; what and name describe the operand for errors.
// A tensor of zero elements resolves too (the kernel then touches nothing).
func (e *Engine) Resolve(what, name string, t *tensor.Dense) (real uintptr, bytes int64, err error) {
	if t == nil {
		return 0, 0, e.errorf("%s: %s is nil: %w", what, name, ops.ErrShape)
	}
	real, err = e.resolveContiguous(what, name, t)
	return real, bytesOf(t), err
}

// resolveContiguous checks that t is a contiguous tensor over live memory of this device and returns
// the real address of its data.
func (e *Engine) resolveContiguous(what, name string, t *tensor.Dense) (uintptr, error) {
	if !Contiguous(t) {
		return 0, e.errorf("%s: %s is a non-contiguous view (transposed, sliced off axis 0, or masked): %w", what, name, ops.ErrUnsupported)
	}
	real, err := e.pool.Resolve(addrOf(t), bytesOf(t))
	if err != nil {
		return 0, e.errorf("%s: %s: %w", what, name, err)
	}
	return real, nil
}

// Persist moves t's memory (allocated in the current training step) out of the step; see Pool.Persist.
func (e *Engine) Persist(t *tensor.Dense) error {
	if t == nil {
		return e.errorf("Persist of a nil tensor: %w", ops.ErrShape)
	}
	if err := e.pool.Persist(addrOf(t), bytesOf(t), t); err != nil {
		return e.errorf("%w", err)
	}
	return nil
}

// FreeTensor returns the memory of a tensor made by NewDense (or FromHost) to the pool now; t and its
// views must not be used afterwards (their checks report ErrReleased).
func (e *Engine) FreeTensor(t *tensor.Dense) error {
	if t == nil {
		return e.errorf("Free of a nil tensor: %w", ops.ErrShape)
	}
	if err := e.pool.Free(addrOf(t)); err != nil {
		return e.errorf("Free: %w", err)
	}
	return nil
}

var _ tensor.Engine = (*Engine)(nil)
