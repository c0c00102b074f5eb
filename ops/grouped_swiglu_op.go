package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// GroupedSwiGLU is the gated hidden activation of SwiGLU experts over expert-major rows, as one op:
//
//	h[r] = silu(x[r] · w1[e]) ⊙ (x[r] · w3[e])   [T*K,F]   for the rows r of expert e's segment
//
// x [T*K,H] (expert-major, as Dispatch packs it), w1 (gate) and w3 (up) [E,H,F] (input-major, as
// GroupedMatMul's w). The values equal SwiGLU(GroupedMatMul(x, w1, r), GroupedMatMul(x, w3, r)) bit for
// bit, and so do the gradients dx, dw1, dw3 (built from the same gradient ops as that graph: SwiGLU's
// fused gradient, the transposed grouped products, the grouped weight gradients). Backends that
// implement GroupedSwiGLUBackend compute both products and the activation at once (cudaops: one grouped
// GEMM launch whose epilogue applies the SwiGLU, no pass over the products); others run the two
// products and SwiGLU. The two products are kept for the backward, in one buffer with h (a node that
// holds [3,T*K,F]: h, gate, up; h is a view of it). Under a capacity, the rows of dropped slots are zero
// in h as in the products.
//
// Mixed precision as GroupedMatMul: bfloat16 rows with float32 weights cast the weights to bfloat16 in
// the graph (their gradients reach them in float32). Errors: ErrConfig (no routing), ErrShape, ErrDtype.
func GroupedSwiGLU(x, w1, w3 *G.Node, r *Routing) (*G.Node, error) {
	const name = "grouped swiglu"
	if err := checkRouting(name, r); err != nil {
		return nil, err
	}
	if err := nodeCheck(name, "x", x, 2, anyAct); err != nil {
		return nil, err
	}
	if err := nodeCheck(name, "w1", w1, 3, anyAct); err != nil {
		return nil, err
	}
	if err := nodeCheck(name, "w3", w3, 3, anyAct); err != nil {
		return nil, err
	}
	x, w1, err := bf16Pair(name, x, w1, "rows x", "gate weights w1")
	if err != nil {
		return nil, err
	}
	if x, w3, err = bf16Pair(name, x, w3, "rows x", "up weights w3"); err != nil {
		return nil, err
	}
	if err := sameDtype(name, "rows x", x, "gate weights w1", w1); err != nil {
		return nil, err
	}
	if err := sameDtype(name, "rows x", x, "up weights w3", w3); err != nil {
		return nil, err
	}
	if x.Shape()[0] != r.T*r.K() {
		return nil, failf(ErrShape, "%s: x %s has %d rows, want T*K = %d", name, nodeName(x), x.Shape()[0], r.T*r.K())
	}
	if w1.Shape()[0] != r.E || w1.Shape()[1] != x.Shape()[1] {
		return nil, failf(ErrShape, "%s: w1 %s has shape %v, want [E=%d, H=%d, F]", name, nodeName(w1), w1.Shape(), r.E, x.Shape()[1])
	}
	if !w3.Shape().Eq(w1.Shape()) {
		return nil, failf(ErrShape, "%s: w3 %s has shape %v, w1 %v: gate and up weights share a shape", name, nodeName(w3), w3.Shape(), w1.Shape())
	}
	if err := checkSizes(name, r.T, r.K(), r.E, 3*max(x.Shape()[1], w1.Shape()[2])); err != nil {
		return nil, err
	}
	fwd := &groupedSwiGLUFwdOp{k: r.K(), e: r.E, dropping: r.Capacity > 0}
	all, err := G.ApplyOp(fwd, x, w1, w3, r.Plan)
	if err != nil {
		return nil, err
	}
	return G.ApplyOp(&groupedSwiGLUOp{k: r.K(), e: r.E, dropping: r.Capacity > 0}, all, x, w1, w3, r.Plan)
}

// groupedSwiGLUFwdOp: (x [N,H], w1 [E,H,F], w3 [E,H,F], plan) -> [3N·F] = h ++ gate ++ up. Its inputs'
// gradients come from the head node (groupedSwiGLUOp), which reads the kept products through views, so
// this node is not differentiated itself.
type groupedSwiGLUFwdOp struct {
	opBase
	k, e     int
	dropping bool // a capacity plan: rows past the kept segments are cleared (ClearDroppedRows)
}

