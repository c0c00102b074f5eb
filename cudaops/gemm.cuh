// Tile core of the GEMM kernel family (gemm.cu): C = op(A) · op(B) over one dense problem, over the row
// segments of a grouped problem (one expert per segment), or over the reduction segments of a grouped
// weight gradient, all with the tile-to-problem mapping computed on the device from the plan's offsets.
//
// Conventions (element coordinates of the mathematical product C[M,N] = A[M,K] · B[K,N]):
//   A(m,k) = A[m*lda + k]  (layout "n": A stored [M,K])    or A[k*lda + m]  (layout "t": stored [K,M])
//   B(k,n) = B[k*ldb + n]  (layout "n": B stored [K,N])    or B[n*ldb + k]  (layout "t": stored [N,K])
//   C(m,n) = C[m*ldcR + n*ldcC]  (row-major C has ldcR = ldc, ldcC = 1; a transposed store has ldcR = 1)
// Every output element is one thread's accumulation in increasing k (SIMT: one FMA chain; TF32: the
// tensor core's fixed order), so results are bitwise reproducible whatever the launch order of the tiles.
//
// Two main loops share the scheduling, the shared-memory staging and the epilogue:
//   SimtTile: FFMA/DFMA outer products from 16-byte shared fragment loads. In the KC (float) variants
//             every operand tile keeps its global layout (k-major or k-contiguous); otherwise tiles are
//             k-major (As[k][m], Bs[k][n]) and k-contiguous operands are transposed by the copy.
//   Tf32Tile: mma.sync.m16n8k8 tf32 (float only) from ldmatrix and 8-/4-byte shared fragment loads,
//             every operand tile in its global layout, fragments of the next 8 k read while the current
//             ones multiply.
//   Bf16Tile: mma.sync.m16n8k16 bf16 with float32 accumulation, the same pipeline over 2-byte elements,
//             every fragment one ldmatrix (.trans for k-major tiles); C float32 or bfloat16 (rounded
//             once, to nearest even).
// Global→shared copies are cp.async (compute_80+), STAGES deep. A copy whose global side is contiguous
// along the shared row is 16 bytes wide in the kernels built with VEC (the host launches them only when
// every such operand is 16-byte aligned with a row length that is a multiple of the vector), else one
// element wide; a copy that transposes (SIMT without KC) is one element wide, with lanes arranged so that
// a warp reads whole 32-byte sectors and writes 32 distinct shared banks. Elements outside the problem
// are zero-filled (cp.async src-size 0), so odd M, N, K need no special paths. cp.async has no 2-byte
// form: the one-element copies of bfloat16 tiles (misaligned operands only) are plain loads and stores.
//
// The same source compiles as host C++ for the CPU emulator (internal/gemmemu) when GEMM_EMU is defined:
// the few device primitives below are then provided by emu.h.
#pragma once

#ifndef GEMM_EMU
#define GEMM_DEV __device__ __forceinline__
#endif

// A bfloat16 element: its bit pattern. The tiles only move it; arithmetic is the tensor core's (products
// exact, float32 accumulation) and the epilogue's one rounding of the float32 result.
struct bf16 {
    unsigned short bits;
};

enum GemmMode { GEMM_DENSE = 0, GEMM_GROUP_ROWS = 1, GEMM_GROUP_RED = 2, GEMM_GROUP_ROWS_SK = 3 };
enum GemmFlags { GEMM_VEC_C = 4, GEMM_SORT = 8 };
#define GEMM_FAULT_OFFSETS 32u // FAULT_* code (see common.cuh): the plan's offsets are not segments of [0, rows)
#define GEMM_FAULT_MODE 256u   // FAULT_* code: a launch whose mode its kernel does not run (nothing written)
#define GEMM_SORT_MAX 256      // grouped reductions order at most this many experts by segment length

// Everything a launch needs. The kernels take these as separate parameters (gemm.cu) in this order.
struct GemmArgs {
    const void* A;
    const void* B;
    void* C;
    void* W;             // split-K partials [splits][M][N] (dense with splits > 1)
    const int* offsets;  // grouped: E+1 segment offsets
    unsigned* fault;     // device fault word (grouped: invalid offsets)
    long long lda, ldb, ldcR, ldcC;
    long long strideB;  // GROUP_ROWS: elements between consecutive experts' B
    long long strideC;  // GROUP_RED: elements between consecutive experts' C
    int M, N, K;        // DENSE: all; GROUP_ROWS: N, K (M per segment); GROUP_RED: M, N (K per segment)
    int E, rows;        // grouped: experts and the rows the offsets tile
    int mode, splits, kChunk;
    int mTiles, nTiles;  // tiles of one problem (GROUP_ROWS: m-tile slots)
    int flags;
    // SwiGLU products (gemm_swiglu_*, GROUP_ROWS): B is the gate projection W1, B2 the up projection W3
    // (both [E,K,N]); C gets h = silu(A·W1)·(A·W3), G and U (either may be null) the two products.
    const void* B2;
    void* G;
    void* U;
};

// ---------------------------------------------------------------- device primitives
#ifndef GEMM_EMU
GEMM_DEV unsigned smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
// cp.async of 16 bytes (L2 only: the tile is reused from shared memory, not L1), or of one 4- or 8-byte
// element; src-size 0 writes zeros and reads nothing.
GEMM_DEV void cp_async16(void* s, const void* g, bool in) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(s)), "l"(g), "r"(in ? 16 : 0));
}
GEMM_DEV void cp_async_elem(float* s, const float* g, bool in) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(s)), "l"(g), "r"(in ? 4 : 0));
}
GEMM_DEV void cp_async_elem(double* s, const double* g, bool in) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_u32(s)), "l"(g), "r"(in ? 8 : 0));
}
// bfloat16: no 2-byte cp.async exists; a synchronous copy (the stage it writes is free already, as for
// cp.async, and nothing waits for it).
GEMM_DEV void cp_async_elem(bf16* s, const bf16* g, bool in) { s->bits = in ? g->bits : (unsigned short)0; }
GEMM_DEV void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> GEMM_DEV void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Round to tf32 (10 mantissa bits, nearest, ties away from zero), as cuBLAS's TF32 mode does.
GEMM_DEV unsigned to_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}
// d += a · b for one m16n8k8 tile (fragment layouts: PTX ISA, "Matrix Fragments for mma.m16n8k8").
GEMM_DEV void mma_tf32(float* d, const unsigned* a, const unsigned* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// ldmatrix.x4: lane 8j+r names row r (16 bytes) of matrix j; lane l receives word l%4 of row l/4 of
// matrix j in d[j] (for 32-bit elements: row l/4, column l%4 of an 8x4 block).
GEMM_DEV void ldsm_x4(unsigned* d, const float* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(smem_u32(row)));
}
// d += a · b for one m16n8k16 bf16 tile, float32 accumulation (fragment layouts: PTX ISA, "Matrix
// Fragments for mma.m16n8k16 with floating point type"): a0..a3 = A(g, 2t..2t+1), A(g+8, 2t..2t+1),
// A(g, 2t+8..2t+9), A(g+8, 2t+8..2t+9); b0, b1 = B(2t..2t+1, g), B(2t+8..2t+9, g); the lower k or
// column in the low half of each register; d as for m16n8k8.
GEMM_DEV void mma_bf16(float* d, const unsigned* a, const unsigned* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// ldmatrix.x4 of 8x8 bfloat16 matrices: lane 8j+r names row r (16 bytes) of matrix j; lane l receives in
// d[j] the elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix j; with .trans (ldsm_x4_t) the elements
// (2(l%4), l/4) and (2(l%4)+1, l/4) (row, column of the matrix as stored; the first in the low half).
GEMM_DEV void ldsm_x4(unsigned* d, const bf16* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(smem_u32(row)));
}
GEMM_DEV void ldsm_x4_t(unsigned* d, const bf16* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(smem_u32(row)));
}
GEMM_DEV unsigned tf32_bits(unsigned u) { return to_tf32(__uint_as_float(u)); }
// Register-staged copies (SimtTile with RS): global loads into registers, zero when !in (nothing read),
// and plain shared stores. The loads take the read-only path (ld.global.nc, as the prototype's __ldg):
// no kernel of the family writes its operands.
GEMM_DEV void ldg4(float* r, const float* g, bool in) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (in) v = __ldg(reinterpret_cast<const float4*>(g));
    r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
}
// (SimtTile instantiates these for double too, never calling them: RS tiles are float32.)
GEMM_DEV void ldg4(double* r, const double* g, bool in) {
    for (int e = 0; e < 4; e++) r[e] = in ? __ldg(g + e) : 0.0;
}
template <typename T> GEMM_DEV T ldg1(const T* g, bool in) { return in ? __ldg(g) : T(0); }
template <typename T> GEMM_DEV void sts1(T* s, T v) { *s = v; }
GEMM_DEV void gemm_fault(unsigned* f, unsigned code) { atomicOr(f, code); }
#endif

// 16-byte vectors and 4-element register groups.
template <typename T> struct Vec16;
template <> struct Vec16<float> { typedef float4 type; enum { n = 4 }; };
template <> struct Vec16<double> { typedef double2 type; enum { n = 2 }; };
template <> struct Vec16<bf16> { enum { n = 8 }; };

