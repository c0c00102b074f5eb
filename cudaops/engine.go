//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// Engine is a tensor.Engine over the memory of one Device: a *tensor.Dense created with
// tensor.WithEngine(engine) allocates on the GPU, and its data pointer is a device address (the tensor
// is flagged natively inaccessible, so host code cannot read it by accident). Host <-> device copies
// happen only through Memcpy between a host and a device Memory, or Backend.FromHost / ToHost.
//
// Memory lifetime: memory from Alloc is returned with Free. Tensors created by NewDense (and by the
// Backend's New and FromHost) own their memory: it goes back to the allocator when the tensor is freed
// with Backend.Free or, failing that, when the *tensor.Dense is garbage-collected. Views of such a tensor
// (slices, reshapes that share memory) must not outlive it.
//
// Engine also implements tensor.Adder for device tensors (Add; the gradient sums Gorgonia's Grad inserts).
type Engine struct {
	d *Device

	mu       sync.Mutex
	cleanups map[uintptr]runtime.Cleanup
}

// devMem is a tensor.Memory for a device address.
type devMem struct{ p, n uintptr }

func (m devMem) Uintptr() uintptr { return m.p }
func (m devMem) MemSize() uintptr { return m.n }

// NewEngine returns the tensor engine of d.
func NewEngine(d *Device) *Engine { return &Engine{d: d, cleanups: map[uintptr]runtime.Cleanup{}} }

// Device returns the engine's device.
func (e *Engine) Device() *Device { return e.d }

// AllocAccessible reports false: device memory is not addressable from Go.
func (e *Engine) AllocAccessible() bool { return false }

// Alloc allocates size bytes of device memory from the caching allocator.
func (e *Engine) Alloc(size int64) (tensor.Memory, error) {
	p, err := e.d.alloc.get(size)
	if err != nil {
		return nil, err
	}
	return devMem{uintptr(p), uintptr(size)}, nil
}

// Free returns memory from Alloc to the allocator.
func (e *Engine) Free(mem tensor.Memory, size int64) error {
	e.stopCleanup(mem.Uintptr())
	return e.d.alloc.put(cu.DevicePtr(mem.Uintptr()))
}

// Memset fills mem with val (float32, float64, any integer type, or bool), on the stream.
func (e *Engine) Memset(mem tensor.Memory, val interface{}) error {
	p, n := cu.DevicePtr(mem.Uintptr()), int64(mem.MemSize())
	if !e.IsDevice(mem.Uintptr()) {
		return fmt.Errorf("cudaops: Memset: %#x is not device memory of %s", mem.Uintptr(), e.d.name)
	}
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
		return fmt.Errorf("cudaops: Memset: unsupported value type %T", val)
	}
	if n%width != 0 {
		return fmt.Errorf("cudaops: Memset: %d bytes is not a multiple of the %d-byte value", n, width)
	}
	return e.d.fill(p, n/width, width, bits)
}

// Memclr zeroes mem on the stream.
func (e *Engine) Memclr(mem tensor.Memory) {
	_ = e.d.do(func() error {
		return cu.MemsetD8Async(cu.DevicePtr(mem.Uintptr()), 0, int64(mem.MemSize()), e.d.stream)
	})
}

// Memcpy copies min(dst, src) bytes; either side may be host memory (then the copy is synchronous).
func (e *Engine) Memcpy(dst, src tensor.Memory) error {
	n := int64(dst.MemSize())
	if s := int64(src.MemSize()); s != n {
		return fmt.Errorf("cudaops: Memcpy: sizes differ (dst %d, src %d bytes)", n, s)
	}
	dd, sd := e.IsDevice(dst.Uintptr()), e.IsDevice(src.Uintptr())
	switch {
	case dd && sd:
		return e.d.copyDtoD(cu.DevicePtr(dst.Uintptr()), cu.DevicePtr(src.Uintptr()), n)
	case dd:
		return e.d.copyHtoD(cu.DevicePtr(dst.Uintptr()), hostPointer(src.Uintptr()), n)
	case sd:
		return e.d.copyDtoH(hostPointer(dst.Uintptr()), cu.DevicePtr(src.Uintptr()), n)
	}
	return fmt.Errorf("cudaops: Memcpy: neither side is device memory of %s", e.d.name)
}

// hostPointer turns the address of host memory handed over as a tensor.Memory back into a pointer for
// the copy. The caller's tensor owns that memory and keeps it alive across the call; Go's collector
// does not move heap memory.
func hostPointer(u uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&u)) }

// Accessible always fails: device memory cannot be handed to Go code; copy it with Backend.ToHost.
func (e *Engine) Accessible(mem tensor.Memory) (tensor.Memory, error) {
	return nil, fmt.Errorf("cudaops: device memory at %#x is not accessible from the host; use ToHost", mem.Uintptr())
}

