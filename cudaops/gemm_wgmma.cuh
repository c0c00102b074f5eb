// Hopper warpgroup tile of the GEMM family (gemm.cu with -DGEMM_WGMMA=1, sm_90a PTX: see gen-ptx.sh and
// docs/gemm.md "Hopper wgmma"): TF32 products by wgmma.mma_async.m64nNk8.f32.tf32.tf32 from shared memory.
//
// Operands: tf32 wgmma reads both operands K-major from shared memory (no transposed forms exist for
// 32-bit types), so the tile runs only the "nt" product: A stored [M,K], B stored [N,K], both with rows of
// a multiple of 4 elements on 16-byte aligned bases (the planner transposes other layouts into scratch
// first, with gemm_transpose below). Inputs enter the tensor core as float32 bit patterns: the hardware
// uses their tf32 part (the low 13 mantissa bits are ignored), as with any fp32 data given to TF32 tensor
// cores; there is no rounding pass.
//
// Block tile BM x BN x 32, two warpgroups (256 threads): warpgroup w computes rows 64w..64w+63 of the
// tile over all BN columns with one m64nBNk8 instruction per 8 k (accumulators: BN/2 floats per thread).
// Shared layout per stage and operand, the 128-byte swizzle of wgmma's K-major canonical layout: a row
// (one m or n) is the 32 k of the stage = 128 bytes; 16-byte chunk c of row r is stored at chunk
// c ^ (r & 7); rows are consecutive (8-row groups 1024 bytes apart), stage bases 1024-byte aligned.
// Copies are 16-byte cp.async by all threads (8 per row), STAGES deep; after its copies of a stage
// land, every thread executes fence.proxy.async (the generic-proxy writes become visible to wgmma's
// async proxy) before the block barrier. One barrier per k-tile: after it, the wgmma of tile kt are
// issued, then the copy of tile kt+STAGES-2 overwrites the stage of tile kt-2, whose wgmma groups every
// warpgroup has waited for (wait_group 1 after issuing tile kt-1) before the barrier. (A standalone
// dense prototype of this design ran at 212-278 TFLOP/s on the H200.)
//
// CPU emulation (internal/gemmemu): wgmma groups execute when waited for (the latest point the PTX
// allows), reading shared memory through the descriptors with the 128-byte swizzle of the shared-window
// address; the dynamic shared memory starts at an address that is not 1024-aligned there too.
//
// Segment starts that are not 4-aligned (grouped reductions over transposed operands, where a segment is
// a k-range starting anywhere): the tile reads from the aligned-down address, lead = 0..3 elements
// early, and zeroes those leading elements of A and B in shared memory (tile 0 only) before the fence;
// partial 16-byte units at the end of k or rows outside the problem are zero-filled by cp.async's
// src-size. Deterministic: each output element is the tensor core's fixed-order accumulation over k.
#pragma once

GEMM_DEV unsigned long long wg_desc(unsigned saddr) {
    // start address >> 4 (bits 0-13), LBO 1 (16 bytes; unused by swizzled K-major layouts), SBO 1024
    // bytes >> 4 = 64 (bits 32-45: 8-row groups), layout 1 = 128-byte swizzle (bits 62-63).
    return (unsigned long long)((saddr >> 4) & 0x3FFF) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// Device primitives (the emulator's are in internal/gemmemu/emu.h: wgmma there reads shared memory
// through the same descriptors and swizzle when the group is waited for).
#ifndef GEMM_EMU
GEMM_DEV void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
GEMM_DEV void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> GEMM_DEV void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
GEMM_DEV void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// cp.async of a 16-byte unit of which the first `bytes` come from g (the rest zero-filled).
GEMM_DEV void cp_async16_part(unsigned s, const void* g, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(g), "r"(bytes) : "memory");
}
// Keeps the compiler from moving accumulator reads or writes across wgmma issue/wait points.
GEMM_DEV void wg_reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }

template <int N> struct WgMma;
// d[0..127] += A(64 x 8, descriptor da) * B(8 x 256, descriptor db)ᵀ, B stored [n][k]; both K-major.
template <> struct WgMma<256> {
    static GEMM_DEV void mma(float (&d)[128], unsigned long long da, unsigned long long db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n256k8.f32.tf32.tf32 {"
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
            "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
            "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
            "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
            "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
            "}, %128, %129, p, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
              "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
              "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
              "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
              "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
              "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
              "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
              "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
              "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
              "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
              "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
              "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
              "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
              "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
              "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
              "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
            : "l"(da), "l"(db), "r"(1));
    }
};
// d[0..63] += A(64 x 8, descriptor da) * B(8 x 128, descriptor db)ᵀ, B stored [n][k]; both K-major.
template <> struct WgMma<128> {
    static GEMM_DEV void mma(float (&d)[64], unsigned long long da, unsigned long long db) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 {"
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
            "}, %64, %65, p, 1, 1;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
              "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
              "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
              "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
              "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
              "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
              "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
              "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
            : "l"(da), "l"(db), "r"(1));
    }
};
#endif  // GEMM_EMU

