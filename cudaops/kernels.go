//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// Helpers of the typed launchers over raw device addresses (route.go, plan.go, permute.go, losses.go,
// ...). Each launcher checks its sizes and picks the kernel variant (dtype, 16-byte vector or scalar)
// before launching; all launch on the device's stream without waiting. Tensor-level validation
// (ownership, dtypes, shapes) is done by the Backend before they are called.

func suffix(dt tensor.Dtype) (string, error) {
	switch dt {
	case tensor.Float32:
		return "f32", nil
	case tensor.Float64:
		return "f64", nil
	}
	return "", fmt.Errorf("cudaops: unsupported dtype %v (want float32 or float64): %w", dt, ops.ErrDtype)
}

func offsetPtr(p cu.DevicePtr, bytes int64) cu.DevicePtr {
	return cu.DevicePtr(uintptr(p) + uintptr(bytes))
}

// rowKernel picks the vector variant of a row kernel when every row starts 16-byte aligned: returns
// the kernel name and the row length in vectors.
func rowKernel(base string, dt tensor.Dtype, h int, ptrs ...cu.DevicePtr) (string, int, error) {
	suf, err := suffix(dt)
	if err != nil {
		return "", 0, err
	}
	vw := 16 / int(dt.Size())
	aligned := h%vw == 0
	for _, p := range ptrs {
		if p != 0 && uintptr(p)%16 != 0 {
			aligned = false
		}
	}
	if !aligned {
		return base + "_" + suf, h, nil
	}
	if dt == tensor.Float32 {
		return base + "_f32_v4", h / 4, nil
	}
	return base + "_f64_v2", h / 2, nil
}

func checkDims(what string, dims ...int) error {
	for _, v := range dims {
		if v <= 0 || v > 1<<31-1 {
			return fmt.Errorf("cudaops: %s: dimensions must be in [1, 2^31), got %v: %w", what, dims, ops.ErrShape)
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
