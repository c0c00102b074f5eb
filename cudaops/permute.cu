// Dispatch and combine (token <-> expert-major permutation) and their backward kernels.
//
// All kernels are token-major: one warp per token t, grid-striding over tokens, each warp streaming the
// token's row of H elements in 16-byte vectors (float4 / double2; the scalar variants take any H and
// alignment). Every row of the expert-major buffer is read or written exactly once per kernel, so the
// kernels move the minimal number of bytes, need no atomics, and sum in a fixed order (deterministic).
//
// Plan sections used here: rowOf[s] = expert-major row of slot s = t*K + j, and kept = &offsets[E]: a
// capacity plan's dropped slots have rowOf[s] >= *kept (a dropless plan keeps all T*K). Dropped slots
// get zero rows in dispatch, take no part in combine, and get zero gradients in the combine backward.
// Shapes: x/y/dy [T,H], packed/ye [T*K,H], w/dw [T,K]; nv = H / (elements per vector).
#include "common.cuh"

#define UNROLL 4

// out[rowOf[t*K+j]] = scale(t,j) * x[t] for every j; scale = w[t*K+j], or 1 when w is null.
// KEEP: plain stores, so that the rows stay in L2 for the kernel that reads them next (expert GEMM or
// combine); otherwise streaming (evict-first) stores.
template <typename T, typename V, bool KEEP>
__device__ void dispatch_body(const V* __restrict__ x, const T* __restrict__ w, const int* __restrict__ rowOf,
                              const int* __restrict__ kept, V* __restrict__ out, int numTokens, int K, int nv) {
    const int lane = lane_id();
    const int lim = *kept;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const V* src = x + t * nv;
        for (int c0 = lane; c0 < nv; c0 += 32 * UNROLL) {
            V v[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; u++) {
                int c = c0 + 32 * u;
                v[u] = c < nv ? load_stream(src + c) : vzero<V>();
            }
            for (int j = 0; j < K; j++) {
                const long long s = t * K + j;
                const T sc = w ? w[s] : T(1);
                const int r = rowOf[s];
                const bool drop = r >= lim;
                V* dst = out + (long long)r * nv;
#pragma unroll
                for (int u = 0; u < UNROLL; u++) {
                    int c = c0 + 32 * u;
                    if (c < nv) {
                        const V o = drop ? vzero<V>() : (w ? vscale(sc, v[u]) : v[u]);
                        if (KEEP)
                            dst[c] = o;
                        else
                            store_stream(dst + c, o);
                    }
                }
            }
        }
    }
}

// out[t] = sum_{j=0..K-1} scale(t,j) * ye[rowOf[t*K+j]], summed in increasing j.
template <typename T, typename V>
__device__ void combine_body(const V* __restrict__ ye, const T* __restrict__ w, const int* __restrict__ rowOf,
                             const int* __restrict__ kept, V* __restrict__ out, int numTokens, int K, int nv) {
    const int lane = lane_id();
    const int lim = *kept;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        for (int c0 = lane; c0 < nv; c0 += 32 * UNROLL) {
            V acc[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; u++) acc[u] = vzero<V>();
            for (int j = 0; j < K; j++) {
                const long long s = t * K + j;
                const int r = rowOf[s];
                if (r >= lim) continue;  // a dropped slot (the same for every lane of the warp)
                const T sc = w ? w[s] : T(1);
                const V* src = ye + (long long)r * nv;
                V v[UNROLL];
#pragma unroll
                for (int u = 0; u < UNROLL; u++) {
                    int c = c0 + 32 * u;
                    v[u] = c < nv ? load_stream(src + c) : vzero<V>();
                }
#pragma unroll
                for (int u = 0; u < UNROLL; u++) acc[u] = vfma(sc, v[u], acc[u]);
            }
            V* dst = out + t * nv;
#pragma unroll
            for (int u = 0; u < UNROLL; u++) {
                int c = c0 + 32 * u;
                if (c < nv) store_stream(dst + c, acc[u]);
            }
        }
    }
}

#define JGROUP 4
#define CUNROLL 2

