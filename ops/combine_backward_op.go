package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// combineBackward builds the two gradients of a weighted combine from one node, so a backend with a
// fused kernel (CombineBackwarder) reads dy once: the node's value is one flat buffer [T*K*H + T*K]
// holding dye [T*K,H] then dw [T,K], and two view nodes expose the parts without copying. (Gorgonia has
// no tuple outputs; its TapeMachine gives every node its own register, so the views stay valid.)
func combineBackward(dy, ye, w, plan *G.Node, k, e int) (dye, dw *G.Node, err error) {
	flat, err := G.ApplyOp(&combineBackwardOp{k: k, e: e}, dy, ye, w, plan)
	if err != nil {
		return nil, nil, err
	}
	n, h := ye.Shape()[0], ye.Shape()[1]
	if dye, err = G.ApplyOp(&viewOp{offset: 0, shape: tensor.Shape{n, h}, of: "Combine"}, flat); err != nil {
		return nil, nil, err
	}
	dw, err = G.ApplyOp(&viewOp{offset: n * h, shape: tensor.Shape{n / k, k}, of: "Combine"}, flat)
	return dye, dw, err
}

// combineBackwardOp: (dy [T,H], ye [T*K,H], w [T,K], plan) -> [T*K*H + T*K] = dye ++ dw.
type combineBackwardOp struct {
	opBase
	k, e int
}

func (op *combineBackwardOp) Arity() int { return 4 }
func (op *combineBackwardOp) Type() hm.Type {
	return hm.NewFnType(floatT(2), floatT(2), floatT(2), int32T(1), floatT(1))
}
func (op *combineBackwardOp) String() string {
	return fmt.Sprintf("CombineBackward{K=%d,E=%d}", op.k, op.e)
}
func (op *combineBackwardOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *combineBackwardOp) Hashcode() uint32      { return hashOf(op) }

// Second derivatives through the fused node are not provided (first-order training needs none). The
// float inputs are marked differentiable so that G.Grad of a gradient reaches SymDiff, whose error names
// the op (otherwise Gorgonia reports only "Non Differentiable WRTs").
func (op *combineBackwardOp) DiffWRT(n int) []bool { return []bool{true, true, true, false}[:n] }
func (op *combineBackwardOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, noSecondOrder(op, "Combine")
}
func (op *combineBackwardOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error {
	return noSecondOrder(op, "Combine")
}

func (op *combineBackwardOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	dy, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if len(dy) != 2 {
		return nil, failf(ErrShape, "%v: dy must be a matrix, got %v", op, dy)
	}
	return tensor.Shape{dy[0]*op.k*dy[1] + dy[0]*op.k}, nil
}

func (op *combineBackwardOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *combineBackwardOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	const name = "combine backward"
	if err := arity(op, 4, vs); err != nil {
		return nil, err
	}
	dy, err := arg(name, "dy", vs[0], anyFloat, -1, -1)
	if err != nil {
		return nil, err
	}
	nT, h := dy.Shape()[0], dy.Shape()[1]
	ye, err := arg(name, "expert outputs", vs[1], dy.Dtype(), nT*op.k, h)
	if err != nil {
		return nil, err
	}
	w, err := arg(name, "weights", vs[2], dy.Dtype(), nT, op.k)
	if err != nil {
		return nil, err
	}
	plan, err := arg(name, "plan", vs[3], tensor.Int32, PlanLen(nT, op.k, op.e))
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), dy, ye, w, plan)
	if err != nil {
		return nil, err
	}
	n := nT * op.k
	flat, err := output(b, prealloc, dy.Dtype(), n*h+n)
	if err != nil {
		return nil, err
	}
	dye, err := b.View(flat, 0, n, h)
	if err != nil {
		return nil, err
	}
	dw, err := b.View(flat, n*h, nT, op.k)
	if err != nil {
		return nil, err
	}
	if fused, ok := b.(CombineBackwarder); ok {
		return flat, fused.CombineBackward(dy, ye, w, plan, dye, dw)
	}
	if err := b.Dispatch(dy, w, plan, dye); err != nil {
		return nil, err
	}
	return flat, b.CombineGradWeights(dy, ye, plan, dw)
}

// viewOp exposes part of its input as a tensor of another shape, sharing memory (no copy). Its only
// use is to split the flat buffer of a fused gradient node (of names the op whose gradient it is).
type viewOp struct {
	opBase
	offset int
	shape  tensor.Shape
	of     string
}

func (op *viewOp) Arity() int { return 1 }
func (op *viewOp) Type() hm.Type {
	return hm.NewFnType(floatT(1), floatT(len(op.shape)))
}

// ReturnsPtr: the result aliases the input.
func (op *viewOp) ReturnsPtr() bool { return true }
func (op *viewOp) String() string {
	return fmt.Sprintf("View{offset=%d,shape=%v,of=%s}", op.offset, op.shape, op.of)
}
func (op *viewOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *viewOp) Hashcode() uint32      { return hashOf(op) }
func (op *viewOp) DiffWRT(n int) []bool  { return allTrue(n) }

// The views are parts of a fused gradient (combineBackwardOp, swigluGradOp): no second derivatives.
func (op *viewOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, noSecondOrder(op, op.of)
}
func (op *viewOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error {
	return noSecondOrder(op, op.of)
}

func (op *viewOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if op.offset+op.shape.TotalSize() > s.TotalSize() {
		return nil, failf(ErrShape, "%v: input of shape %v is too small", op, s)
	}
	return op.shape.Clone(), nil
}

func (op *viewOp) Do(vs ...G.Value) (G.Value, error) {
	if err := arity(op, 1, vs); err != nil {
		return nil, err
	}
	t, err := arg("view", "input", vs[0], anyAct, -1)
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), t)
	if err != nil {
		return nil, err
	}
	return b.View(t, op.offset, op.shape...)
}
