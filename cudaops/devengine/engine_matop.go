package devengine

import (
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

func elemSizeOK(s int) bool { return s == 1 || s == 2 || s == 4 || s == 8 }

// Transpose moves t's data into the row-major order of its current (transposed) shape: tensor's
// Transposer, called by Dense.Transpose after T/SafeT changed the access pattern. The data of t, in the
// old layout, is read through t's current strides into a scratch buffer on the device and copied back;
// any dtype of 1, 2, 4 or 8 bytes, at most MaxDims dimensions. expStrides (the row-major strides of
// the new shape) are set by the tensor package afterwards.
func (e *Engine) Transpose(t tensor.Tensor, expStrides []int) error {
	const what = "Transpose"
	d, ok := t.(*tensor.Dense)
	if !ok || d == nil {
		return e.errorf("%s: want a *tensor.Dense, got %T: %w", what, t, ops.ErrUnsupported)
	}
	es := int(d.Dtype().Size())
	if !elemSizeOK(es) {
		return e.errorf("%s: dtype %v (%d bytes) is not supported: %w", what, d.Dtype(), es, ops.ErrDtype)
	}
	shape, strides := d.Shape(), d.Strides()
	if len(shape) > MaxDims || len(strides) != len(shape) {
		return e.errorf("%s: shape %v with strides %v (at most %d dims): %w", what, shape, strides, MaxDims, ops.ErrShape)
	}
	n := numel(d)
	bytes := int64(n) * int64(es)
	real, err := e.pool.Resolve(addrOf(d), bytes)
	if err != nil {
		return e.errorf("%s: %w", what, err)
	}
	if n <= 1 {
		return nil
	}
	tmp, err := e.pool.Scratch(bytes)
	if err != nil {
		return err
	}
	defer func() { _ = e.pool.PutScratch(tmp) }()
	if err := e.k.Permute(es, tmp, real, []int(shape), strides); err != nil {
		return e.errorf("%s: %w", what, err)
	}
	if err := e.k.Copy(real, tmp, bytes); err != nil {
		return e.errorf("%s: %w", what, err)
	}
	return nil
}

// Concat concatenates t and others along axis into a new device tensor (tensor's Concater): all
// contiguous device tensors of one dtype whose shapes agree except along axis. Any axis works; axis 0
// is a sequence of device copies, other axes one strided copy per operand.
func (e *Engine) Concat(t tensor.Tensor, axis int, others ...tensor.Tensor) (tensor.Tensor, error) {
	const what = "Concat"
	all := append([]tensor.Tensor{t}, others...)
	ds := make([]*tensor.Dense, len(all))
	ps := make([]uintptr, len(all))
	shapes := make([]tensor.Shape, len(others))
	for i, x := range all {
		d, ok := x.(*tensor.Dense)
		if !ok || d == nil {
			return nil, e.errorf("%s: operand %d must be a *tensor.Dense, got %T: %w", what, i, x, ops.ErrUnsupported)
		}
		if d.Dtype() != ds0(ds, d).Dtype() {
			return nil, e.errorf("%s: operand %d has dtype %v, want %v: %w", what, i, d.Dtype(), ds[0].Dtype(), ops.ErrDtype)
		}
		p, err := e.resolveContiguous(what, "an operand", d)
		if err != nil {
			return nil, err
		}
		ds[i], ps[i] = d, p
		if i > 0 {
			shapes[i-1] = d.Shape()
		}
	}
	dt := ds[0].Dtype()
	es := int64(dt.Size())
	if !elemSizeOK(int(es)) {
		return nil, e.errorf("%s: dtype %v is not supported: %w", what, dt, ops.ErrDtype)
	}
	s0 := ds[0].Shape()
	if axis < 0 || axis >= s0.Dims() {
		return nil, e.errorf("%s: axis %d of a tensor of shape %v: %w", what, axis, s0, ops.ErrShape)
	}
	newShape, err := s0.Concat(axis, shapes...)
	if err != nil {
		return nil, e.errorf("%s: shapes %v and %v: %v: %w", what, s0, shapes, err, ops.ErrShape)
	}
	out, err := e.NewDense(dt, newShape...)
	if err != nil {
		return nil, err
	}
	outP := Untag(addrOf(out))
	outer, rest := int64(1), int64(1)
	for _, s := range newShape[:axis] {
		outer *= int64(s)
	}
	for _, s := range newShape[axis+1:] {
		rest *= int64(s)
	}
	pitch := int64(newShape[axis]) * rest
	off := int64(0)
	for i, d := range ds {
		cols := int64(d.Shape()[axis]) * rest
		if cols > 0 && outer > 0 {
			if outer == 1 {
				err = e.k.Copy(outP+uintptr(off*es), ps[i], cols*es)
			} else {
				err = e.k.Copy2D(int(es), outP+uintptr(off*es), pitch, ps[i], cols, outer, cols)
			}
			if err != nil {
				return nil, e.errorf("%s: %w", what, err)
			}
		}
		off += cols
	}
	return out, nil
}

// ds0 returns the first operand (the current one while checking the first).
func ds0(ds []*tensor.Dense, cur *tensor.Dense) *tensor.Dense {
	if ds[0] == nil {
		return cur
	}
	return ds[0]
}

var (
	_ tensor.Transposer = (*Engine)(nil)
	_ tensor.Concater   = (*Engine)(nil)
)
