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
// Weight modes (ops.Scoring and Renormalize):
//   0 (SoftmaxTopK without renormalisation): w_j = exp(l[i_j] - m) / sum_e exp(l[e] - m), m = max_e l[e];
//   1 (renormalised SoftmaxTopK, or TopKSoftmax): w_j = exp(l[i_j] - m) / sum_j' exp(l[i_j'] - m), m = l[i_0],
//     the softmax over the k selected logits (equal to p_j / sum_j' p_j');
//   2 (Sigmoid): w_j = s_j = sigmoid(l[i_j]);   3 (Sigmoid, renormalised): w_j = s_j / (sum_j' s_j' + 1e-20);
// every weight times the route scale (skipped when it is 1, so the default path is unchanged).
//
// Sigmoid (route_sigmoid): DeepSeek-V3's selection, exactly as ops' CPU backend computes it: s =
// (T)(1 / (1 + exp(-(double)l))) (double, rounded to the logits' dtype), c = s + bias[e] in T; groups
// of E/G consecutive experts score the sum of their two largest c (in T); the TG best groups are kept
// (ties to the lower group); dropped groups' c becomes 0 (or -inf when exclude); the k largest c are
// chosen (ties to the lower expert). Weights and gradients use the unbiased s in double. A NaN logit
// raises FAULT_NONFINITE; a NaN or infinite bias raises FAULT_BIAS_NONFINITE (both ops.ErrNaN).
#include "common.cuh"

__device__ __forceinline__ double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ double sigmoid_slope(double x) { return sigmoid_d(x) * sigmoid_d(-x); }

// Scale applied to a softmax weight computed in T (ops' CPU backend: T(float64(w) * scale)).
template <typename T> __device__ __forceinline__ T scaled(T w, double scale) {
    return scale == 1.0 ? w : (T)((double)w * scale);
}

// Sigmoid weights of the K experts it[0..K-1] of one token; lanes write w[j] for j = lane, lane+32, ...
// The denominator sums s_j in increasing j on every lane (as the CPU does).
template <typename T>
__device__ void sigmoid_weights(const T* __restrict__ l, const int* it, int K, bool renorm, double scale, T* w) {
    const int lane = lane_id();
    double den = 1.0;
    if (renorm) {
        double sum = 0.0;
        for (int j0 = 0; j0 < K; j0 += 32) {
            const double sv = j0 + lane < K ? sigmoid_d((double)l[it[j0 + lane]]) : 0.0;
            const int n = K - j0 < 32 ? K - j0 : 32;
            for (int i = 0; i < n; i++) sum += __shfl_sync(FULL_MASK, sv, i);
        }
        den = sum + 1e-20;
    }
    for (int j = lane; j < K; j += 32) w[j] = (T)(scale * sigmoid_d((double)l[it[j]]) / den);
}

// row_nan: true, on every lane, when the row holds a NaN (reported as FAULT_NONFINITE into fault).
template <typename T> __device__ __forceinline__ bool row_nan(const T* __restrict__ l, int E, unsigned int* fault) {
    bool bad = false;
    for (int e = lane_id(); e < E; e += 32) bad |= l[e] != l[e];
    bad = __any_sync(FULL_MASK, bad);
    if (bad && fault && lane_id() == 0) atomicOr(fault, FAULT_NONFINITE);
    return bad;
}