func (op *groupedSwiGLUFwdOp) Arity() int { return 4 }
func (op *groupedSwiGLUFwdOp) Type() hm.Type {
	return hm.NewFnType(floatT(2), floatT(3), floatT(3), int32T(1), floatT(1))
}
func (op *groupedSwiGLUFwdOp) String() string {
	return fmt.Sprintf("GroupedSwiGLUProducts{K=%d,E=%d,dropping=%t}", op.k, op.e, op.dropping)
}
func (op *groupedSwiGLUFwdOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *groupedSwiGLUFwdOp) Hashcode() uint32      { return hashOf(op) }
func (op *groupedSwiGLUFwdOp) DiffWRT(int) []bool    { return []bool{false, false, false, false} }
func (op *groupedSwiGLUFwdOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, failf(ErrUnsupported, "%v: differentiated through its GroupedSwiGLU node, not directly", op)
}
func (op *groupedSwiGLUFwdOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error { return noDiff() }

func (op *groupedSwiGLUFwdOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	n, f, err := groupedSwiGLUShapes(op, op.e, ds, 0)
	if err != nil {
		return nil, err
	}
	return tensor.Shape{3 * n * f}, nil
}

// groupedSwiGLUShapes checks the shapes of x, w1, w3 (InferShape inputs from first on) and returns N, F.
func groupedSwiGLUShapes(op fmt.Stringer, e int, ds []G.DimSizer, first int) (n, f int, err error) {
	var s [3]tensor.Shape
	for i := range s {
		if s[i], err = shapeArg(ds, first+i); err != nil {
			return 0, 0, err
		}
	}
	x, w1, w3 := s[0], s[1], s[2]
	if len(x) != 2 || len(w1) != 3 || w1[0] != e || w1[1] != x[1] || !w3.Eq(w1) {
		return 0, 0, failf(ErrShape, "%v: x %v, w1 %v, w3 %v, want [N,H], [%d,H,F], [%d,H,F]", op, x, w1, w3, e, e)
	}
	return x[0], w1[2], nil
}

func (op *groupedSwiGLUFwdOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *groupedSwiGLUFwdOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 4, vs); err != nil {
		return nil, err
	}
	const name = "grouped swiglu"
	x, err := arg(name, "x", vs[0], anyAct, -1, -1)
	if err != nil {
		return nil, err
	}
	n, in := x.Shape()[0], x.Shape()[1]
	w1, err := arg(name, "w1", vs[1], x.Dtype(), op.e, in, -1)
	if err != nil {
		return nil, err
	}
	f := w1.Shape()[2]
	w3, err := arg(name, "w3", vs[2], x.Dtype(), op.e, in, f)
	if err != nil {
		return nil, err
	}
	if n%op.k != 0 {
		return nil, failf(ErrShape, "%s: %d rows is not a multiple of K=%d", name, n, op.k)
	}
	if err := checkSizes(name, n/op.k, op.k, op.e, 3*max(in, f)); err != nil {
		return nil, err
	}
	plan, err := arg(name, "plan", vs[3], tensor.Int32, PlanLen(n/op.k, op.k, op.e))
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), x, w1, w3, plan)
	if err != nil {
		return nil, err
	}
	all, err := output(b, prealloc, x.Dtype(), 3*n*f)
	if err != nil {
		return nil, err
	}
	var part [3]*tensor.Dense // h, gate, up
	for i := range part {
		if part[i], err = b.View(all, i*n*f, n, f); err != nil {
			return nil, err
		}
	}
	if fb, ok := b.(GroupedSwiGLUBackend); ok {
		err = fb.GroupedSwiGLU(x, w1, w3, plan, part[0], part[1], part[2])
	} else {
		err = groupedSwiGLUComposed(b, x, w1, w3, plan, part[0], part[1], part[2])
	}
	if err != nil {
		return nil, err
	}
	if op.dropping {
		for _, p := range part {
			if err := b.ClearDroppedRows(p, plan); err != nil {
				return nil, err
			}
		}
	}
	return all, nil
}

// groupedSwiGLUOp: (all [3N·F], x, w1, w3, plan) -> h [N,F], a view of all's first part. It carries the
// gradient: differentiable w.r.t. x, w1 and w3 (not all), from the products kept in all.
type groupedSwiGLUOp struct {
	opBase
	k, e     int
	dropping bool
}

func (op *groupedSwiGLUOp) Arity() int { return 5 }
func (op *groupedSwiGLUOp) Type() hm.Type {
	return hm.NewFnType(floatT(1), floatT(2), floatT(3), floatT(3), int32T(1), floatT(2))
}

// ReturnsPtr: the result aliases the products node.
func (op *groupedSwiGLUOp) ReturnsPtr() bool { return true }
func (op *groupedSwiGLUOp) String() string {
	return fmt.Sprintf("GroupedSwiGLU{K=%d,E=%d,dropping=%t}", op.k, op.e, op.dropping)
}
func (op *groupedSwiGLUOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *groupedSwiGLUOp) Hashcode() uint32      { return hashOf(op) }
func (op *groupedSwiGLUOp) DiffWRT(int) []bool    { return []bool{false, true, true, true, false} }

func (op *groupedSwiGLUOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	all, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	n, f, err := groupedSwiGLUShapes(op, op.e, ds, 1)
	if err != nil {
		return nil, err
	}
	if all.TotalSize() != 3*n*f {
		return nil, failf(ErrShape, "%v: products of shape %v, want %d elements", op, all, 3*n*f)
	}
	return tensor.Shape{n, f}, nil
}

