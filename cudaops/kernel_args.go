package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Kernel names and argument encodings shared by the typed launchers: the dtype suffix of a kernel,
// the vector or scalar variant of a row kernel, the weight mode of the route_weights kernels, size
// checks. No build tag: CPU CI tests them.

// suffix is the name part of a kernel's float instantiation ("f32", "f64"); other dtypes are ErrDtype.
func suffix(dt tensor.Dtype) (string, error) {
	switch dt {
	case tensor.Float32:
		return "f32", nil
	case tensor.Float64:
		return "f64", nil
	}
	return "", fmt.Errorf("cudaops: unsupported dtype %v (want float32 or float64): %w", dt, ops.ErrDtype)
}

// checkDims requires every dimension in [1, 2^31) (the kernels take them as int): ErrShape otherwise.
func checkDims(what string, dims ...int) error {
	for _, v := range dims {
		if v <= 0 || v > 1<<31-1 {
			return fmt.Errorf("cudaops: %s: dimensions must be in [1, 2^31), got %v: %w", what, dims, ops.ErrShape)
		}
	}
	return nil
}

// b2i is a kernel's int flag.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Weight modes of the route_weights kernels (route.cu).
const (
	modeFullSoftmax = 0 // SoftmaxTopK without renormalisation
	modeKSoftmax    = 1 // renormalised SoftmaxTopK, TopKSoftmax
	modeSigmoid     = 2
	modeSigmoidNorm = 3
)

// weightMode is the route_weights mode of cfg.
func weightMode(cfg ops.RouteConfig) int {
	switch {
	case cfg.Scoring == ops.Sigmoid && cfg.Renormalize:
		return modeSigmoidNorm
	case cfg.Scoring == ops.Sigmoid:
		return modeSigmoid
	case cfg.EffectiveRenormalize():
		return modeKSoftmax
	}
	return modeFullSoftmax
}

// rowVariant picks the vector variant of a row kernel when every row starts 16-byte aligned (h a
// multiple of the vector width and every non-zero address aligned): returns the kernel name and the
// row length in vectors; else the scalar variant and h.
func rowVariant(base string, dt tensor.Dtype, h int, addrs ...uintptr) (string, int, error) {
	suf, err := suffix(dt)
	if err != nil {
		return "", 0, err
	}
	vw := 16 / int(dt.Size())
	aligned := h%vw == 0
	for _, p := range addrs {
		if p != 0 && p%16 != 0 {
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
