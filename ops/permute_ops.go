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
// x is float32, float64 or bfloat16 (rows are copied bit for bit). Errors: ErrShape (ranks, T, sizes past
// int32 plans), ErrDtype.
func Dispatch(x *G.Node, r *Routing) (*G.Node, error) {
	if err := nodeCheck("dispatch", "x", x, 2, anyAct); err != nil {
		return nil, err
	}
	return DispatchTo(x, r, x.Dtype())
}

// DispatchTo is Dispatch with the packed rows in dtype dt: x's own dtype, or bfloat16 for float32 x (the
// cast of mixed precision fused into the copy: each element rounded once). The gradient is the
// unweighted combine back into x's dtype (summed in float32 or wider).
func DispatchTo(x *G.Node, r *Routing, dt tensor.Dtype) (*G.Node, error) {
	if err := checkRouting("dispatch", r); err != nil {
		return nil, err
	}
	if err := nodeCheck("dispatch", "x", x, 2, anyAct); err != nil {
		return nil, err
	}
	if dt != x.Dtype() && !(x.Dtype() == tensor.Float32 && isBF16(dt)) {
		return nil, failf(ErrDtype, "dispatch: x %s is %v; its rows can be packed as %v or (float32 x only) bfloat16, not %s", nodeName(x), x.Dtype(), x.Dtype(), dtName(dt))
	}
	if x.Shape()[0] != r.T {
		return nil, failf(ErrShape, "dispatch: x %s has %d rows, routing has T=%d", nodeName(x), x.Shape()[0], r.T)
	}
	if err := checkSizes("dispatch", r.T, r.K(), r.E, x.Shape()[1]); err != nil {
		return nil, err
	}
	return newPermute(dispatchKind, r.K(), r.E, x, nil, r.Plan, dt)
}

// Combine un-permutes expert outputs [T*K,H] back to token order, weighting them by r.Weights:
// y[t] = sum_j w[t,j] * expertOut[rowOf(t,j)], summed in increasing j (deterministic, no atomics).
// Gradients flow to expertOut (a weighted dispatch) and to the weights (row dot products); second
// derivatives are not supported (ErrUnsupported from G.Grad). A routing without weights is an error
// (ErrConfig): CombineUnweighted sums without weights. Expert outputs and weights share a dtype (ErrDtype).
func Combine(expertOut *G.Node, r *Routing) (*G.Node, error) {
	if err := checkRouting("combine", r); err != nil {
		return nil, err
	}
	if r.Weights == nil {
		return nil, failf(ErrConfig, "combine: the routing has no weights; CombineUnweighted sums the K rows without weights")
	}
	return CombineWeighted(expertOut, r.Weights, r)
}

// CombineTo is Combine with the result in dtype dt: the expert outputs' dtype, or float32 for bfloat16
// expert outputs (each token's K terms are summed in float32 or wider either way, and rounded once).
// Its gradient w.r.t. the expert outputs comes back in their dtype.
func CombineTo(expertOut *G.Node, r *Routing, dt tensor.Dtype) (*G.Node, error) {
	if err := checkRouting("combine", r); err != nil {
		return nil, err
	}
	if r.Weights == nil {
		return nil, failf(ErrConfig, "combine: the routing has no weights; CombineUnweighted sums the K rows without weights")
	}
	return combineWeighted(expertOut, r.Weights, r, dt)
}

// CombineWeighted is Combine with explicit weights [T,K] instead of r.Weights (nil is an error).
// Expert outputs and weights share a float dtype, except bfloat16 expert outputs, whose weights are
// float32 (the routing weights of mixed precision).
func CombineWeighted(expertOut, weights *G.Node, r *Routing) (*G.Node, error) {
	if err := checkCombine(expertOut, r); err != nil {
		return nil, err
	}
	return combineWeighted(expertOut, weights, r, expertOut.Dtype())
}

