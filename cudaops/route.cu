// Router kernels: fused scoring + top-k + renormalisation, routing weights for given indices, and the
// routing-weight gradient. One warp per token (grid-striding), any number of experts E (each lane walks
// the experts e = lane, lane+32, ...), so E up to any size that fits in memory.
//
// Selection runs on the logits: softmax is monotonic, so the k largest probabilities are the k largest
// logits. Ties go to the lower expert index: the order is (value descending, index ascending), and round
// j of the k rounds picks the best element strictly after pick j-1 in that order.
//
// A token whose logits hold a NaN or +inf, or are all -inf, has no defined softmax: every kernel here
// reports FAULT_NONFINITE for it (ops.ErrNaN on the host, as the CPU backend's error) and still writes
// in-range indices (NaN ranks as -inf), so nothing reads outside its rows. Single -inf logits are valid.
//
// Scoring (ops.Scoring): 0 = SoftmaxTopK, 1 = TopKSoftmax. Weights:
//   SoftmaxTopK without renormalisation: w_j = exp(l[i_j] - m) / sum_e exp(l[e] - m), m = max_e l[e];
//   otherwise (renormalised, or TopKSoftmax): w_j = exp(l[i_j] - m) / sum_j' exp(l[i_j'] - m), m = l[i_0],
//   the softmax over the k selected logits (equal to p_j / sum_j' p_j').
#include "common.cuh"

// Weights of the K experts idx[0..K-1] of one token with logits l[0..E-1]; every lane gets the same
// denominators; lanes write w[j] for j = lane, lane+32, ... Full softmax statistics come from row_stats
// (which also reports invalid rows into fault); the k-softmax reads only the selected logits.
template <typename T>
__device__ void token_weights(const T* __restrict__ l, const int* idx, int E, int K, bool fullSoftmax, T* w,
                              unsigned int* fault) {
    const int lane = lane_id();
    if (fullSoftmax) {
        T m, s;
        row_stats(l, E, m, s, fault);
        for (int j = lane; j < K; j += 32) w[j] = dev_exp(sanitize(l[idx[j]]) - m) / s;
    } else {
        T m = neg_inf<T>();
        for (int j = 0; j < K; j++) {
            T v = sanitize(l[idx[j]]);
            m = v > m ? v : m;
        }
        T s = T(0);
        for (int j = 0; j < K; j++) s += dev_exp(sanitize(l[idx[j]]) - m);
        for (int j = lane; j < K; j += 32) w[j] = dev_exp(sanitize(l[idx[j]]) - m) / s;
    }
}

// idx[t,:] = the K best experts of token t; w[t,:] their weights when w is non-null. The first selection
// round sees every logit, so it also checks the row (a NaN or +inf, or a best value of -inf).
template <typename T>
__device__ void route_body(const T* __restrict__ logits, int* __restrict__ idx, T* __restrict__ w, int numTokens,
                           int E, int K, bool fullSoftmax, unsigned int* fault) {
    const int lane = lane_id();
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        int* it = idx + t * K;
        T pv = T(0);
        int pi = -1;
        bool bad = false;
        for (int j = 0; j < K; j++) {
            T bv = neg_inf<T>();
            int bi = 0x7fffffff;
            for (int e = lane; e < E; e += 32) {
                const T raw = l[e];
                if (j == 0) bad |= raw != raw || raw == pos_inf<T>();
                const T v = sanitize(raw);
                const bool after = pi < 0 || v < pv || (v == pv && e > pi);
                if (after && (v > bv || (v == bv && e < bi))) {
                    bv = v;
                    bi = e;
                }
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                const T ov = __shfl_xor_sync(FULL_MASK, bv, o);
                const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
                if (ov > bv || (ov == bv && oi < bi)) {
                    bv = ov;
                    bi = oi;
                }
            }
            if (j == 0 && (__any_sync(FULL_MASK, bad) || bv == neg_inf<T>()) && lane == 0 && fault)
                atomicOr(fault, FAULT_NONFINITE);
            if (lane == 0) it[j] = bi;
            pv = bv;
            pi = bi;
        }
        __syncwarp();
        if (w) token_weights(l, it, E, K, fullSoftmax, w + t * K, (unsigned int*)0);
        __syncwarp();
    }
}

