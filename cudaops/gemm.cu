// GEMM kernel family (tile core: gemm.cuh). One PTX module per tile configuration: gen-ptx.sh compiles
// this file once per line of gemm.variants, with that line's -D flags, into ptx/gemm/<name>.ptx.gz, and the
// Go side loads a module the first time a product uses its configuration (gemm.go).
//
// Kernels of every module:
//   gemm_nn, gemm_nt, gemm_tn, gemm_tt   C = op(A)·op(B); first letter A's layout, second B's (n: A
//                                        stored [M,K] / B stored [K,N]; t: A stored [K,M] / B stored
//                                        [N,K]); parameters = the fields of GemmArgs in order; one CTA
//                                        per output tile (grid: see gemm_entry and internal/gemmplan)
//   gemm_xx_v16                          the same with 16-byte copies for the operands copied without
//                                        transposition (every operand in the TF32, bfloat16 and KC
//                                        variants; all such operands 16-byte aligned with rows of whole
//                                        vectors) and 16-byte register-staged loads (RS variants: every
//                                        operand, as for KC)
//   gemm_reduce                          split-K: C = sum of the partial products, in split order
//   gemm_reduce_rows                     grouped rows split-K: the same over C's rows [offsets[0],
//                                        offsets[E]) only (W, C, offsets, splits, rows, N, E, ldcR, ldcC, vec)
//   gemm_sk_nn, gemm_sk_nt (+ _v16)      stream-K grouped rows (mode GEMM_GROUP_ROWS_SK; float32,
//                                        float64 and TF32 mma.sync modules): p.splits CTAs share the
//                                        tiles' k-iterations (gemm_entry)
//   gemm_sk_fixup                        adds the partial tiles of a gemm_sk_* launch into C; the same
//                                        parameters and grid
//   gemm_swiglu_nn, gemm_swiglu_nn_v16   grouped rows only: C = silu(A·B[e]) ⊙ (A·B2[e]) (the SwiGLU of an
//                                        expert's gate and up projections, B and B2 stored [E,K,N]), and
//                                        the two products into G and U where those are not null;
//                                        parameters: GemmArgs's, then B2, G, U; C, G, U of GEMM_T
// bfloat16 modules (GEMM_BF16): the kernels above write C in bfloat16 (rounded once); gemm_xx_f32 and
// gemm_xx_v16_f32 write C in float32 (also the split-K partials), and gemm_reduce_f32 sums float32
// partials into a float32 C (gemm_reduce: into bfloat16).
// Hopper wgmma modules (GEMM_WGMMA, TF32 only, sm_90a PTX: gemm_wgmma.cuh) have only gemm_nt_v16 (both
// operands K-major, 16-byte aligned rows), gemm_reduce, gemm_reduce_rows, and gemm_transpose(in, out, R, C, ldo, strideIn,
// strideOut), which makes the K-major copies of other layouts (grid: see gemm_transpose_body).
// And gemm_config[8] = {threads, dynamic shared bytes, BM, BN, BK, stages, element bytes, tf32}, which
// the loader compares with its own reading of gemm.variants before launching anything (tf32: 0, 1 for
// mma.sync, 2 for wgmma).
#include "gemm.cuh"
#ifndef GEMM_WGMMA  // Hopper warpgroup MMA tile (TF32; sm_90a PTX, see gen-ptx.sh)
#define GEMM_WGMMA 0
#endif
#if GEMM_WGMMA
#include "gemm_wgmma.cuh"
#endif

#if !defined(GEMM_T) || !defined(GEMM_BM) || !defined(GEMM_BN) || !defined(GEMM_BK) || !defined(GEMM_WARPS_M) || \
    !defined(GEMM_WARPS_N) || !defined(GEMM_STAGES) || !defined(GEMM_MINB) || !defined(GEMM_TF32)
#error "gemm.cu is compiled once per configuration of gemm.variants (gen-ptx.sh)"
#endif
#ifndef GEMM_KC  // SIMT: k-contiguous shared tiles for operands stored k-contiguous (see SimtTile)
#define GEMM_KC 0
#endif
#ifndef GEMM_RS  // SIMT float32: k-major tiles, k-contiguous operands transposed through registers (see SimtTile)
#define GEMM_RS 0
#endif
#ifndef GEMM_BF16  // bfloat16 operands on the m16n8k16 tensor-core tile (GEMM_T is bf16)
#define GEMM_BF16 0
#endif
// SIMT k-contiguous fragments: 4 k per read when the register budget of MINB blocks of this size allows
// (acc TM*TN plus 4*TM and 4*TN fragments), else 2.
#define GEMM_REGS (65536 / (GEMM_WARPS_M * GEMM_WARPS_N * 32 * GEMM_MINB))
#define GEMM_KD (!GEMM_KC ? 0 : GEMM_REGS >= 160 ? 4 : 2)

