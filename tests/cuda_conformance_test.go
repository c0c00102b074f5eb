//go:build expertrt_cuda

package tests

import (
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

// cudaSyncBackend returns a backend over another handle of the registered device with the option
// SyncChecks on: the same memory and stream, but device faults are reported by the call that met them.
// Graphs keep running on the registered backend; call its kernel methods directly.
func cudaSyncBackend(t testing.TB) *cudaops.Backend {
	t.Helper()
	d, err := cudaBackend(t).Device()
	if err != nil {
		t.Fatal(err)
	}
	h, err := d.With(cudaops.WithSyncChecks(true))
	if err != nil {
		t.Fatal(err)
	}
	return cudaops.NewBackend(h)
}

// deviceGuard is a conformance.GuardFunc for the CUDA backend (engineGuard over its engine).
func deviceGuard(b *cudaops.Backend) conformance.GuardFunc {
	eng, err := b.Engine()
	if err != nil {
		return func(tensor.Dtype, ...int) (*tensor.Dense, func() error, error) { return nil, nil, err }
	}
	return engineGuard(eng, b.ToHost)
}

// TestCUDAConformance runs the shared conformance suite on device tensors with outputs inside device
// guard bands. Tolerances: the suite's defaults (float32: 2e-5 relative to max(1,|want|, sum of term
// magnitudes); float64: 1e-12; gradients vs central differences 1e-6). Sync checks are on so that device
// faults (out-of-range expert indices, non-finite logit rows) are reported by the call that met them
// (BadInputs asserts the same sentinels as on the CPU); the kernels are the same either way.
func TestCUDAConformance(t *testing.T) {
	b := cudaSyncBackend(t)
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
	b := cudaSyncBackend(t)
	conformance.Run(t, b, conformance.Options{NoGOMAXPROCS: true})
}
