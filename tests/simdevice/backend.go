package simdevice

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Backend is the ops.Backend of a simulated device: every kernel method checks by address that its
// tensors are live memory of the device, then runs the CPU reference kernel (ops.CPU()) on host views of
// that memory with the region unprotected. It also implements ops.TensorEngineProvider and
// ops.StepScoper.
type Backend struct {
	d   *Device
	cpu ops.Backend
}

// NewBackend returns the backend of d (not registered with ops), running the CPU reference kernels.
func NewBackend(d *Device) *Backend { return &Backend{d: d, cpu: ops.CPU()} }

// NewBackendWith returns a backend of d that runs the given host kernels (on host views of device
// memory) instead of ops.CPU(): for testing other host implementations through the device boundary.
func NewBackendWith(d *Device, host ops.Backend) *Backend { return &Backend{d: d, cpu: host} }

var (
	registeredOnce sync.Once
	registered     *Backend
	registeredErr  error
)

// RegisteredSize is the region size of the registered device.
const RegisteredSize = 512 << 20

// Registered opens (once per process) a simulated device named "sim" and registers its backend with
// ops, so that ops pick it for tensors in its memory.
func Registered() (*Backend, error) {
	registeredOnce.Do(func() {
		var d *Device
		if d, registeredErr = Open("sim", RegisteredSize); registeredErr == nil {
			registered = NewBackend(d)
			if registeredErr = ops.Register(registered); registeredErr != nil {
				registered = nil
			}
		}
	})
	return registered, registeredErr
}

// Device returns the backend's device.
func (b *Backend) Device() *Device { return b.d }

// Name is the device's name ("sim" for the registered one).
func (b *Backend) Name() string { return b.d.name }

// Owns reports whether t is a tensor over the device's memory (by address; live or released).
func (b *Backend) Owns(t tensor.Tensor) bool { return b.d.eng.Owns(t) }

// New allocates a zero-filled device tensor.
func (b *Backend) New(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	if len(shape) == 0 {
		return nil, fmt.Errorf("simdevice: New needs a shape: %w", ops.ErrShape)
	}
	t, err := b.d.eng.NewDense(dt, shape...)
	if err != nil {
		return nil, err
	}
	b.d.eng.Memclr(memOf(t))
	return t, nil
}

// memOf is the memory of a tensor made by the engine (tagged address, size in bytes).
type rawMem struct{ p, n uintptr }

func (m rawMem) Uintptr() uintptr { return m.p }
func (m rawMem) MemSize() uintptr { return m.n }

func memOf(t *tensor.Dense) rawMem {
	n := t.Shape().TotalSize()
	if t.Shape().IsScalar() {
		n = 1
	}
	return rawMem{uintptr(unsafe.Pointer(unsafe.SliceData(t.Raw))), uintptr(n) * uintptr(t.Dtype().Size())}
}

// FromHost copies a host tensor to a new device tensor.
func (b *Backend) FromHost(t *tensor.Dense) (*tensor.Dense, error) { return b.d.eng.FromHost(t) }

// ToHost copies a device tensor to a new host tensor.
func (b *Backend) ToHost(t *tensor.Dense) (*tensor.Dense, error) { return b.d.eng.ToHost(t) }

// View returns a tensor of the given shape over t's memory from element offset on.
func (b *Backend) View(t *tensor.Dense, offset int, shape ...int) (*tensor.Dense, error) {
	return b.d.eng.View(t, offset, shape...)
}

// ViewAs returns a tensor of dtype dt over t's memory from byteOffset on (ops.Reinterpreter).
func (b *Backend) ViewAs(t *tensor.Dense, dt tensor.Dtype, byteOffset int, shape ...int) (*tensor.Dense, error) {
	return b.d.eng.ViewAs(t, dt, byteOffset, shape...)
}

// Free returns a tensor's memory to the pool now.
func (b *Backend) Free(t *tensor.Dense) error { return b.d.eng.FreeTensor(t) }