// TC: C's element type (bfloat16 modules: bf16 or float; else GEMM_T).
template <bool AT, bool BT, bool VEC, typename TC = GEMM_T> struct GemmCfg {
#if GEMM_WGMMA
    typedef WgTile<GEMM_BM, GEMM_BN, GEMM_BK, GEMM_WARPS_M, GEMM_WARPS_N, GEMM_STAGES> type;
#elif GEMM_BF16
    typedef Bf16Tile<GEMM_BM, GEMM_BN, GEMM_BK, GEMM_WARPS_M, GEMM_WARPS_N, GEMM_STAGES, AT, BT, VEC, TC> type;
#elif GEMM_TF32
    typedef Tf32Tile<GEMM_BM, GEMM_BN, GEMM_BK, GEMM_WARPS_M, GEMM_WARPS_N, GEMM_STAGES, AT, BT, VEC> type;
#else
    typedef SimtTile<GEMM_T, GEMM_BM, GEMM_BN, GEMM_BK, GEMM_WARPS_M, GEMM_WARPS_N, GEMM_TM, GEMM_TN, GEMM_STAGES, AT, BT, VEC, GEMM_KD, GEMM_RS != 0> type;
#endif
};
typedef GemmCfg<false, false, false>::type GemmNN;
#if GEMM_TF32
static_assert(sizeof(GEMM_T) == 4, "TF32 tiles take float operands");
#endif
#if GEMM_WGMMA
static_assert(GEMM_TF32 && !GEMM_BF16 && !GEMM_KC, "wgmma modules are TF32 modules");
#endif
#if GEMM_BF16
static_assert(sizeof(GEMM_T) == 2 && !GEMM_TF32, "bfloat16 modules take bf16 operands");
#endif

#define GEMM_PARAMS                                                                                              \
    const void *A, const void *B, void *C, void *W, const int *offsets, unsigned *fault, long long lda,          \
        long long ldb, long long ldcR, long long ldcC, long long strideB, long long strideC, int M, int N, int K, \
        int E, int rows, int mode, int splits, int kChunk, int mTiles, int nTiles, int flags
#define GEMM_ARGS \
    { A, B, C, W, offsets, fault, lda, ldb, ldcR, ldcC, strideB, strideC, M, N, K, E, rows, mode, splits, kChunk, mTiles, nTiles, flags }

#ifndef GEMM_EMU
extern "C" __device__ int gemm_config[8] = {GemmNN::NT, GemmNN::SMEM, GEMM_BM, GEMM_BN, GEMM_BK, GEMM_STAGES, (int)sizeof(GEMM_T), GEMM_TF32 + GEMM_WGMMA};

extern __shared__ __align__(16) unsigned char gemm_smem[];

#define GEMM_KERNEL(NAME, AT, BT, VEC, TC)                                                       \
    extern "C" __global__ void __launch_bounds__(GemmNN::NT, GEMM_MINB) NAME(GEMM_PARAMS) {       \
        const GemmArgs p = GEMM_ARGS;                                                                \
        gemm_entry<GemmCfg<AT, BT, VEC, TC>::type, AT, BT>(p, gemm_smem, blockIdx.x, threadIdx.x);  \
    }

#define GEMM_SK_KERNEL(NAME, BT, VEC)                                                                    \
    extern "C" __global__ void __launch_bounds__(GemmNN::NT, GEMM_MINB) NAME(GEMM_PARAMS) {               \
        const GemmArgs p = GEMM_ARGS;                                                                        \
        gemm_entry<GemmCfg<false, BT, VEC, GEMM_T>::type, false, BT, false, true>(p, gemm_smem, blockIdx.x, threadIdx.x); \
    }

#define GEMM_SWIGLU_KERNEL(NAME, VEC)                                                                                \
    extern "C" __global__ void __launch_bounds__(GemmNN::NT, GEMM_MINB) NAME(GEMM_PARAMS, const void* B2, void* G, void* U) { \
        GemmArgs p = GEMM_ARGS;                                                                                        \
        p.B2 = B2;                                                                                                     \
        p.G = G;                                                                                                       \
        p.U = U;                                                                                                       \
        gemm_entry<GemmCfg<false, false, VEC, GEMM_T>::type, false, false, true>(p, gemm_smem, blockIdx.x, threadIdx.x); \
    }

// Stream-K fix-up (gemm_entry's GROUP_ROWS_SK): the GEMM parameters, grid p.splits.
#define GEMM_SK_FIXUP(NAME)                                                                     \
    extern "C" __global__ void __launch_bounds__(GemmNN::NT) NAME(GEMM_PARAMS) {                \
        const GemmArgs p = GEMM_ARGS;                                                           \
        gemm_sk_fixup_body<GemmNN>(p, blockIdx.x, threadIdx.x);                                 \
    }

#define GEMM_REDUCE(NAME, TW, TC)                                                                                      \
    extern "C" __global__ void NAME(const void* W, void* C, int splits, int M, int N, long long ldcR, long long ldcC, \
                                    int vec) {                                                                         \
        gemm_reduce_body<TW, TC>(static_cast<const TW*>(W), static_cast<TC*>(C), splits, M, N, ldcR, ldcC, vec,        \
                                 (long long)blockIdx.x * blockDim.x + threadIdx.x, (long long)gridDim.x * blockDim.x); \
    }