// float32 to bfloat16 bits: nearest, ties to even; NaN keeps sign and payload and gets the quiet bit
// (bit for bit internal/bf16 and bf16.cu).
GEMM_DEV unsigned short f2bf_bits(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
// Output stores: one element, or a pair of adjacent ones (8-byte aligned float2 / 4-byte aligned bf16
// pair), converting the float32 accumulator to the output type.
GEMM_DEV void put1(float* p, float v) { *p = v; }
GEMM_DEV void put1(double* p, double v) { *p = v; }
GEMM_DEV void put1(bf16* p, float v) { p->bits = f2bf_bits(v); }
GEMM_DEV void put2(float* p, float v0, float v1) { *reinterpret_cast<float2*>(p) = make_float2(v0, v1); }
GEMM_DEV void put2(bf16* p, float v0, float v1) {
    *reinterpret_cast<unsigned*>(p) = (unsigned)f2bf_bits(v0) | (unsigned)f2bf_bits(v1) << 16;
}

// Shared-memory fragment reads. The emulator checks each (alignment, inside the CTA's dynamic shared
// memory) through GEMM_SMEM_READ; on the GPU a misaligned read would fault.
#ifndef GEMM_EMU
#define GEMM_SMEM_READ(p, bytes)
#endif
GEMM_DEV float lds1(const float* s) {
    GEMM_SMEM_READ(s, 4);
    return *s;
}
// Reads s[0..3] (16-byte aligned shared memory) into r[0..3].
GEMM_DEV void lds4(float* r, const float* s) {
    GEMM_SMEM_READ(s, 16);
    const float4 v = *reinterpret_cast<const float4*>(s);
    r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
}
GEMM_DEV void lds4(double* r, const double* s) {
    GEMM_SMEM_READ(s, 16);
    GEMM_SMEM_READ(s + 2, 16);
    const double2 u = *reinterpret_cast<const double2*>(s);
    const double2 v = *reinterpret_cast<const double2*>(s + 2);
    r[0] = u.x; r[1] = u.y; r[2] = v.x; r[3] = v.y;
}
// Reads s[0..1] (8-byte aligned shared memory).
GEMM_DEV float2 lds2(const float* s) {
    GEMM_SMEM_READ(s, 8);
    return *reinterpret_cast<const float2*>(s);
}
GEMM_DEV void lds2(float* r, const float* s) {
    const float2 v = lds2(s);
    r[0] = v.x; r[1] = v.y;
}
GEMM_DEV void lds2(double* r, const double* s) {
    GEMM_SMEM_READ(s, 16);
    const double2 v = *reinterpret_cast<const double2*>(s);
    r[0] = v.x; r[1] = v.y;
}
GEMM_DEV float fma_t(float a, float b, float c) { return fmaf(a, b, c); }
GEMM_DEV double fma_t(double a, double b, double c) { return fma(a, b, c); }

// ---------------------------------------------------------------- global → shared tile copies
// Copies an R x C tile into shared memory, s[r*LDS + c] = src(r, c), zero where r >= rLim or c >= cLim.
// ROWMAJOR: src(r, c) = g[r*ld + c] (global contiguous along c, like the shared row): 16-byte copies when
// VEC (the host guarantees g and ld are 16-byte multiples and cLim is a multiple of the vector), else one
// element each; consecutive threads take consecutive units of a row. !ROWMAJOR: src(r, c) = g[c*ld + r]
// (contiguous along r: the copy transposes): one element each, 8 consecutive r per group of 8 lanes (a
// 32-byte sector for floats) and 4 columns per warp, so that with rows of 4 words mod 32 (odd multiples
// of 4 words) a warp's 32 writes hit 32 distinct banks. Every thread makes the same number of copies at
// offsets fixed for the whole tile (the host keeps tile extent * ld below 2^31, so they are 32-bit).
// CHECK: compare with the limits (edge tiles); zero-filled copies name g itself, the tile's first element,
// which is always inside the operand (nothing is read from it). Interior stages skip the comparisons.
template <typename T, int R, int C, int LDS, int NT, bool ROWMAJOR, bool VEC, bool CHECK>
GEMM_DEV void load_tile(T* s, const T* g, int ld, int rLim, int cLim, int tid) {
    if (ROWMAJOR) {
        const int UNIT = VEC ? 16 / (int)sizeof(T) : 1;
        const int U = C / UNIT;  // units per row
        const int TPR = NT >= U ? NT / U : 1;  // rows per pass when threads cover whole rows
        const int UPT = U >= NT ? U / NT : 1;  // passes per row otherwise
        const int COUNT = NT % U == 0 ? (R + TPR - 1) / TPR : R * UPT;
        const bool EXACT = NT % U != 0 || R % TPR == 0;  // every thread's every copy is inside the tile
        static_assert(C % (VEC ? 16 / (int)sizeof(T) : 1) == 0, "row length must be whole vectors");
        static_assert(NT % (C / (VEC ? 16 / (int)sizeof(T) : 1)) == 0 || (C / (VEC ? 16 / (int)sizeof(T) : 1)) % NT == 0,
                      "threads and row units must nest");
#pragma unroll
        for (int q = 0; q < COUNT; q++) {
            int r, c;
            if (NT % U == 0) {
                r = tid / U + q * TPR;
                c = (tid % U) * UNIT;
            } else {
                r = q / UPT;
                c = ((q % UPT) * NT + tid) * UNIT;
            }
            if (!EXACT && r >= R) break;
            const bool in = !CHECK || (r < rLim && c < cLim);
            T* dst = s + r * LDS + c;
            const T* src = g + (in ? r * ld + c : 0);
            if (VEC) cp_async16(dst, src, in);
            else cp_async_elem(dst, src, in);
        }
    } else {
        const int NG = NT / 8;  // groups of 8 lanes
        static_assert(R % 8 == 0 && ((NT / 8) % C == 0 || C % (NT / 8) == 0), "bad transposing copy shape");
        const int g8 = tid >> 3, rl = tid & 7;
        const int GPC = NG >= C ? NG / C : 1;  // 8-row groups per pass when the lane groups cover all columns
        const int PPC = C >= NG ? C / NG : 1;  // passes per 8-row group otherwise
        const int COUNT = NG % C == 0 ? (R / 8 + GPC - 1) / GPC : (R / 8) * PPC;
        const bool EXACT = NG % C != 0 || (R / 8) % GPC == 0;
#pragma unroll
        for (int q = 0; q < COUNT; q++) {
            int r, c;
            if (NG % C == 0) {
                c = g8 % C;
                r = (g8 / C + q * GPC) * 8 + rl;
            } else {
                c = g8 + (q % PPC) * NG;
                r = (q / PPC) * 8 + rl;
            }
            if (!EXACT && r >= R) break;
            const bool in = !CHECK || (r < rLim && c < cLim);
            cp_async_elem(s + r * LDS + c, g + (in ? c * ld + r : 0), in);
        }
    }
}

// One output tile's problem view, filled by the scheduler. TC: the element type of C (bf16 tiles:
// float32 or bfloat16; else T).
template <typename T, typename TC = T> struct TileJob {
    const T* a;     // A(m0, kBegin)
    const T* b;     // B(kBegin, n0)
    TC* c;          // C(m0, n0)
    int lda, ldb;          // < 2^31 / tile extent (see load_tile)
    long long ldcR, ldcC;
    int mLim, nLim;  // rows and columns of the problem from (m0, n0) on
    int kLen;        // reduction length of this tile
    bool vecC;
    // SwiGLU tiles: b2 = W3(kBegin, n0) beside b = W1(kBegin, n0); g, u: the products' rows (or null);
    // n0, nLim count features (columns of h).
    const T* b2;
    TC* g;
    TC* u;
};

// ---------------------------------------------------------------- SwiGLU epilogue (gemm_swiglu_*)
// One launch computes h = silu(A·W1) ⊙ (A·W3) over the expert segments: the tile's BN columns are, per
// warp tile of WN columns, WN/2 features of W1 followed by the same WN/2 features of W3, so every thread
// holds the gate and the up value of each of its features (its column q of the first half pairs with
// column q + (its columns)/2, in every tile kind) and the epilogue writes h (and, for the backward, the
// two products) without another pass over memory. A CTA covers BN/2 features.
//
// B stage of a SwiGLU tile (B stored [K,F] for both, k-major Bs[k][n]): 2·BN/WN copies of WN/2 columns.
// Zero-filled copies name the row's first element of the tile (inside the operand: f0 < F, k0 < K).
template <typename T, int BK, int BN, int WN, int LDB_S, int NT, bool VEC, bool CHECK, typename TC>
GEMM_DEV void load_b_swiglu(T* sB, const TileJob<T, TC>& j, int k0, int tid) {
    const int HW = WN / 2;
#pragma unroll
    for (int w = 0; w < BN / WN; w++)
#pragma unroll
        for (int s = 0; s < 2; s++) {
            const T* base = (s ? j.b2 : j.b) + (long long)k0 * j.ldb;
            const int cLim = j.nLim - w * HW;
            load_tile<T, BK, HW, LDB_S, NT, true, VEC, CHECK>(sB + w * WN + s * HW, cLim > 0 ? base + w * HW : base, j.ldb,
                                                              j.kLen - k0, cLim, tid);
        }
}
// silu(g)·u, the expression of the unfused SwiGLU kernels (elementwise.cu, bf16.cu): a fused h is the
// unfused one to the last bit (the GPU tests count the elements that differ in it).
GEMM_DEV float swiglu_h(float g, float u) { return g * (1.0f / (1.0f + expf(-g))) * u; }
GEMM_DEV double swiglu_h(double g, double u) { return g * (1.0 / (1.0 + exp(-g))) * u; }
// The value an accumulator has once stored as TC: bfloat16 products are rounded before the activation,
// as the unfused graph stores them.
GEMM_DEV float as_stored(float v, const float*) { return v; }
GEMM_DEV double as_stored(double v, const double*) { return v; }
GEMM_DEV float as_stored(float v, const bf16*) { return __uint_as_float((unsigned)f2bf_bits(v) << 16); }
// Writes features n, n+1 of one row (pair: ldcC == 1 and a pair-aligned row) from the gate and up
// accumulators g0, g1, u0, u1.
template <typename TC, typename J>
GEMM_DEV void swiglu_put2(const J& j, long long rowOff, int n, float g0, float g1, float u0, float u1) {
    const TC* tag = nullptr;
    g0 = as_stored(g0, tag), g1 = as_stored(g1, tag), u0 = as_stored(u0, tag), u1 = as_stored(u1, tag);
    const float h0 = swiglu_h(g0, u0), h1 = swiglu_h(g1, u1);
    if (j.vecC) {
        if (n < j.nLim) {
            put2(j.c + rowOff + n, h0, h1);
            if (j.g) put2(j.g + rowOff + n, g0, g1);
            if (j.u) put2(j.u + rowOff + n, u0, u1);
        }
    } else {
        if (n < j.nLim) {
            put1(j.c + rowOff + n, h0);
            if (j.g) put1(j.g + rowOff + n, g0);
            if (j.u) put1(j.u + rowOff + n, u0);
        }
        if (n + 1 < j.nLim) {
            put1(j.c + rowOff + n + 1, h1);
            if (j.g) put1(j.g + rowOff + n + 1, g1);
            if (j.u) put1(j.u + rowOff + n + 1, u1);
        }
    }
}

// ---------------------------------------------------------------- SIMT main loop
// BM x BN block tile, BK deep, STAGES-deep pipeline; WARPS_M x WARPS_N warps, each a (BM/WARPS_M) x
// (BN/WARPS_N) warp tile; each thread a TM x TN register tile over the warp's LM x LN lane grid.
//
// Shared layouts. With KC (k-contiguous tiles, the float variants), every operand keeps the layout it has
// in global memory, so every copy is direct (16-byte cp.async when aligned) and none transposes:
//   A stored [K,M] (layout t): As[k][m]; A stored [M,K] (layout n): As[m][k], rows BK+PAD long.
//   B stored [K,N] (layout n): Bs[k][n]; B stored [N,K] (layout t): Bs[n][k], rows BK+PAD long.
// Without KC (the float64 variants, the _mn baseline) tiles are always k-major (As[k][m], Bs[k][n])
// and an operand stored k-contiguous is transposed on the way by element copies.
// Fragment reads are 16-byte shared loads either way:
//   k-major tile: at one k, 4 consecutive rows (columns); the thread's rows (columns) are 4x4 blocks
//     spaced by the lane grid, so a warp reads LM (LN) consecutive 16-byte words, broadcast to the
//     lanes that share them;
//   k-contiguous tile: 4 consecutive k of one row (column); the thread's rows (columns) are lm + LM*i
//     (ln + LN*q), so a warp reads LM (LN) <= 8 consecutive rows, whose 16-byte words fall in distinct
//     bank groups because a row is an odd number of 16-byte words (BK+PAD with BK a multiple of 8).
// Either way one shared load feeds 4 rows x 1 k or 1 row x 4 k: the same load count per FMA.
// RS (register-staged, float, no KC): every tile is k-major, so the main loop is the one of the weight
// gradient's layout (both operands k-major, the fastest SIMT loop), and an operand stored k-contiguous
// (A [M,K], B [N,K]) is transposed through registers instead of by element copies: while tile kt is
// multiplied, each thread loads its units of tile kt+1 (4 consecutive k of one row, a 16-byte load with
// VEC, else 4 element loads) into registers, and after the multiplication stores them as 4 elements of
// the k-major stage of tile kt+1 (published by the next iteration's barrier). Unit u of a thread (u =
// tid + NT*q) is row r = (u/2) % R, k = 4*(2*((u/2)/R) + u%2): two lanes cover the 32 bytes of 8
// consecutive k of one row (a whole sector), a warp 16 rows; with k-major rows of BM+4 (4 words mod 32)
// the 32 stores of a warp (one element each) fall in banks 16*(u%2) + r + const: 32 distinct banks.
// Operands stored k-major still take cp.async copies into the same stages. The RS loop (run_rs) has the
// shape of the standalone prototype that set its speed target (issue 8): fragments of k+1 read while
// those of k multiply, per-tile unit addresses advanced by pointer increments, read-only (nc) loads,
// no cp.async bookkeeping when both operands are register-staged (dY·Wᵀ).
// Edge tiles (RS loop only): a warp whose rows (or columns) all lie past the problem's edge skips its
// multiplications (warp_active), so e.g. an expert's last m-tile of 2 valid rows costs its copies and
// barriers only. The KC and float64 loop (run) does not: the same skip there made the 128x64 tile 3-6 %
// slower on the H200 (forward and dY·Wᵀ at the Mixtral shape, 2026-12-02) for no gain.
template <typename T, int BM_, int BN_, int BK_, int WARPS_M, int WARPS_N, int TM, int TN, int STAGES, bool AT, bool BT, bool VEC, int KD,
          bool RS = false>
struct SimtTile {
    typedef T elem;
    typedef T out;
    enum {
        KC = KD > 0,  // KD: k per fragment read of a k-contiguous tile (4, or 2 where registers are short)
        BM = BM_, BN = BN_, BK = BK_,
        NT = WARPS_M * WARPS_N * 32,
        PAD = 16 / (int)sizeof(T),
        A_K = KC && !AT,  // As[m][k]
        B_K = KC && BT,   // Bs[n][k]
        RA = RS && !AT,   // A through registers (k-contiguous in global memory)
        RB = RS && BT,    // B through registers
        RU = BK / 4,      // register-staged units (4 k) per row
        RA_N = RA ? (BM * RU + NT - 1) / NT : 1,  // units per thread (arrays of at least 1)
        RB_N = RB ? (BN * RU + NT - 1) / NT : 1,
        LDA_S = A_K ? BK + PAD : BM + PAD,
        LDB_S = B_K ? BK + PAD : BN + PAD,
        // Every kernel of a module has the same shared memory size: the larger of the two layouts.
        A_STAGE = KC && BM * (BK + PAD) > BK * (BM + PAD) ? BM * (BK + PAD) : BK * (BM + PAD),
        B_STAGE = KC && BN * (BK + PAD) > BK * (BN + PAD) ? BN * (BK + PAD) : BK * (BN + PAD),
        SMEM = STAGES * (A_STAGE + B_STAGE) * (int)sizeof(T),
        WM = BM / WARPS_M, WN = BN / WARPS_N,
        LM = WM / TM, LN = WN / TN,
    };
    static_assert(LM * LN == 32, "a warp tile must be 32 thread tiles");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "thread tiles are made of 4x4 blocks");
    static_assert(BK % 8 == 0 && STAGES >= 2, "BK must be a multiple of 8, STAGES >= 2");
    // Transposing copies write 8 rows x 4 columns per warp: distinct banks when rows are 4 words mod 32.
    static_assert(sizeof(T) == 8 || KC || ((LDA_S % 32) == 4 && (LDB_S % 32) == 4), "shared rows must be 4 words mod 32");
    static_assert((!A_K || LM <= 8) && (!B_K || LN <= 8), "k-contiguous fragment reads need at most 8 lanes per row group");
    static_assert(!KC || KD == 2 || KD == 4, "KD is 2 or 4");
    static_assert(!RS || (!KC && sizeof(T) == 4), "register-staged tiles are float32 and k-major");

    template <bool CHECK, bool SW> static GEMM_DEV void load_stage(T* sA, T* sB, const TileJob<T>& j, int k0, int tid) {
        if (RA) {  // register-staged (run_rs)
        } else if (A_K) load_tile<T, BM, BK, LDA_S, NT, true, VEC, CHECK>(sA, j.a + k0, j.lda, j.mLim, j.kLen - k0, tid);
        else if (AT) load_tile<T, BK, BM, LDA_S, NT, true, VEC, CHECK>(sA, j.a + (long long)k0 * j.lda, j.lda, j.kLen - k0, j.mLim, tid);
        else load_tile<T, BK, BM, LDA_S, NT, false, false, CHECK>(sA, j.a + k0, j.lda, j.kLen - k0, j.mLim, tid);
        if (SW) load_b_swiglu<T, BK, BN, WN, LDB_S, NT, VEC, CHECK>(sB, j, k0, tid);  // B stored [K,N]: never RB
        else if (RB) {
        } else if (B_K) load_tile<T, BN, BK, LDB_S, NT, true, VEC, CHECK>(sB, j.b + k0, j.ldb, j.nLim, j.kLen - k0, tid);
        else if (!BT) load_tile<T, BK, BN, LDB_S, NT, true, VEC, CHECK>(sB, j.b + (long long)k0 * j.ldb, j.ldb, j.kLen - k0, j.nLim, tid);
        else load_tile<T, BK, BN, LDB_S, NT, false, false, CHECK>(sB, j.b + k0, j.ldb, j.kLen - k0, j.nLim, tid);
    }
    // Stage t of the pipeline: interior stages (the whole BM x BN x BK block inside the problem) copy
    // without bounds checks. SW: a SwiGLU tile (B from W1 and W3, BN/2 features).
    template <bool SW> static GEMM_DEV void load(T* sA, T* sB, const TileJob<T>& j, int t, int tid) {
        const int k0 = t * BK;
        if (j.mLim >= BM && j.nLim >= (SW ? BN / 2 : BN) && j.kLen - k0 >= BK) load_stage<false, SW>(sA, sB, j, k0, tid);
        else load_stage<true, SW>(sA, sB, j, k0, tid);
    }

    // Register-staged copies (RS). A unit is 4 consecutive k of one row of a k-contiguous operand; unit u
    // of a thread (u = tid + NT*q) is row r = (u/2) % R, k = 4*(2*((u/2)/R) + u%2) of the stage. Units
    // past R*RU (thread counts that do not divide the tile) are skipped. Everything about a unit that does
    // not change along k is computed once per tile (rs_units): its global address at the first k-tile
    // (advanced by BK per load, no per-tile index arithmetic), whether its row is inside the problem, its
    // k in the stage, and its shared offset. Interior k-tiles of a tile whose staged rows are all inside
    // (the common case) load without any comparison.
    template <int R, int N> struct RsUnits {
        const T* g[N];  // the unit's 4 elements at the next k-tile to load
        int k[N];       // k of the unit in a stage
        int so[N];      // shared offset in a stage: k * LDS + r
        bool in[N];     // row inside the problem
        int cnt;        // units of this thread (N unless the thread count does not divide the tile's)
        T v[N][4];      // the loaded values, stored after the current k-tile's multiplication
    };
    template <int R, int N, int LDS>
    static GEMM_DEV void rs_units(RsUnits<R, N>& s, const T* g, int ld, int rLim, int tid) {
        s.cnt = 0;
#pragma unroll
        for (int q = 0; q < N; q++) {
            const int u = tid + q * NT;
            if ((R * RU) % NT != 0 && u >= R * RU) break;
            s.cnt = q + 1;
            const int r = (u >> 1) % R, k = 4 * (2 * ((u >> 1) / R) + (u & 1));
            s.in[q] = r < rLim;
            s.g[q] = g + (s.in[q] ? r * ld + k : 0);  // rows outside name the tile's first element
            s.k[q] = k;
            s.so[q] = k * LDS + r;
        }
    }
    // Loads the units of the next k-tile (kLim: k remaining from its first k) and advances to the one after.
    // CHECK: compare with the limits; a zero-filled unit names safe (inside the operand, nothing read).
    template <int R, int N, bool CHECK> static GEMM_DEV void rs_ldg(RsUnits<R, N>& s, const T* safe, int kLim) {
#pragma unroll
        for (int q = 0; q < N; q++) {
            if ((R * RU) % NT != 0 && q >= s.cnt) break;
            if (VEC) {  // g and ld 16-byte multiples, kLim a multiple of 4 (the planner's _v16 condition)
                const bool in = !CHECK || (s.in[q] && s.k[q] < kLim);
                ldg4(s.v[q], in ? s.g[q] : safe, in);
            } else {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const bool in = !CHECK || (s.in[q] && s.k[q] + e < kLim);
                    s.v[q][e] = ldg1(in ? s.g[q] + e : safe, in);
                }
            }
            s.g[q] += BK;
        }
    }
    template <int R, int N, int LDS> static GEMM_DEV void rs_sts(T* st, const RsUnits<R, N>& s) {
#pragma unroll
        for (int q = 0; q < N; q++) {
            if ((R * RU) % NT != 0 && q >= s.cnt) break;
#pragma unroll
            for (int e = 0; e < 4; e++) sts1(st + s.so[q] + e * LDS, s.v[q][e]);
        }
    }

    // Row of the warp tile holding the thread's i-th row (lm: the lane's row in the lane grid), and
    // likewise the column of its q-th column.
    static GEMM_DEV int row_of(int i, int lm) { return A_K ? lm + LM * i : lm * 4 + (i / 4) * LM * 4 + i % 4; }
    static GEMM_DEV int col_of(int q, int ln) { return B_K ? ln + LN * q : ln * 4 + (q / 4) * LN * 4 + q % 4; }

    // Fragments of one stage. K layout (s: the lane's first row): f[kk][i] = element (row_of(i), k0+kk)
    // for the KD k from k0, one 16- or 8-byte load per row. k-major layout (s: the lane's first 4-block
    // at k = 0): f[0][i] = element (row_of(i), k), 16-byte loads of 4-blocks.
    template <int R, int L, int LD, int KK> static GEMM_DEV void frag_k(T (&f)[KK][R], const T* s, int k0) {
#pragma unroll
        for (int i = 0; i < R; i++) {
            T v[4];
            if (KD == 4) lds4(v, s + i * L * LD + k0);
            else lds2(v, s + i * L * LD + k0);
#pragma unroll
            for (int kk = 0; kk < KD && kk < KK; kk++) f[kk][i] = v[kk];
        }
    }
    template <int R, int L, int LD, int KK> static GEMM_DEV void frag_mn(T (&f)[KK][R], const T* s, int k) {
#pragma unroll
        for (int i = 0; i < R / 4; i++) lds4(&f[0][4 * i], s + k * LD + i * L * 4);
    }

    // Whether warp (wm, wn) has anything to compute: a warp whose rows (or columns; SwiGLU: features) all
    // lie at or past the problem's edge skips its fragment reads and multiplications (it still makes its
    // copies and meets every barrier), so an edge tile costs about its valid rows. Its accumulators stay
    // zero and the epilogue writes none of them: results are unchanged. Warps go by wm = warp / WARPS_N,
    // so the warps of the first rows are consecutive warp ids: the active warps of a tile with few rows
    // are a prefix of the warp ids, spread round-robin over the SM's 4 sub-partitions (warp % 4; e.g.
    // 4x2 warps of 64 rows: 1-64 rows keep warps 0, 1 on two sub-partitions, 65-128 warps 0-3 on all four).
    template <bool SW> static GEMM_DEV bool warp_active(const TileJob<T>& j, int wm, int wn) {
        return wm * WM < j.mLim && wn * (SW ? WN / 2 : WN) < j.nLim;
    }

    static GEMM_DEV void zero(T (&acc)[TM][TN]) {
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
            for (int q = 0; q < TN; q++) acc[i][q] = T(0);
    }

    template <bool SW> static GEMM_DEV void run(const TileJob<T>& j, unsigned char* smem, int tid) {
        static_assert(!SW || (!B_K && TN % 8 == 0), "SwiGLU tiles: B stored [K,N], thread columns in pairs of 4-runs");
        if (RS) {
            run_rs<SW>(j, smem, tid);
            return;
        }
        T* sA = reinterpret_cast<T*>(smem);
        T* sB = sA + STAGES * A_STAGE;
        const int warp = tid >> 5, lane = tid & 31;
        const int wm = warp / WARPS_N, wn = warp % WARPS_N;
        const int lm = lane / LN, ln = lane % LN;
        // The lane's first fragment element in a stage.
        const int aOff = A_K ? (wm * WM + lm) * LDA_S : wm * WM + lm * 4;
        const int bOff = B_K ? (wn * WN + ln) * LDB_S : wn * WN + ln * 4;

        T acc[TM][TN];
        zero(acc);

        const int kTiles = (j.kLen + BK - 1) / BK;
#pragma unroll
        for (int s = 0; s < STAGES - 1; s++) {
            if (s < kTiles) load<SW>(sA + s * A_STAGE, sB + s * B_STAGE, j, s, tid);
            cp_async_commit();
        }
        for (int kt = 0; kt < kTiles; kt++) {
            cp_async_wait<STAGES - 2>();  // tile kt has landed (for this thread's copies) ...
            __syncthreads();              // ... for everyone's, and stage (kt-1) % STAGES is free
            const int pf = kt + STAGES - 1;
            if (pf < kTiles) load<SW>(sA + (pf % STAGES) * A_STAGE, sB + (pf % STAGES) * B_STAGE, j, pf, tid);
            cp_async_commit();
            const T* a = sA + (kt % STAGES) * A_STAGE + aOff;
            const T* b = sB + (kt % STAGES) * B_STAGE + bOff;
            // A k-contiguous operand is read KD k at a time, a k-major one k by k (fewer live registers).
            const int KG = KC ? KD : 4;
#pragma unroll
            for (int k0 = 0; k0 < BK; k0 += KG) {
                T fa[A_K ? KG : 1][TM], fb[B_K ? KG : 1][TN];
                if (A_K) frag_k<TM, LM, LDA_S>(fa, a, k0);
                if (B_K) frag_k<TN, LN, LDB_S>(fb, b, k0);
#pragma unroll
                for (int kk = 0; kk < KG; kk++) {
                    if (!A_K) frag_mn<TM, LM, LDA_S>(fa, a, k0 + kk);
                    if (!B_K) frag_mn<TN, LN, LDB_S>(fb, b, k0 + kk);
                    const T* ra = fa[A_K ? kk : 0];
                    const T* rb = fb[B_K ? kk : 0];
#pragma unroll
                    for (int i = 0; i < TM; i++)
#pragma unroll
                        for (int q = 0; q < TN; q++) acc[i][q] = fma_t(ra[i], rb[q], acc[i][q]);
                }
            }
        }
        cp_async_wait<0>();
        if (SW) swiglu_epilogue(j, acc, wm, wn, lm, ln);
        else epilogue(j, acc, wm, wn, lm, ln);
    }

    // The RS main loop (the shape of the standalone prototype that set the speed target): per k-tile kt,
    // one barrier (tile kt's stage complete, the stage of tile kt+1 free), the cp.async copies of the
    // operands stored k-major (none for dY·Wᵀ), the register-staged loads of tile kt+1, the
    // multiplication of tile kt with the fragments of k+1 read while those of k multiply, and the stores
    // of tile kt+1's staged units into its stage, which nobody reads in iteration kt (its previous tile,
    // kt+1-STAGES, was read before this iteration's barrier). Tile 0's staged units are stored before the
    // first barrier.
    template <bool SW> static GEMM_DEV void run_rs(const TileJob<T>& j, unsigned char* smem, int tid) {
        const bool CP = SW || !RA || !RB;  // an operand copied by cp.async
        T* sA = reinterpret_cast<T*>(smem);
        T* sB = sA + STAGES * A_STAGE;
        const int warp = tid >> 5, lane = tid & 31;
        const int wm = warp / WARPS_N, wn = warp % WARPS_N;
        const int lm = lane / LN, ln = lane % LN;
        const bool active = warp_active<SW>(j, wm, wn);
        const int aOff = wm * WM + lm * 4, bOff = wn * WN + ln * 4;  // the lane's first 4-blocks at k = 0

        T acc[TM][TN];
        zero(acc);

        const int kTiles = (j.kLen + BK - 1) / BK;
        // cp.async sources of the next k-tile to copy (operands stored k-major), advanced a k-tile per copy.
        const T* ca = j.a;
        const T* cb = j.b;
        if (CP) {
#pragma unroll
            for (int s = 0; s < STAGES - 1; s++) {
                if (s < kTiles) rs_cp<SW>(sA + s * A_STAGE, sB + s * B_STAGE, ca, cb, j, s, tid);
                cp_async_commit();
            }
        }
        RsUnits<BM, RA_N> ua;
        RsUnits<BN, RB_N> ub;
        if (RA) rs_units<BM, RA_N, LDA_S>(ua, j.a, j.lda, j.mLim, tid);
        if (RB) rs_units<BN, RB_N, LDB_S>(ub, j.b, j.ldb, j.nLim, tid);
        // Every staged row inside the problem: interior k-tiles load unchecked.
        const bool rowsIn = (!RA || j.mLim >= BM) && (!RB || j.nLim >= BN);
        if (kTiles > 0) {
            rs_ldg_stage(ua, ub, j, 0, rowsIn);
            rs_sts_stage(sA, sB, ua, ub);
        }
        for (int kt = 0; kt < kTiles; kt++) {
            if (CP) cp_async_wait<STAGES - 2>();  // tile kt has landed (for this thread's copies) ...
            __syncthreads();                      // ... for everyone's, and stage (kt-1) % STAGES is free
            if (CP) {
                const int pf = kt + STAGES - 1;
                if (pf < kTiles) rs_cp<SW>(sA + (pf % STAGES) * A_STAGE, sB + (pf % STAGES) * B_STAGE, ca, cb, j, pf, tid);
                cp_async_commit();
            }
            const bool more = kt + 1 < kTiles;
            if (more) rs_ldg_stage(ua, ub, j, (kt + 1) * BK, rowsIn);
            if (active) {
                const T* a = sA + (kt % STAGES) * A_STAGE + aOff;
                const T* b = sB + (kt % STAGES) * B_STAGE + bOff;
                T fa[2][TM], fb[2][TN];
                frag_rs<TM, LM, LDA_S>(fa[0], a, 0);
                frag_rs<TN, LN, LDB_S>(fb[0], b, 0);
#pragma unroll
                for (int k = 0; k < BK; k++) {
                    const int c = k & 1;
                    if (k + 1 < BK) {
                        frag_rs<TM, LM, LDA_S>(fa[c ^ 1], a, k + 1);
                        frag_rs<TN, LN, LDB_S>(fb[c ^ 1], b, k + 1);
                    }
#pragma unroll
                    for (int i = 0; i < TM; i++)
#pragma unroll
                        for (int q = 0; q < TN; q++) acc[i][q] = fma_t(fa[c][i], fb[c][q], acc[i][q]);
                }
            }
            if (more) {
                const int nx = (kt + 1) % STAGES;
                rs_sts_stage(sA + nx * A_STAGE, sB + nx * B_STAGE, ua, ub);
            }
        }
        if (CP) cp_async_wait<0>();
        if (SW) swiglu_epilogue(j, acc, wm, wn, lm, ln);
        else epilogue(j, acc, wm, wn, lm, ln);
    }
    // cp.async copies of k-tile t of the operands stored k-major (A [K,M], B [K,N]; SwiGLU: load), from
    // ca, cb, which then move to tile t+1; interior tiles (the operand's rows or columns all inside, BK k
    // left) unchecked.
    template <bool SW>
    static GEMM_DEV void rs_cp(T* sA, T* sB, const T*& ca, const T*& cb, const TileJob<T>& j, int t, int tid) {
        if (SW) {
            load<SW>(sA, sB, j, t, tid);
            return;
        }
        const int kLim = j.kLen - t * BK;
        if (!RA) {
            if (j.mLim >= BM && kLim >= BK) load_tile<T, BK, BM, LDA_S, NT, true, VEC, false>(sA, ca, j.lda, kLim, j.mLim, tid);
            else load_tile<T, BK, BM, LDA_S, NT, true, VEC, true>(sA, ca, j.lda, kLim, j.mLim, tid);
            ca += BK * j.lda;
        }
        if (!RB) {
            if (j.nLim >= BN && kLim >= BK) load_tile<T, BK, BN, LDB_S, NT, true, VEC, false>(sB, cb, j.ldb, kLim, j.nLim, tid);
            else load_tile<T, BK, BN, LDB_S, NT, true, VEC, true>(sB, cb, j.ldb, kLim, j.nLim, tid);
            cb += BK * j.ldb;
        }
    }
    // The staged units of the k-tile at k0 (unchecked when it is interior: rowsIn and BK k left).
    template <int NA, int NB>
    static GEMM_DEV void rs_ldg_stage(RsUnits<BM, NA>& ua, RsUnits<BN, NB>& ub, const TileJob<T>& j, int k0, bool rowsIn) {
        const int kLim = j.kLen - k0;
        if (rowsIn && kLim >= BK) {
            if (RA) rs_ldg<BM, NA, false>(ua, j.a, kLim);
            if (RB) rs_ldg<BN, NB, false>(ub, j.b, kLim);
        } else {
            if (RA) rs_ldg<BM, NA, true>(ua, j.a, kLim);
            if (RB) rs_ldg<BN, NB, true>(ub, j.b, kLim);
        }
    }
    template <int NA, int NB>
    static GEMM_DEV void rs_sts_stage(T* sA, T* sB, const RsUnits<BM, NA>& ua, const RsUnits<BN, NB>& ub) {
        if (RA) rs_sts<BM, NA, LDA_S>(sA, ua);
        if (RB) rs_sts<BN, NB, LDB_S>(sB, ub);
    }
    // f[i] = element (row_of(i), k) of a k-major stage (s: the lane's first 4-block at k = 0).
    template <int R, int L, int LD> static GEMM_DEV void frag_rs(T (&f)[R], const T* s, int k) {
#pragma unroll
        for (int i = 0; i < R / 4; i++) lds4(&f[4 * i], s + k * LD + i * L * 4);
    }

    // Epilogue: with a k-major B tile the thread's columns come in runs of 4 (vector stores);
    // with a k-contiguous one they are LN apart (a warp still writes LN consecutive columns per row).
    static GEMM_DEV void epilogue(const TileJob<T>& j, const T (&acc)[TM][TN], int wm, int wn, int lm, int ln) {
#pragma unroll
        for (int i = 0; i < TM; i++) {
            const int m = wm * WM + row_of(i, lm);
            if (m >= j.mLim) continue;
            T* crow = j.c + (long long)m * j.ldcR;
            if (B_K) {
#pragma unroll
                for (int q = 0; q < TN; q++) {
                    const int n = wn * WN + col_of(q, ln);
                    if (n < j.nLim) crow[(long long)n * j.ldcC] = acc[i][q];
                }
            } else {
#pragma unroll
                for (int q = 0; q < TN / 4; q++) store4(crow, wn * WN + ln * 4 + q * LN * 4, j, &acc[i][q * 4]);
            }
        }
    }

    // SwiGLU epilogue: the thread's columns q < TN/2 are gate features (runs of 4, the run q/4 at
    // ln*4 + (q/4)*LN*4 of the warp tile's first half), q + TN/2 the up values of the same features.
    static GEMM_DEV void swiglu_epilogue(const TileJob<T>& j, const T (&acc)[TM][TN], int wm, int wn, int lm, int ln) {
#pragma unroll
        for (int i = 0; i < TM; i++) {
            const int m = wm * WM + row_of(i, lm);
            if (m >= j.mLim) continue;
            const long long off = (long long)m * j.ldcR;
#pragma unroll
            for (int q = 0; q < TN / 2; q += 4) {
                const int n = wn * (WN / 2) + ln * 4 + (q / 4) * LN * 4;
                T h[4];
#pragma unroll
                for (int r = 0; r < 4; r++) h[r] = swiglu_h(acc[i][q + r], acc[i][q + r + TN / 2]);
                store4(j.c + off, n, j, h);
                if (j.g) store4(j.g + off, n, j, &acc[i][q]);
                if (j.u) store4(j.u + off, n, j, &acc[i][q + TN / 2]);
            }
        }
    }

    // Writes v[0..3] to columns n..n+3 of a C row, as 16-byte vectors when allowed.
    static GEMM_DEV void store4(T* crow, int n, const TileJob<T>& j, const T* v) {
        if (j.vecC) {
            const int V = Vec16<T>::n;
#pragma unroll
            for (int q = 0; q < 4; q += V)
                if (n + q < j.nLim) store_vec(crow + n + q, v + q);
        } else {
#pragma unroll
            for (int q = 0; q < 4; q++)
                if (n + q < j.nLim) crow[(long long)(n + q) * j.ldcC] = v[q];
        }
    }
    static GEMM_DEV void store_vec(float* p, const float* v) { *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]); }
    static GEMM_DEV void store_vec(double* p, const double* v) { *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]); }
};

