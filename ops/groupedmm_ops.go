package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// GroupedMatMul multiplies every row of x [T*K,In] (expert-major, as Dispatch produces) by its expert's
// matrix: out[r] = x[r] · w[e] for r in expert e's segment, w [E,In,Out], out [T*K,Out]. Segments come
// from the plan's offsets at run time. Differentiable w.r.t. x and w; an expert without rows gets a zero
// weight gradient. Errors: ErrShape, ErrDtype (x and w share a dtype).
//
// Mixed precision: bfloat16 rows multiply bfloat16 weights on bfloat16 (float32 accumulation) into
// bfloat16 rows; a float32 weight (the master weight) is cast to bfloat16 in the graph, and its gradient
// is accumulated in float32 and reaches it unrounded.
func GroupedMatMul(x, w *G.Node, r *Routing) (*G.Node, error) {
	if err := checkRouting("grouped matmul", r); err != nil {
		return nil, err
	}
	if err := nodeCheck("grouped matmul", "x", x, 2, anyAct); err != nil {
		return nil, err
	}
	if err := nodeCheck("grouped matmul", "w", w, 3, anyAct); err != nil {
		return nil, err
	}
	x, w, err := bf16Pair("grouped matmul", x, w, "rows x", "expert weights w")
	if err != nil {
		return nil, err
	}
	if err := sameDtype("grouped matmul", "rows x", x, "expert weights w", w); err != nil {
		return nil, err
	}
	if x.Shape()[0] != r.T*r.K() {
		return nil, failf(ErrShape, "grouped matmul: x %s has %d rows, want T*K = %d", nodeName(x), x.Shape()[0], r.T*r.K())
	}
	if w.Shape()[0] != r.E || w.Shape()[1] != x.Shape()[1] {
		return nil, failf(ErrShape, "grouped matmul: w %s has shape %v, want [E=%d, In=%d, Out]", nodeName(w), w.Shape(), r.E, x.Shape()[1])
	}
	if err := checkSizes("grouped matmul", r.T, r.K(), r.E, max(x.Shape()[1], w.Shape()[2])); err != nil {
		return nil, err
	}
	return G.ApplyOp(&groupedMatMulOp{k: r.K(), e: r.E, dropping: r.Capacity > 0}, x, w, r.Plan)
}

// groupedMatMulOp: (x [N,In], w [E,In,Out] or [E,Out,In] when transposed, plan) -> [N,Out].
type groupedMatMulOp struct {
	opBase
	transposeW bool
	k, e       int
	dropping   bool // a capacity plan: rows past the kept segments are cleared (ClearDroppedRows)
}

func (op *groupedMatMulOp) Arity() int { return 3 }
func (op *groupedMatMulOp) Type() hm.Type {
	return hm.NewFnType(floatT(2), floatT(3), int32T(1), floatT(2))
}
func (op *groupedMatMulOp) String() string {
	return fmt.Sprintf("GroupedMatMul{transposeW=%t,K=%d,E=%d,dropping=%t}", op.transposeW, op.k, op.e, op.dropping)
}
func (op *groupedMatMulOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *groupedMatMulOp) Hashcode() uint32      { return hashOf(op) }
func (op *groupedMatMulOp) DiffWRT(int) []bool    { return []bool{true, true, false} }

// SymDiff: dx = g · w^T (the same op with the transpose flipped); dw[e] = x_e^T g_e, or g_e^T x_e when
// w is stored transposed.
func (op *groupedMatMulOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	if len(in) != 3 {
		return nil, failf(ErrShape, "%v: want 3 inputs, got %d", op, len(in))
	}
	x, w, plan := in[0], in[1], in[2]
	dx, err := G.ApplyOp(&groupedMatMulOp{transposeW: !op.transposeW, k: op.k, e: op.e, dropping: op.dropping}, g, w, plan)
	if err != nil {
		return nil, err
	}
	gw := &groupedMatMulGradWOp{k: op.k, e: op.e}
	if dt := gradDtype(w); dt != x.Dtype() {
		gw.in, gw.out = x.Dtype(), dt
	}
	var dw *G.Node
	if op.transposeW {
		dw, err = G.ApplyOp(gw, g, x, plan)
	} else {
		dw, err = G.ApplyOp(gw, x, g, plan)
	}
	return G.Nodes{dx, dw, nil}, err
}

// DoDiff (LispMachine) runs the kernels of the nodes SymDiff builds, on values.
func (op *groupedMatMulOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return lispDiff(op, inputs, output, func(in []G.Value, g G.Value) ([]G.Value, error) {
		x, w, plan := in[0], in[1], in[2]
		dx, err := (&groupedMatMulOp{transposeW: !op.transposeW, k: op.k, e: op.e, dropping: op.dropping}).Do(g, w, plan)
		if err != nil {
			return nil, err
		}
		gw := &groupedMatMulGradWOp{k: op.k, e: op.e}
		var dw G.Value
		if op.transposeW {
			dw, err = gw.Do(g, x, plan)
		} else {
			dw, err = gw.Do(x, g, plan)
		}
		return []G.Value{dx, dw, nil}, err
	})
}

