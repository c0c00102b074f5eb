package ops

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"gorgonia.org/tensor"
)

// float is the element constraint of every float kernel.
type float interface{ ~float32 | ~float64 }

// cpuBackend is the reference kernel set: plain Go over host memory, parallel over rows.
type cpuBackend struct{}

// CPU returns the host kernel set. It owns every tensor that no registered GPU backend owns.
func CPU() Backend { return cpuBackend{} }

func (cpuBackend) Name() string { return "cpu" }

func (cpuBackend) Owns(t tensor.Tensor) bool {
	d, ok := t.(*tensor.Dense)
	return ok && d.IsNativelyAccessible()
}

func (cpuBackend) New(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	if len(shape) == 0 {
		return nil, failf(ErrShape, "cpu: New needs a shape")
	}
	n := 1
	for _, s := range shape {
		var ok bool
		if n, ok = mulInt(n, s); s < 0 || !ok {
			return nil, failf(ErrShape, "cpu: shape %v is negative or overflows", shape)
		}
	}
	if _, ok := mulInt(n, int(dt.Size())); !ok {
		return nil, failf(ErrShape, "cpu: %v elements of %v overflow a byte count", shape, dt)
	}
	return tensor.New(tensor.Of(dt), tensor.WithShape(shape...)), nil
}

func (cpuBackend) FromHost(t *tensor.Dense) (*tensor.Dense, error) {
	if t == nil {
		return nil, failf(ErrShape, "cpu: FromHost of nil tensor")
	}
	return t.Clone().(*tensor.Dense), nil
}

func (cpuBackend) ToHost(t *tensor.Dense) (*tensor.Dense, error) {
	if t == nil {
		return nil, failf(ErrShape, "cpu: ToHost of nil tensor")
	}
	return t.Clone().(*tensor.Dense), nil
}

func (cpuBackend) View(t *tensor.Dense, offset int, shape ...int) (*tensor.Dense, error) {
	n := tensor.Shape(shape).TotalSize()
	if t == nil || offset < 0 || n < 0 || offset+n > t.Shape().TotalSize() {
		return nil, failf(ErrShape, "cpu: view [%d, %d+%v) out of range of a tensor of shape %v", offset, offset, shape, shapeOrNil(t))
	}
	var backing any
	switch d := t.Data().(type) {
	case []float32:
		backing = d[offset : offset+n : offset+n]
	case []float64:
		backing = d[offset : offset+n : offset+n]
	case []int32:
		backing = d[offset : offset+n : offset+n]
	case []BF16:
		backing = d[offset : offset+n : offset+n]
	default:
		return nil, failf(ErrDtype, "cpu: view of %v tensors is not supported", t.Dtype())
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(backing)), nil
}

// ViewAs returns a float32, float64 or int32 tensor over t's bytes from byteOffset on (Reinterpreter; no
// copy: the view shares t's memory and keeps it alive).
func (cpuBackend) ViewAs(t *tensor.Dense, dt tensor.Dtype, byteOffset int, shape ...int) (*tensor.Dense, error) {
	if t == nil {
		return nil, failf(ErrShape, "cpu: ViewAs of a nil tensor")
	}
	if t.IsView() {
		return nil, failf(ErrUnsupported, "cpu: ViewAs of a strided view")
	}
	n := 1
	for _, s := range shape {
		var ok bool
		if n, ok = mulInt(n, s); s < 0 || !ok {
			return nil, failf(ErrShape, "cpu: ViewAs: shape %v is negative or overflows", shape)
		}
	}
	raw := t.Raw
	size := int(dt.Size())
	if size == 0 || byteOffset < 0 || byteOffset > len(raw) || n > (len(raw)-byteOffset)/size {
		return nil, failf(ErrShape, "cpu: ViewAs: %v %v from byte %d is out of range of %v %v", dt, shape, byteOffset, t.Dtype(), t.Shape())
	}
	var p unsafe.Pointer
	if n > 0 {
		if p = unsafe.Pointer(&raw[byteOffset]); uintptr(p)%uintptr(size) != 0 {
			return nil, failf(ErrShape, "cpu: ViewAs: byte %d of the tensor is not aligned for %v", byteOffset, dt)
		}
	}
	var backing any
	switch dt {
	case tensor.Float32:
		backing = viewSlice[float32](p, n)
	case tensor.Float64:
		backing = viewSlice[float64](p, n)
	case tensor.Int32:
		backing = viewSlice[int32](p, n)
	default:
		return nil, failf(ErrDtype, "cpu: ViewAs as %v is not supported (float32, float64, int32)", dt)
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(backing)), nil
}

// viewSlice is the n elements of type E at p (an empty slice for n = 0).
func viewSlice[E any](p unsafe.Pointer, n int) []E {
	if n == 0 {
		return []E{}
	}
	return unsafe.Slice((*E)(p), n)
}

func shapeOrNil(t *tensor.Dense) tensor.Shape {
	if t == nil {
		return nil
	}
	return t.Shape()
}

// eachTask runs fn(i) for i in [0, n) on up to GOMAXPROCS goroutines that take the tasks in turn (for
// tasks of uneven size, where static chunks would leave workers idle). Each task must write only its own
// results, so the outcome does not depend on scheduling.
func eachTask(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// parallelRows splits [0, n) into contiguous chunks, one per worker, and runs fn on each.
// Chunks are fixed by n and the worker count, never by scheduling, so results are deterministic.
// Below minPerWorker rows per worker the work runs on fewer goroutines (down to the caller's).
func parallelRows(n, minPerWorker int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	workers := runtime.GOMAXPROCS(0)
	if minPerWorker < 1 {
		minPerWorker = 1
	}
	if w := n / minPerWorker; w < workers {
		workers = w
	}
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := chunk; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	fn(0, min(chunk, n))
	wg.Wait()
}

// rowsFor picks a minimum rows-per-goroutine so each goroutine gets at least ~32K elements.
func rowsFor(width int) int {
	if width < 1 {
		width = 1
	}
	return max(1, (32<<10)/width)
}

func int32s(t *tensor.Dense) ([]int32, error) {
	d, ok := t.Data().([]int32)
	if !ok {
		return nil, failf(ErrDtype, "want int32 data, got %v", t.Dtype())
	}
	return d, nil
}

// floats returns the data of t as []T, or an error when t holds another dtype.
func floats[T float](t *tensor.Dense) ([]T, error) {
	d, ok := t.Data().([]T)
	if !ok {
		var z T
		return nil, failf(ErrDtype, "want %T data, got %v", z, t.Dtype())
	}
	return d, nil
}

// optFloats is floats for an optional tensor (nil gives nil).
func optFloats[T float](t *tensor.Dense) ([]T, error) {
	if t == nil {
		return nil, nil
	}
	return floats[T](t)
}

// byDtype runs the float32 or float64 instantiation of a kernel.
func byDtype(dt tensor.Dtype, f32, f64 func() error) error {
	switch dt {
	case tensor.Float32:
		return f32()
	case tensor.Float64:
		return f64()
	}
	return failf(ErrDtype, "unsupported dtype %v (want float32 or float64)", dt)
}

// planOf splits a host plan tensor given T and K.
func planOf(plan *tensor.Dense, t, k int) (PlanView, error) {
	p, err := int32s(plan)
	if err != nil {
		return PlanView{}, err
	}
	e := (len(p) - 1 - 2*t*k) / 2
	if e < 1 {
		return PlanView{}, failf(ErrShape, "plan of %d elements is too short for T=%d, K=%d", len(p), t, k)
	}
	return NewPlanView(p, t, k, e)
}
