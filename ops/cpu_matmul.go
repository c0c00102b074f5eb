package ops

import (
	"gonum.org/v1/gonum/blas"
	"gorgonia.org/tensor"
)

// MatMul writes out = op(a) · op(b) with gonum's GEMM (row-major; float32 accumulates in float32, as the
// GPU kernels do). gonum splits the work by blocks of out and sums each block's inner dimension in a
// fixed order, so the result does not depend on scheduling.
func (cpuBackend) MatMul(a, b *tensor.Dense, transA, transB bool, out *tensor.Dense) error {
	m, k, n, err := matMulDims(a, b, transA, transB, out)
	if err != nil {
		return err
	}
	if mixedBF16(a, b, out) {
		return matMulBF16CPU(a, b, transA, transB, out, m, k, n)
	}
	return byDtype(a.Dtype(),
		func() error { return matMulCPU[float32](a, b, transA, transB, out, m, k, n) },
		func() error { return matMulCPU[float64](a, b, transA, transB, out, m, k, n) })
}

// matMulDims checks the operands of a MatMul kernel and returns M, K and N.
func matMulDims(a, b *tensor.Dense, transA, transB bool, out *tensor.Dense) (m, k, n int, err error) {
	if a == nil || b == nil || out == nil {
		return 0, 0, 0, failf(ErrShape, "matmul: nil tensor")
	}
	if a.Dims() != 2 || b.Dims() != 2 || out.Dims() != 2 {
		return 0, 0, 0, failf(ErrShape, "matmul: a %v, b %v and out %v must be matrices", a.Shape(), b.Shape(), out.Shape())
	}
	if a.Dtype() != b.Dtype() || (a.Dtype() != out.Dtype() && !(isBF16(a.Dtype()) && out.Dtype() == tensor.Float32)) {
		return 0, 0, 0, failf(ErrDtype, "matmul: mixed dtypes %v, %v, %v", a.Dtype(), b.Dtype(), out.Dtype())
	}
	m, k = a.Shape()[0], a.Shape()[1]
	if transA {
		m, k = k, m
	}
	kb, n := b.Shape()[0], b.Shape()[1]
	if transB {
		kb, n = n, kb
	}
	if kb != k || out.Shape()[0] != m || out.Shape()[1] != n {
		return 0, 0, 0, failf(ErrShape, "matmul: a %v (transA=%t) · b %v (transB=%t) does not give out %v", a.Shape(), transA, b.Shape(), transB, out.Shape())
	}
	return m, k, n, nil
}

func matMulCPU[T float](a, b *tensor.Dense, transA, transB bool, out *tensor.Dense, m, k, n int) error {
	if m == 0 || n == 0 { // nothing to write (and tensor's Data() cannot be taken of an empty tensor)
		return nil
	}
	os, err := floats[T](out)
	if err != nil {
		return err
	}
	if k == 0 { // an empty sum; gonum rejects a leading dimension of 0
		clear(os[:m*n])
		return nil
	}
	as, err := floats[T](a)
	if err != nil {
		return err
	}
	bs, err := floats[T](b)
	if err != nil {
		return err
	}
	tA, tB := blas.NoTrans, blas.NoTrans
	if transA {
		tA = blas.Trans
	}
	if transB {
		tB = blas.Trans
	}
	// Row-major leading dimensions are the stored column counts.
	gemm(tA, tB, m, n, k, as, a.Shape()[1], bs, b.Shape()[1], os[:m*n], n)
	return nil
}
