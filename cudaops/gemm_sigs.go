package cudaops

// gemmKernelSigs declares the kernels of every GEMM module (ptx/gemm/<variant>.ptx.gz, compiled from
// gemm.cu once per line of gemm.variants), in the syntax of kernelSigs: the fields of GemmArgs
// (gemm.cuh) in order, and the split-K reduction. The modules are loaded by their own loader (gemm.go),
// which checks each module against these lines when it loads it; an untagged test checks every committed
// module and every launch the planner (internal/gemmplan) writes, so CPU CI sees a difference.
const gemmKernelSigs = `
gemm_{nn,nt,tn,tt}(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
gemm_{nn,nt,tn,tt}_v16(A ptr, B ptr, C ptr, W ptr, offsets ptr, fault fault, lda i64, ldb i64, ldcR i64, ldcC i64, strideB i64, strideC i64, M i32, N i32, K i32, E i32, rows i32, mode i32, splits i32, kChunk i32, mTiles i32, nTiles i32, flags i32)
gemm_reduce(W ptr, C ptr, splits i32, M i32, N i32, ldcR i64, ldcC i64, vec i32)
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

// gemmSigs returns the declarations of a GEMM module's kernels (bf16: a bfloat16 module).
func gemmSigs(bf16 bool) (sigTable, error) {
	text := gemmKernelSigs
	if bf16 {
		text += gemmBF16KernelSigs
	}
	return parseKernelSigs(text)
}

// checkGemmModule compares the .entry lists of a GEMM module's PTX with the declarations.
func checkGemmModule(name string, bf16 bool, ptx string) error {
	sigs, err := gemmSigs(bf16)
	if err != nil {
		return err
	}
	return checkKernelPTX(sigs, map[string]string{"ptx/gemm/" + name + ".ptx.gz": ptx})
}