template <int BM_, int BN_, int BK_, int WARPS_M, int WARPS_N, int STAGES>
struct WgTile {
    typedef float elem;
    typedef float out;
    enum {
        BM = BM_, BN = BN_, BK = BK_,
        NT = WARPS_M * WARPS_N * 32,
        ROWB = BK * 4,  // bytes per shared row (one swizzle row)
        A_STAGE = BM * ROWB, B_STAGE = BN * ROWB,
        SMEM = STAGES * (A_STAGE + B_STAGE) + 1024,  // + alignment of the first stage to 1024 bytes
        NACC = BN / 2,
        UPR = ROWB / 16,      // 16-byte units per row
        RPP = NT / UPR,       // rows per copy pass
    };
    static_assert(BK == 32 && BM == 128 && NT == 256 && (BN == 128 || BN == 256) && STAGES >= 3,
                  "wgmma tile: 128 x {128,256} x 32, two warpgroups, at least 3 stages");
    static_assert(BM % RPP == 0 && BN % RPP == 0, "copy passes");

    // Copies k-tile t (k = 32t.. relative to the aligned-down operand starts) into stage base sa / sb
    // (shared addresses). kEnd: lead + kLen.
    template <bool CHECK>
    static GEMM_DEV void load_stage(unsigned sa, unsigned sb, const float* a, const float* b, int lda, int ldb,
                                    int mLim, int nLim, int kRem, int tid) {
        const int c = tid % UPR, r0 = tid / UPR;
        const int kb = CHECK ? (kRem - 4 * c < 0 ? 0 : (kRem - 4 * c > 4 ? 16 : 4 * (kRem - 4 * c))) : 16;
#pragma unroll
        for (int q = 0; q < BM / RPP; q++) {
            const int r = r0 + q * RPP;
            const int bytes = !CHECK || r < mLim ? kb : 0;
            cp_async16_part(sa + r * ROWB + ((c ^ (r & 7)) << 4), a + (bytes ? r * lda + 4 * c : 0), bytes);
        }
#pragma unroll
        for (int q = 0; q < BN / RPP; q++) {
            const int r = r0 + q * RPP;
            const int bytes = !CHECK || r < nLim ? kb : 0;
            cp_async16_part(sb + r * ROWB + ((c ^ (r & 7)) << 4), b + (bytes ? r * ldb + 4 * c : 0), bytes);
        }
    }

