package devengine

import (
	"reflect"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Elementwise arithmetic (tensor's Adder, Suber, Muler, Diver and their Scalar variants) and the unary
// functions. Shared rules:
//   - Operands are float32 or float64 *tensor.Dense of one dtype, contiguous (a transposed or strided
//     view is an error), over live memory of this device; binary operands have equal shapes.
//   - Output: WithIncr(r) adds the result into r; else WithReuse(r) writes it into r; else UseUnsafe()
//     writes it into the (first) tensor operand; else a new device tensor of the operand's shape. r
//     must be a device tensor of the operands' dtype and size (it is reshaped to their shape, as StdEng
//     does).
//   - The scalar of a *Scalar method is a Go float32/float64 of the tensor's dtype, or a one-element
//     tensor of that dtype: in this device's memory (read by the kernel, no synchronisation) or in host
//     memory (read on the host). leftTensor says whether the tensor is the left operand (t op s) or the
//     right one (s op t).

// opts are the parsed function options of one call.
type opts struct {
	target *tensor.Dense // incr or reuse tensor
	incr   bool
	unsafe bool
	same   bool
}

func (e *Engine) parseOpts(what string, fo []tensor.FuncOpt) (opts, error) {
	o := tensor.ParseFuncOpts(fo...)
	var r opts
	t, incr := o.IncrReuse()
	r.incr, r.unsafe, r.same = incr, !o.Safe(), o.Same()
	if t != nil {
		d, ok := t.(*tensor.Dense)
		if !ok || d == nil {
			return r, e.errorf("%s: the reuse/incr tensor must be a *tensor.Dense, got %T: %w", what, t, ops.ErrUnsupported)
		}
		r.target = d
	}
	return r, nil
}

// floatOperand checks a float tensor operand and returns it with its real address.
func (e *Engine) floatOperand(what, name string, t tensor.Tensor) (*tensor.Dense, uintptr, error) {
	d, ok := t.(*tensor.Dense)
	if !ok || d == nil {
		return nil, 0, e.errorf("%s: %s must be a *tensor.Dense, got %T: %w", what, name, t, ops.ErrUnsupported)
	}
	if dt := d.Dtype(); dt != tensor.Float32 && dt != tensor.Float64 {
		return nil, 0, e.errorf("%s: %s has dtype %v, want float32 or float64: %w", what, name, dt, ops.ErrDtype)
	}
	p, err := e.resolveContiguous(what, name, d)
	if err != nil {
		return nil, 0, err
	}
	return d, p, nil
}

// target checks a reuse/incr tensor against the expected dtype and shape, reshaping it like StdEng.
func (e *Engine) checkTarget(what string, r *tensor.Dense, dt tensor.Dtype, shape tensor.Shape) (uintptr, error) {
	if r.Dtype() != dt {
		return 0, e.errorf("%s: the reuse/incr tensor has dtype %v, want %v: %w", what, r.Dtype(), dt, ops.ErrDtype)
	}
	want := 1
	if !shape.IsScalar() {
		want = shape.TotalSize()
	}
	if numel(r) != want {
		return 0, e.errorf("%s: the reuse/incr tensor has shape %v, want %v: %w", what, r.Shape(), shape, ops.ErrShape)
	}
	if !r.Shape().Eq(shape) && !shape.IsScalar() {
		if err := r.Reshape(shape.Clone()...); err != nil {
			return 0, e.errorf("%s: reshaping the reuse/incr tensor to %v: %v: %w", what, shape, err, ops.ErrShape)
		}
	}
	return e.resolveContiguous(what, "the reuse/incr tensor", r)
}

// output picks the result tensor of an arithmetic call with operand a (the tensor operand that UseUnsafe
// overwrites): it returns the tensor, its real address, and whether the kernel adds into it.
func (e *Engine) output(what string, o opts, a *tensor.Dense, aReal uintptr) (*tensor.Dense, uintptr, bool, error) {
	switch {
	case o.target != nil:
		p, err := e.checkTarget(what, o.target, a.Dtype(), a.Shape())
		return o.target, p, o.incr, err
	case o.unsafe:
		return a, aReal, false, nil
	}
	out, err := e.NewDense(a.Dtype(), a.Shape().Clone()...)
	if err != nil {
		return nil, 0, false, err
	}
	return out, Untag(addrOf(out)), false, nil
}

func (e *Engine) binary(op BinaryOp, a, b tensor.Tensor, fo []tensor.FuncOpt) (tensor.Tensor, error) {
	what := op.String()
	ad, ap, err := e.binaryOperand(op, what, "a", a)
	if err != nil {
		return nil, err
	}
	bd, bp, err := e.binaryOperand(op, what, "b", b)
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
	out, op_, incr, err := e.output(what, o, ad, ap)
	if err != nil {
		return nil, err
	}
	if err := e.k.Binary(op, ad.Dtype(), Operand{Ptr: ap}, Operand{Ptr: bp}, op_, int64(numel(ad)), incr); err != nil {
		return nil, e.errorf("%s: %w", what, err)
	}
	return out, nil
}

// scalarOperand turns the scalar argument of a *Scalar method into a kernel operand of dtype dt.
func (e *Engine) scalarOperand(what string, s interface{}, dt tensor.Dtype) (Operand, error) {
	switch v := s.(type) {
	case float64:
		if dt != tensor.Float64 {
			return Operand{}, e.errorf("%s: scalar float64 for a %v tensor: %w", what, dt, ops.ErrDtype)
		}
		return Operand{Scalar: true, Imm: v}, nil
	case float32:
		if dt != tensor.Float32 {
			return Operand{}, e.errorf("%s: scalar float32 for a %v tensor: %w", what, dt, ops.ErrDtype)
		}
		return Operand{Scalar: true, Imm: float64(v)}, nil
	case *tensor.Dense:
		if v == nil {
			break
		}
		if v.Dtype() != dt {
			return Operand{}, e.errorf("%s: scalar tensor of dtype %v for a %v tensor: %w", what, v.Dtype(), dt, ops.ErrDtype)
		}
		if numel(v) != 1 {
			return Operand{}, e.errorf("%s: the scalar operand has shape %v, want one element: %w", what, v.Shape(), ops.ErrShape)
		}
		real, dev, err := e.where(addrOf(v), int64(dt.Size()))
		if err != nil {
			return Operand{}, e.errorf("%s: scalar operand: %w", what, err)
		}
		if dev {
			return Operand{Ptr: real, Scalar: true}, nil
		}
		return hostScalar(addrOf(v), dt), nil
	}
	// Other scalars that expose their memory and dtype (Gorgonia's *F64 and *F32) live on the host.
	type memDtyper interface {
		tensor.Memory
		Dtype() tensor.Dtype
	}
	if m, ok := s.(memDtyper); ok && !isNilPointer(s) {
		if m.Dtype() != dt {
			return Operand{}, e.errorf("%s: scalar of dtype %v for a %v tensor: %w", what, m.Dtype(), dt, ops.ErrDtype)
		}
		if int64(m.MemSize()) < int64(dt.Size()) {
			return Operand{}, e.errorf("%s: scalar %T holds %d bytes: %w", what, s, m.MemSize(), ops.ErrShape)
		}
		real, dev, err := e.where(m.Uintptr(), int64(dt.Size()))
		if err != nil {
			return Operand{}, e.errorf("%s: scalar operand: %w", what, err)
		}
		if dev {
			return Operand{Ptr: real, Scalar: true}, nil
		}
		return hostScalar(m.Uintptr(), dt), nil
	}
	return Operand{}, e.errorf("%s: unsupported scalar %T for a %v tensor: %w", what, s, dt, ops.ErrDtype)
}

func isNilPointer(v interface{}) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// hostScalar reads a float scalar from host memory into an immediate operand.
func hostScalar(p uintptr, dt tensor.Dtype) Operand {
	if dt == tensor.Float32 {
		return Operand{Scalar: true, Imm: float64(*(*float32)(hostPtr(p)))}
	}
	return Operand{Scalar: true, Imm: *(*float64)(hostPtr(p))}
}

func (e *Engine) scalarBinary(op BinaryOp, t tensor.Tensor, s interface{}, leftTensor bool, fo []tensor.FuncOpt) (tensor.Tensor, error) {
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
	out, outP, incr, err := e.output(what, o, td, tp)
	if err != nil {
		return nil, err
	}
	a, b := Operand{Ptr: tp}, so
	if !leftTensor {
		a, b = so, a
	}
	if err := e.k.Binary(op, td.Dtype(), a, b, outP, int64(numel(td)), incr); err != nil {
		return nil, e.errorf("%s: %w", what, err)
	}
	return out, nil
}

// Add computes a + b elementwise.
func (e *Engine) Add(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.binary(OpAdd, a, b, opts)
}

// Sub computes a - b elementwise.
func (e *Engine) Sub(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.binary(OpSub, a, b, opts)
}

// Mul computes a * b elementwise.
func (e *Engine) Mul(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.binary(OpMul, a, b, opts)
}

// Div computes a / b elementwise.
func (e *Engine) Div(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.binary(OpDiv, a, b, opts)
}

// AddScalar computes t + s (s + t when !leftTensor).
func (e *Engine) AddScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.scalarBinary(OpAdd, t, s, leftTensor, opts)
}

// SubScalar computes t - s (s - t when !leftTensor).
func (e *Engine) SubScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.scalarBinary(OpSub, t, s, leftTensor, opts)
}