// w[t,:] = weights of the given experts idx[t,:] (validated: out-of-range indices raise the fault word
// and are clamped so that no access leaves the row; invalid logit rows raise FAULT_NONFINITE).
template <typename T>
__device__ void route_weights_body(const T* __restrict__ logits, const int* __restrict__ idx, T* __restrict__ w,
                                   int numTokens, int E, int K, bool fullSoftmax, unsigned int* fault) {
    extern __shared__ int sidx[];  // [warps per block][K]
    const int lane = lane_id();
    int* my = sidx + (threadIdx.x >> 5) * K;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        for (int j = lane; j < K; j += 32) my[j] = checked_expert(idx[t * K + j], E, fault);
        __syncwarp();
        if (!fullSoftmax) row_check(l, E, fault);  // the full softmax checks in row_stats
        token_weights(l, my, E, K, fullSoftmax, w + t * K, fault);
        __syncwarp();
    }
}

// dlogits[t,:] = d(sum_j dw[t,j] * w[t,j]) / dlogits[t,:].
//   full softmax:  dl[e] = p[e] * (g[e] - sum_j dw[j] * w[j]),  g[e] = sum_{j: i_j = e} dw[j];
//   k-softmax:     dl[e] = g'[e] - w-weighted, i.e. dl[i_j] += w[j] * (dw[j] - sum_j' dw[j'] w[j']), else 0.
template <typename T>
__device__ void route_weights_grad_body(const T* __restrict__ logits, const int* __restrict__ idx,
                                        const T* __restrict__ dw, T* __restrict__ dlogits, int numTokens, int E,
                                        int K, bool fullSoftmax, unsigned int* fault) {
    extern __shared__ unsigned char smem[];
    const int warpInBlock = threadIdx.x >> 5;
    int* my = reinterpret_cast<int*>(smem) + warpInBlock * K;
    const int warpsPerBlock = blockDim.x >> 5;
    T* myw = reinterpret_cast<T*>(reinterpret_cast<int*>(smem) + ((warpsPerBlock * K + 1) & ~1)) + warpInBlock * K;
    const int lane = lane_id();
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        for (int j = lane; j < K; j += 32) my[j] = checked_expert(idx[t * K + j], E, fault);
        __syncwarp();
        T m = T(0), s = T(1);  // the full softmax's statistics, computed once for weights and gradient
        if (fullSoftmax) {
            row_stats(l, E, m, s, fault);
            for (int j = lane; j < K; j += 32) myw[j] = dev_exp(sanitize(l[my[j]]) - m) / s;
        } else {
            row_check(l, E, fault);
            token_weights(l, my, E, K, false, myw, (unsigned int*)0);
        }
        __syncwarp();
        T dot = T(0);
        for (int j = 0; j < K; j++) dot += dw[t * K + j] * myw[j];
        T* out = dlogits + t * E;
        if (fullSoftmax) {
            for (int e = lane; e < E; e += 32) {
                T g = T(0);
                for (int j = 0; j < K; j++)
                    if (my[j] == e) g += dw[t * K + j];
                const T p = dev_exp(sanitize(l[e]) - m) / s;
                out[e] = p * (g - dot);
            }
        } else {
            for (int e = lane; e < E; e += 32) {
                T g = T(0);
                for (int j = 0; j < K; j++)
                    if (my[j] == e) g += myw[j] * (dw[t * K + j] - dot);
                out[e] = g;
            }
        }
        __syncwarp();
    }
}

#define DEFINE_ROUTE(SUF, T)                                                                                  \
    extern "C" __global__ void route_##SUF(const T* logits, int* idx, T* w, int numTokens, int E, int K,       \
                                           int fullSoftmax, unsigned int* fault) {                            \
        route_body<T>(logits, idx, w, numTokens, E, K, fullSoftmax != 0, fault);                              \
    }                                                                                                         \
    extern "C" __global__ void route_weights_##SUF(const T* logits, const int* idx, T* w, int numTokens, int E, \
                                                   int K, int fullSoftmax, unsigned int* fault) {            \
        route_weights_body<T>(logits, idx, w, numTokens, E, K, fullSoftmax != 0, fault);                      \
    }                                                                                                         \
    extern "C" __global__ void route_weights_grad_##SUF(const T* logits, const int* idx, const T* dw,          \
                                                        T* dlogits, int numTokens, int E, int K,              \
                                                        int fullSoftmax, unsigned int* fault) {               \
        route_weights_grad_body<T>(logits, idx, dw, dlogits, numTokens, E, K, fullSoftmax != 0, fault);       \
    }

DEFINE_ROUTE(f32, float)
DEFINE_ROUTE(f64, double)