// Weights of the K experts idx[0..K-1] of one token with logits l[0..E-1]; every lane gets the same
// denominators; lanes write w[j] for j = lane, lane+32, ... Full softmax statistics come from row_stats
// (which also reports invalid rows into fault); the k-softmax reads only the selected logits.
template <typename T>
__device__ void token_weights(const T* __restrict__ l, const int* idx, int E, int K, bool fullSoftmax, double scale,
                              T* w, unsigned int* fault) {
    const int lane = lane_id();
    if (fullSoftmax) {
        T m, s;
        row_stats(l, E, m, s, fault);
        for (int j = lane; j < K; j += 32) w[j] = scaled(dev_exp(sanitize(l[idx[j]]) - m) / s, scale);
    } else {
        T m = neg_inf<T>();
        for (int j = 0; j < K; j++) {
            T v = sanitize(l[idx[j]]);
            m = v > m ? v : m;
        }
        T s = T(0);
        for (int j = 0; j < K; j++) s += dev_exp(sanitize(l[idx[j]]) - m);
        for (int j = lane; j < K; j += 32) w[j] = scaled(dev_exp(sanitize(l[idx[j]]) - m) / s, scale);
    }
}

// idx[t,:] = the K best experts of token t; w[t,:] their weights when w is non-null. The first selection
// round sees every logit, so it also checks the row (a NaN or +inf, or a best value of -inf).
template <typename T>
__device__ void route_body(const T* __restrict__ logits, int* __restrict__ idx, T* __restrict__ w, int numTokens,
                           int E, int K, bool fullSoftmax, double scale, unsigned int* fault) {
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
        if (w) token_weights(l, it, E, K, fullSoftmax, scale, w + t * K, (unsigned int*)0);
        __syncwarp();
    }
}

// Warp argmax round: the best (value descending, index ascending) of v[0..n) strictly after (pv, pi) in
// that order (pi < 0: no previous pick); every lane gets (bv, bi).
template <typename T>
__device__ __forceinline__ void next_best(const T* v, int n, T pv, int pi, T& bv, int& bi) {
    bv = neg_inf<T>();
    bi = 0x7fffffff;
    for (int e = lane_id(); e < n; e += 32) {
        const T x = v[e];
        const bool after = pi < 0 || x < pv || (x == pv && e > pi);
        if (after && (x > bv || (x == bv && e < bi))) {
            bv = x;
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
}

// DeepSeek-V3 selection (see the header) and, when w is non-null, the sigmoid weights. Dynamic shared
// memory per warp: E + G values of T (selection values, group scores), then G ints (kept flags) per
// warp after all warps' values. G <= 1: no groups.
template <typename T>
__device__ void route_sigmoid_body(const T* __restrict__ logits, const T* __restrict__ bias, int* __restrict__ idx,
                                   T* __restrict__ w, int numTokens, int E, int K, bool renorm, double scale, int G,
                                   int TG, bool exclude, unsigned int* fault) {
    extern __shared__ unsigned char smem[];
    const int lane = lane_id(), warp = threadIdx.x >> 5, W = blockDim.x >> 5;
    const int Gs = G > 1 ? G : 0;
    T* ch = reinterpret_cast<T*>(smem) + warp * (E + Gs);
    T* gsc = ch + E;
    int* keep = reinterpret_cast<int*>(reinterpret_cast<T*>(smem) + W * (E + Gs)) + warp * Gs;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        int* it = idx + t * K;
        bool bad = false, badBias = false;
        for (int e = lane; e < E; e += 32) {
            const T v = l[e];
            bad |= v != v;
            T c = (T)sigmoid_d((double)v);
            if (bias) {
                const T b = bias[e];
                badBias |= b != b || b == pos_inf<T>() || b == neg_inf<T>();
                c += b;
            }
            ch[e] = sanitize(c);  // NaN ranks as -inf: indices stay in range on a faulty row
        }
        if (__any_sync(FULL_MASK, bad) && lane == 0 && fault) atomicOr(fault, FAULT_NONFINITE);
        if (__any_sync(FULL_MASK, badBias) && lane == 0 && fault) atomicOr(fault, FAULT_BIAS_NONFINITE);
        __syncwarp();
        if (G > 1) {
            const int gs = E / G;
            for (int g = lane; g < G; g += 32) {
                T t1 = neg_inf<T>(), t2 = neg_inf<T>();
                for (int i = 0; i < gs; i++) {
                    const T v = ch[g * gs + i];
                    if (v > t1) {
                        t2 = t1;
                        t1 = v;
                    } else if (v > t2) {
                        t2 = v;
                    }
                }
                gsc[g] = t1 + t2;
                keep[g] = 0;
            }
            __syncwarp();
            T pv = T(0);
            int pi = -1;
            for (int r = 0; r < TG; r++) {
                T bv;
                int bi;
                next_best(gsc, G, pv, pi, bv, bi);
                if (lane == 0 && bi < G) keep[bi] = 1;
                pv = bv;
                pi = bi;
            }
            __syncwarp();
            const T fill = exclude ? neg_inf<T>() : T(0);
            for (int e = lane; e < E; e += 32)
                if (!keep[e / gs]) ch[e] = fill;
            __syncwarp();
        }
        T pv = T(0);
        int pi = -1;
        for (int j = 0; j < K; j++) {
            T bv;
            int bi;
            next_best(ch, E, pv, pi, bv, bi);
            if (bi >= E) bi = 0;  // only reachable on a faulty row (NaN everywhere)
            if (lane == 0) it[j] = bi;
            pv = bv;
            pi = bi;
        }
        __syncwarp();
        if (w) sigmoid_weights(l, it, K, renorm, scale, w + t * K);
        __syncwarp();
    }
}

// w[t,:] = weights of the given experts idx[t,:] (validated: out-of-range indices raise the fault word
// and are clamped so that no access leaves the row; invalid logit rows raise FAULT_NONFINITE).
template <typename T>
__device__ void route_weights_body(const T* __restrict__ logits, const int* __restrict__ idx, T* __restrict__ w,
                                   int numTokens, int E, int K, int mode, double scale, unsigned int* fault) {
    extern __shared__ int sidx[];  // [warps per block][K]
    const int lane = lane_id();
    int* my = sidx + (threadIdx.x >> 5) * K;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        for (int j = lane; j < K; j += 32) my[j] = checked_expert(idx[t * K + j], E, fault);
        __syncwarp();
        if (mode >= 2) {
            row_nan(l, E, fault);
            sigmoid_weights(l, my, K, mode == 3, scale, w + t * K);
        } else {
            if (mode == 1) row_check(l, E, fault);  // the full softmax checks in row_stats
            token_weights(l, my, E, K, mode == 0, scale, w + t * K, fault);
        }
        __syncwarp();
    }
}

