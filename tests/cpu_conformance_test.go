package tests

import (
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/conformance"
)

// TestCPUConformance runs the shared backend conformance suite against the CPU reference backend, with
// outputs allocated inside host guard bands.
func TestCPUConformance(t *testing.T) {
	conformance.Run(t, ops.CPU(), conformance.Options{
		Short: testing.Short(),
		Guard: conformance.HostGuard,
	})
}

// TestCPUConformanceSentinel runs the suite a second time with sentinel-filled outputs copied in through
// FromHost (the path a device backend takes when it has no guard allocator).
func TestCPUConformanceSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	conformance.Run(t, ops.CPU(), conformance.Options{NoGOMAXPROCS: true})
}