// MulScalar computes t * s (s * t when !leftTensor).
func (e *Engine) MulScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.scalarBinary(OpMul, t, s, leftTensor, opts)
}

// DivScalar computes t / s (s / t when !leftTensor).
func (e *Engine) DivScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.scalarBinary(OpDiv, t, s, leftTensor, opts)
}

func (e *Engine) unary(op UnaryOp, a tensor.Tensor, fo []tensor.FuncOpt) (tensor.Tensor, error) {
	what := op.String()
	ad, ap, err := e.floatOperand(what, "a", a)
	if err != nil {
		return nil, err
	}
	o, err := e.parseOpts(what, fo)
	if err != nil {
		return nil, err
	}
	out, outP, incr, err := e.output(what, o, ad, ap)
	if err != nil {
		return nil, err
	}
	if err := e.k.Unary(op, ad.Dtype(), ap, outP, int64(numel(ad)), incr); err != nil {
		return nil, e.errorf("%s: %w", what, err)
	}
	return out, nil
}

// Neg computes -a.
func (e *Engine) Neg(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(UNeg, a, opts)
}

// Inv computes 1/a.
func (e *Engine) Inv(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(UInv, a, opts)
}

// Square computes a*a.
func (e *Engine) Square(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(USquare, a, opts)
}

