//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// MatMul writes out = op(a)·op(b) (ops.TrainingBackend): a [M,K] ([K,M] when transA), b [K,N] ([N,K]
// when transB), out [M,N], one float dtype, contiguous device tensors of this backend; out must not
// overlap a or b. K = 0 gives zeros. Runs on the GEMM kernels (gemm.go): FFMA/DFMA, or TF32 tensor cores
// for float32 on a device with the option TF32; bfloat16 a and b (out bfloat16 or float32) on the bf16
// tensor cores with float32 accumulation; deterministic.
func (b *Backend) MatMul(a, bm *tensor.Dense, transA, transB bool, out *tensor.Dense) error {
	const what = "matmul"
	dt, odt, err := gemmDtypes(what, []string{"a", "b", "out"}, out, a, bm)
	if err != nil {
		return err
	}
	if a.Shape().Dims() != 2 || bm.Shape().Dims() != 2 || out.Shape().Dims() != 2 {
		return fmt.Errorf("cudaops: %s: a %v, b %v, out %v must be matrices: %w", what, a.Shape(), bm.Shape(), out.Shape(), ops.ErrShape)
	}
	M, K := a.Shape()[0], a.Shape()[1]
	if transA {
		M, K = K, M
	}
	K2, N := bm.Shape()[0], bm.Shape()[1]
	if transB {
		K2, N = N, K2
	}
	if K2 != K {
		return fmt.Errorf("cudaops: %s: a %v (transA=%t) and b %v (transB=%t) disagree on K: %w", what, a.Shape(), transA, bm.Shape(), transB, ops.ErrShape)
	}
	if err := gemmShape(what, "out", out, M, N); err != nil {
		return err
	}
	pa, err := b.buf(what, "a", a, dt)
	if err != nil {
		return err
	}
	pb, err := b.buf(what, "b", bm, dt)
	if err != nil {
		return err
	}
	pout, err := b.buf(what, "out", out, odt)
	if err != nil {
		return err
	}
	if err := noOverlap(what, out, a, bm); err != nil {
		return err
	}
	return b.dev.MatMul(dt, odt, pa, pb, pout, M, N, K, transA, transB)
}
