package tests

import (
	"fmt"
	"math"
	"sync"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// hostDev is a test double of a device backend, for the control flow of device training on the CPU:
// the CPU kernels behind another backend name, owning exactly the tensors labelled with its own tensor
// engine (Gorgonia's TapeMachine labels every result of a device machine with it), with a tensor engine
// (tensor.StdEng underneath), and step scoping that poisons (NaN / SentinelInt32) every tensor it
// allocated in a step and that was not persisted, when the step ends. So optimizer state that is not
// persisted, or a value read after its step, shows up as NaN.
//
// Its memory is host memory: it does not catch host reads of device data (the simulated device does).
type hostDev struct {
	ops.Backend
	eng *hostDevEngine

	mu                  sync.Mutex
	open                bool
	step                map[*tensor.Dense]bool // allocated in the open step, not persisted
	begins, ends, persd int
}

// hostDevEngine is the device's tensor engine: tensor.StdEng under its own type, so labels can be told apart.
type hostDevEngine struct{ tensor.StdEng }

var (
	hostDevOnce sync.Once
	hostDevice  *hostDev
)

// theHostDev returns the registered host device (registered once per test binary; it owns only its own
// tensors, so other tests are unaffected).
func theHostDev() *hostDev {
	hostDevOnce.Do(func() {
		hostDevice = &hostDev{Backend: ops.CPU(), eng: &hostDevEngine{}}
		ops.Register(hostDevice)
	})
	return hostDevice
}

func (h *hostDev) Name() string { return "hostdev" }

func (h *hostDev) Owns(t tensor.Tensor) bool {
	d, ok := t.(*tensor.Dense)
	return ok && d != nil && d.Engine() == tensor.Engine(h.eng)
}

func (h *hostDev) label(d *tensor.Dense) *tensor.Dense {
	tensor.WithEngine(h.eng)(d)
	h.mu.Lock()
	if h.open {
		h.step[d] = true
	}
	h.mu.Unlock()
	return d
}

func (h *hostDev) New(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	d, err := ops.CPU().New(dt, shape...)
	if err != nil {
		return nil, err
	}
	return h.label(d), nil
}

func (h *hostDev) FromHost(t *tensor.Dense) (*tensor.Dense, error) {
	if h.Owns(t) {
		return nil, fmt.Errorf("hostdev: FromHost of a device tensor")
	}
	d, err := ops.CPU().FromHost(t)
	if err != nil {
		return nil, err
	}
	return h.label(plain(d)), nil
}

func (h *hostDev) ToHost(t *tensor.Dense) (*tensor.Dense, error) {
	if !h.Owns(t) {
		return nil, fmt.Errorf("hostdev: ToHost of a tensor it does not own")
	}
	d, err := ops.CPU().ToHost(t)
	if err != nil {
		return nil, err
	}
	return plain(d), nil
}

func (h *hostDev) View(t *tensor.Dense, offset int, shape ...int) (*tensor.Dense, error) {
	v, err := ops.CPU().View(t, offset, shape...)
	if err != nil {
		return nil, err
	}
	tensor.WithEngine(h.eng)(v) // shares t's memory: released with t
	return v, nil
}

// plain returns a host copy without an engine label.
func plain(d *tensor.Dense) *tensor.Dense {
	var backing any
	switch v := d.Data().(type) {
	case []float32:
		backing = append([]float32(nil), v...)
	case []float64:
		backing = append([]float64(nil), v...)
	case []int32:
		backing = append([]int32(nil), v...)
	default:
		panic(fmt.Sprintf("hostdev: unsupported data %T", v))
	}
	return tensor.New(tensor.WithShape(d.Shape().Clone()...), tensor.WithBacking(backing))
}

func (h *hostDev) TensorEngine() (tensor.Engine, error) { return h.eng, nil }

func (h *hostDev) BeginStep() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open {
		return fmt.Errorf("hostdev: BeginStep inside a step")
	}
	h.open, h.step = true, map[*tensor.Dense]bool{}
	h.begins++
	return nil
}

func (h *hostDev) EndStep() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.open {
		return fmt.Errorf("hostdev: EndStep without BeginStep")
	}
	for d := range h.step {
		switch v := d.Data().(type) {
		case []float32:
			for i := range v {
				v[i] = float32(math.NaN())
			}
		case []float64:
			for i := range v {
				v[i] = math.NaN()
			}
		case []int32:
			for i := range v {
				v[i] = math.MinInt32 + 7
			}
		}
	}
	h.open, h.step = false, nil
	h.ends++
	return nil
}

func (h *hostDev) Persist(t *tensor.Dense) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open {
		delete(h.step, t)
	}
	h.persd++
	return nil
}

// counters returns BeginStep, EndStep and Persist call counts.
func (h *hostDev) counters() (begins, ends, persisted int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.begins, h.ends, h.persd
}