// Cube computes a*a*a.
func (e *Engine) Cube(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(UCube, a, opts)
}

// Exp computes e^a.
func (e *Engine) Exp(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(UExp, a, opts)
}

// Tanh computes tanh(a).
func (e *Engine) Tanh(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(UTanh, a, opts)
}

// Log computes the natural logarithm.
func (e *Engine) Log(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(ULog, a, opts)
}

// Log2 computes the base-2 logarithm.
func (e *Engine) Log2(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(ULog2, a, opts)
}

// Log10 computes the base-10 logarithm.
func (e *Engine) Log10(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(ULog10, a, opts)
}

// Sqrt computes the square root.
func (e *Engine) Sqrt(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(USqrt, a, opts)
}

// Cbrt computes the cube root.
func (e *Engine) Cbrt(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(UCbrt, a, opts)
}

// InvSqrt computes 1/sqrt(a).
func (e *Engine) InvSqrt(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(UInvSqrt, a, opts)
}

// Abs computes |a|.
func (e *Engine) Abs(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(UAbs, a, opts)
}

// Sign computes -1 for negative, 1 for positive elements, and keeps zeros (and NaN), as StdEng does.
func (e *Engine) Sign(a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.unary(USign, a, opts)
}

var (
	_ tensor.Adder     = (*Engine)(nil)
	_ tensor.Suber     = (*Engine)(nil)
	_ tensor.Muler     = (*Engine)(nil)
	_ tensor.Diver     = (*Engine)(nil)
	_ tensor.Neger     = (*Engine)(nil)
	_ tensor.Inver     = (*Engine)(nil)
	_ tensor.Squarer   = (*Engine)(nil)
	_ tensor.Cuber     = (*Engine)(nil)
	_ tensor.Exper     = (*Engine)(nil)
	_ tensor.Tanher    = (*Engine)(nil)
	_ tensor.Loger     = (*Engine)(nil)
	_ tensor.Log2er    = (*Engine)(nil)
	_ tensor.Log10er   = (*Engine)(nil)
	_ tensor.Sqrter    = (*Engine)(nil)
	_ tensor.Cbrter    = (*Engine)(nil)
	_ tensor.InvSqrter = (*Engine)(nil)
	_ tensor.Abser     = (*Engine)(nil)
	_ tensor.Signer    = (*Engine)(nil)
)
