package devengine

import (
	"sort"
	"unsafe"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Sum sums a float device tensor along the given axes (tensor's Sumer), accumulating in float64 in an
// order fixed by the shape (deterministic) and rounding once per reduced axis.
//
// Summing along some axes returns a device tensor without those axes, as StdEng does (Gorgonia's Sum op
// reshapes it). Summing along every axis (or along none: the full sum) returns a HOST scalar tensor
// (shape ()): Gorgonia reads the value of a scalar node on the host, so this waits for the device (one
// host synchronisation) and reports pending device faults. Axes must be distinct and in [0, dims).
func (e *Engine) Sum(a tensor.Tensor, along ...int) (tensor.Tensor, error) {
	const what = "Sum"
	ad, ap, err := e.floatOperand(what, "a", a)
	if err != nil {
		return nil, err
	}
	dt := ad.Dtype()
	shape := ad.Shape().Clone()
	axes := append([]int(nil), along...)
	sort.Ints(axes)
	for i, ax := range axes {
		if ax < 0 || ax >= len(shape) || i > 0 && axes[i-1] == ax {
			return nil, e.errorf("%s: axes %v of a tensor of shape %v must be distinct and in [0, %d): %w", what, along, shape, len(shape), ops.ErrShape)
		}
	}
	if len(axes) == 0 || len(axes) == len(shape) {
		return e.sumAll(ad, ap)
	}
	cur, curP := ad, ap
	for k, ax := range axes {
		ax -= k // earlier axes are gone
		outer, inner := 1, 1
		for _, s := range shape[:ax] {
			outer *= s
		}
		for _, s := range shape[ax+1:] {
			inner *= s
		}
		mid := shape[ax]
		shape = append(shape[:ax:ax], shape[ax+1:]...)
		out, err := e.NewDense(dt, shape...)
		if err != nil {
			return nil, err
		}
		outP := Untag(addrOf(out))
		if outer*inner > 0 {
			if err := e.k.SumAxis(dt, curP, outP, int64(outer), int64(mid), int64(inner)); err != nil {
				return nil, e.errorf("%s: %w", what, err)
			}
		}
		if cur != ad {
			if err := e.FreeTensor(cur); err != nil {
				return nil, err
			}
		}
		cur, curP = out, outP
	}
	return cur, nil
}

// sumAll reduces every element into a host scalar tensor (synchronising).
func (e *Engine) sumAll(ad *tensor.Dense, ap uintptr) (tensor.Tensor, error) {
	dt := ad.Dtype()
	scratch, err := e.pool.Scratch(8)
	if err != nil {
		return nil, err
	}
	defer func() { _ = e.pool.PutScratch(scratch) }()
	if err := e.k.SumAxis(dt, ap, scratch, 1, int64(numel(ad)), 1); err != nil {
		return nil, e.errorf("Sum: %w", err)
	}
	if dt == tensor.Float32 {
		var v float32
		if err := e.k.Download(unsafe.Pointer(&v), scratch, 4); err != nil {
			return nil, e.errorf("Sum: %w", err)
		}
		return tensor.New(tensor.FromScalar(v)), nil
	}
	var v float64
	if err := e.k.Download(unsafe.Pointer(&v), scratch, 8); err != nil {
		return nil, e.errorf("Sum: %w", err)
	}
	return tensor.New(tensor.FromScalar(v)), nil
}

var _ tensor.Sumer = (*Engine)(nil)
