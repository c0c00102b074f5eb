package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Cast converts a tensor node to dtype to: float32, float64 and bfloat16 in any direction. Widening
// (bfloat16 to float32 or float64, float32 to float64) is exact; narrowing rounds each element once to
// nearest, ties to even (float64 to bfloat16 directly, not through float32), NaN stays NaN and values
// beyond the target's range become ±Inf. A node that already has dtype to is returned as it is (no
// new node). The gradient is the reverse cast of the upstream gradient (the derivative of a rounding is
// taken as 1, as in every mixed-precision framework); an upstream gradient that already has the
// input's dtype (the float32 weight gradients of bfloat16 products, see GroupedMatMul) passes through
// unchanged. Errors: ErrShape (a scalar node), ErrDtype.
func Cast(x *G.Node, to tensor.Dtype) (*G.Node, error) {
	if err := nodeCheck("cast", "x", x, -1, anyAct); err != nil {
		return nil, err
	}
	if err := checkDtype("cast", "the target dtype", to, anyAct); err != nil {
		return nil, err
	}
	if x.Dtype() == to {
		return x, nil
	}
	if x.Shape().Dims() == 0 {
		return nil, failf(ErrShape, "cast: %s is a scalar; Cast takes tensors", nodeName(x))
	}
	return G.ApplyOp(&castOp{from: x.Dtype(), to: to, shape: x.Shape().Clone()}, x)
}

// castOp: x (from) -> x (to), elementwise.
type castOp struct {
	opBase
	from, to tensor.Dtype
	shape    tensor.Shape
}

func (op *castOp) Arity() int { return 1 }
func (op *castOp) Type() hm.Type {
	d := len(op.shape)
	return hm.NewFnType(tensorT(d, op.from), tensorT(d, op.to))
}
func (op *castOp) String() string {
	return fmt.Sprintf("Cast{%v->%v,shape=%v}", op.from, op.to, op.shape)
}
func (op *castOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *castOp) Hashcode() uint32      { return hashOf(op) }
func (op *castOp) DiffWRT(int) []bool    { return []bool{true} }

func (op *castOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	if len(in) != 1 {
		return nil, failf(ErrShape, "%v: want 1 input, got %d", op, len(in))
	}
	d, err := Cast(g, op.from)
	return G.Nodes{d}, err
}

// DoDiff: the LispMachine does not run bfloat16 graphs (CheckLispGraph); for float32 <-> float64 casts
// it adds the reverse cast of the gradient.
func (op *castOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return lispDiff(op, inputs, output, func(in []G.Value, g G.Value) ([]G.Value, error) {
		gd, ok := g.(*tensor.Dense)
		if ok && gd.Dtype() == op.from {
			return []G.Value{g}, nil
		}
		d, err := (&castOp{from: op.to, to: op.from, shape: op.shape}).Do(g)
		return []G.Value{d}, err
	})
}

func (op *castOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if !s.Eq(op.shape) {
		return nil, failf(ErrShape, "%v: input has shape %v", op, s)
	}
	return op.shape.Clone(), nil
}

func (op *castOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *castOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 1, vs); err != nil {
		return nil, err
	}
	x, err := arg("cast", "x", vs[0], op.from, op.shape...)
	if err != nil {
		return nil, err
	}
	b, err := backendOf("cast", x)
	if err != nil {
		return nil, err
	}
	out, err := output(b, prealloc, op.to, op.shape...)
	if err != nil {
		return nil, err
	}
	return out, b.Cast(x, out)
}
