package ops

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	"gorgonia.org/tensor"
)

func (cpuBackend) GroupedMatMul(x, w, plan *tensor.Dense, transposeW bool, out *tensor.Dense) error {
	if mixedBF16(x, w, out) {
		return groupedMatMulBF16CPU(x, w, plan, transposeW, out)
	}
	return byDtype(x.Dtype(),
		func() error { return groupedMatMulCPU[float32](x, w, plan, transposeW, out) },
		func() error { return groupedMatMulCPU[float64](x, w, plan, transposeW, out) })
}

// groupedMatMulCPU runs one GEMM per non-empty expert segment; gonum's GEMM parallelises inside.
func groupedMatMulCPU[T float](x, w, plan *tensor.Dense, transposeW bool, out *tensor.Dense) error {
	xs, err := floats[T](x)
	if err != nil {
		return err
	}
	ws, err := floats[T](w)
	if err != nil {
		return err
	}
	os, err := floats[T](out)
	if err != nil {
		return err
	}
	offsets, err := segmentOffsets(plan, w.Shape()[0], x.Shape()[0])
	if err != nil {
		return err
	}
	in, outDim := x.Shape()[1], out.Shape()[1]
	tB, ldb := blas.NoTrans, outDim
	if transposeW {
		tB, ldb = blas.Trans, in
	}
	// Rows past the kept segments hold a capacity plan's dropped slots: zero (empty for dropless plans).
	clear(os[int(offsets[len(offsets)-1])*outDim:])
	// Segments are uneven, so experts are handed out in turn (eachTask); each expert's result is one GEMM
	// by one goroutine, so the output does not depend on which goroutine ran it. gonum parallelises large
	// GEMMs itself; small segments run serially there, which is why experts are spread here.
	eachTask(len(offsets)-1, func(e int) {
		lo, hi := int(offsets[e]), int(offsets[e+1])
		if hi == lo {
			return
		}
		we := ws[e*in*outDim : (e+1)*in*outDim]
		gemm(blas.NoTrans, tB, hi-lo, outDim, in, xs[lo*in:hi*in], in, we, ldb, os[lo*outDim:hi*outDim], outDim)
	})
	return nil
}

func (cpuBackend) GroupedMatMulGradW(x, dy, plan *tensor.Dense, dW *tensor.Dense) error {
	if mixedBF16(x, dy, dW) {
		return groupedMatMulGradWBF16CPU(x, dy, plan, dW)
	}
	return byDtype(x.Dtype(),
		func() error { return groupedMatMulGradWCPU[float32](x, dy, plan, dW) },
		func() error { return groupedMatMulGradWCPU[float64](x, dy, plan, dW) })
}

func groupedMatMulGradWCPU[T float](x, dy, plan *tensor.Dense, dW *tensor.Dense) error {
	xs, err := floats[T](x)
	if err != nil {
		return err
	}
	gs, err := floats[T](dy)
	if err != nil {
		return err
	}
	os, err := floats[T](dW)
	if err != nil {
		return err
	}
	offsets, err := segmentOffsets(plan, dW.Shape()[0], x.Shape()[0])
	if err != nil {
		return err
	}
	in, outDim := x.Shape()[1], dy.Shape()[1]
	eachTask(len(offsets)-1, func(e int) {
		lo, hi := int(offsets[e]), int(offsets[e+1])
		dst := os[e*in*outDim : (e+1)*in*outDim]
		if hi == lo {
			clear(dst) // an expert without rows gets a zero gradient
			return
		}
		gemm(blas.Trans, blas.NoTrans, in, outDim, hi-lo, xs[lo*in:hi*in], in, gs[lo*outDim:hi*outDim], outDim, dst, outDim)
	})
	return nil
}

// segmentOffsets returns the plan's offsets [E+1] after checking they tile [0, offsets[E]) with
// offsets[E] <= rows (rows past offsets[E] are a capacity plan's dropped slots).
func segmentOffsets(plan *tensor.Dense, numExperts, rows int) ([]int32, error) {
	p, err := int32s(plan)
	if err != nil {
		return nil, err
	}
	if len(p) < 2*numExperts+1 {
		return nil, failf(ErrShape, "grouped matmul: plan of %d elements is too short for E=%d", len(p), numExperts)
	}
	off := p[numExperts : 2*numExperts+1]
	if off[0] != 0 || off[numExperts] < 0 || int(off[numExperts]) > rows {
		return nil, failf(ErrShape, "grouped matmul: plan offsets span [%d,%d), want [0,n) with n <= %d", off[0], off[numExperts], rows)
	}
	for e := 0; e < numExperts; e++ {
		if off[e+1] < off[e] {
			return nil, failf(ErrShape, "grouped matmul: plan offsets decrease at expert %d", e)
		}
	}
	return off, nil
}

// gemm computes C = op(A)·op(B) (alpha 1, beta 0) for row-major float32 or float64 slices.
func gemm[T float](tA, tB blas.Transpose, m, n, k int, a []T, lda int, b []T, ldb int, c []T, ldc int) {
	switch a := any(a).(type) {
	case []float32:
		gonum.Implementation{}.Sgemm(tA, tB, m, n, k, 1, a, lda, any(b).([]float32), ldb, 0, any(c).([]float32), ldc)
	case []float64:
		gonum.Implementation{}.Dgemm(tA, tB, m, n, k, 1, a, lda, any(b).([]float64), ldb, 0, any(c).([]float64), ldc)
	}
}