// ---------------------------------------------------------------- TF32 tensor-core main loop
// BM x BN block tile, BK deep (multiple of 16); WARPS_M x WARPS_N warps, each a WM x WN warp tile of
// (WM/16) x (WN/8) m16n8k8 instructions per 8 k.
//
// Shared layouts: every operand keeps its global layout (no transposing copies): A stored [M,K] gives
// As[m][k] ("K tile", rows of BK+4 words), A stored [K,M] gives As[k][m] ("MN tile", rows of BM+8
// words); likewise Bs[n][k] for B stored [N,K] and Bs[k][n] for B stored [K,N]. A module's stages hold
// the larger of the two layouts, so every kernel of it has the same shared memory size.
// Fragment reads, each straight into the instruction's registers (no register moves):
//   K tiles: ldmatrix.x4, whose 8x4 blocks of 32-bit words are exactly the fragments: one instruction
//     gives A's a0..a3 (rows g and g+8, k t and t+4; g = lane/4, t = lane%4) and B's b0, b1 for two
//     8-column blocks. A row is an odd number of 16-byte words, so the 8 rows of a block fall in
//     distinct bank groups.
//   MN tile of A: 8-byte loads of (a0, a1) and (a2, a3): the instruction's rows g and g+8 of each 16-row
//     block are relabelled as the tile's rows 2g and 2g+1, adjacent in As[k][m] (the epilogue maps the
//     accumulator rows back). Rows of BM+8 words (8 mod 32) put a half-warp's 16 loads in 32 banks.
//   MN tile of B: b0 and b1 one 4-byte load each (8 lanes of a k row read 8 consecutive words, the 4 k
//     rows of a warp are 8 words apart mod 32: 32 banks).
// Pipeline: STAGES tiles in flight; the fragments of the next 8 k are read while the instructions of the
// current 8 k run, across the stage boundary too: the last 8 k of a stage first wait for the next stage
// (one barrier per stage), then read its first fragments.
// Inputs are rounded to tf32 (cvt.rna) as they are read.
template <int BM_, int BN_, int BK_, int WARPS_M, int WARPS_N, int STAGES, bool AT, bool BT, bool VEC>
struct Tf32Tile {
    typedef float elem;
    typedef float out;
    enum {
        BM = BM_, BN = BN_, BK = BK_,
        NT = WARPS_M * WARPS_N * 32,
        A_K = !AT,  // As[m][k], else As[k][m]
        B_K = BT,   // Bs[n][k], else Bs[k][n]
        PADK = 4, PADMN = 8,
        LDA_S = A_K ? BK + PADK : BM + PADMN,
        LDB_S = B_K ? BK + PADK : BN + PADMN,
        A_STAGE = BM * (BK + PADK) > BK * (BM + PADMN) ? BM * (BK + PADK) : BK * (BM + PADMN),
        B_STAGE = BN * (BK + PADK) > BK * (BN + PADMN) ? BN * (BK + PADK) : BK * (BN + PADMN),
        SMEM = STAGES * (A_STAGE + B_STAGE) * 4,
        WM = BM / WARPS_M, WN = BN / WARPS_N,
        MI = WM / 16, NI = WN / 8, KS = BK / 8,
    };
    static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % 16 == 0 && STAGES >= 2, "bad TF32 tile");
    static_assert(BM % 32 == 0 && BN % 32 == 0, "MN rows must be 8 words mod 32");

    template <bool CHECK, bool SW> static GEMM_DEV void load_stage(float* sA, float* sB, const TileJob<float>& j, int k0, int tid) {
        if (A_K) load_tile<float, BM, BK, LDA_S, NT, true, VEC, CHECK>(sA, j.a + k0, j.lda, j.mLim, j.kLen - k0, tid);
        else load_tile<float, BK, BM, LDA_S, NT, true, VEC, CHECK>(sA, j.a + (long long)k0 * j.lda, j.lda, j.kLen - k0, j.mLim, tid);
        if (SW) load_b_swiglu<float, BK, BN, WN, LDB_S, NT, VEC, CHECK>(sB, j, k0, tid);
        else if (B_K) load_tile<float, BN, BK, LDB_S, NT, true, VEC, CHECK>(sB, j.b + k0, j.ldb, j.nLim, j.kLen - k0, tid);
        else load_tile<float, BK, BN, LDB_S, NT, true, VEC, CHECK>(sB, j.b + (long long)k0 * j.ldb, j.ldb, j.kLen - k0, j.nLim, tid);
    }
    template <bool SW> static GEMM_DEV void load(float* sA, float* sB, const TileJob<float>& j, int t, int tid) {
        const int k0 = t * BK;
        if (j.mLim >= BM && j.nLim >= (SW ? BN / 2 : BN) && j.kLen - k0 >= BK) load_stage<false, SW>(sA, sB, j, k0, tid);
        else load_stage<true, SW>(sA, sB, j, k0, tid);
    }

    // The lane's fragment addresses in a stage (see frags).
    static GEMM_DEV int a_offset(int wm, int lane) {
        return A_K ? (wm * WM + (lane & 7) + ((lane >> 3) & 1) * 8) * LDA_S + (lane >> 4) * 4  // ldmatrix rows
                   : (lane & 3) * LDA_S + wm * WM + 2 * (lane >> 2);                          // A(2g, t)
    }
    static GEMM_DEV int b_offset(int wn, int lane) {
        return B_K ? (wn * WN + (lane & 7) + (lane >> 4) * 8) * LDB_S + ((lane >> 3) & 1) * 4  // ldmatrix rows
                   : (lane & 3) * LDB_S + wn * WN + (lane >> 2);                              // B(t, g)
    }

    // The fragments of k-step ks (k = 8ks .. 8ks+7) of one stage, rounded to tf32. a, b: the stage's tile
    // plus the lane's offset.
    static GEMM_DEV void frags(unsigned (&fa)[MI][4], unsigned (&fb)[NI][2], const float* a, const float* b, int ks) {
#pragma unroll
        for (int i = 0; i < MI; i++) {
            if (A_K) {  // matrices: rows 0-7 / 8-15 of the 16-row block, k 0-3 / 4-7
                ldsm_x4(fa[i], a + i * 16 * LDA_S + ks * 8);
            } else {  // (a0, a1) = A(2g..2g+1, t), (a2, a3) = A(2g..2g+1, t+4)
                const float* p = a + ks * 8 * LDA_S + i * 16;
                const float2 u = lds2(p), v = lds2(p + 4 * LDA_S);
                fa[i][0] = __float_as_uint(u.x);
                fa[i][1] = __float_as_uint(u.y);
                fa[i][2] = __float_as_uint(v.x);
                fa[i][3] = __float_as_uint(v.y);
            }
#pragma unroll
            for (int r = 0; r < 4; r++) fa[i][r] = tf32_bits(fa[i][r]);
        }
#pragma unroll
        for (int q = 0; q < NI; q += 2) {
            if (B_K) {  // matrices: b0, b1 of block q (its columns 0-7, k 0-3 / 4-7), then of block q+1
                unsigned r[4];
                ldsm_x4(r, b + q * 8 * LDB_S + ks * 8);
                fb[q][0] = r[0];
                fb[q][1] = r[1];
                fb[q + 1][0] = r[2];
                fb[q + 1][1] = r[3];
            } else {  // b0 = B(t, g), b1 = B(t+4, g) of blocks q and q+1
                const float* p = b + ks * 8 * LDB_S + q * 8;
                fb[q][0] = __float_as_uint(lds1(p));
                fb[q][1] = __float_as_uint(lds1(p + 4 * LDB_S));
                fb[q + 1][0] = __float_as_uint(lds1(p + 8));
                fb[q + 1][1] = __float_as_uint(lds1(p + 4 * LDB_S + 8));
            }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                fb[q][r] = tf32_bits(fb[q][r]);
                fb[q + 1][r] = tf32_bits(fb[q + 1][r]);
            }
        }
    }

    template <bool SW> static GEMM_DEV void run(const TileJob<float>& j, unsigned char* smem, int tid) {
        static_assert(!SW || !B_K, "SwiGLU tiles: B stored [K,N]");
        float* sA = reinterpret_cast<float*>(smem);
        float* sB = sA + STAGES * A_STAGE;
        const int warp = tid >> 5, lane = tid & 31;
        const int wm = warp / WARPS_N, wn = warp % WARPS_N;
        const int g = lane >> 2, t = lane & 3;
        const int aOff = a_offset(wm, lane), bOff = b_offset(wn, lane);

        float acc[MI][NI][4];
#pragma unroll
        for (int i = 0; i < MI; i++)
#pragma unroll
            for (int q = 0; q < NI; q++)
#pragma unroll
                for (int r = 0; r < 4; r++) acc[i][q][r] = 0.f;

        // Stage s holds tile s, s + STAGES, ...; all STAGES are in flight before the first is used.
        const int kTiles = (j.kLen + BK - 1) / BK;
#pragma unroll
        for (int s = 0; s < STAGES; s++) {
            if (s < kTiles) load<SW>(sA + s * A_STAGE, sB + s * B_STAGE, j, s, tid);
            cp_async_commit();
        }
        cp_async_wait<STAGES - 1>();  // tile 0 has landed (this thread's copies) ...
        __syncthreads();              // ... everyone's
        unsigned fa[2][MI][4], fb[2][NI][2];
        if (kTiles > 0) frags(fa[0], fb[0], sA + aOff, sB + bOff, 0);
        for (int kt = 0; kt < kTiles; kt++) {
            const int st = kt % STAGES;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                const int cur = ks & 1;  // KS is even: the buffer of step 0 is always 0
                if (ks + 1 < KS) frags(fa[cur ^ 1], fb[cur ^ 1], sA + st * A_STAGE + aOff, sB + st * B_STAGE + bOff, ks + 1);
#pragma unroll
                for (int i = 0; i < MI; i++)
#pragma unroll
                    for (int q = 0; q < NI; q++) mma_tf32(acc[i][q], fa[cur][i], fb[cur][q]);
                if (ks + 1 == KS) {
                    // Every fragment of tile kt has been read (by this thread; by all after the barrier),
                    // so its stage takes tile kt + STAGES; tile kt + 1 has landed (commits so far: tiles
                    // up to kt + STAGES - 1, of which at most STAGES - 2 may be pending).
                    cp_async_wait<STAGES - 2>();
                    __syncthreads();
                    if (kt + STAGES < kTiles) load<SW>(sA + st * A_STAGE, sB + st * B_STAGE, j, kt + STAGES, tid);
                    cp_async_commit();
                    if (kt + 1 < kTiles) {
                        const int nx = (kt + 1) % STAGES;
                        frags(fa[0], fb[0], sA + nx * A_STAGE + aOff, sB + nx * B_STAGE + bOff, 0);
                    }
                }
            }
        }
        cp_async_wait<0>();

        // Epilogue. Element r of instruction (i, q): row g + 8*(r/2) of the instruction's tile (the tile's
        // row 2g + r/2 with an MN tile of A), column 2t + r%2.
        if (SW) {  // instruction q < NI/2: gate features; q + NI/2: their up values
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int m = wm * WM + i * 16 + (A_K ? g + 8 * h : 2 * g + h);
                    if (m >= j.mLim) continue;
#pragma unroll
                    for (int q = 0; q < NI / 2; q++)
                        swiglu_put2<float>(j, (long long)m * j.ldcR, wn * (WN / 2) + q * 8 + 2 * t, acc[i][q][2 * h],
                                           acc[i][q][2 * h + 1], acc[i][q + NI / 2][2 * h], acc[i][q + NI / 2][2 * h + 1]);
                }
        } else {
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int m = wm * WM + i * 16 + (A_K ? g + 8 * h : 2 * g + h);
                    if (m >= j.mLim) continue;
                    float* crow = j.c + (long long)m * j.ldcR;
#pragma unroll
                    for (int q = 0; q < NI; q++) {
                        const int n = wn * WN + q * 8 + 2 * t;
                        const float v0 = acc[i][q][2 * h], v1 = acc[i][q][2 * h + 1];
                        if (j.vecC) {  // ldcC == 1, rows of a multiple of 4 floats, 16-byte aligned
                            if (n < j.nLim) *reinterpret_cast<float2*>(crow + n) = make_float2(v0, v1);
                        } else {
                            if (n < j.nLim) crow[(long long)n * j.ldcC] = v0;
                            if (n + 1 < j.nLim) crow[(long long)(n + 1) * j.ldcC] = v1;
                        }
                    }
                }
        }
    }
};