// TensorEngine returns the device's tensor engine (ops.TensorEngineProvider).
func (b *Backend) TensorEngine() (tensor.Engine, error) { return b.d.eng, nil }

// BeginStep starts a training step (ops.StepScoper).
func (b *Backend) BeginStep() error { return b.d.pool.BeginStep() }

// EndStep releases the step's memory (ops.StepScoper).
func (b *Backend) EndStep() error { return b.d.pool.EndStep() }

// Persist keeps t beyond the current step (ops.StepScoper).
func (b *Backend) Persist(t *tensor.Dense) error { return b.d.eng.Persist(t) }

// hostView makes a host tensor over the real memory of a device tensor, and returns that memory's
// range; the view may be read only inside run.
func (b *Backend) hostView(what string, i int, t *tensor.Dense) (*tensor.Dense, span, error) {
	if t == nil {
		return nil, span{}, nil
	}
	if !b.Owns(t) {
		return nil, span{}, fmt.Errorf("simdevice %s: %s: operand %d is not a tensor of this device (copy it with FromHost): %w", b.d.name, what, i, ops.ErrMixedBackends)
	}
	real, bytes, err := b.d.eng.Resolve(what, fmt.Sprintf("operand %d", i), t)
	if err != nil {
		return nil, span{}, err
	}
	n := int(bytes) / int(t.Dtype().Size())
	p := unsafe.Pointer(nil)
	if n > 0 {
		p = hostPointer(real)
	}
	var backing any
	switch t.Dtype() {
	case tensor.Float32:
		backing = unsafe.Slice((*float32)(p), n)
	case tensor.Float64:
		backing = unsafe.Slice((*float64)(p), n)
	case tensor.Int32:
		backing = unsafe.Slice((*int32)(p), n)
	case tensor.Int64:
		backing = unsafe.Slice((*int64)(p), n)
	case tensor.Int:
		backing = unsafe.Slice((*int)(p), n)
	case tensor.Bool:
		backing = unsafe.Slice((*bool)(p), n)
	case tensor.Uint8:
		backing = unsafe.Slice((*uint8)(p), n)
	case ops.BFloat16:
		backing = unsafe.Slice((*ops.BF16)(p), n)
	default:
		return nil, span{}, fmt.Errorf("simdevice %s: %s: operand %d has unsupported dtype %v: %w", b.d.name, what, i, t.Dtype(), ops.ErrDtype)
	}
	r := span{real, real + uintptr(bytes)}
	if n == 0 {
		return tensor.New(tensor.Of(t.Dtype()), tensor.WithShape(t.Shape().Clone()...)), r, nil
	}
	if t.Shape().IsScalar() {
		return tensor.New(tensor.WithBacking(backing)), r, nil
	}
	return tensor.New(tensor.WithShape(t.Shape().Clone()...), tensor.WithBacking(backing)), r, nil
}

func hostPointer(u uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&u)) }

// call runs a CPU kernel on host views of the given device tensors (nil stays nil).
func (b *Backend) call(what string, ts []*tensor.Dense, fn func(v []*tensor.Dense) error) error {
	views := make([]*tensor.Dense, len(ts))
	rs := make([]span, 0, len(ts))
	for i, t := range ts {
		v, r, err := b.hostView(what, i, t)
		if err != nil {
			return err
		}
		views[i] = v
		rs = append(rs, r)
	}
	return b.d.run(rs, func() error { return fn(views) })
}

func (b *Backend) RouteIndices(logits *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	return b.call("RouteIndices", []*tensor.Dense{logits, idx}, func(v []*tensor.Dense) error {
		return b.cpu.RouteIndices(v[0], cfg, v[1])
	})
}

func (b *Backend) RouteWeights(logits, idx *tensor.Dense, cfg ops.RouteConfig, w *tensor.Dense) error {
	return b.call("RouteWeights", []*tensor.Dense{logits, idx, w}, func(v []*tensor.Dense) error {
		return b.cpu.RouteWeights(v[0], v[1], cfg, v[2])
	})
}