// dw[t,j] = <dy[t], ye[rowOf[t*K+j]]>; when dye is non-null also dye[rowOf[t*K+j]] = w[t,j] * dy[t]
// (the fused combine backward). The experts of a token are taken JGROUP at a time (dy is re-read once
// per group, from L1/L2), with CUNROLL vectors per lane in flight. The dot product is a per-lane sum over
// the lane's vectors in increasing order, then a butterfly warp sum: the same order on every run.
template <typename T, typename V>
__device__ void combine_bwd_body(const V* __restrict__ dy, const V* __restrict__ ye, const T* __restrict__ w,
                                 const int* __restrict__ rowOf, const int* __restrict__ kept, T* __restrict__ dw,
                                 V* __restrict__ dye, int numTokens, int K, int nv) {
    const int lane = lane_id();
    const int lim = *kept;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const V* g = dy + t * nv;
        for (int j0 = 0; j0 < K; j0 += JGROUP) {
            const int nj = K - j0 < JGROUP ? K - j0 : JGROUP;
            T acc[JGROUP];
            const V* src[JGROUP];
            V* dst[JGROUP];
            T sc[JGROUP];
            bool drop[JGROUP];
#pragma unroll
            for (int j = 0; j < JGROUP; j++) {
                acc[j] = T(0);
                const long long s = t * K + j0 + (j < nj ? j : 0);
                const long long r = rowOf[s];
                drop[j] = r >= lim;  // a dropped slot: no dot product (dw = 0) and a zero row gradient
                src[j] = ye + r * nv;
                dst[j] = dye ? dye + r * nv : nullptr;
                sc[j] = (dye && w) ? w[s] : T(1);
            }
            for (int c0 = lane; c0 < nv; c0 += 32 * CUNROLL) {
                V gv[CUNROLL];
                V yv[JGROUP][CUNROLL];
#pragma unroll
                for (int u = 0; u < CUNROLL; u++) {
                    const int c = c0 + 32 * u;
                    gv[u] = c < nv ? load_stream(g + c) : vzero<V>();
                }
#pragma unroll
                for (int j = 0; j < JGROUP; j++) {
#pragma unroll
                    for (int u = 0; u < CUNROLL; u++) {
                        const int c = c0 + 32 * u;
                        yv[j][u] = (j < nj && !drop[j] && c < nv) ? load_stream(src[j] + c) : vzero<V>();
                    }
                }
#pragma unroll
                for (int j = 0; j < JGROUP; j++) {
                    if (j < nj) {
#pragma unroll
                        for (int u = 0; u < CUNROLL; u++) {
                            const int c = c0 + 32 * u;
                            if (c < nv) {
                                if (!drop[j]) acc[j] += vdot(gv[u], yv[j][u]);
                                if (dye) store_stream(dst[j] + c, drop[j] ? vzero<V>() : vscale(sc[j], gv[u]));
                            }
                        }
                    }
                }
            }
#pragma unroll
            for (int j = 0; j < JGROUP; j++) {
                if (j < nj) {
                    T a = warp_sum(acc[j]);
                    if (lane == 0) dw[t * K + j0 + j] = a;
                }
            }
        }
    }
}

#define DEFINE_PERMUTE(SUF, T, V)                                                                            \
    extern "C" __global__ void dispatch_##SUF(const V* x, const T* w, const int* rowOf, const int* kept, V* out, \
                                              int numTokens, int K, int nv, int keep) {                     \
        if (keep)                                                                                            \
            dispatch_body<T, V, true>(x, w, rowOf, kept, out, numTokens, K, nv);                             \
        else                                                                                                 \
            dispatch_body<T, V, false>(x, w, rowOf, kept, out, numTokens, K, nv);                            \
    }                                                                                                        \
    extern "C" __global__ void combine_##SUF(const V* ye, const T* w, const int* rowOf, const int* kept, V* out, \
                                             int numTokens, int K, int nv) {                                \
        combine_body<T, V>(ye, w, rowOf, kept, out, numTokens, K, nv);                                       \
    }                                                                                                        \
    extern "C" __global__ void combine_bwd_##SUF(const V* dy, const V* ye, const T* w, const int* rowOf,      \
                                                 const int* kept, T* dw, V* dye, int numTokens, int K, int nv) { \
        combine_bwd_body<T, V>(dy, ye, w, rowOf, kept, dw, dye, numTokens, K, nv);                           \
    }

DEFINE_PERMUTE(f32, float, float)
DEFINE_PERMUTE(f32_v4, float, float4)
DEFINE_PERMUTE(f64, double, double)
DEFINE_PERMUTE(f64_v2, double, double2)