// ---------------------------------------------------------------- bfloat16 tensor-core main loop
// The Tf32Tile pipeline over bfloat16 elements: BM x BN block tile, BK deep (multiple of 32); WARPS_M x
// WARPS_N warps, each a WM x WN warp tile of (WM/16) x (WN/8) m16n8k16 instructions per 16 k, float32
// accumulators; C is TC (float32, or bfloat16 rounded once from the accumulator).
//
// Shared layouts: every operand keeps its global layout, as in Tf32Tile: As[m][k] (A stored [M,K]) or
// As[k][m] (stored [K,M]), Bs[n][k] (B stored [N,K]) or Bs[k][n] (stored [K,N]); rows are padded by 8
// elements (16 bytes), so that a row is an odd number of 16-byte words and the 8 rows of an 8x8 matrix
// fall in distinct bank groups. Every fragment is one ldmatrix.x4 (four 8x8 matrices of 16-byte rows), straight into
// the instruction's registers:
//   A, K tile: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15) of the 16-row block, plain: a0..a3.
//   A, MN tile: the same four blocks read with .trans from As[k][m] (stored rows are k): a0..a3.
//   B, K tile: (n block q | q+1) x (k 0-7 | 8-15), plain: b0, b1 of block q, then of block q+1.
//   B, MN tile: the same blocks read with .trans from Bs[k][n].
// Pipeline and barriers as Tf32Tile (fragments of the next 16 k read during the current mma, also across
// the stage boundary).
template <int BM_, int BN_, int BK_, int WARPS_M, int WARPS_N, int STAGES, bool AT, bool BT, bool VEC, typename TC>
struct Bf16Tile {
    typedef bf16 elem;
    typedef TC out;
    enum {
        BM = BM_, BN = BN_, BK = BK_,
        NT = WARPS_M * WARPS_N * 32,
        A_K = !AT,  // As[m][k], else As[k][m]
        B_K = BT,   // Bs[n][k], else Bs[k][n]
        PAD = 8,    // elements: 16 bytes
        LDA_S = A_K ? BK + PAD : BM + PAD,
        LDB_S = B_K ? BK + PAD : BN + PAD,
        A_STAGE = BM * (BK + PAD) > BK * (BM + PAD) ? BM * (BK + PAD) : BK * (BM + PAD),
        B_STAGE = BN * (BK + PAD) > BK * (BN + PAD) ? BN * (BK + PAD) : BK * (BN + PAD),
        SMEM = STAGES * (A_STAGE + B_STAGE) * 2,
        WM = BM / WARPS_M, WN = BN / WARPS_N,
        MI = WM / 16, NI = WN / 8, KS = BK / 16,
    };
    // WN % 16: B fragments come in pairs of 8-column blocks; BK % 32: an even number of k-steps per stage
    // (the next stage's first fragments go to buffer 0); rows of 16-byte multiples with an odd count of
    // 16-byte words: BK % 8 == 0 (K tiles, BK + 8) and BM, BN % 16 == 0 (MN tiles, BM + 8).
    static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % 32 == 0 && BM % 16 == 0 && BN % 16 == 0 && STAGES >= 2, "bad bf16 tile");
    static_assert(((LDA_S * 2 / 16) & 1) && ((LDB_S * 2 / 16) & 1) && (LDA_S * 2) % 16 == 0 && (LDB_S * 2) % 16 == 0,
                  "shared rows must be an odd number of 16-byte words");

    template <bool CHECK, bool SW> static GEMM_DEV void load_stage(bf16* sA, bf16* sB, const TileJob<bf16, TC>& j, int k0, int tid) {
        if (A_K) load_tile<bf16, BM, BK, LDA_S, NT, true, VEC, CHECK>(sA, j.a + k0, j.lda, j.mLim, j.kLen - k0, tid);
        else load_tile<bf16, BK, BM, LDA_S, NT, true, VEC, CHECK>(sA, j.a + (long long)k0 * j.lda, j.lda, j.kLen - k0, j.mLim, tid);
        if (SW) load_b_swiglu<bf16, BK, BN, WN, LDB_S, NT, VEC, CHECK>(sB, j, k0, tid);
        else if (B_K) load_tile<bf16, BN, BK, LDB_S, NT, true, VEC, CHECK>(sB, j.b + k0, j.ldb, j.nLim, j.kLen - k0, tid);
        else load_tile<bf16, BK, BN, LDB_S, NT, true, VEC, CHECK>(sB, j.b + (long long)k0 * j.ldb, j.ldb, j.kLen - k0, j.nLim, tid);
    }
    template <bool SW> static GEMM_DEV void load(bf16* sA, bf16* sB, const TileJob<bf16, TC>& j, int t, int tid) {
        const int k0 = t * BK;
        if (j.mLim >= BM && j.nLim >= (SW ? BN / 2 : BN) && j.kLen - k0 >= BK) load_stage<false, SW>(sA, sB, j, k0, tid);
        else load_stage<true, SW>(sA, sB, j, k0, tid);
    }

    // The row the lane names for ldmatrix in the warp's first fragment of a stage (lane 8j+r: row r of
    // matrix j; see the layouts above).
    static GEMM_DEV int a_offset(int wm, int lane) {
        return A_K ? (wm * WM + (lane & 7) + ((lane >> 3) & 1) * 8) * LDA_S + (lane >> 4) * 8   // m row, k half
                   : ((lane & 7) + (lane >> 4) * 8) * LDA_S + wm * WM + ((lane >> 3) & 1) * 8;  // k row, m half
    }
    static GEMM_DEV int b_offset(int wn, int lane) {
        return B_K ? (wn * WN + (lane & 7) + (lane >> 4) * 8) * LDB_S + ((lane >> 3) & 1) * 8   // n row, k half
                   : ((lane & 7) + ((lane >> 3) & 1) * 8) * LDB_S + wn * WN + (lane >> 4) * 8;  // k row, n block
    }

    // The fragments of k-step ks (k = 16ks .. 16ks+15) of one stage; a, b: the stage's tile plus the
    // lane's offset.
    static GEMM_DEV void frags(unsigned (&fa)[MI][4], unsigned (&fb)[NI][2], const bf16* a, const bf16* b, int ks) {
#pragma unroll
        for (int i = 0; i < MI; i++) {
            if (A_K) ldsm_x4(fa[i], a + i * 16 * LDA_S + ks * 16);
            else ldsm_x4_t(fa[i], a + ks * 16 * LDA_S + i * 16);
        }
#pragma unroll
        for (int q = 0; q < NI; q += 2) {
            unsigned r[4];
            if (B_K) ldsm_x4(r, b + q * 8 * LDB_S + ks * 16);
            else ldsm_x4_t(r, b + ks * 16 * LDB_S + q * 8);
            fb[q][0] = r[0];
            fb[q][1] = r[1];
            fb[q + 1][0] = r[2];
            fb[q + 1][1] = r[3];
        }
    }

    template <bool SW> static GEMM_DEV void run(const TileJob<bf16, TC>& j, unsigned char* smem, int tid) {
        static_assert(!SW || !B_K, "SwiGLU tiles: B stored [K,N]");
        bf16* sA = reinterpret_cast<bf16*>(smem);
        bf16* sB = sA + STAGES * A_STAGE;
        const int warp = tid >> 5, lane = tid & 31;
        const int wm = warp / WARPS_N, wn = warp % WARPS_N;
        const int g = lane >> 2, t = lane & 3;
        const int aOff = a_offset(wm, lane), bOff = b_offset(wn, lane);

        float acc[MI][NI][4];
#pragma unroll
        for (int i = 0; i < MI; i++)
#pragma unroll
            for (int q = 0; q < NI; q++)
#pragma unroll
                for (int r = 0; r < 4; r++) acc[i][q][r] = 0.f;

        // Stage s holds tile s, s + STAGES, ...; all STAGES are in flight before the first is used.
        const int kTiles = (j.kLen + BK - 1) / BK;
#pragma unroll
        for (int s = 0; s < STAGES; s++) {
            if (s < kTiles) load<SW>(sA + s * A_STAGE, sB + s * B_STAGE, j, s, tid);
            cp_async_commit();
        }
        cp_async_wait<STAGES - 1>();  // tile 0 has landed (this thread's copies) ...
        __syncthreads();              // ... everyone's
        unsigned fa[2][MI][4], fb[2][NI][2];
        if (kTiles > 0) frags(fa[0], fb[0], sA + aOff, sB + bOff, 0);
        for (int kt = 0; kt < kTiles; kt++) {
            const int st = kt % STAGES;
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                const int cur = ks & 1;  // KS is even: the buffer of step 0 is always 0
                if (ks + 1 < KS) frags(fa[cur ^ 1], fb[cur ^ 1], sA + st * A_STAGE + aOff, sB + st * B_STAGE + bOff, ks + 1);
#pragma unroll
                for (int i = 0; i < MI; i++)
#pragma unroll
                    for (int q = 0; q < NI; q++) mma_bf16(acc[i][q], fa[cur][i], fb[cur][q]);
                if (ks + 1 == KS) {
                    // As Tf32Tile: every fragment of tile kt has been read, tile kt + 1 has landed.
                    cp_async_wait<STAGES - 2>();
                    __syncthreads();
                    if (kt + STAGES < kTiles) load<SW>(sA + st * A_STAGE, sB + st * B_STAGE, j, kt + STAGES, tid);
                    cp_async_commit();
                    if (kt + 1 < kTiles) {
                        const int nx = (kt + 1) % STAGES;
                        frags(fa[0], fb[0], sA + nx * A_STAGE + aOff, sB + nx * B_STAGE + bOff, 0);
                    }
                }
            }
        }
        cp_async_wait<0>();

        // Epilogue. Element r of instruction (i, q): row g + 8*(r/2), column 2t + r%2 of its 16x8 tile.
        if (SW) {  // instruction q < NI/2: gate features; q + NI/2: their up values
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int m = wm * WM + i * 16 + g + 8 * h;
                    if (m >= j.mLim) continue;
#pragma unroll
                    for (int q = 0; q < NI / 2; q++)
                        swiglu_put2<TC>(j, (long long)m * j.ldcR, wn * (WN / 2) + q * 8 + 2 * t, acc[i][q][2 * h],
                                        acc[i][q][2 * h + 1], acc[i][q + NI / 2][2 * h], acc[i][q + NI / 2][2 * h + 1]);
                }
        } else {
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int m = wm * WM + i * 16 + g + 8 * h;
                    if (m >= j.mLim) continue;
                    TC* crow = j.c + (long long)m * j.ldcR;
#pragma unroll
                    for (int q = 0; q < NI; q++) {
                        const int n = wn * WN + q * 8 + 2 * t;
                        const float v0 = acc[i][q][2 * h], v1 = acc[i][q][2 * h + 1];
                        if (j.vecC) {  // ldcC == 1, even row length, C aligned for pairs
                            if (n < j.nLim) put2(crow + n, v0, v1);
                        } else {
                            if (n < j.nLim) put1(crow + (long long)n * j.ldcC, v0);
                            if (n + 1 < j.nLim) put1(crow + (long long)(n + 1) * j.ldcC, v1);
                        }
                    }
                }
        }
    }
};

