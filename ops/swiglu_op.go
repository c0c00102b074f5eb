package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// SwiGLU is the gated activation of Mixtral/Llama experts, silu(gate) ⊙ up with silu(a) = a·sigmoid(a),
// as one fused op: gate and up share shape (any rank) and dtype (float32, float64 or bfloat16, which is
// computed in float64 and rounded once). Differentiable w.r.t. both; the
// backward pass is one fused kernel that reads gate, up and the upstream gradient once and writes both
// gradients (5 passes over memory instead of 7 for two separate gradient kernels) into one buffer that
// two zero-copy view nodes expose.
func SwiGLU(gate, up *G.Node) (*G.Node, error) {
	const name = "swiglu"
	if err := nodeCheck(name, "gate", gate, -1, anyAct); err != nil {
		return nil, err
	}
	if err := nodeCheck(name, "up", up, -1, gate.Dtype()); err != nil {
		return nil, err
	}
	if !gate.Shape().Eq(up.Shape()) {
		return nil, failf(ErrShape, "%s: gate %v and up %v differ in shape", name, gate.Shape(), up.Shape())
	}
	if gate.Shape().Dims() == 0 {
		return nil, failf(ErrShape, "%s: gate must be a tensor, got a scalar", name)
	}
	return G.ApplyOp(&swigluOp{shape: gate.Shape().Clone()}, gate, up)
}

// swigluOp: (gate, up) -> silu(gate) ⊙ up.
type swigluOp struct {
	opBase
	shape tensor.Shape
}

func (op *swigluOp) Arity() int { return 2 }
func (op *swigluOp) Type() hm.Type {
	d := len(op.shape)
	return hm.NewFnType(floatT(d), floatT(d), floatT(d))
}
func (op *swigluOp) String() string        { return fmt.Sprintf("SwiGLU{shape=%v}", op.shape) }
func (op *swigluOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *swigluOp) Hashcode() uint32      { return hashOf(op) }
func (op *swigluOp) DiffWRT(int) []bool    { return []bool{true, true} }

// SymDiff builds the fused gradient node ([2n]: dgate then dup) and its two views.
func (op *swigluOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	if len(in) != 2 {
		return nil, failf(ErrShape, "%v: want 2 inputs, got %d", op, len(in))
	}
	flat, err := G.ApplyOp(&swigluGradOp{shape: op.shape}, in[0], in[1], g)
	if err != nil {
		return nil, err
	}
	views := op.gradViews()
	dgate, err := G.ApplyOp(views[0], flat)
	if err != nil {
		return nil, err
	}
	dup, err := G.ApplyOp(views[1], flat)
	return G.Nodes{dgate, dup}, err
}

// gradViews are the views of the fused gradient's halves: dgate, then dup.
func (op *swigluOp) gradViews() [2]*viewOp {
	return [2]*viewOp{{offset: 0, shape: op.shape.Clone(), of: "SwiGLU"}, {offset: op.shape.TotalSize(), shape: op.shape.Clone(), of: "SwiGLU"}}
}

// DoDiff (LispMachine) runs the fused gradient kernel on values.
func (op *swigluOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return lispDiff(op, inputs, output, func(in []G.Value, g G.Value) ([]G.Value, error) {
		flat, err := (&swigluGradOp{shape: op.shape}).Do(in[0], in[1], g)
		if err != nil {
			return nil, err
		}
		out := make([]G.Value, 2)
		for i, v := range op.gradViews() {
			if out[i], err = v.Do(flat); err != nil {
				return nil, err
			}
		}
		return out, nil
	})
}

func (op *swigluOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	for i := 0; i < 2; i++ {
		s, err := shapeArg(ds, i)
		if err != nil {
			return nil, err
		}
		if !s.Eq(op.shape) {
			return nil, failf(ErrShape, "%v: input %d has shape %v", op, i, s)
		}
	}
	return op.shape.Clone(), nil
}

func (op *swigluOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *swigluOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 2, vs); err != nil {
		return nil, err
	}
	gate, err := arg("swiglu", "gate", vs[0], anyAct, op.shape...)
	if err != nil {
		return nil, err
	}
	up, err := arg("swiglu", "up", vs[1], gate.Dtype(), op.shape...)
	if err != nil {
		return nil, err
	}
	b, err := backendOf("swiglu", gate, up)
	if err != nil {
		return nil, err
	}
	out, err := output(b, prealloc, gate.Dtype(), op.shape...)
	if err != nil {
		return nil, err
	}
	return out, b.SwiGLU(gate, up, out)
}

// swigluGradOp: (gate, up, dout) -> [2n] = dgate ++ dup (flattened).
type swigluGradOp struct {
	opBase
	shape tensor.Shape
}

func (op *swigluGradOp) Arity() int { return 3 }
func (op *swigluGradOp) Type() hm.Type {
	d := len(op.shape)
	return hm.NewFnType(floatT(d), floatT(d), floatT(d), floatT(1))
}
func (op *swigluGradOp) String() string        { return fmt.Sprintf("SwiGLUGrad{shape=%v}", op.shape) }
func (op *swigluGradOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *swigluGradOp) Hashcode() uint32      { return hashOf(op) }

// Second derivatives through the fused node are not provided (first-order training needs none). The
// inputs are marked differentiable so that G.Grad of a gradient reaches SymDiff, whose error names the op.
func (op *swigluGradOp) DiffWRT(n int) []bool { return allTrue(n) }
func (op *swigluGradOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, noSecondOrder(op, "SwiGLU")
}
func (op *swigluGradOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error {
	return noSecondOrder(op, "SwiGLU")
}

func (op *swigluGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	for i := 0; i < 3; i++ {
		s, err := shapeArg(ds, i)
		if err != nil {
			return nil, err
		}
		if !s.Eq(op.shape) {
			return nil, failf(ErrShape, "%v: input %d has shape %v", op, i, s)
		}
	}
	return tensor.Shape{2 * op.shape.TotalSize()}, nil
}

func (op *swigluGradOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *swigluGradOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 3, vs); err != nil {
		return nil, err
	}
	const name = "swiglu gradient"
	gate, err := arg(name, "gate", vs[0], anyAct, op.shape...)
	if err != nil {
		return nil, err
	}
	up, err := arg(name, "up", vs[1], gate.Dtype(), op.shape...)
	if err != nil {
		return nil, err
	}
	dout, err := arg(name, "upstream gradient", vs[2], gate.Dtype(), op.shape...)
	if err != nil {
		return nil, err
	}
	b, err := backendOf(name, gate, up, dout)
	if err != nil {
		return nil, err
	}
	n := op.shape.TotalSize()
	flat, err := output(b, prealloc, gate.Dtype(), 2*n)
	if err != nil {
		return nil, err
	}
	dgate, err := b.View(flat, 0, op.shape...)
	if err != nil {
		return nil, err
	}
	dup, err := b.View(flat, n, op.shape...)
	if err != nil {
		return nil, err
	}
	return flat, b.SwiGLUGrad(gate, up, dout, dgate, dup)
}
