package cudaops

import "github.com/expertrt/expertrt-go/cudaops/internal/gemmplan"

// gemmKernelSigs declares the kernels of every GEMM module (ptx/gemm/<variant>.ptx.gz, compiled from
// gemm.cu once per line of gemm.variants), in the syntax of kernelSigs: the fields of GemmArgs
// (gemm.cuh) in order, and the split-K reductions (dense; grouped rows: over the rows the offsets
// cover). The modules are loaded by their own loader (gemm.go),
// which checks each module against these lines when it loads it; an untagged test checks every committed
// module and every launch the planner (internal/gemmplan) writes, so CPU CI sees a difference.
const gemmKernelSigs = `
gemm_{nn,nt,tn,tt}(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
gemm_{nn,nt,tn,tt}_v16(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
gemm_reduce(W ptr, C ptr, splits i32, M i32, N i32, ldcR i64, ldcC i64, vec i32)
gemm_reduce_rows(W ptr, C ptr, offsets ptr, splits i32, rows i32, N i32, E i32, ldcR i64, ldcC i64, vec i32)
gemm_swiglu_nn(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32, B2 ptr, G ptr, U ptr)
gemm_swiglu_nn_v16(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32, B2 ptr, G ptr, U ptr)
`

// gemmBF16KernelSigs are the additional kernels of the bfloat16 modules (GEMM_BF16): float32 C (and
// split-K partials), and the reduction of float32 partials into float32 C.
const gemmBF16KernelSigs = `
gemm_{nn,nt,tn,tt}_f32(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
gemm_{nn,nt,tn,tt}_v16_f32(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
gemm_reduce_f32(W ptr, C ptr, splits i32, M i32, N i32, ldcR i64, ldcC i64, vec i32)
`

// gemmSKKernelSigs are the stream-K grouped-rows kernels of the float32, float64 and TF32 mma.sync
// modules (not bfloat16, not wgmma) and their fix-up: the main kernels' parameters.
const gemmSKKernelSigs = `
gemm_sk_{nn,nt}(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
gemm_sk_{nn,nt}_v16(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
gemm_sk_fixup(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
`

// gemmWGKernelSigs are the kernels of the Hopper wgmma modules (GEMM_WGMMA, gemm_wgmma.cuh): the "nt"
// product with 16-byte copies, the split-K reductions, and the K-major copies of the other layouts.
const gemmWGKernelSigs = `
gemm_nt_v16(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
gemm_reduce(W ptr, C ptr, splits i32, M i32, N i32, ldcR i64, ldcC i64, vec i32)
gemm_reduce_rows(W ptr, C ptr, offsets ptr, splits i32, rows i32, N i32, E i32, ldcR i64, ldcC i64, vec i32)
gemm_transpose(in ptr, out ptr, R i32, C i32, ldo i64, strideIn i64, strideOut i64)
`

// gemmSigs returns the declarations of the kernels of variant v's module.
func gemmSigs(v gemmplan.Variant) (sigTable, error) {
	text := gemmKernelSigs
	switch {
	case v.WG:
		text = gemmWGKernelSigs
	case v.BF16:
		text += gemmBF16KernelSigs
	default:
		text += gemmSKKernelSigs
	}
	return parseKernelSigs(text)
}

// checkGemmModule compares the .entry lists of a GEMM module's PTX with the declarations.
func checkGemmModule(v gemmplan.Variant, ptx string) error {
	sigs, err := gemmSigs(v)
	if err != nil {
		return err
	}
	return checkKernelPTX(sigs, map[string]string{"ptx/gemm/" + v.Name + ".ptx.gz": ptx})
}