// ---------------------------------------------------------------- tile scheduling
// Inclusive prefix sum over the NT threads of a block (Hillis-Steele in shared memory: short, and the
// same on every run). buf holds NT ints; *total gets the block sum.
template <int NT> GEMM_DEV int block_scan(int v, int* buf, int tid, int* total) {
    buf[tid] = v;
    __syncthreads();
#pragma unroll 1
    for (int off = 1; off < NT; off <<= 1) {
        const int add = tid >= off ? buf[tid - off] : 0;
        __syncthreads();
        buf[tid] += add;
        __syncthreads();
    }
    const int r = buf[tid];
    *total = buf[NT - 1];
    __syncthreads();
    return r;
}

GEMM_DEV int clamp_off(int v, int rows) { return v < 0 ? 0 : (v > rows ? rows : v); }

// Segment of expert e: [lo, lo+len), clamped into [0, rows) so that a corrupt plan cannot move a tile
// outside its buffers (CTA 0 reports it: gemm_check_offsets). Valid offsets start at 0, never decrease
// and end at offsets[E] <= rows: rows from offsets[E] on (dropped by a capacity limit) belong to no
// segment, so no tile reads or writes them.
GEMM_DEV void segment(const GemmArgs& p, int e, int* lo, int* len) {
    const int a = clamp_off(p.offsets[e], p.rows), b = clamp_off(p.offsets[e + 1], p.rows);
    *lo = a;
    *len = b > a ? b - a : 0;
}