// dlogits[t,:] = d(sum_j dw[t,j] * w[t,j]) / dlogits[t,:].
//   full softmax:  dl[e] = p[e] * (g[e] - sum_j dw[j] * w[j]),  g[e] = sum_{j: i_j = e} dw[j];
//   k-softmax:     dl[e] = g'[e] - w-weighted, i.e. dl[i_j] += w[j] * (dw[j] - sum_j' dw[j'] w[j']), else 0.
template <typename T>
__device__ void route_weights_grad_body(const T* __restrict__ logits, const int* __restrict__ idx,
                                        const T* __restrict__ dw, T* __restrict__ dlogits, int numTokens, int E,
                                        int K, int mode, double scale, unsigned int* fault) {
    const bool fullSoftmax = mode == 0;
    extern __shared__ unsigned char smem[];
    const int warpInBlock = threadIdx.x >> 5;
    int* my = reinterpret_cast<int*>(smem) + warpInBlock * K;
    const int warpsPerBlock = blockDim.x >> 5;
    T* myw = reinterpret_cast<T*>(reinterpret_cast<int*>(smem) + ((warpsPerBlock * K + 1) & ~1)) + warpInBlock * K;
    const int lane = lane_id();
    const T sc = (T)scale;  // softmax modes: d/dw' = scale * dw for w = scale * w' (exact when 1)
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        for (int j = lane; j < K; j += 32) my[j] = checked_expert(idx[t * K + j], E, fault);
        __syncwarp();
        if (mode >= 2) {
            // Sigmoid: dl_e = sum_{j: i_j = e} (scale/D) (dw_j - dot) sigmoid'(l_e), dot = sum_j dw_j s_j / D
            // (D = sum_j s_j + 1e-20 when renormalised; else D = 1, dot = 0), in double as on the CPU.
            const bool renorm = mode == 3;
            row_nan(l, E, fault);
            double den = 1.0, dot = 0.0;
            if (renorm) {
                double sum = 0.0;
                for (int j = 0; j < K; j++) sum += sigmoid_d((double)l[my[j]]);
                den = sum + 1e-20;
                for (int j = 0; j < K; j++) dot += (double)dw[t * K + j] * sigmoid_d((double)l[my[j]]) / den;
            }
            T* out = dlogits + t * E;
            for (int e = lane; e < E; e += 32) {
                double g = 0.0;
                for (int j = 0; j < K; j++)
                    if (my[j] == e) g += scale / den * ((double)dw[t * K + j] - dot) * sigmoid_slope((double)l[e]);
                out[e] = (T)g;
            }
            __syncwarp();
            continue;
        }
        T m = T(0), s = T(1);  // the full softmax's statistics, computed once for weights and gradient
        if (fullSoftmax) {
            row_stats(l, E, m, s, fault);
            for (int j = lane; j < K; j += 32) myw[j] = dev_exp(sanitize(l[my[j]]) - m) / s;
        } else {
            row_check(l, E, fault);
            token_weights(l, my, E, K, false, 1.0, myw, (unsigned int*)0);
        }
        __syncwarp();
        T dot = T(0);
        for (int j = 0; j < K; j++) dot += sc * dw[t * K + j] * myw[j];
        T* out = dlogits + t * E;
        if (fullSoftmax) {
            for (int e = lane; e < E; e += 32) {
                T g = T(0);
                for (int j = 0; j < K; j++)
                    if (my[j] == e) g += sc * dw[t * K + j];
                const T p = dev_exp(sanitize(l[e]) - m) / s;
                out[e] = p * (g - dot);
            }
        } else {
            for (int e = lane; e < E; e += 32) {
                T g = T(0);
                for (int j = 0; j < K; j++)
                    if (my[j] == e) g += myw[j] * (sc * dw[t * K + j] - dot);
                out[e] = g;
            }
        }
        __syncwarp();
    }
}

