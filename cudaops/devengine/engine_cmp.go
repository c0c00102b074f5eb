package devengine

import (
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Comparisons (tensor's Gter, Gteer, Lter, Lteer, ElEqer). The result is a Bool tensor, or 1/0 in the
// operands' dtype with AsSameType() or UseUnsafe() (which writes into the first tensor operand). With
// WithReuse(r) the result goes into r and takes r's dtype: Bool, or the operands' dtype (1/0); with
// AsSameType() r must have the operands' dtype. As in StdEng, WithIncr(r) acts like WithReuse(r): a
// comparison is never added into a tensor. Operand rules are those of the arithmetic methods.

func (e *Engine) cmpOutput(what string, o opts, a *tensor.Dense, aReal uintptr) (*tensor.Dense, uintptr, bool, error) {
	dt := a.Dtype()
	switch {
	case o.target != nil:
		r := o.target
		boolOut := r.Dtype() == tensor.Bool
		if !boolOut && r.Dtype() != dt || boolOut && o.same {
			return nil, 0, false, e.errorf("%s: the reuse tensor has dtype %v, want %v (or Bool without AsSameType): %w", what, r.Dtype(), dt, ops.ErrDtype)
		}
		p, err := e.checkTarget(what, r, r.Dtype(), a.Shape())
		return r, p, boolOut, err
	case o.unsafe:
		return a, aReal, false, nil
	}
	odt := tensor.Bool
	if o.same {
		odt = dt
	}
	out, err := e.NewDense(odt, a.Shape().Clone()...)
	if err != nil {
		return nil, 0, false, err
	}
	return out, Untag(addrOf(out)), !o.same, nil
}

func (e *Engine) compare(op CmpOp, a, b tensor.Tensor, fo []tensor.FuncOpt) (tensor.Tensor, error) {
	what := op.String()
	ad, ap, err := e.floatOperand(what, "a", a)
	if err != nil {
		return nil, err
	}
	bd, bp, err := e.floatOperand(what, "b", b)
	if err != nil {
		return nil, err
	}
	if ad.Dtype() != bd.Dtype() {
		return nil, e.errorf("%s: operands have dtypes %v and %v: %w", what, ad.Dtype(), bd.Dtype(), ops.ErrDtype)
	}
	if !ad.Shape().Eq(bd.Shape()) {
		return nil, e.errorf("%s: operands have shapes %v and %v: %w", what, ad.Shape(), bd.Shape(), ops.ErrShape)
	}
	o, err := e.parseOpts(what, fo)
	if err != nil {
		return nil, err
	}
	out, outP, boolOut, err := e.cmpOutput(what, o, ad, ap)
	if err != nil {
		return nil, err
	}
	if err := e.k.Compare(op, ad.Dtype(), Operand{Ptr: ap}, Operand{Ptr: bp}, outP, int64(numel(ad)), boolOut); err != nil {
		return nil, e.errorf("%s: %w", what, err)
	}
	return out, nil
}

func (e *Engine) compareScalar(op CmpOp, t tensor.Tensor, s interface{}, leftTensor bool, fo []tensor.FuncOpt) (tensor.Tensor, error) {
	what := op.String() + "Scalar"
	td, tp, err := e.floatOperand(what, "the tensor", t)
	if err != nil {
		return nil, err
	}
	so, err := e.scalarOperand(what, s, td.Dtype())
	if err != nil {
		return nil, err
	}
	o, err := e.parseOpts(what, fo)
	if err != nil {
		return nil, err
	}
	out, outP, boolOut, err := e.cmpOutput(what, o, td, tp)
	if err != nil {
		return nil, err
	}
	a, b := Operand{Ptr: tp}, so
	if !leftTensor {
		a, b = so, a
	}
	if err := e.k.Compare(op, td.Dtype(), a, b, outP, int64(numel(td)), boolOut); err != nil {
		return nil, e.errorf("%s: %w", what, err)
	}
	return out, nil
}

// Gt computes a > b elementwise.
func (e *Engine) Gt(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compare(CmpGt, a, b, opts)
}

// GtScalar computes t > s (s > t when !leftTensor).
func (e *Engine) GtScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compareScalar(CmpGt, t, s, leftTensor, opts)
}

// Gte computes a >= b elementwise.
func (e *Engine) Gte(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compare(CmpGte, a, b, opts)
}

// GteScalar computes t >= s (s >= t when !leftTensor).
func (e *Engine) GteScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compareScalar(CmpGte, t, s, leftTensor, opts)
}

// Lt computes a < b elementwise.
func (e *Engine) Lt(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compare(CmpLt, a, b, opts)
}

// LtScalar computes t < s (s < t when !leftTensor).
func (e *Engine) LtScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compareScalar(CmpLt, t, s, leftTensor, opts)
}

// Lte computes a <= b elementwise.
func (e *Engine) Lte(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compare(CmpLte, a, b, opts)
}

// LteScalar computes t <= s (s <= t when !leftTensor).
func (e *Engine) LteScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compareScalar(CmpLte, t, s, leftTensor, opts)
}

// ElEq computes a == b elementwise.
func (e *Engine) ElEq(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compare(CmpEq, a, b, opts)
}

// EqScalar computes t == s.
func (e *Engine) EqScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compareScalar(CmpEq, t, s, leftTensor, opts)
}

// ElNe computes a != b elementwise.
func (e *Engine) ElNe(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compare(CmpNe, a, b, opts)
}

// NeScalar computes t != s.
func (e *Engine) NeScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.compareScalar(CmpNe, t, s, leftTensor, opts)
}

var (
	_ tensor.Gter   = (*Engine)(nil)
	_ tensor.Gteer  = (*Engine)(nil)
	_ tensor.Lter   = (*Engine)(nil)
	_ tensor.Lteer  = (*Engine)(nil)
	_ tensor.ElEqer = (*Engine)(nil)
)