func (b *Backend) RouteWeightsGrad(logits, idx, dw *tensor.Dense, cfg ops.RouteConfig, dlogits *tensor.Dense) error {
	return b.call("RouteWeightsGrad", []*tensor.Dense{logits, idx, dw, dlogits}, func(v []*tensor.Dense) error {
		return b.cpu.RouteWeightsGrad(v[0], v[1], v[2], cfg, v[3])
	})
}

func (b *Backend) Plan(idx *tensor.Dense, numExperts int, plan *tensor.Dense) error {
	return b.call("Plan", []*tensor.Dense{idx, plan}, func(v []*tensor.Dense) error {
		return b.cpu.Plan(v[0], numExperts, v[1])
	})
}

func (b *Backend) Dispatch(x, w, plan *tensor.Dense, out *tensor.Dense) error {
	return b.call("Dispatch", []*tensor.Dense{x, w, plan, out}, func(v []*tensor.Dense) error {
		return b.cpu.Dispatch(v[0], v[1], v[2], v[3])
	})
}

func (b *Backend) Combine(ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	return b.call("Combine", []*tensor.Dense{ye, w, plan, out}, func(v []*tensor.Dense) error {
		return b.cpu.Combine(v[0], v[1], v[2], v[3])
	})
}

func (b *Backend) CombineGradWeights(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	return b.call("CombineGradWeights", []*tensor.Dense{dy, ye, plan, dw}, func(v []*tensor.Dense) error {
		return b.cpu.CombineGradWeights(v[0], v[1], v[2], v[3])
	})
}

func (b *Backend) GroupedMatMul(x, w, plan *tensor.Dense, transposeW bool, out *tensor.Dense) error {
	return b.call("GroupedMatMul", []*tensor.Dense{x, w, plan, out}, func(v []*tensor.Dense) error {
		return b.cpu.GroupedMatMul(v[0], v[1], v[2], transposeW, v[3])
	})
}

func (b *Backend) GroupedMatMulGradW(x, dy, plan *tensor.Dense, dW *tensor.Dense) error {
	return b.call("GroupedMatMulGradW", []*tensor.Dense{x, dy, plan, dW}, func(v []*tensor.Dense) error {
		return b.cpu.GroupedMatMulGradW(v[0], v[1], v[2], v[3])
	})
}

func (b *Backend) LoadBalancingLoss(logits, plan, mask *tensor.Dense, coef float64, loss *tensor.Dense) error {
	return b.call("LoadBalancingLoss", []*tensor.Dense{logits, plan, mask, loss}, func(v []*tensor.Dense) error {
		return b.cpu.LoadBalancingLoss(v[0], v[1], v[2], coef, v[3])
	})
}

func (b *Backend) LoadBalancingLossGrad(logits, plan, mask *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	return b.call("LoadBalancingLossGrad", []*tensor.Dense{logits, plan, mask, g, dlogits}, func(v []*tensor.Dense) error {
		return b.cpu.LoadBalancingLossGrad(v[0], v[1], v[2], scale, v[3], v[4])
	})
}

func (b *Backend) ZLoss(logits *tensor.Dense, coef float64, loss *tensor.Dense) error {
	return b.call("ZLoss", []*tensor.Dense{logits, loss}, func(v []*tensor.Dense) error {
		return b.cpu.ZLoss(v[0], coef, v[1])
	})
}

func (b *Backend) ZLossGrad(logits *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	return b.call("ZLossGrad", []*tensor.Dense{logits, g, dlogits}, func(v []*tensor.Dense) error {
		return b.cpu.ZLossGrad(v[0], scale, v[1], v[2])
	})
}

