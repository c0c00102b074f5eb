//go:build expertrt_cuda

package tests

import (
	"testing"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/tests/conformance"
	"gorgonia.org/tensor"
)

// cudaBackend returns the registered CUDA backend (device 0), skipping the test when no GPU opens.
func cudaBackend(t testing.TB) *cudaops.Backend {
	t.Helper()
	b := cudaops.Registered()
	if _, err := b.Device(); err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	return b
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
// magnitudes); float64: 1e-12; gradients vs central differences 1e-6). NaN logits are not an error on
// the GPU (they rank as -inf), so NaNLogitsError is off. Sync checks are on so that out-of-range expert
// indices are reported by the call that met them (BadInputs); the kernels are the same either way.
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
