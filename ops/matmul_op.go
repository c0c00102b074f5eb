package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// MatMul is the dense matrix product op(a) · op(b), where op(m) is m, or mᵀ when the flag is set:
// a [M,K] ([K,M] when transA), b [K,N] ([N,K] when transB), result [M,N]. Both operands share a float
// dtype. It replaces Gorgonia's Mul on every backend: Gorgonia's matrix product asks the compiler for a
// host output buffer, which device memory cannot use. K may be 0 (the result is zero).
//
// The gradient is MatMul again: with C = op(A)·op(B) and upstream dC,
//
//	dA = dC · op(B)ᵀ   (transA: op(B) · dCᵀ)
//	dB = op(A)ᵀ · dC   (transB: dCᵀ · op(A))
//
// bfloat16 operands multiply on bfloat16 (float32 accumulation) into a bfloat16 result (MatMulTo for a
// float32 one); a float32 operand given with a bfloat16 one is cast to bfloat16.
//
// Example (router logits from x [T,H] and the router weight [E,H]):
//
//	logits, err := ops.MatMul(x, router, false, true) // [T,E]
func MatMul(a, b *G.Node, transA, transB bool) (*G.Node, error) {
	const name = "matmul"
	if err := nodeCheck(name, "a", a, 2, anyAct); err != nil {
		return nil, err
	}
	if err := nodeCheck(name, "b", b, 2, anyAct); err != nil {
		return nil, err
	}
	dt := a.Dtype()
	if isBF16(b.Dtype()) {
		dt = BFloat16
	}
	return MatMulTo(a, b, transA, transB, dt)
}

// matMulOp: (a, b) -> op(a) · op(b).
type matMulOp struct {
	opBase
	transA, transB bool
	in, out        tensor.Dtype // zero: the result has the operands' dtype; else operands in, result out
}

func (op *matMulOp) Arity() int { return 2 }
func (op *matMulOp) Type() hm.Type {
	if op.out.Type != nil {
		return hm.NewFnType(tensorT(2, op.in), tensorT(2, op.in), tensorT(2, op.out))
	}
	return hm.NewFnType(floatT(2), floatT(2), floatT(2))
}
func (op *matMulOp) String() string {
	if op.out.Type != nil {
		return fmt.Sprintf("MatMul{transA=%t,transB=%t,%v->%v}", op.transA, op.transB, op.in, op.out)
	}
	return fmt.Sprintf("MatMul{transA=%t,transB=%t}", op.transA, op.transB)
}
func (op *matMulOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *matMulOp) Hashcode() uint32      { return hashOf(op) }
func (op *matMulOp) DiffWRT(int) []bool    { return []bool{true, true} }

// matMulTerm is one gradient product MatMul(v[x], v[y], tx, ty) over v = (a, b, dc).
type matMulTerm struct {
	x, y   int
	tx, ty bool
}

// gradTerms returns the products giving da and db (see MatMul).
func (op *matMulOp) gradTerms() [2]matMulTerm {
	const a, b, dc = 0, 1, 2
	da := matMulTerm{dc, b, false, !op.transB}
	if op.transA {
		da = matMulTerm{b, dc, op.transB, true}
	}
	db := matMulTerm{a, dc, !op.transA, false}
	if op.transB {
		db = matMulTerm{dc, a, true, op.transA}
	}
	return [2]matMulTerm{da, db}
}

func (op *matMulOp) SymDiff(in G.Nodes, _, dc *G.Node) (G.Nodes, error) {
	if len(in) != 2 {
		return nil, failf(ErrShape, "%v: want 2 inputs, got %d", op, len(in))
	}
	v := G.Nodes{in[0], in[1], dc}
	out := make(G.Nodes, 2)
	for i, t := range op.gradTerms() {
		var err error
		if out[i], err = MatMulTo(v[t.x], v[t.y], t.tx, t.ty, gradDtype(in[i])); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DoDiff (LispMachine) runs the gradient products of SymDiff on values.
func (op *matMulOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return lispDiff(op, inputs, output, func(in []G.Value, g G.Value) ([]G.Value, error) {
		v := []G.Value{in[0], in[1], g}
		out := make([]G.Value, 2)
		for i, t := range op.gradTerms() {
			var err error
			if out[i], err = (&matMulOp{transA: t.tx, transB: t.ty}).Do(v[t.x], v[t.y]); err != nil {
				return nil, err
			}
		}
		return out, nil
	})
}

func (op *matMulOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	a, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	b, err := shapeArg(ds, 1)
	if err != nil {
		return nil, err
	}
	if len(a) != 2 || len(b) != 2 {
		return nil, failf(ErrShape, "%v: operands %v and %v must be matrices", op, a, b)
	}
	m, k := a[0], a[1]
	if op.transA {
		m, k = k, m
	}
	kb, n := b[0], b[1]
	if op.transB {
		kb, n = n, kb
	}
	if k != kb {
		return nil, failf(ErrShape, "%v: inner dimensions differ: a %v gives K=%d, b %v gives K=%d", op, a, k, b, kb)
	}
	return tensor.Shape{m, n}, nil
}

func (op *matMulOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *matMulOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 2, vs); err != nil {
		return nil, err
	}
	adt, outdt := anyAct, tensor.Dtype{}
	if op.out.Type != nil {
		adt, outdt = op.in, op.out
	}
	a, err := arg("matmul", "a", vs[0], adt, -1, -1)
	if err != nil {
		return nil, err
	}
	if outdt.Type == nil {
		outdt = a.Dtype()
	}
	b, err := arg("matmul", "b", vs[1], a.Dtype(), -1, -1)
	if err != nil {
		return nil, err
	}
	s, err := op.InferShape(a.Shape(), b.Shape())
	if err != nil {
		return nil, err
	}
	be, err := backendOf("matmul", a, b)
	if err != nil {
		return nil, err
	}
	out, err := output(be, prealloc, outdt, s...)
	if err != nil {
		return nil, err
	}
	return out, be.MatMul(a, b, op.transA, op.transB, out)
}
