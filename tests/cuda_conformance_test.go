//go:build expertrt_cuda

package tests

import (
	"fmt"
	"math"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/tests/conformance"
	"gorgonia.org/tensor"
)

// cudaBackend returns the registered CUDA backend (device 0), skipping the test when no GPU opens, or
// failing it when EXPERTRT_REQUIRE_GPU=1 (on the GPU host a missing device must not pass as a skip).
func cudaBackend(t testing.TB) *cudaops.Backend {
	t.Helper()
	b := cudaops.Registered()
	if _, err := b.Device(); err != nil {
		if requireGPU() {
			t.Fatalf("no CUDA device, and EXPERTRT_REQUIRE_GPU=1: %v", err)
		}
		t.Skipf("no CUDA device: %v", err)
	}
	return b
}

// deviceGuard is a conformance.GuardFunc for the CUDA backend: the output is a view into the middle of
// a larger device block whose margins (and the output) hold the sentinel; intact copies the whole block
// back and checks the margins.
func deviceGuard(b *cudaops.Backend) conformance.GuardFunc {
	return func(dt tensor.Dtype, shape ...int) (*tensor.Dense, func() error, error) {
		const margin = 67
		eng, err := b.Engine()
		if err != nil {
			return nil, nil, err
		}
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
		default:
			return nil, nil, fmt.Errorf("deviceGuard: unsupported dtype %v", dt)
		}
		size := int(dt.Size())
		if err := eng.Memset(memOf(big.Uintptr(), (n+2*margin)*size), sentinel); err != nil {
			return nil, nil, err
		}
		out := eng.View(big, margin, shape...)
		intact := func() error {
			h, err := b.ToHost(big)
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

// TestCUDAConformance runs the shared conformance suite on device tensors with outputs inside device
// guard bands. Tolerances: the suite's defaults (float32: 2e-5 relative to max(1,|want|, sum of term
// magnitudes); float64: 1e-12; gradients vs central differences 1e-6). Sync checks are on so that device
// faults (out-of-range expert indices, non-finite logit rows) are reported by the call that met them
// (BadInputs asserts the same sentinels as on the CPU); the kernels are the same either way.
func TestCUDAConformance(t *testing.T) {
	b := cudaBackend(t)
	b.SetSyncChecks(true)
	defer b.SetSyncChecks(false)
	conformance.Run(t, b, conformance.Options{
		Short:        testing.Short(),
		Guard:        deviceGuard(b),
		NoGOMAXPROCS: true, // one stream, no host threads in the kernels
	})
}

// TestCUDAConformanceSentinel runs the suite with sentinel-filled outputs copied in through FromHost.
func TestCUDAConformanceSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	b := cudaBackend(t)
	b.SetSyncChecks(true)
	defer b.SetSyncChecks(false)
	conformance.Run(t, b, conformance.Options{NoGOMAXPROCS: true})
}
