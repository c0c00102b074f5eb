package tests

import (
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/conformance"
	"github.com/expertrt/expertrt-go/tests/simdevice"
	"gorgonia.org/tensor"
)

// simBackend returns the registered simulated device.
func simBackend(t testing.TB) *simdevice.Backend {
	t.Helper()
	b, err := simdevice.Registered()
	if err != nil {
		t.Fatalf("simulated device: %v", err)
	}
	return b
}

// simDevices holds the extra simulated devices the tests register (ops.Register refuses a second
// backend of a name, so each is opened and registered once per test binary).
var simDevices struct {
	sync.Mutex
	m map[string]ops.Backend
}

// registeredSim opens a simulated device of its own named name (size bytes), registers wrap(its backend)
// (the backend itself when wrap is nil) with ops, and returns it; later calls return the same backend.
// Tests that measure memory use one, so that the garbage of other tests does not show in its pool.
func registeredSim(t testing.TB, name string, size int64, wrap func(*simdevice.Backend) ops.Backend) ops.Backend {
	t.Helper()
	simDevices.Lock()
	defer simDevices.Unlock()
	if b, ok := simDevices.m[name]; ok {
		return b
	}
	d, err := simdevice.Open(name, size)
	if err != nil {
		t.Fatalf("simulated device %s: %v", name, err)
	}
	var b ops.Backend = simdevice.NewBackend(d)
	if wrap != nil {
		b = wrap(simdevice.NewBackend(d))
	}
	if err := ops.Register(b); err != nil {
		t.Fatal(err)
	}
	if simDevices.m == nil {
		simDevices.m = map[string]ops.Backend{}
	}
	simDevices.m[name] = b
	return b
}

// noPersistSim is a simulated device whose Persist does nothing: optimizer state created in a step
// then goes back to the pool at EndStep, and the next step must fail (ErrReleased), never use it.
type noPersistSim struct{ *simdevice.Backend }

func (noPersistSim) Persist(*tensor.Dense) error { return nil }

// engineGuard is a conformance.GuardFunc for a device engine: the output is a view into the middle of a
// larger device tensor whose margins (and the output) hold the sentinel; intact copies the whole block
// back and checks the margins. toHost reads a device tensor.
func engineGuard(eng *devengine.Engine, toHost func(*tensor.Dense) (*tensor.Dense, error)) conformance.GuardFunc {
	return func(dt tensor.Dtype, shape ...int) (*tensor.Dense, func() error, error) {
		const margin = 67
		n := 1
		for _, s := range shape {
			n *= s
		}
		big, err := eng.NewDense(dt, n+2*margin)
		if err != nil {
			return nil, nil, err
		}
		var sentinel interface{}
		switch dt {
		case tensor.Float32:
			sentinel = float32(math.NaN())
		case tensor.Float64:
			sentinel = math.NaN()
		case tensor.Int32:
			sentinel = conformance.SentinelInt32
		case ops.BFloat16:
			sentinel = uint16(ops.BF16FromFloat64(math.NaN()))
		default:
			return nil, nil, fmt.Errorf("engineGuard: unsupported dtype %v", dt)
		}
		if err := eng.Memset(memOf(big.Uintptr(), (n+2*margin)*int(dt.Size())), sentinel); err != nil {
			return nil, nil, err
		}
		out, err := eng.View(big, margin, shape...)
		if err != nil {
			return nil, nil, err
		}
		intact := func() error {
			h, err := toHost(big)
			if err != nil {
				return err
			}
			for i := 0; i < n+2*margin; i++ {
				if i >= margin && i < margin+n {
					continue
				}
				var ok bool
				switch v := h.Data().(type) {
				case []float32:
					ok = v[i] != v[i]
				case []float64:
					ok = math.IsNaN(v[i])
				case []int32:
					ok = v[i] == conformance.SentinelInt32
				case []ops.BF16:
					ok = v[i].IsNaN()
				}
				if !ok {
					return fmt.Errorf("guard element %d (output is [%d,%d)) was written", i, margin, margin+n)
				}
			}
			return nil
		}
		return out, intact, nil
	}
}

type rawMem struct{ p, n uintptr }

func (m rawMem) Uintptr() uintptr { return m.p }
func (m rawMem) MemSize() uintptr { return m.n }

func memOf(p uintptr, bytes int) rawMem { return rawMem{p, uintptr(bytes)} }

// TestSimConformance runs the shared conformance suite on the simulated device (memory the host cannot
// read; the CPU kernels run on it through the device's kernel boundary), with outputs in device guard
// bands.
func TestSimConformance(t *testing.T) {
	b := simBackend(t)
	conformance.Run(t, b, conformance.Options{
		Short:        testing.Short(),
		Guard:        engineGuard(b.Device().Engine(), b.ToHost),
		NoGOMAXPROCS: true,
	})
}