#define DEFINE_ROUTE(SUF, T)                                                                                  \
    extern "C" __global__ void route_##SUF(const T* logits, int* idx, T* w, int numTokens, int E, int K,       \
                                           int fullSoftmax, double scale, unsigned int* fault) {              \
        route_body<T>(logits, idx, w, numTokens, E, K, fullSoftmax != 0, scale, fault);                       \
    }                                                                                                         \
    extern "C" __global__ void route_sigmoid_##SUF(const T* logits, const T* bias, int* idx, T* w, int numTokens, \
                                                   int E, int K, int renorm, double scale, int G, int TG,     \
                                                   int exclude, unsigned int* fault) {                        \
        route_sigmoid_body<T>(logits, bias, idx, w, numTokens, E, K, renorm != 0, scale, G, TG, exclude != 0,  \
                              fault);                                                                         \
    }                                                                                                         \
    extern "C" __global__ void route_weights_##SUF(const T* logits, const int* idx, T* w, int numTokens, int E, \
                                                   int K, int mode, double scale, unsigned int* fault) {      \
        route_weights_body<T>(logits, idx, w, numTokens, E, K, mode, scale, fault);                           \
    }                                                                                                         \
    extern "C" __global__ void route_weights_grad_##SUF(const T* logits, const int* idx, const T* dw,          \
                                                        T* dlogits, int numTokens, int E, int K, int mode,    \
                                                        double scale, unsigned int* fault) {                  \
        route_weights_grad_body<T>(logits, idx, dw, dlogits, numTokens, E, K, mode, scale, fault);            \
    }

DEFINE_ROUTE(f32, float)
DEFINE_ROUTE(f64, double)