// WorksWith reports whether the kernels can use data in this order: row-major, contiguous.
func (e *Engine) WorksWith(order tensor.DataOrder) bool {
	return order.IsRowMajor() && order.IsContiguous()
}

// IsDevice reports whether address p lies in a live block of this engine's device.
func (e *Engine) IsDevice(p uintptr) bool {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	_, _, ok := e.d.alloc.block(p)
	return ok
}

// NewDense allocates an uninitialised device tensor that owns its memory.
func (e *Engine) NewDense(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	n := 1
	for _, s := range shape {
		if s < 0 {
			return nil, fmt.Errorf("cudaops: negative dimension in shape %v", shape)
		}
		n *= s
	}
	if len(shape) == 0 {
		return nil, fmt.Errorf("cudaops: a device tensor needs a shape")
	}
	bytes := int64(n) * int64(dt.Size())
	p, err := e.d.alloc.get(bytes)
	if err != nil {
		return nil, err
	}
	t := e.wrap(dt, shape, uintptr(p), uintptr(bytes))
	c := runtime.AddCleanup(t, e.release, uintptr(p))
	e.mu.Lock()
	e.cleanups[uintptr(p)] = c
	e.mu.Unlock()
	return t, nil
}

// wrap makes a *tensor.Dense over existing device memory (no ownership).
func (e *Engine) wrap(dt tensor.Dtype, shape []int, p, bytes uintptr) *tensor.Dense {
	return tensor.New(tensor.Of(dt), tensor.WithShape(shape...), tensor.FromMemory(p, bytes), tensor.WithEngine(e))
}

// release is the cleanup of an owning tensor.
func (e *Engine) release(p uintptr) {
	e.mu.Lock()
	delete(e.cleanups, p)
	e.mu.Unlock()
	_ = e.d.alloc.put(cu.DevicePtr(p))
}

func (e *Engine) stopCleanup(p uintptr) {
	e.mu.Lock()
	if c, ok := e.cleanups[p]; ok {
		c.Stop()
		delete(e.cleanups, p)
	}
	e.mu.Unlock()
}

// Add computes a + b elementwise for device tensors of one dtype (float32/float64) and shape. Options:
// tensor.WithReuse(r) writes into r, tensor.WithIncr(r) adds into r, tensor.UseUnsafe() writes into a.
func (e *Engine) Add(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	ad, ok1 := a.(*tensor.Dense)
	bd, ok2 := b.(*tensor.Dense)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("cudaops: Add: want *tensor.Dense operands, got %T and %T", a, b)
	}
	if !ad.Shape().Eq(bd.Shape()) || ad.Dtype() != bd.Dtype() {
		return nil, fmt.Errorf("cudaops: Add: operands differ: %v %v and %v %v", ad.Dtype(), ad.Shape(), bd.Dtype(), bd.Shape())
	}
	fo := tensor.ParseFuncOpts(opts...)
	var out *tensor.Dense
	incr := false
	switch {
	case fo.Incr() != nil:
		out, incr = fo.Incr().(*tensor.Dense), true
	case fo.Reuse() != nil:
		out, _ = fo.Reuse().(*tensor.Dense)
	case !fo.Safe():
		out = ad
	default:
		var err error
		if out, err = e.NewDense(ad.Dtype(), ad.Shape().Clone()...); err != nil {
			return nil, err
		}
	}
	if out == nil || !out.Shape().Eq(ad.Shape()) || out.Dtype() != ad.Dtype() {
		return nil, fmt.Errorf("cudaops: Add: reuse/incr tensor must be a *tensor.Dense of %v %v", ad.Dtype(), ad.Shape())
	}
	if err := e.d.add(ad, bd, out, incr); err != nil {
		return nil, err
	}
	return out, nil
}

// AddScalar is not implemented on the device; it returns an error rather than touching device memory
// from the host.
func (e *Engine) AddScalar(a tensor.Tensor, b interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return nil, fmt.Errorf("cudaops: AddScalar is not supported on device tensors")
}

var _ tensor.Engine = (*Engine)(nil)
var _ tensor.Adder = (*Engine)(nil)

// View returns a tensor of the given shape over base's memory starting at element offset (no copy).
// The view keeps base alive.
func (e *Engine) View(base *tensor.Dense, offset int, shape ...int) *tensor.Dense {
	n := 1
	for _, s := range shape {
		n *= s
	}
	sz := uintptr(base.Dtype().Size())
	v := e.wrap(base.Dtype(), shape, base.Uintptr()+uintptr(offset)*sz, uintptr(n)*sz)
	// The pending cleanup holds base, so base (and its memory) stays alive as long as the view does.
	runtime.AddCleanup(v, func(*tensor.Dense) {}, base)
	return v
}