template <int NT> GEMM_DEV void gemm_check_offsets(const GemmArgs& p, int tid) {
    for (int e = tid; e <= p.E; e += NT) {
        const int v = p.offsets[e];
        bool bad = v < 0 || v > p.rows;
        if (e == 0) bad = bad || v != 0;
        if (e < p.E) bad = bad || p.offsets[e + 1] < v;
        if (bad) gemm_fault(p.fault, GEMM_FAULT_OFFSETS);
    }
}

// GROUP_ROWS: the experts' m-tiles are numbered in expert order (expert e has ceil(len_e/BM) of them);
// finds the expert and local m-tile of slot number `slot`. Experts are scanned NT at a time, so any E
// works; the CTAs of the first experts stop after the first chunk. False when slot is past the last tile.
template <int NT, int BM>
GEMM_DEV bool find_row_tile(const GemmArgs& p, int slot, int* buf, int* found, int tid, int* e, int* mt, int* lo, int* len) {
    if (tid == 0) found[0] = -1;  // ordered before the reads below by block_scan's barriers
    int base = 0;
    for (int e0 = 0; e0 < p.E; e0 += NT) {
        const int ex = e0 + tid;
        int cnt = 0, slo = 0, slen = 0;
        if (ex < p.E) {
            segment(p, ex, &slo, &slen);
            cnt = (slen + BM - 1) / BM;
        }
        int total;
        const int incl = block_scan<NT>(cnt, buf, tid, &total);
        const int excl = base + incl - cnt;
        if (cnt > 0 && slot >= excl && slot < excl + cnt) {
            found[0] = ex;
            found[1] = slot - excl;
            found[2] = slo;
            found[3] = slen;
        }
        base += total;
        __syncthreads();
        if (found[0] >= 0 || base > slot) break;
    }
    *e = found[0];
    *mt = found[1];
    *lo = found[2];
    *len = found[3];
    return *e >= 0;
}