    // SW (a SwiGLU product) is never instantiated: wgmma modules have no gemm_swiglu kernels (gemm.cu).
    template <bool SW> static GEMM_DEV void run(const TileJob<float>& j, unsigned char* smem, int tid) {
        static_assert(!SW, "no SwiGLU epilogue on the wgmma tile");
        const unsigned raw = smem_u32(smem);
        const unsigned base = (raw + 1023u) & ~1023u;
        unsigned char* gbase = smem + (base - raw);  // generic pointer of the aligned base
        const unsigned sA = base, sB = base + STAGES * A_STAGE;
        const int warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
        // Operands from the 16-byte aligned unit at or before their tile start (see lead above).
        const int lead = (int)((reinterpret_cast<unsigned long long>(j.a) >> 2) & 3);
        const float* a = j.a - lead;
        const float* b = j.b - lead;
        const int kEnd = j.kLen > 0 ? lead + j.kLen : 0;
        const int kTiles = (kEnd + BK - 1) / BK;
        const bool full = j.mLim >= BM && j.nLim >= BN;

        float acc[NACC];
#pragma unroll
        for (int i = 0; i < NACC; i++) acc[i] = 0.f;

        // Tiles 0 .. STAGES-3 in flight before the loop; iteration kt copies tile kt + STAGES - 2.
#pragma unroll
        for (int s = 0; s < STAGES - 2; s++) {
            if (s < kTiles) {
                const int kRem = kEnd - s * BK;
                if (full && kRem >= BK) load_stage<false>(sA + s * A_STAGE, sB + s * B_STAGE, a + s * BK, b + s * BK, j.lda, j.ldb, j.mLim, j.nLim, kRem, tid);
                else load_stage<true>(sA + s * A_STAGE, sB + s * B_STAGE, a + s * BK, b + s * BK, j.lda, j.ldb, j.mLim, j.nLim, kRem, tid);
            }
            cp_async_commit();
        }
        const unsigned long long descA0 = wg_desc(sA + wg * 64 * ROWB), descB0 = wg_desc(sB);
        for (int kt = 0; kt < kTiles; kt++) {
            const int st = kt % STAGES;
            cp_async_wait<STAGES - 3>();  // this thread's copies of tile kt have landed
            if (kt == 0 && lead > 0 && tid % UPR == 0) {
                // Zero the elements before the segment start (unit 0 of every row, stored at chunk r & 7).
                for (int r = tid / UPR; r < BM + BN; r += RPP) {
                    float* row = reinterpret_cast<float*>(gbase + (r < BM ? r * ROWB : STAGES * A_STAGE + (r - BM) * ROWB) + ((r & 7) << 4));
                    for (int e = 0; e < lead; e++) row[e] = 0.f;
                }
            }
            fence_proxy_async();
            __syncthreads();  // tile kt visible to every warpgroup's wgmma; tile kt-2's wgmma done everywhere
            wg_fence();
            // Stage offsets and k-steps move only the descriptors' start address (16-byte units).
            const unsigned long long da = descA0 + (unsigned long long)((st * A_STAGE) >> 4);
            const unsigned long long db = descB0 + (unsigned long long)((st * B_STAGE) >> 4);
#pragma unroll
            for (int ks = 0; ks < BK / 8; ks++) WgMma<BN>::mma(acc, da + 2 * ks, db + 2 * ks);
            wg_commit();
            // While tile kt multiplies: the copy of tile kt + STAGES - 2 into the stage of tile kt - 2.
            const int t = kt + STAGES - 2;
            if (t < kTiles) {
                const int ss = t % STAGES, kRem = kEnd - t * BK;
                if (full && kRem >= BK) load_stage<false>(sA + ss * A_STAGE, sB + ss * B_STAGE, a + t * BK, b + t * BK, j.lda, j.ldb, j.mLim, j.nLim, kRem, tid);
                else load_stage<true>(sA + ss * A_STAGE, sB + ss * B_STAGE, a + t * BK, b + t * BK, j.lda, j.ldb, j.mLim, j.nLim, kRem, tid);
            }
            cp_async_commit();
            wg_wait<1>();  // tile kt - 1's groups done: its stage is free after the next barrier
        }
        wg_wait<0>();
        cp_async_wait<0>();
#pragma unroll
        for (int i = 0; i < NACC; i++) wg_reg_fence(acc[i]);

        // Epilogue: warp w of warpgroup wg holds rows 64wg + 16(w%4) + lane/4 (+8); accumulators 4q..4q+3
        // are the 8-column block q: (row, 2t), (row, 2t+1), (row+8, 2t), (row+8, 2t+1), t = lane%4.
        const int g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int m = wg * 64 + (warp & 3) * 16 + g + 8 * h;
            if (m >= j.mLim) continue;
            float* crow = j.c + (long long)m * j.ldcR;
#pragma unroll
            for (int q = 0; q < BN / 8; q++) {
                const int n = q * 8 + 2 * t;
                const float v0 = acc[4 * q + 2 * h], v1 = acc[4 * q + 2 * h + 1];
                if (j.vecC) {  // ldcC == 1, rows of a multiple of 4 floats, 16-byte aligned
                    if (n < j.nLim) *reinterpret_cast<float2*>(crow + n) = make_float2(v0, v1);
                } else {
                    if (n < j.nLim) crow[(long long)n * j.ldcC] = v0;
                    if (n + 1 < j.nLim) crow[(long long)(n + 1) * j.ldcC] = v1;
                }
            }
        }
    }
};

// out[b][c][r] = in[b][r][c] (in: R x C packed per batch b, batch stride strideIn; out rows of ldo
// elements, batch stride strideOut), through 32 x 33 shared tiles: both sides read and write whole
// 128-byte rows per warp. Used by the planner to give the wgmma tile K-major copies of operands stored
// [K, M] or [K, N]. Grid: ceil(C/32) * ceil(R/32) * batches CTAs of 256 threads.
GEMM_DEV void gemm_transpose_body(const float* in, float* out, int R, int C, long long ldo, long long strideIn,
                                  long long strideOut, long long bid, int tid, float (*t)[33]) {
    const long long tc = (C + 31) / 32, tr = (R + 31) / 32;
    const int cx = (int)(bid % tc);
    const int rx = (int)((bid / tc) % tr);
    const long long bt = bid / tc / tr;
    in += bt * strideIn;
    out += bt * strideOut;
    const int x = tid & 31, y = tid >> 5;
    const int r0 = rx * 32, c0 = cx * 32;
#pragma unroll
    for (int i = y; i < 32; i += 8) {
        const int r = r0 + i, c = c0 + x;
        if (r < R && c < C) t[i][x] = in[(long long)r * C + c];
    }
    __syncthreads();
#pragma unroll
    for (int i = y; i < 32; i += 8) {
        const int c = c0 + i, r = r0 + x;
        if (c < C && r < R) out[(long long)c * ldo + r] = t[x][i];
    }
}