#define GEMM_REDUCE_ROWS(NAME, TW, TC)                                                                               \
    extern "C" __global__ void NAME(const void* W, void* C, const int* offsets, int splits, int rows, int N, int E,   \
                                    long long ldcR, long long ldcC, int vec) {                                        \
        gemm_reduce_rows_body<TW, TC>(static_cast<const TW*>(W), static_cast<TC*>(C), offsets, splits, rows, N, E,    \
                                      ldcR, ldcC, vec, (long long)blockIdx.x * blockDim.x + threadIdx.x,              \
                                      (long long)gridDim.x * blockDim.x);                                             \
    }
#else
// CPU emulation (internal/gemmemu): the same entries as host functions, registered by name.
#define GEMM_KERNEL(NAME, AT, BT, VEC, TC) GEMM_EMU_KERNEL(NAME, AT, BT, VEC, TC)
#define GEMM_REDUCE_ROWS(NAME, TW, TC) GEMM_EMU_REDUCE_ROWS(NAME, TW, TC)
#define GEMM_SWIGLU_KERNEL(NAME, VEC) GEMM_EMU_SWIGLU_KERNEL(NAME, VEC)
#define GEMM_REDUCE(NAME, TW, TC) GEMM_EMU_REDUCE(NAME, TW, TC)
#define GEMM_SK_FIXUP(NAME) GEMM_EMU_SK_FIXUP(NAME)
#define GEMM_SK_KERNEL(NAME, BT, VEC) GEMM_EMU_SK_KERNEL(NAME, BT, VEC)
GEMM_EMU_CONFIG(GemmNN::NT, GemmNN::SMEM, GEMM_BM, GEMM_BN, GEMM_BK, GEMM_STAGES, (int)sizeof(GEMM_T), GEMM_TF32 + GEMM_WGMMA)
#endif

#if GEMM_WGMMA
GEMM_KERNEL(gemm_nt_v16, false, true, true, GEMM_T)
GEMM_REDUCE(gemm_reduce, GEMM_T, GEMM_T)
GEMM_REDUCE_ROWS(gemm_reduce_rows, GEMM_T, GEMM_T)
#ifndef GEMM_EMU
extern "C" __global__ void __launch_bounds__(256) gemm_transpose(const void* in, void* out, int R, int C, long long ldo,
                                                                 long long strideIn, long long strideOut) {
    __shared__ float t[32][33];
    gemm_transpose_body(static_cast<const float*>(in), static_cast<float*>(out), R, C, ldo, strideIn, strideOut,
                        blockIdx.x, threadIdx.x, t);
}
#else
GEMM_EMU_TRANSPOSE(gemm_transpose)
#endif
#else

GEMM_KERNEL(gemm_nn, false, false, false, GEMM_T)
GEMM_KERNEL(gemm_nt, false, true, false, GEMM_T)
GEMM_KERNEL(gemm_tn, true, false, false, GEMM_T)
GEMM_KERNEL(gemm_tt, true, true, false, GEMM_T)
GEMM_KERNEL(gemm_nn_v16, false, false, true, GEMM_T)
GEMM_KERNEL(gemm_nt_v16, false, true, true, GEMM_T)
GEMM_KERNEL(gemm_tn_v16, true, false, true, GEMM_T)
GEMM_KERNEL(gemm_tt_v16, true, true, true, GEMM_T)
GEMM_SWIGLU_KERNEL(gemm_swiglu_nn, false)
GEMM_SWIGLU_KERNEL(gemm_swiglu_nn_v16, true)
#if GEMM_BF16
GEMM_KERNEL(gemm_nn_f32, false, false, false, float)
GEMM_KERNEL(gemm_nt_f32, false, true, false, float)
GEMM_KERNEL(gemm_tn_f32, true, false, false, float)
GEMM_KERNEL(gemm_tt_f32, true, true, false, float)
GEMM_KERNEL(gemm_nn_v16_f32, false, false, true, float)
GEMM_KERNEL(gemm_nt_v16_f32, false, true, true, float)
GEMM_KERNEL(gemm_tn_v16_f32, true, false, true, float)
GEMM_KERNEL(gemm_tt_v16_f32, true, true, true, float)
GEMM_REDUCE(gemm_reduce, float, bf16)
GEMM_REDUCE(gemm_reduce_f32, float, float)
GEMM_REDUCE_ROWS(gemm_reduce_rows, float, bf16)
#else
GEMM_REDUCE(gemm_reduce, GEMM_T, GEMM_T)
GEMM_REDUCE_ROWS(gemm_reduce_rows, GEMM_T, GEMM_T)
GEMM_SK_KERNEL(gemm_sk_nn, false, false)
GEMM_SK_KERNEL(gemm_sk_nt, true, false)
GEMM_SK_KERNEL(gemm_sk_nn_v16, false, true)
GEMM_SK_KERNEL(gemm_sk_nt_v16, true, true)
GEMM_SK_FIXUP(gemm_sk_fixup)
#endif
#endif  // GEMM_WGMMA
