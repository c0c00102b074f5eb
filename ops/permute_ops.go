package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Dispatch packs token rows x [T,H] into the expert-major buffer [T*K,H] of r's plan (dropless): row
// offsets[e]+i holds the i-th slot routed to expert e, in token order. Gradient: the unweighted combine.
func Dispatch(x *G.Node, r *Routing) (*G.Node, error) {
	if err := checkRouting("dispatch", r); err != nil {
		return nil, err
	}
	if err := nodeCheck("dispatch", "x", x, 2, anyFloat); err != nil {
		return nil, err
	}
	if x.Shape()[0] != r.T {
		return nil, fmt.Errorf("ops: dispatch: x has %d rows, routing has T=%d", x.Shape()[0], r.T)
	}
	return G.ApplyOp(&permuteOp{kind: dispatchKind, k: r.K(), e: r.E}, x, r.Plan)
}

// Combine un-permutes expert outputs [T*K,H] back to token order, weighting them by r.Weights:
// y[t] = sum_j w[t,j] * expertOut[rowOf(t,j)], summed in increasing j (deterministic, no atomics).
// Gradients flow to expertOut (a weighted dispatch) and to the weights (row dot products).
func Combine(expertOut *G.Node, r *Routing) (*G.Node, error) {
	if err := checkRouting("combine", r); err != nil {
		return nil, err
	}
	return CombineWeighted(expertOut, r.Weights, r)
}

// CombineWeighted is Combine with explicit weights [T,K] (nil: unit weights, the dispatch backward).
func CombineWeighted(expertOut, weights *G.Node, r *Routing) (*G.Node, error) {
	if err := checkRouting("combine", r); err != nil {
		return nil, err
	}
	if err := nodeCheck("combine", "expert outputs", expertOut, 2, anyFloat); err != nil {
		return nil, err
	}
	if expertOut.Shape()[0] != r.T*r.K() {
		return nil, fmt.Errorf("ops: combine: expert outputs have %d rows, want T*K = %d", expertOut.Shape()[0], r.T*r.K())
	}
	if weights == nil {
		return G.ApplyOp(&permuteOp{kind: combineKind, k: r.K(), e: r.E}, expertOut, r.Plan)
	}
	if err := nodeCheck("combine", "weights", weights, 2, expertOut.Dtype()); err != nil {
		return nil, err
	}
	if weights.Shape()[0] != r.T || weights.Shape()[1] != r.K() {
		return nil, fmt.Errorf("ops: combine: weights shape %v, want [%d,%d]", weights.Shape(), r.T, r.K())
	}
	return G.ApplyOp(&permuteOp{kind: combineKind, weighted: true, k: r.K(), e: r.E}, expertOut, weights, r.Plan)
}

func checkRouting(op string, r *Routing) error {
	if r == nil || r.Plan == nil {
		return fmt.Errorf("ops: %s: routing (with a plan) is required", op)
	}
	if r.K() < 1 || r.E < 1 || r.T < 1 {
		return fmt.Errorf("ops: %s: routing has T=%d, K=%d, E=%d; all must be >= 1", op, r.T, r.K(), r.E)
	}
	return nil
}

type permuteKind int

const (
	dispatchKind     permuteKind = iota // (x[T,H] [, w[T,K]], plan) -> [T*K,H]
	combineKind                         // (ye[T*K,H] [, w[T,K]], plan) -> [T,H]
	combineGradWKind                    // (dy[T,H], ye[T*K,H], plan) -> dw[T,K]
)

func (k permuteKind) String() string {
	return [...]string{"Dispatch", "Combine", "CombineGradWeights"}[k]
}

// permuteOp is the family of row permutations around the plan. The three kinds are each other's
// gradients:
//
//	dispatch(x, w):   dx = combine(g, w)      dw = combineGradW(x, g)
//	combine(ye):      dye = dispatch(g)
//	combine(ye, w):   dye = dispatch(g, w)    dw = combineGradW(g, ye)   (one fused node, combineBackward)
//	combineGradW(dy, ye) with gradient G [T,K]:  d dy = combine(ye, G)   d ye = dispatch(dy, G)
type permuteOp struct {
	opBase
	kind     permuteKind
	weighted bool // dispatch/combine only: a [T,K] weights input before the plan
	k, e     int
}

func (op *permuteOp) Arity() int {
	if op.kind != combineGradWKind && !op.weighted {
		return 2
	}
	return 3
}