func (b *Backend) MatMul(a, bm *tensor.Dense, transA, transB bool, out *tensor.Dense) error {
	return b.call("MatMul", []*tensor.Dense{a, bm, out}, func(v []*tensor.Dense) error {
		return b.cpu.MatMul(v[0], v[1], transA, transB, v[2])
	})
}

func (b *Backend) MSELoss(pred, target *tensor.Dense, loss *tensor.Dense) error {
	return b.call("MSELoss", []*tensor.Dense{pred, target, loss}, func(v []*tensor.Dense) error {
		return b.cpu.MSELoss(v[0], v[1], v[2])
	})
}

func (b *Backend) MSELossGrad(pred, target *tensor.Dense, scale float64, g, dpred *tensor.Dense) error {
	return b.call("MSELossGrad", []*tensor.Dense{pred, target, g, dpred}, func(v []*tensor.Dense) error {
		return b.cpu.MSELossGrad(v[0], v[1], scale, v[2], v[3])
	})
}

func (b *Backend) SoftmaxCrossEntropy(logits, labels *tensor.Dense, loss *tensor.Dense) error {
	return b.call("SoftmaxCrossEntropy", []*tensor.Dense{logits, labels, loss}, func(v []*tensor.Dense) error {
		return b.cpu.SoftmaxCrossEntropy(v[0], v[1], v[2])
	})
}

func (b *Backend) SoftmaxCrossEntropyGrad(logits, labels *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	return b.call("SoftmaxCrossEntropyGrad", []*tensor.Dense{logits, labels, g, dlogits}, func(v []*tensor.Dense) error {
		return b.cpu.SoftmaxCrossEntropyGrad(v[0], v[1], scale, v[2], v[3])
	})
}

func (b *Backend) SwiGLU(gate, up *tensor.Dense, out *tensor.Dense) error {
	return b.call("SwiGLU", []*tensor.Dense{gate, up, out}, func(v []*tensor.Dense) error {
		return b.cpu.SwiGLU(v[0], v[1], v[2])
	})
}

func (b *Backend) SwiGLUGrad(gate, up, dout *tensor.Dense, dgate, dup *tensor.Dense) error {
	return b.call("SwiGLUGrad", []*tensor.Dense{gate, up, dout, dgate, dup}, func(v []*tensor.Dense) error {
		return b.cpu.SwiGLUGrad(v[0], v[1], v[2], v[3], v[4])
	})
}

func (b *Backend) Cast(src, dst *tensor.Dense) error {
	return b.call("Cast", []*tensor.Dense{src, dst}, func(v []*tensor.Dense) error {
		return b.cpu.Cast(v[0], v[1])
	})
}

func (b *Backend) GradNormScale(grads []*tensor.Dense, maxNorm float64, scale *tensor.Dense) error {
	ts := append(append([]*tensor.Dense(nil), grads...), scale)
	return b.call("GradNormScale", ts, func(v []*tensor.Dense) error {
		return b.cpu.GradNormScale(v[:len(grads)], maxNorm, v[len(grads)])
	})
}

func (b *Backend) AdamStep(p, g, m, v *tensor.Dense, hp ops.AdamParams, clipScale *tensor.Dense) error {
	return b.call("AdamStep", []*tensor.Dense{p, g, m, v, clipScale}, func(x []*tensor.Dense) error {
		return b.cpu.AdamStep(x[0], x[1], x[2], x[3], hp, x[4])
	})
}

func (b *Backend) SGDStep(p, g, buf *tensor.Dense, hp ops.SGDParams, clipScale *tensor.Dense) error {
	return b.call("SGDStep", []*tensor.Dense{p, g, buf, clipScale}, func(x []*tensor.Dense) error {
		return b.cpu.SGDStep(x[0], x[1], x[2], hp, x[3])
	})
}

var (
	_ ops.Backend              = (*Backend)(nil)
	_ ops.TensorEngineProvider = (*Backend)(nil)
	_ ops.StepScoper           = (*Backend)(nil)
	_ devengine.Kernels        = simKernels{}
)