func (op *groupedMatMulOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	x, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	w, err := shapeArg(ds, 1)
	if err != nil {
		return nil, err
	}
	if len(x) != 2 || len(w) != 3 || w[0] != op.e {
		return nil, failf(ErrShape, "%v: x %v and w %v, want [N,In] and [%d,In,Out]", op, x, w, op.e)
	}
	in, out := w[1], w[2]
	if op.transposeW {
		in, out = w[2], w[1]
	}
	if x[1] != in {
		return nil, failf(ErrShape, "%v: x %v does not match w %v", op, x, w)
	}
	return tensor.Shape{x[0], out}, nil
}

func (op *groupedMatMulOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *groupedMatMulOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 3, vs); err != nil {
		return nil, err
	}
	x, err := arg("grouped matmul", "x", vs[0], anyAct, -1, -1)
	if err != nil {
		return nil, err
	}
	n, in := x.Shape()[0], x.Shape()[1]
	wshape := []int{op.e, in, -1}
	if op.transposeW {
		wshape = []int{op.e, -1, in}
	}
	w, err := arg("grouped matmul", "w", vs[1], x.Dtype(), wshape...)
	if err != nil {
		return nil, err
	}
	out := w.Shape()[2]
	if op.transposeW {
		out = w.Shape()[1]
	}
	if n%op.k != 0 {
		return nil, failf(ErrShape, "grouped matmul: %d rows is not a multiple of K=%d", n, op.k)
	}
	if err := checkSizes("grouped matmul", n/op.k, op.k, op.e, max(in, out)); err != nil {
		return nil, err
	}
	plan, err := arg("grouped matmul", "plan", vs[2], tensor.Int32, PlanLen(n/op.k, op.k, op.e))
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), x, w, plan)
	if err != nil {
		return nil, err
	}
	res, err := output(b, prealloc, x.Dtype(), n, out)
	if err != nil {
		return nil, err
	}
	if err := b.GroupedMatMul(x, w, plan, op.transposeW, res); err != nil {
		return nil, err
	}
	if op.dropping {
		return res, b.ClearDroppedRows(res, plan)
	}
	return res, nil
}

// groupedMatMulGradWOp: (a [N,P], b [N,Q], plan) -> [E,P,Q] with out[e] = a_e^T b_e.
type groupedMatMulGradWOp struct {
	opBase
	k, e    int
	in, out tensor.Dtype // zero: the result has the inputs' dtype; else inputs in (bfloat16), result out (float32)
}

func (op *groupedMatMulGradWOp) Arity() int { return 3 }
func (op *groupedMatMulGradWOp) Type() hm.Type {
	if op.out.Type != nil {
		return hm.NewFnType(tensorT(2, op.in), tensorT(2, op.in), int32T(1), tensorT(3, op.out))
	}
	return hm.NewFnType(floatT(2), floatT(2), int32T(1), floatT(3))
}
func (op *groupedMatMulGradWOp) String() string {
	if op.out.Type != nil {
		return fmt.Sprintf("GroupedMatMulGradW{K=%d,E=%d,%v->%v}", op.k, op.e, op.in, op.out)
	}
	return fmt.Sprintf("GroupedMatMulGradW{K=%d,E=%d}", op.k, op.e)
}
func (op *groupedMatMulGradWOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *groupedMatMulGradWOp) Hashcode() uint32      { return hashOf(op) }

// DiffWRT marks the float inputs so that a second derivative reaches SymDiff, which names this op.
func (op *groupedMatMulGradWOp) DiffWRT(int) []bool { return []bool{true, true, false} }
func (op *groupedMatMulGradWOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, noSecondOrder(op, "GroupedMatMul")
}
func (op *groupedMatMulGradWOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error {
	return noSecondOrder(op, "GroupedMatMul")
}

func (op *groupedMatMulGradWOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	a, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	b, err := shapeArg(ds, 1)
	if err != nil {
		return nil, err
	}
	if len(a) != 2 || len(b) != 2 || a[0] != b[0] {
		return nil, failf(ErrShape, "%v: inputs %v and %v must be matrices with equal rows", op, a, b)
	}
	return tensor.Shape{op.e, a[1], b[1]}, nil
}

func (op *groupedMatMulGradWOp) Do(vs ...G.Value) (G.Value, error) {
	return op.UsePreallocDo(nil, vs...)
}

func (op *groupedMatMulGradWOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 3, vs); err != nil {
		return nil, err
	}
	adt, outdt := anyAct, tensor.Dtype{}
	if op.out.Type != nil {
		adt, outdt = op.in, op.out
	}
	a, err := arg("grouped matmul grad", "x", vs[0], adt, -1, -1)
	if err != nil {
		return nil, err
	}
	if outdt.Type == nil {
		outdt = a.Dtype()
	}
	n := a.Shape()[0]
	g, err := arg("grouped matmul grad", "gradient", vs[1], a.Dtype(), n, -1)
	if err != nil {
		return nil, err
	}
	if n%op.k != 0 {
		return nil, failf(ErrShape, "grouped matmul grad: %d rows is not a multiple of K=%d", n, op.k)
	}
	if err := checkSizes("grouped matmul grad", n/op.k, op.k, op.e, max(a.Shape()[1], g.Shape()[1])); err != nil {
		return nil, err
	}
	plan, err := arg("grouped matmul grad", "plan", vs[2], tensor.Int32, PlanLen(n/op.k, op.k, op.e))
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), a, g, plan)
	if err != nil {
		return nil, err
	}
	res, err := output(b, prealloc, outdt, op.e, a.Shape()[1], g.Shape()[1])
	if err != nil {
		return nil, err
	}
	return res, b.GroupedMatMulGradW(a, g, plan, res)
}
