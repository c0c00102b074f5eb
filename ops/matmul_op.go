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
// Example (router logits from x [T,H] and the router weight [E,H]):
//
//	logits, err := ops.MatMul(x, router, false, true) // [T,E]
func MatMul(a, b *G.Node, transA, transB bool) (*G.Node, error) {
	const name = "matmul"
	if err := needNode(name, "a", a, 2, anyFloat); err != nil {
		return nil, err
	}
	if err := needNode(name, "b", b, 2, a.Dtype()); err != nil {
		return nil, err
	}
	op := &matMulOp{transA: transA, transB: transB}
	if _, err := op.InferShape(a.Shape(), b.Shape()); err != nil {
		return nil, err
	}
	return G.ApplyOp(op, a, b)
}

// matMulOp: (a, b) -> op(a) · op(b).
type matMulOp struct {
	opBase
	transA, transB bool
}

func (op *matMulOp) Arity() int { return 2 }
func (op *matMulOp) Type() hm.Type {
	return hm.NewFnType(floatT(2), floatT(2), floatT(2))
}
func (op *matMulOp) String() string {
	return fmt.Sprintf("MatMul{transA=%t,transB=%t}", op.transA, op.transB)
}
func (op *matMulOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *matMulOp) Hashcode() uint32      { return hashOf(op) }
func (op *matMulOp) DiffWRT(int) []bool    { return []bool{true, true} }

func (op *matMulOp) SymDiff(in G.Nodes, _, dc *G.Node) (G.Nodes, error) {
	if len(in) != 2 {
		return nil, errorf("%v: want 2 inputs, got %d: %w", op, len(in), ErrShape)
	}
	a, b := in[0], in[1]
	var da, db *G.Node
	var err error
	if op.transA {
		da, err = MatMul(b, dc, op.transB, true)
	} else {
		da, err = MatMul(dc, b, false, !op.transB)
	}
	if err != nil {
		return nil, err
	}
	if op.transB {
		db, err = MatMul(dc, a, true, op.transA)
	} else {
		db, err = MatMul(a, dc, !op.transA, false)
	}
	return G.Nodes{da, db}, err
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
		return nil, errorf("%v: operands %v and %v must be matrices: %w", op, a, b, ErrShape)
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
		return nil, errorf("%v: inner dimensions differ: a %v gives K=%d, b %v gives K=%d: %w", op, a, k, b, kb, ErrShape)
	}
	return tensor.Shape{m, n}, nil
}

func (op *matMulOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *matMulOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 2, vs); err != nil {
		return nil, err
	}
	a, err := denseArg("matmul", "a", vs[0], anyFloat, tensor.Shape{-1, -1})
	if err != nil {
		return nil, err
	}
	b, err := denseArg("matmul", "b", vs[1], a.Dtype(), tensor.Shape{-1, -1})
	if err != nil {
		return nil, err
	}
	s, err := op.InferShape(a.Shape(), b.Shape())
	if err != nil {
		return nil, err
	}
	be, err := ownerOf("matmul", a, b)
	if err != nil {
		return nil, err
	}
	out, err := output(be, prealloc, a.Dtype(), s...)
	if err != nil {
		return nil, err
	}
	return out, be.MatMul(a, b, op.transA, op.transB, out)
}