func (op *permuteOp) Type() hm.Type {
	switch {
	case op.kind == combineGradWKind || op.weighted:
		return hm.NewFnType(floatT(2), floatT(2), int32T(1), floatT(2))
	default:
		return hm.NewFnType(floatT(2), int32T(1), floatT(2))
	}
}

func (op *permuteOp) String() string {
	return fmt.Sprintf("%v{weighted=%t,K=%d,E=%d}", op.kind, op.weighted, op.k, op.e)
}
func (op *permuteOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *permuteOp) Hashcode() uint32      { return hashOf(op) }

func (op *permuteOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := 0; i+1 < n; i++ { // every float input; never the plan (last)
		d[i] = true
	}
	return d
}

func (op *permuteOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	if len(in) != op.Arity() {
		return nil, fmt.Errorf("ops: %v: want %d inputs, got %d", op, op.Arity(), len(in))
	}
	plan := in[len(in)-1]
	apply := func(kind permuteKind, a, w *G.Node) (*G.Node, error) {
		if w == nil {
			return G.ApplyOp(&permuteOp{kind: kind, k: op.k, e: op.e}, a, plan)
		}
		if kind == combineGradWKind {
			return G.ApplyOp(&permuteOp{kind: kind, k: op.k, e: op.e}, a, w, plan)
		}
		return G.ApplyOp(&permuteOp{kind: kind, weighted: true, k: op.k, e: op.e}, a, w, plan)
	}
	var w *G.Node
	if op.weighted {
		w = in[1]
	}
	out := make(G.Nodes, len(in))
	var err error
	switch op.kind {
	case dispatchKind:
		if out[0], err = apply(combineKind, g, w); err == nil && op.weighted {
			out[1], err = apply(combineGradWKind, in[0], g)
		}
	case combineKind:
		if op.weighted {
			out[0], out[1], err = combineBackward(g, in[0], w, plan, op.k, op.e)
		} else {
			out[0], err = apply(dispatchKind, g, nil)
		}
	case combineGradWKind:
		if out[0], err = apply(combineKind, in[1], g); err == nil {
			out[1], err = apply(dispatchKind, in[0], g)
		}
	}
	return out, err
}

func (op *permuteOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	a, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if len(a) != 2 {
		return nil, fmt.Errorf("ops: %v: first input must be a matrix, got shape %v", op, a)
	}
	switch op.kind {
	case dispatchKind:
		return tensor.Shape{a[0] * op.k, a[1]}, nil
	case combineKind:
		if a[0]%op.k != 0 {
			return nil, fmt.Errorf("ops: %v: %d rows is not a multiple of K=%d", op, a[0], op.k)
		}
		return tensor.Shape{a[0] / op.k, a[1]}, nil
	default:
		return tensor.Shape{a[0], op.k}, nil
	}
}

func (op *permuteOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *permuteOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	name := op.kind.String()
	if len(vs) != op.Arity() {
		return nil, fmt.Errorf("ops: %v: want %d inputs, got %d", op, op.Arity(), len(vs))
	}
	a, err := arg(name, "input", vs[0], anyFloat, -1, -1)
	if err != nil {
		return nil, err
	}
	nT, h := a.Shape()[0], a.Shape()[1]
	if op.kind == combineKind {
		if nT%op.k != 0 {
			return nil, fmt.Errorf("ops: %s: %d rows is not a multiple of K=%d", name, nT, op.k)
		}
		nT /= op.k
	}
	var second *tensor.Dense
	switch {
	case op.kind == combineGradWKind:
		if second, err = arg(name, "expert outputs", vs[1], a.Dtype(), nT*op.k, h); err != nil {
			return nil, err
		}
	case op.weighted:
		if second, err = arg(name, "weights", vs[1], a.Dtype(), nT, op.k); err != nil {
			return nil, err
		}
	}
	plan, err := arg(name, "plan", vs[len(vs)-1], tensor.Int32, PlanLen(nT, op.k, op.e))
	if err != nil {
		return nil, err
	}
	b, err := backendOf(a, second, plan)
	if err != nil {
		return nil, err
	}
	switch op.kind {
	case dispatchKind:
		out, err := output(b, prealloc, a.Dtype(), nT*op.k, h)
		if err != nil {
			return nil, err
		}
		return out, b.Dispatch(a, second, plan, out)
	case combineKind:
		out, err := output(b, prealloc, a.Dtype(), nT, h)
		if err != nil {
			return nil, err
		}
		return out, b.Combine(a, second, plan, out)
	default:
		out, err := output(b, prealloc, a.Dtype(), nT, op.k)
		if err != nil {
			return nil, err
		}
		return out, b.CombineGradWeights(a, second, plan, out)
	}
}
