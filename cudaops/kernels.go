//go:build expertrt_cuda

package cudaops

import (
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// Helpers of the typed launchers over raw device addresses (route.go, plan.go, permute.go, losses.go,
// ...) that need the driver's types; the rest is kernel_args.go and grid.go. Each launcher checks its
// sizes and picks the kernel variant (dtype, 16-byte vector or scalar) before launching; all launch on
// the device's stream without waiting. Tensor-level validation (ownership, dtypes, shapes) is done by
// the Backend before they are called.

func offsetPtr(p cu.DevicePtr, bytes int64) cu.DevicePtr {
	return cu.DevicePtr(uintptr(p) + uintptr(bytes))
}

// rowKernel picks the variant of a row kernel for rows of h elements at the given addresses (rowVariant).
func rowKernel(base string, dt tensor.Dtype, h int, ptrs ...cu.DevicePtr) (string, int, error) {
	addrs := make([]uintptr, len(ptrs))
	for i, p := range ptrs {
		addrs[i] = uintptr(p)
	}
	return rowVariant(base, dt, h, addrs...)
}