// GROUP_RED: the expert whose tiles are number `rank` in the launch order. With GEMM_SORT (E <=
// GEMM_SORT_MAX) experts go by decreasing segment length (ties: lower index first), so the longest
// reductions start first and a skewed load does not end on one expert's tail; else in index order.
template <int NT> GEMM_DEV int expert_by_rank(const GemmArgs& p, int rank, int* buf, int* found, int tid) {
    if (!(p.flags & GEMM_SORT)) return rank;
    for (int e = tid; e < p.E; e += NT) {
        int lo, len;
        segment(p, e, &lo, &len);
        buf[e] = len;
    }
    __syncthreads();
    for (int e = tid; e < p.E; e += NT) {
        const int L = buf[e];
        int r = 0;
        for (int q = 0; q < p.E; q++) {
            const int Lq = buf[q];
            r += (Lq > L) || (Lq == L && q < e);
        }
        if (r == rank) found[0] = e;
    }
    __syncthreads();
    return found[0];
}

// GROUP_ROWS_SK: the m-tile slots of all experts (sum of ceil(len_e/BM)); every thread gets the total.
template <int NT, int BM> GEMM_DEV int row_tile_total(const GemmArgs& p, int* buf, int tid) {
    int base = 0;
    for (int e0 = 0; e0 < p.E; e0 += NT) {
        const int ex = e0 + tid;
        int cnt = 0;
        if (ex < p.E) {
            int lo, len;
            segment(p, ex, &lo, &len);
            cnt = (len + BM - 1) / BM;
        }
        int total;
        block_scan<NT>(cnt, buf, tid, &total);
        base += total;
    }
    return base;
}

// Stream-K (GROUP_ROWS_SK) over P = p.splits CTAs, all resident at once: the first D tiles (D a
// multiple of P) run data-parallel, tile c + w*P on CTA c in wave w, as a one-tile-per-CTA launch would
// run them (the CTAs of a wave share A's rows and k-steps in L2); the last S tiles' k-iterations
// (tile D+u, k-tile i: number u*kIters + i) are split into P equal contiguous ranges, range c =
// [sk_bound(c), sk_bound(c+1)), so that no CTA waits for a last partial wave. S is the tiles of that
// partial wave (tiles mod P), plus one full wave when the partial one would give each CTA fewer than
// GEMM_SK_MIN_ITERS k-iterations, so that no piece is mostly pipeline fill.
#define GEMM_SK_MIN_ITERS 16
#define GEMM_SK_FIX_PARTS 8  // CTAs per tile of gemm_sk_fixup (the planner's grid: gemmplan skFixParts)
GEMM_DEV long long sk_bound(long long iters, int c, int P) { return iters * c / P; }

// Stream-K geometry shared by the main kernel and the fix-up: tiles, k-iterations per tile, the
// data-parallel tiles D and the stream-K iterations S*kIters.
struct SkGeom {
    long long tiles, kIters, dp, iters;
};
template <int NT, int BM, int BK> GEMM_DEV SkGeom sk_geom(const GemmArgs& p, int* buf, int tid) {
    SkGeom g;
    g.tiles = (long long)row_tile_total<NT, BM>(p, buf, tid) * p.nTiles;
    g.kIters = p.K > 0 ? (p.K + BK - 1) / BK : 1;  // K = 0: one empty iteration writes the zero tile
    long long s = g.tiles % p.splits;
    if (s * g.kIters < (long long)p.splits * GEMM_SK_MIN_ITERS && g.tiles >= s + p.splits) s += p.splits;
    g.dp = g.tiles - s;
    g.iters = s * g.kIters;
    return g;
}

