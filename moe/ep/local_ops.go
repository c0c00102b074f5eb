package ep

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The local side of a rank: its receive buffer holds R rows of which only the first n (data: the
// received count) are valid, grouped by local expert. Node shapes cannot follow n, so the products run
// on views of the first n rows, with a plan whose offsets end at n. The backend kernels are
// ops.Backend.GroupedMatMul / GroupedMatMulGradW, the same the single-rank layer runs.

// planKind selects what a plan-building op writes.
type planKind int

const (
	localPlan  planKind = iota // (counts, plan) -> [2L+1+2R]: counts | offsets of the local experts | zeros
	globalPlan                 // (counts, plan) -> plan's shape: counts summed over ranks | zeros
)

// planOp builds a plan vector on the backend of the rank's routing plan (its second input) from the
// host counts. The local plan's offsets are the only section the grouped products read (a view of its
// first 2L+1+2n elements is a plan of n rows for GroupedMatMul); the global plan's counts are the only
// section the load-balancing loss reads.
type planOp struct {
	opBase
	s    setup
	kind planKind
}

func (op *planOp) Arity() int    { return 2 }
func (op *planOp) Type() hm.Type { return hm.NewFnType(int32T(2), int32T(1), int32T(1)) }
func (op *planOp) String() string {
	return fmt.Sprintf("ep.%s{%v}", [...]string{"LocalPlan", "GlobalCountsPlan"}[op.kind], op.s)
}
func (op *planOp) WriteHash(h hash.Hash) { hashString(op.String(), h) }
func (op *planOp) Hashcode() uint32      { return hash32(op.String()) }
func (op *planOp) DiffWRT(int) []bool    { return []bool{false, false} }
func (op *planOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, fmt.Errorf("ep: %v is not differentiable", op)
}

func (op *planOp) length() int {
	if op.kind == localPlan {
		return ops.PlanLen(op.s.recvRows, 1, op.s.local())
	}
	return ops.PlanLen(op.s.tokens, op.s.topK, op.s.experts)
}

func (op *planOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if _, err := shapeArg(ds, 1); err != nil {
		return nil, err
	}
	return tensor.Shape{op.length()}, nil
}

func (op *planOp) Do(vs ...G.Value) (G.Value, error) {
	if len(vs) != 2 {
		return nil, fmt.Errorf("ep: %v: want 2 inputs, got %d: %w", op, len(vs), ops.ErrShape)
	}
	lay, err := op.s.countsArg("plan", vs[0])
	if err != nil {
		return nil, err
	}
	plan, err := dense("plan", "routing plan", vs[1], tensor.Int32, ops.PlanLen(op.s.tokens, op.s.topK, op.s.experts))
	if err != nil {
		return nil, err
	}
	b, err := ops.BackendFor(plan)
	if err != nil {
		return nil, err
	}
	var head []int32
	if op.kind == localPlan {
		off := lay.localOffsets()
		head = make([]int32, 0, 2*len(off)-1)
		for j := 0; j+1 < len(off); j++ {
			head = append(head, off[j+1]-off[j])
		}
		head = append(head, off...)
	} else {
		head = lay.globalCounts()
	}
	out, err := b.New(tensor.Int32, op.length())
	if err != nil {
		return nil, err
	}
	src := tensor.New(tensor.WithShape(len(head)), tensor.WithBacking(head))
	if err := copyElems(out, 0, src, 0, len(head)); err != nil {
		return nil, err
	}
	return out, nil
}

// gmmOp is the grouped product over a rank's valid received rows:
//
//	(x [R,In], w [L,In,Out] (or [L,Out,In] when transposeW), local plan, counts) -> [R,Out]
//
// rows past the received count n are zero. Gradients: dx is gmmOp with the transpose flipped,
// dw is gmmGradWOp (over the same n rows).
type gmmOp struct {
	opBase
	s          setup
	transposeW bool
}

func (op *gmmOp) Arity() int { return 4 }
func (op *gmmOp) Type() hm.Type {
	return hm.NewFnType(floatT(2), floatT(3), int32T(1), int32T(2), floatT(2))
}
func (op *gmmOp) String() string {
	return fmt.Sprintf("ep.LocalGroupedMatMul{transposeW=%t,%v}", op.transposeW, op.s)
}
func (op *gmmOp) WriteHash(h hash.Hash) { hashString(op.String(), h) }
func (op *gmmOp) Hashcode() uint32      { return hash32(op.String()) }
func (op *gmmOp) DiffWRT(int) []bool    { return []bool{true, true, false, false} }

func (op *gmmOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	if len(in) != 4 {
		return nil, fmt.Errorf("ep: %v: want 4 inputs, got %d", op, len(in))
	}
	x, w, plan, counts := in[0], in[1], in[2], in[3]
	dx, err := G.ApplyOp(&gmmOp{s: op.s, transposeW: !op.transposeW}, g, w, plan, counts)
	if err != nil {
		return nil, err
	}
	var dw *G.Node
	if op.transposeW {
		dw, err = G.ApplyOp(&gmmGradWOp{s: op.s}, g, x, plan, counts)
	} else {
		dw, err = G.ApplyOp(&gmmGradWOp{s: op.s}, x, g, plan, counts)
	}
	return G.Nodes{dx, dw, nil, nil}, err
}

func (op *gmmOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	x, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	w, err := shapeArg(ds, 1)
	if err != nil {
		return nil, err
	}
	in, out := op.dims(w)
	if len(x) != 2 || len(w) != 3 || w[0] != op.s.local() || x[0] != op.s.recvRows || x[1] != in {
		return nil, fmt.Errorf("ep: %v: x %v and w %v, want [%d,In] and [%d,In,Out]: %w", op, x, w, op.s.recvRows, op.s.local(), ops.ErrShape)
	}
	return tensor.Shape{x[0], out}, nil
}

func (op *gmmOp) dims(w tensor.Shape) (in, out int) {
	if len(w) != 3 {
		return -1, -1
	}
	if op.transposeW {
		return w[2], w[1]
	}
	return w[1], w[2]
}

func (op *gmmOp) Do(vs ...G.Value) (G.Value, error) {
	if len(vs) != 4 {
		return nil, fmt.Errorf("ep: %v: want 4 inputs, got %d: %w", op, len(vs), ops.ErrShape)
	}
	L, R := op.s.local(), op.s.recvRows
	x, err := dense("local grouped matmul", "x", vs[0], tensor.Dtype{}, R, -1)
	if err != nil {
		return nil, err
	}
	w, err := dense("local grouped matmul", "w", vs[1], x.Dtype(), L, -1, -1)
	if err != nil {
		return nil, err
	}
	in, outDim := op.dims(w.Shape())
	if in != x.Shape()[1] {
		return nil, fmt.Errorf("ep: local grouped matmul: x %v and w %v (transposeW=%t) disagree: %w", x.Shape(), w.Shape(), op.transposeW, ops.ErrShape)
	}
	plan, err := dense("local grouped matmul", "local plan", vs[2], tensor.Int32, ops.PlanLen(R, 1, L))
	if err != nil {
		return nil, err
	}
	lay, err := op.s.countsArg("local grouped matmul", vs[3])
	if err != nil {
		return nil, err
	}
	b, err := ops.BackendFor(x, w, plan)
	if err != nil {
		return nil, err
	}
	out, err := b.New(x.Dtype(), R, outDim)
	if err != nil {
		return nil, err
	}
	n := lay.received(op.s.rank)
	if n == 0 {
		return out, nil
	}
	xv, err := b.View(x, 0, n, in)
	if err != nil {
		return nil, err
	}
	ov, err := b.View(out, 0, n, outDim)
	if err != nil {
		return nil, err
	}
	pv, err := b.View(plan, 0, ops.PlanLen(n, 1, L))
	if err != nil {
		return nil, err
	}
	if err := b.GroupedMatMul(xv, w, pv, op.transposeW, ov); err != nil {
		return nil, err
	}
	return out, nil
}

// gmmGradWOp: (a [R,P], g [R,Q], local plan, counts) -> [L,P,Q], out[l] = a_l^T g_l over local
// expert l's received rows (zero for an expert that received none).
type gmmGradWOp struct {
	opBase
	s setup
}

func (op *gmmGradWOp) Arity() int { return 4 }
func (op *gmmGradWOp) Type() hm.Type {
	return hm.NewFnType(floatT(2), floatT(2), int32T(1), int32T(2), floatT(3))
}
func (op *gmmGradWOp) String() string        { return fmt.Sprintf("ep.LocalGroupedMatMulGradW{%v}", op.s) }
func (op *gmmGradWOp) WriteHash(h hash.Hash) { hashString(op.String(), h) }
func (op *gmmGradWOp) Hashcode() uint32      { return hash32(op.String()) }
func (op *gmmGradWOp) DiffWRT(int) []bool    { return []bool{false, false, false, false} }
func (op *gmmGradWOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, fmt.Errorf("ep: %v: second derivatives are not supported", op)
}

func (op *gmmGradWOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	a, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	g, err := shapeArg(ds, 1)
	if err != nil {
		return nil, err
	}
	if len(a) != 2 || len(g) != 2 || a[0] != op.s.recvRows || g[0] != op.s.recvRows {
		return nil, fmt.Errorf("ep: %v: inputs %v and %v, want [%d,P] and [%d,Q]: %w", op, a, g, op.s.recvRows, op.s.recvRows, ops.ErrShape)
	}
	return tensor.Shape{op.s.local(), a[1], g[1]}, nil
}

func (op *gmmGradWOp) Do(vs ...G.Value) (G.Value, error) {
	if len(vs) != 4 {
		return nil, fmt.Errorf("ep: %v: want 4 inputs, got %d: %w", op, len(vs), ops.ErrShape)
	}
	L, R := op.s.local(), op.s.recvRows
	a, err := dense("local grouped matmul grad", "x", vs[0], tensor.Dtype{}, R, -1)
	if err != nil {
		return nil, err
	}
	g, err := dense("local grouped matmul grad", "gradient", vs[1], a.Dtype(), R, -1)
	if err != nil {
		return nil, err
	}
	plan, err := dense("local grouped matmul grad", "local plan", vs[2], tensor.Int32, ops.PlanLen(R, 1, L))
	if err != nil {
		return nil, err
	}
	lay, err := op.s.countsArg("local grouped matmul grad", vs[3])
	if err != nil {
		return nil, err
	}
	b, err := ops.BackendFor(a, g, plan)
	if err != nil {
		return nil, err
	}
	p, q := a.Shape()[1], g.Shape()[1]
	out, err := b.New(a.Dtype(), L, p, q)
	if err != nil {
		return nil, err
	}
	n := lay.received(op.s.rank)
	if n == 0 {
		return out, nil
	}
	av, err := b.View(a, 0, n, p)
	if err != nil {
		return nil, err
	}
	gv, err := b.View(g, 0, n, q)
	if err != nil {
		return nil, err
	}
	pv, err := b.View(plan, 0, ops.PlanLen(n, 1, L))
	if err != nil {
		return nil, err
	}
	if err := b.GroupedMatMulGradW(av, gv, pv, out); err != nil {
		return nil, err
	}
	return out, nil
}