func combineWeighted(expertOut, weights *G.Node, r *Routing, dt tensor.Dtype) (*G.Node, error) {
	if err := checkCombine(expertOut, r); err != nil {
		return nil, err
	}
	if dt != expertOut.Dtype() && !(isBF16(expertOut.Dtype()) && dt == tensor.Float32) {
		return nil, failf(ErrDtype, "combine: expert outputs %s are %v; they combine into %v or (bfloat16 outputs only) float32, not %s", nodeName(expertOut), expertOut.Dtype(), expertOut.Dtype(), dtName(dt))
	}
	if weights == nil {
		return nil, failf(ErrConfig, "combine: weights are nil; CombineUnweighted sums the K rows without weights")
	}
	if err := nodeCheck("combine", "weights", weights, 2, anyFloat); err != nil {
		return nil, err
	}
	if isBF16(expertOut.Dtype()) {
		if weights.Dtype() != tensor.Float32 {
			return nil, failf(ErrDtype, "combine: expert outputs %s are bfloat16, so the weights must be float32, but %s %s are %v", nodeName(expertOut), r.weightsDesc(weights), nodeName(weights), weights.Dtype())
		}
	} else if err := sameDtype("combine", "expert outputs", expertOut, r.weightsDesc(weights), weights); err != nil {
		return nil, err
	}
	if weights.Shape()[0] != r.T || weights.Shape()[1] != r.K() {
		return nil, failf(ErrShape, "combine: weights %s have shape %v, want [%d,%d]", nodeName(weights), weights.Shape(), r.T, r.K())
	}
	return newPermute(combineKind, r.K(), r.E, expertOut, weights, r.Plan, dt)
}

// CombineUnweighted sums each token's K expert-output rows without weights: y[t] = sum_j
// expertOut[rowOf(t,j)] (the gradient of Dispatch, and Dispatch's adjoint).
func CombineUnweighted(expertOut *G.Node, r *Routing) (*G.Node, error) {
	if err := checkCombine(expertOut, r); err != nil {
		return nil, err
	}
	return newPermute(combineKind, r.K(), r.E, expertOut, nil, r.Plan, expertOut.Dtype())
}

func checkCombine(expertOut *G.Node, r *Routing) error {
	if err := checkRouting("combine", r); err != nil {
		return err
	}
	if err := nodeCheck("combine", "expert outputs", expertOut, 2, anyAct); err != nil {
		return err
	}
	if expertOut.Shape()[0] != r.T*r.K() {
		return failf(ErrShape, "combine: expert outputs %s have %d rows, want T*K = %d", nodeName(expertOut), expertOut.Shape()[0], r.T*r.K())
	}
	return checkSizes("combine", r.T, r.K(), r.E, expertOut.Shape()[1])
}

// weightsDesc names weights the way the user knows them: r.Weights came from Route over the user's
// logits (or from NewRouting); other weights were passed explicitly.
func (r *Routing) weightsDesc(w *G.Node) string {
	switch {
	case w == r.Weights && r.Logits != nil:
		return fmt.Sprintf("routing weights (made by Route from the %v logits %s)", r.Logits.Dtype(), nodeName(r.Logits))
	case w == r.Weights:
		return "routing weights"
	}
	return "weights"
}