func (op *groupedSwiGLUOp) Do(vs ...G.Value) (G.Value, error) {
	if err := arity(op, 5, vs); err != nil {
		return nil, err
	}
	all, err := arg("grouped swiglu", "products", vs[0], anyAct, -1)
	if err != nil {
		return nil, err
	}
	x, err := arg("grouped swiglu", "x", vs[1], all.Dtype(), -1, -1)
	if err != nil {
		return nil, err
	}
	w1, err := arg("grouped swiglu", "w1", vs[2], all.Dtype(), op.e, x.Shape()[1], -1)
	if err != nil {
		return nil, err
	}
	n, f := x.Shape()[0], w1.Shape()[2]
	if all.Shape().TotalSize() != 3*n*f {
		return nil, failf(ErrShape, "%v: products of shape %v, want %d elements", op, all.Shape(), 3*n*f)
	}
	b, err := backendOf(op.String(), all)
	if err != nil {
		return nil, err
	}
	return b.View(all, 0, n, f)
}

// SymDiff builds the unfused graph's gradient from the kept products: (dgate, dup) =
// SwiGLUGrad(gate, up, dh); dx = dgate·w1ᵀ + dup·w3ᵀ; dw1 = xᵀ·dgate, dw3 = xᵀ·dup per expert.
func (op *groupedSwiGLUOp) SymDiff(in G.Nodes, _, dh *G.Node) (G.Nodes, error) {
	if len(in) != 5 {
		return nil, failf(ErrShape, "%v: want 5 inputs, got %d", op, len(in))
	}
	all, x, w1, w3, plan := in[0], in[1], in[2], in[3], in[4]
	n, f := x.Shape()[0], w1.Shape()[2]
	shape := tensor.Shape{n, f}
	gate, err := G.ApplyOp(&viewOp{offset: n * f, shape: shape, of: "GroupedSwiGLU"}, all)
	if err != nil {
		return nil, err
	}
	up, err := G.ApplyOp(&viewOp{offset: 2 * n * f, shape: shape, of: "GroupedSwiGLU"}, all)
	if err != nil {
		return nil, err
	}
	sw := &swigluOp{shape: shape}
	d, err := sw.SymDiff(G.Nodes{gate, up}, nil, dh)
	if err != nil {
		return nil, err
	}
	var dx [2]*G.Node
	var dw [2]*G.Node
	for i, w := range []*G.Node{w1, w3} {
		mm := &groupedMatMulOp{k: op.k, e: op.e, dropping: op.dropping}
		g, err := mm.SymDiff(G.Nodes{x, w, plan}, nil, d[i])
		if err != nil {
			return nil, err
		}
		dx[i], dw[i] = g[0], g[1]
	}
	sum, err := G.Add(dx[0], dx[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{nil, sum, dw[0], dw[1], nil}, nil
}

// DoDiff (LispMachine) runs the same gradient kernels on values.
func (op *groupedSwiGLUOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return lispDiff(op, inputs, output, func(in []G.Value, dh G.Value) ([]G.Value, error) {
		all, x, w1, w3, plan := in[0], in[1], in[2], in[3], in[4]
		xt, ok := x.(*tensor.Dense)
		if !ok {
			return nil, failf(ErrShape, "%v: x is a %T", op, x)
		}
		wt, ok := w1.(*tensor.Dense)
		if !ok || wt.Shape().Dims() != 3 {
			return nil, failf(ErrShape, "%v: w1 is a %T", op, w1)
		}
		n, f := xt.Shape()[0], wt.Shape()[2]
		shape := tensor.Shape{n, f}
		gate, err := (&viewOp{offset: n * f, shape: shape, of: "GroupedSwiGLU"}).Do(all)
		if err != nil {
			return nil, err
		}
		up, err := (&viewOp{offset: 2 * n * f, shape: shape, of: "GroupedSwiGLU"}).Do(all)
		if err != nil {
			return nil, err
		}
		sw := &swigluOp{shape: shape}
		flat, err := (&swigluGradOp{shape: shape}).Do(gate, up, dh)
		if err != nil {
			return nil, err
		}
		var d [2]G.Value
		for i, v := range sw.gradViews() {
			if d[i], err = v.Do(flat); err != nil {
				return nil, err
			}
		}
		out := []G.Value{nil, nil, nil, nil, nil}
		for i, w := range []G.Value{w1, w3} {
			dx, err := (&groupedMatMulOp{transposeW: true, k: op.k, e: op.e, dropping: op.dropping}).Do(d[i], w, plan)
			if err != nil {
				return nil, err
			}
			if out[2+i], err = (&groupedMatMulGradWOp{k: op.k, e: op.e}).Do(x, d[i], plan); err != nil {
				return nil, err
			}
			if i == 0 {
				out[1] = dx
			} else if err := addInto(out[1], dx); err != nil {
				return nil, err
			}
		}
		return out, nil
	})
}