// Runs the output tiles of this CTA. Tile is SimtTile<...>, Tf32Tile<...>, Bf16Tile<...> or WgTile<...>
// (gemm_wgmma.cuh). SW: a SwiGLU product (GROUP_ROWS, A stored [Rows,K], W1 and W3 stored [E,K,N]; N
// counts features, BN/2 per tile). Every mode runs one tile per CTA except GROUP_ROWS_SK, where a CTA
// runs the pieces (tile, k-range) of its range of iterations: a piece that covers its tile's whole
// reduction writes C, one that does not writes its partial sum to the CTA's slot in W (slot 0: the
// CTA's first piece, slot 1: its last), which gemm_sk_fixup adds up.
// SK: the stream-K kernels (gemm_sk_*), the only ones that run GROUP_ROWS_SK: the loop over pieces is
// compiled out of the others, whose registers it would otherwise raise (the 128x64 KC tile spilled).
template <class Tile, bool AT, bool BT, bool SW = false, bool SK = false>
GEMM_DEV void gemm_entry(const GemmArgs& p, unsigned char* smem, int bid, int tid) {
    typedef typename Tile::elem T;
    typedef typename Tile::out TC;  // split-K partials are TC too: bf16 modules split only into float32
    const int V = Vec16<TC>::n;
    const int BUF = Tile::NT > GEMM_SORT_MAX ? Tile::NT : GEMM_SORT_MAX;
    __shared__ int sched[BUF + 4];
    int* found = sched + BUF;

    const T* A = static_cast<const T*>(p.A);
    const T* B = static_cast<const T*>(p.B);
    // Work of this CTA (one pass for the one-tile modes). SK: dpNext, dpEnd: its data-parallel tiles
    // (step P); [it, itEnd): its stream-K iterations, numbered from the first stream-K tile dpEnd0.
    long long it = 0, itEnd = 1, kIters = 1, dpNext = 0, dpEnd = 0, dpEnd0 = 0;
    static_assert(!(SW && SK), "SwiGLU tiles are BN/2 features wide: no stream-K");
    if (SK != (p.mode == GEMM_GROUP_ROWS_SK)) {  // GROUP_ROWS_SK runs on the gemm_sk_* kernels only: a planner bug
        if (bid == 0 && tid == 0 && p.fault) gemm_fault(p.fault, GEMM_FAULT_MODE);
        return;
    }
    if (SK) {
        if (bid == 0) gemm_check_offsets<Tile::NT>(p, tid);
        const SkGeom g = sk_geom<Tile::NT, Tile::BM, Tile::BK>(p, sched, tid);
        kIters = g.kIters;
        dpNext = bid;
        dpEnd = dpEnd0 = g.dp;
        it = sk_bound(g.iters, bid, p.splits);
        itEnd = sk_bound(g.iters, bid + 1, p.splits);
    }
    for (bool first = true; dpNext < dpEnd || it < itEnd;) {
        TileJob<T, TC> j;
        j.lda = (int)p.lda;
        j.ldb = (int)p.ldb;
        j.ldcR = p.ldcR;
        j.ldcC = p.ldcC;
        j.vecC = (p.flags & GEMM_VEC_C) != 0;
        TC* C = static_cast<TC*>(p.C);
        long long aRow = 0, bRow = 0;  // offsets (elements) of the tile's problem in A, B, C
        long long cOff = 0;
        int mt, nt, kBegin = 0, M = p.M;
        j.kLen = p.K;

        if (p.mode == GEMM_DENSE) {
            const int per = p.mTiles * p.nTiles;
            const int split = bid / per, r = bid % per;
            mt = r / p.nTiles;
            nt = r % p.nTiles;
            kBegin = split * p.kChunk;
            j.kLen = (p.K - kBegin < p.kChunk ? p.K - kBegin : p.kChunk);
            if (p.splits > 1) {  // partial sums of this split, row-major [M][N]
                C = static_cast<TC*>(p.W) + (long long)split * p.M * p.N;
                j.ldcR = p.N;
                j.ldcC = 1;
                j.vecC = p.N % V == 0;
            }
            it = itEnd;
        } else if (p.mode == GEMM_GROUP_ROWS || SK) {  // A layout n (rows of x), C rows; B per expert
            int slot;
            bool toSlot = false;
            if (!SK) {
                if (bid == 0) gemm_check_offsets<Tile::NT>(p, tid);
                // split-K (splits > 1): CTAs split by split; split s sums k in [s*kChunk, (s+1)*kChunk) into the
                // partials W[s] ([rows][N], row-major), which gemm_reduce_rows adds up.
                const int per = p.mTiles * p.nTiles;
                const int split = bid / per, r = bid % per;
                nt = r % p.nTiles;
                slot = r / p.nTiles;
                if (p.splits > 1) {
                    kBegin = split * p.kChunk;
                    j.kLen = (p.K - kBegin < p.kChunk ? p.K - kBegin : p.kChunk);
                    C = static_cast<TC*>(p.W) + (long long)split * p.rows * p.N;
                    j.ldcR = p.N;
                    j.ldcC = 1;
                    j.vecC = p.N % V == 0;
                }
                it = itEnd;
            } else if (dpNext < dpEnd) {  // data-parallel tile
                nt = (int)(dpNext % p.nTiles);
                slot = (int)(dpNext / p.nTiles);
                dpNext += p.splits;
            } else {  // stream-K piece: tile dpEnd0 + u, k-tiles [kb, ke)
                const long long u = it / kIters, kb = it % kIters;
                const long long ke = kb + (itEnd - it) < kIters ? kb + (itEnd - it) : kIters;
                it += ke - kb;
                nt = (int)((dpEnd0 + u) % p.nTiles);
                slot = (int)((dpEnd0 + u) / p.nTiles);
                kBegin = (int)kb * Tile::BK;
                const long long kEnd = ke * Tile::BK < p.K ? ke * Tile::BK : p.K;
                j.kLen = (int)(kEnd - kBegin);
                if (kb > 0 || ke < kIters) {  // partial: the CTA's slot, a row-major BM x BN tile
                    toSlot = true;
                    C = static_cast<TC*>(p.W) + ((long long)bid * 2 + (first ? 0 : 1)) * (Tile::BM * Tile::BN);
                    j.ldcR = Tile::BN;
                    j.ldcC = 1;
                    j.vecC = true;
                }
                first = false;
            }
            int e, lo, len;
            if (!find_row_tile<Tile::NT, Tile::BM>(p, slot, sched, found, tid, &e, &mt, &lo, &len)) return;
            M = len;
            aRow = (long long)lo * p.lda;
            cOff = (long long)lo * j.ldcR;
            if (toSlot) cOff = -((long long)mt * Tile::BM * Tile::BN + (long long)nt * Tile::BN);  // C(m0, n0) is the slot's start
            bRow = (long long)e * p.strideB;
        } else {  // GEMM_GROUP_RED: the reduction over the segment's rows (k = row); C per expert. A layout t
                  // and B layout n (x, dY), or, for the wgmma tile, their transposed copies (layouts n, t)
            if (bid == 0) gemm_check_offsets<Tile::NT>(p, tid);
            const int per = p.mTiles * p.nTiles;
            const int e = expert_by_rank<Tile::NT>(p, bid / per, sched, found, tid);
            const int r = bid % per;
            mt = r / p.nTiles;
            nt = r % p.nTiles;
            int len;
            segment(p, e, &kBegin, &len);
            j.kLen = len;
            cOff = (long long)e * p.strideC;
            it = itEnd;
        }
        const int m0 = mt * Tile::BM, n0 = nt * (SW ? Tile::BN / 2 : Tile::BN);
        j.mLim = M - m0;
        j.nLim = p.N - n0;
        j.a = A + aRow + (AT ? (long long)kBegin * p.lda + m0 : (long long)m0 * p.lda + kBegin);
        j.b = B + bRow + (BT ? (long long)n0 * p.ldb + kBegin : (long long)kBegin * p.ldb + n0);
        j.c = C + cOff + (long long)m0 * j.ldcR + (long long)n0 * j.ldcC;
        j.b2 = nullptr;
        j.g = j.u = nullptr;
        if (SW) {  // GROUP_ROWS, B layout n, ldcC == 1 (the host's SwiGLU plans)
            const long long off = cOff + (long long)m0 * j.ldcR + n0;
            j.b2 = static_cast<const T*>(p.B2) + bRow + (long long)kBegin * p.ldb + n0;
            if (p.G) j.g = static_cast<TC*>(p.G) + off;
            if (p.U) j.u = static_cast<TC*>(p.U) + off;
        }
        if (j.kLen < 0) j.kLen = 0;
        Tile::template run<SW>(j, smem, tid);
        if (SK && (dpNext < dpEnd || it < itEnd)) __syncthreads();  // the next piece reuses the shared tiles and the scheduler's buffer
    }
}

// Stream-K fix-up (GROUP_ROWS_SK, launched after the main kernel with the same arguments and grid
// GEMM_SK_FIX_PARTS * P, P = p.splits): CTAs r*GEMM_SK_FIX_PARTS + part (part: a slice of the tile's rows,
// so that enough warps are in flight to hide the loads' latency; one CTA per tile took 0.2-0.6 ms on the
// H200) handle the stream-K tile t that boundary b_r = sk_bound(iters, r) falls strictly inside,
// when r is the first such boundary (b_{r-1} <= t*kIters): C(tile t) = the sum, over the CTAs c whose
// ranges meet the tile (r-1 and on), of c's partial (slot 0 when t is c's first tile, else slot 1), in
// increasing c. A tile covered by one CTA was written to C by the main kernel.
template <class Tile> GEMM_DEV void gemm_sk_fixup_body(const GemmArgs& p, int bid, int tid) {
    typedef typename Tile::out TC;
    const int BUF = Tile::NT > GEMM_SORT_MAX ? Tile::NT : GEMM_SORT_MAX;
    __shared__ int sched[BUF + 4];
    int* found = sched + BUF;
    const SkGeom g = sk_geom<Tile::NT, Tile::BM, Tile::BK>(p, sched, tid);
    const int r = bid / GEMM_SK_FIX_PARTS, part = bid % GEMM_SK_FIX_PARTS;
    if (r < 1 || r >= p.splits) return;
    const long long b = sk_bound(g.iters, r, p.splits);
    if (b >= g.iters || b % g.kIters == 0) return;
    const long long t = b / g.kIters, t0 = t * g.kIters, t1 = t0 + g.kIters;  // t: stream-K tile number
    if (sk_bound(g.iters, r - 1, p.splits) > t0) return;  // an earlier boundary inside t handles it
    int e, mt, lo, len;
    if (!find_row_tile<Tile::NT, Tile::BM>(p, (int)((g.dp + t) / p.nTiles), sched, found, tid, &e, &mt, &lo, &len)) return;
    const int nt = (int)((g.dp + t) % p.nTiles);
    const int m0 = mt * Tile::BM, n0 = nt * Tile::BN;
    const int rowsV = len - m0 < Tile::BM ? len - m0 : Tile::BM;
    const int PR = (Tile::BM + GEMM_SK_FIX_PARTS - 1) / GEMM_SK_FIX_PARTS;  // rows of one part
    const int i0 = part * PR * Tile::BN, i1 = (rowsV < (part + 1) * PR ? rowsV : (part + 1) * PR) * Tile::BN;
    const int colsV = p.N - n0 < Tile::BN ? p.N - n0 : Tile::BN;
    const TC* W = static_cast<const TC*>(p.W);
    TC* C = static_cast<TC*>(p.C) + (long long)(lo + m0) * p.ldcR + (long long)n0 * p.ldcC;
    // Contributors outer, elements inner: each thread keeps its elements through the whole sum (no
    // barrier), and the ranges' 64-bit divisions are computed once per contributor, not per element.
    bool firstC = true;
    for (int c = r - 1; c < p.splits; c++) {
        const long long bc = sk_bound(g.iters, c, p.splits), bn = sk_bound(g.iters, c + 1, p.splits);
        if (bc >= t1) break;
        if (bn <= bc || bn <= t0) continue;  // empty range, or ends before the tile
        const TC* Wc = W + ((long long)c * 2 + (bc / g.kIters == t ? 0 : 1)) * (Tile::BM * Tile::BN);
        for (int i = i0 + tid; i < i1; i += Tile::NT) {
            const int m = i / Tile::BN, n = i % Tile::BN;
            if (n >= colsV) continue;
            TC* o = C + (long long)m * p.ldcR + (long long)n * p.ldcC;
            *o = firstC ? Wc[i] : *o + Wc[i];
        }
        firstC = false;
    }
}

GEMM_DEV float4 vadd(float4 a, float4 b) { return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }
GEMM_DEV double2 vadd(double2 a, double2 b) { return make_double2(a.x + b.x, a.y + b.y); }
GEMM_DEV void put_vec(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
GEMM_DEV void put_vec(double* p, double2 v) { *reinterpret_cast<double2*>(p) = v; }
GEMM_DEV void put_vec(bf16* p, float4 v) {  // 4 elements, 8-byte aligned
    put2(p, v.x, v.y);
    put2(p + 2, v.z, v.w);
}

// out[m*ldcR + n*ldcC] = sum over s of W[s][m][n], in increasing s (the split-K reduction); partials TW,
// output TC (bfloat16 modules: float32 partials, output rounded once).
template <typename TW, typename TC>
GEMM_DEV void gemm_reduce_body(const TW* W, TC* C, int splits, int M, int N, long long ldcR, long long ldcC, int vec,
                               long long first, long long stride) {
    const long long MN = (long long)M * N;
    if (vec) {  // ldcC == 1, N and ldcR multiples of the vector, C aligned: whole vectors per row
        typedef typename Vec16<TW>::type VT;
        const int V = Vec16<TW>::n;
        for (long long i = first * V; i < MN; i += stride * V) {
            const long long m = i / N, n = i % N;
            VT acc = *reinterpret_cast<const VT*>(W + i);
            for (int s = 1; s < splits; s++) acc = vadd(acc, *reinterpret_cast<const VT*>(W + (long long)s * MN + i));
            put_vec(C + m * ldcR + n, acc);
        }
    } else {
        for (long long i = first; i < MN; i += stride) {
            const long long m = i / N, n = i % N;
            TW acc = W[i];
            for (int s = 1; s < splits; s++) acc += W[(long long)s * MN + i];
            put1(C + m * ldcR + n * ldcC, acc);
        }
    }
}

// Grouped rows split-K: C rows [lo, hi) = sum over s of W[s] rows [lo, hi), in increasing s, where lo =
// offsets[0] and hi = offsets[E] (read here, clamped to [0, rows]): the rows outside are not C's (a
// capacity plan leaves them unwritten) and their partials were never written. W is [splits][rows][N].
template <typename TW, typename TC>
GEMM_DEV void gemm_reduce_rows_body(const TW* W, TC* C, const int* offsets, int splits, int rows, int N, int E,
                                    long long ldcR, long long ldcC, int vec, long long first, long long stride) {
    int lo = offsets[0], hi = offsets[E];
    lo = lo < 0 ? 0 : (lo > rows ? rows : lo);
    hi = hi < lo ? lo : (hi > rows ? rows : hi);
    const long long RN = (long long)rows * N, end = (long long)hi * N;
    if (vec) {  // ldcC == 1, N and ldcR multiples of the vector, C aligned: whole vectors per row
        typedef typename Vec16<TW>::type VT;
        const int V = Vec16<TW>::n;
        for (long long i = (long long)lo * N + first * V; i < end; i += stride * V) {
            const long long m = i / N, n = i % N;
            VT acc = *reinterpret_cast<const VT*>(W + i);
            for (int s = 1; s < splits; s++) acc = vadd(acc, *reinterpret_cast<const VT*>(W + (long long)s * RN + i));
            put_vec(C + m * ldcR + n, acc);
        }
    } else {
        for (long long i = (long long)lo * N + first; i < end; i += stride) {
            const long long m = i / N, n = i % N;
            TW acc = W[i];
            for (int s = 1; s < splits; s++) acc += W[(long long)s * RN + i];
            put1(C + m * ldcR + n * ldcC, acc);
        }
    }
}