func checkRouting(op string, r *Routing) error {
	if r == nil || r.Plan == nil {
		return failf(ErrConfig, "%s: routing (with a plan) is required", op)
	}
	if r.K() < 1 || r.E < 1 || r.T < 1 {
		return failf(ErrConfig, "%s: routing has T=%d, K=%d, E=%d; all must be >= 1", op, r.T, r.K(), r.E)
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
		return nil, failf(ErrShape, "%v: want %d inputs, got %d", op, op.Arity(), len(in))
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

// DoDiff (LispMachine) runs the kernels of the nodes SymDiff builds, on values.
func (op *permuteOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return lispDiff(op, inputs, output, op.gradValues)
}

// gradValues mirrors SymDiff on values: in are the op's input values, g its output gradient.
func (op *permuteOp) gradValues(in []G.Value, g G.Value) ([]G.Value, error) {
	if err := arity(op, op.Arity(), in); err != nil {
		return nil, err
	}
	plan := in[len(in)-1]
	do := func(kind permuteKind, a, w G.Value) (G.Value, error) {
		if w == nil {
			return (&permuteOp{kind: kind, k: op.k, e: op.e}).Do(a, plan)
		}
		return (&permuteOp{kind: kind, weighted: kind != combineGradWKind, k: op.k, e: op.e}).Do(a, w, plan)
	}
	var w G.Value
	if op.weighted {
		w = in[1]
	}
	out := make([]G.Value, len(in))
	var err error
	switch op.kind {
	case dispatchKind:
		if out[0], err = do(combineKind, g, w); err == nil && op.weighted {
			out[1], err = do(combineGradWKind, in[0], g)
		}
	case combineKind:
		if out[0], err = do(dispatchKind, g, w); err == nil && op.weighted {
			out[1], err = do(combineGradWKind, g, in[0])
		}
	case combineGradWKind:
		if out[0], err = do(combineKind, in[1], g); err == nil {
			out[1], err = do(dispatchKind, in[0], g)
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
		return nil, failf(ErrShape, "%v: first input must be a matrix, got shape %v", op, a)
	}
	switch op.kind {
	case dispatchKind:
		return tensor.Shape{a[0] * op.k, a[1]}, nil
	case combineKind:
		if a[0]%op.k != 0 {
			return nil, failf(ErrShape, "%v: %d rows is not a multiple of K=%d", op, a[0], op.k)
		}
		return tensor.Shape{a[0] / op.k, a[1]}, nil
	default:
		return tensor.Shape{a[0], op.k}, nil
	}
}

func (op *permuteOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *permuteOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	return op.do(prealloc, vs, anyFloat, tensor.Dtype{}, tensor.Dtype{})
}

// do runs the kernel of op's kind on the values vs, checking their dtypes: the first float input has
// dtype adt (anyFloat: float32 or float64), the second (weights, or the expert outputs of
// combineGradWKind) dtype bdt, the output dtype outdt (zero bdt or outdt: the first input's dtype).
func (op *permuteOp) do(prealloc G.Value, vs []G.Value, adt, bdt, outdt tensor.Dtype) (G.Value, error) {
	name := op.kind.String()
	if err := arity(op, op.Arity(), vs); err != nil {
		return nil, err
	}
	a, err := arg(name, "input", vs[0], adt, -1, -1)
	if err != nil {
		return nil, err
	}
	if bdt.Type == nil {
		bdt = a.Dtype()
	}
	if outdt.Type == nil {
		outdt = a.Dtype()
	}
	nT, h := a.Shape()[0], a.Shape()[1]
	if op.kind == combineKind {
		if nT%op.k != 0 {
			return nil, failf(ErrShape, "%s: %d rows is not a multiple of K=%d", name, nT, op.k)
		}
		nT /= op.k
	}
	if err := checkSizes(name, nT, op.k, op.e, h); err != nil {
		return nil, err
	}
	var second *tensor.Dense
	switch {
	case op.kind == combineGradWKind:
		if second, err = arg(name, "expert outputs", vs[1], bdt, nT*op.k, h); err != nil {
			return nil, err
		}
	case op.weighted:
		if second, err = arg(name, "weights", vs[1], bdt, nT, op.k); err != nil {
			return nil, err
		}
	}
	plan, err := arg(name, "plan", vs[len(vs)-1], tensor.Int32, PlanLen(nT, op.k, op.e))
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), a, second, plan)
	if err != nil {
		return nil, err
	}
	switch op.kind {
	case dispatchKind:
		out, err := output(b, prealloc, outdt, nT*op.k, h)
		if err != nil {
			return nil, err
		}
		return out, b.Dispatch(a, second, plan, out)
	case combineKind:
		out, err := output(b, prealloc, outdt, nT, h)
		if err != nil {
			return nil, err
		}
		return out, b.Combine(a, second, plan, out)
	default:
		out, err := output(b, prealloc, outdt, nT, op.k)
		if err != nil {
			return nil, err
		}
		return out, b.CombineGradWeights(a, second, plan, out)
	}
}
