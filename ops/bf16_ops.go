package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The ops of mixed precision: the permutations around the plan and the matrix products when their
// operands or result involve bfloat16 (see BFloat16). Graphs of float32 or float64 alone build the
// plain ops, unchanged.

// newPermute applies a permutation of the given kind: rows a ([T,H] or [T*K,H]), the second float input
// b (weights [T,K], or the expert outputs of combineGradWKind; nil for unweighted dispatch/combine), the
// plan, and the result in dtype out. Without bfloat16 it is the plain permuteOp (one dtype throughout).
func newPermute(kind permuteKind, k, e int, a, b, plan *G.Node, out tensor.Dtype) (*G.Node, error) {
	weighted := b != nil && kind != combineGradWKind
	mixed := isBF16(a.Dtype()) || isBF16(out) || (b != nil && isBF16(b.Dtype()))
	base := permuteOp{kind: kind, weighted: weighted, k: k, e: e}
	if !mixed {
		if b == nil {
			return G.ApplyOp(&base, a, plan)
		}
		return G.ApplyOp(&base, a, b, plan)
	}
	op := &mixedPermuteOp{permuteOp: base, a: a.Dtype(), out: out}
	if b == nil {
		return G.ApplyOp(op, a, plan)
	}
	op.b = b.Dtype()
	return G.ApplyOp(op, a, b, plan)
}

// mixedPermuteOp is a permuteOp whose inputs and output have fixed dtypes that differ (bfloat16 rows
// with float32 weights, float32 rows packed into bfloat16, bfloat16 outputs combined into float32):
// Gorgonia's type system sees the concrete dtypes, the kernels get the tensors of those dtypes.
type mixedPermuteOp struct {
	permuteOp
	a, b, out tensor.Dtype // the first float input, the second (zero: none), the output
}

func (op *mixedPermuteOp) Type() hm.Type {
	if op.kind == combineGradWKind || op.weighted {
		return hm.NewFnType(tensorT(2, op.a), tensorT(2, op.b), int32T(1), tensorT(2, op.out))
	}
	return hm.NewFnType(tensorT(2, op.a), int32T(1), tensorT(2, op.out))
}

func (op *mixedPermuteOp) String() string {
	return fmt.Sprintf("%v{weighted=%t,K=%d,E=%d,dtypes=%s,%s->%s}", op.kind, op.weighted, op.k, op.e, dtName(op.a), dtName(op.b), dtName(op.out))
}
func (op *mixedPermuteOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *mixedPermuteOp) Hashcode() uint32      { return hashOf(op) }

// SymDiff mirrors permuteOp's (see there), each gradient in the dtype of the input it belongs to. The
// weighted combine's two gradients are two nodes (their dtypes differ, so they cannot share the fused
// node's buffer).
func (op *mixedPermuteOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	if len(in) != op.Arity() {
		return nil, failf(ErrShape, "%v: want %d inputs, got %d", op, op.Arity(), len(in))
	}
	plan := in[len(in)-1]
	var w *G.Node
	if op.weighted {
		w = in[1]
	}
	out := make(G.Nodes, len(in))
	var err error
	switch op.kind {
	case dispatchKind: // out[row] = w * x[t]
		if out[0], err = newPermute(combineKind, op.k, op.e, g, w, plan, in[0].Dtype()); err == nil && op.weighted {
			out[1], err = newPermute(combineGradWKind, op.k, op.e, in[0], g, plan, w.Dtype())
		}
	case combineKind: // y[t] = sum_j w * ye[row]
		if out[0], err = newPermute(dispatchKind, op.k, op.e, g, w, plan, in[0].Dtype()); err == nil && op.weighted {
			out[1], err = newPermute(combineGradWKind, op.k, op.e, g, in[0], plan, w.Dtype())
		}
	case combineGradWKind: // dw[t,j] = <dy[t], ye[row]>, upstream G [T,K]
		if out[0], err = newPermute(combineKind, op.k, op.e, in[1], g, plan, in[0].Dtype()); err == nil {
			out[1], err = newPermute(dispatchKind, op.k, op.e, in[0], g, plan, in[1].Dtype())
		}
	}
	return out, err
}

// DoDiff: the LispMachine does not run bfloat16 graphs (CheckLispGraph says so).
func (op *mixedPermuteOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error {
	return failf(ErrUnsupported, "%v: the LispMachine does not run bfloat16 graphs; use a TapeMachine with G.Grad", op)
}

func (op *mixedPermuteOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *mixedPermuteOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	return op.do(prealloc, vs, op.a, op.b, op.out)
}

// bf16Pair readies the operands of a product: when one is bfloat16 and the other float32, the float32
// one is cast to bfloat16 (one Cast node, whose input gets a float32 gradient: see gradDtype), so the
// product runs on bfloat16. bfloat16 with float64 is an error (ErrDtype); other pairs are returned as
// they are (their dtypes are checked by the caller).
func bf16Pair(op string, a, b *G.Node, aName, bName string) (*G.Node, *G.Node, error) {
	if isBF16(a.Dtype()) == isBF16(b.Dtype()) {
		return a, b, nil
	}
	var err error
	switch {
	case a.Dtype() == tensor.Float32:
		a, err = Cast(a, BFloat16)
	case b.Dtype() == tensor.Float32:
		b, err = Cast(b, BFloat16)
	default:
		return nil, nil, failf(ErrDtype, "%s: %s %s is %v and %s %s is %v: bfloat16 pairs with bfloat16 or float32 (cast to bfloat16), not float64",
			op, aName, nodeName(a), a.Dtype(), bName, nodeName(b), b.Dtype())
	}
	return a, b, err
}

// MatMulTo is MatMul with the result in dtype dt: the operands' dtype, or float32 for bfloat16 operands
// (the float32 accumulator, not rounded to bfloat16; e.g. router logits from bfloat16 activations and
// weights). A float32 operand given with a bfloat16 one is cast to bfloat16 (one Cast node; its gradient
// is float32). Gradients come back in each operand's dtype (float32 for a cast float32 operand).
func MatMulTo(a, b *G.Node, transA, transB bool, dt tensor.Dtype) (*G.Node, error) {
	const name = "matmul"
	if err := nodeCheck(name, "a", a, 2, anyAct); err != nil {
		return nil, err
	}
	if err := nodeCheck(name, "b", b, 2, anyAct); err != nil {
		return nil, err
	}
	a, b, err := bf16Pair(name, a, b, "a", "b")
	if err != nil {
		return nil, err
	}
	if err := nodeCheck(name, "b", b, 2, a.Dtype()); err != nil {
		return nil, err
	}
	if dt != a.Dtype() && !(isBF16(a.Dtype()) && dt == tensor.Float32) {
		return nil, failf(ErrDtype, "matmul: %v operands give a %v result or (bfloat16 operands only) float32, not %s", a.Dtype(), a.Dtype(), dtName(dt))
	}
	op := &matMulOp{transA: transA, transB: transB}
	if dt != a.Dtype() {
		op.in, op.out = a.Dtype(), dt
	}
	if _, err := op.InferShape(a.Shape(), b.Shape()); err != nil {
		return nil, err
	}
	return G.ApplyOp(op, a, b)
}
