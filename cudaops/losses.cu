// Router auxiliary losses and their gradients (not bandwidth-critical; deterministic fixed-order sums).
//   LoadBalancingLoss = E * sum_e f_e * P_e,  f_e = C_e / n,  P_e = (sum over counted t of softmax(logits)[t,e]) / n
//   ZLoss             = mean_t logsumexp(logits[t,:])^2
// Counted tokens: all T, or those whose token mask is non-zero (padding excluded, as transformers'
// load_balancing_loss_func with an attention mask); C_e = slots of counted tokens routed to e, n = the
// number of counted tokens (no counted token: loss and gradient 0). Per-token statistics use one warp per
// token (row_stats, which also reports rows with a NaN, +inf or all -inf as FAULT_NONFINITE); column sums
// use one block per expert with a fixed tree reduction; sums over tokens accumulate in double.
#include "common.cuh"

__device__ __forceinline__ bool counted(const int* mask, long long t) { return !mask || mask[t] != 0; }

// m[t] = max_e logits[t,e], s[t] = sum_e exp(logits[t,e] - m[t]) for counted tokens (others: 0 and 1).
template <typename T>
__device__ void softmax_stats_body(const T* __restrict__ logits, const int* __restrict__ mask, int numTokens, int E,
                                   T* m, T* s, unsigned int* fault) {
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        T mt = T(0), st = T(1);
        if (counted(mask, t)) row_stats(logits + t * E, E, mt, st, fault);
        if (lane_id() == 0) {
            m[t] = mt;
            s[t] = st;
        }
    }
}

// Block reduction in a fixed tree order; blockDim.x must be 256 and every thread of the block must call it.
__device__ double block_sum_256(double v) {
    __shared__ double buf[256];
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int o = 128; o > 0; o >>= 1) {
        if (threadIdx.x < o) buf[threadIdx.x] += buf[threadIdx.x + o];
        __syncthreads();
    }
    double r = buf[0];
    __syncthreads();
    return r;
}

// C[e] = slots of counted tokens routed to e (the plan's counts without a mask; with one, expert e's rows
// offsets[e]..offsets[e+1]-1, and a capacity plan's dropped rows of e, walked back to their tokens
// slotOf[r]/K), C[E] = n, the counted tokens.
// One block of 256 threads per expert (grid-striding); block 0 also counts n.
__device__ void lbl_counts_body(const int* __restrict__ planCounts, const int* __restrict__ offsets,
                                const int* __restrict__ slotOf, const int* __restrict__ mask, int numTokens, int K,
                                int E, int* C) {
    const long long slots = (long long)numTokens * K;
    for (int e = blockIdx.x; e < E; e += gridDim.x) {
        int c = 0;
        if (!mask) {
            c = planCounts[e];
        } else {
            // Expert e's kept rows, then (a capacity plan) its dropped rows: they start at
            // offsets[E] + sum_{e' < e} (counts[e'] - kept[e']) = offsets[E] + sum_{e'<e} counts[e'] - offsets[e].
            double before = 0.0;
            for (int i = threadIdx.x; i < e; i += blockDim.x) before += (double)planCounts[i];
            const long long dlo = (long long)offsets[E] + (long long)block_sum_256(before) - offsets[e];
            const long long dhi = dlo + planCounts[e] - (offsets[e + 1] - offsets[e]);
            double acc = 0.0;
            for (long long r = (long long)offsets[e] + threadIdx.x; r < offsets[e + 1]; r += blockDim.x) {
                const int sl = slotOf[r];
                acc += (sl >= 0 && sl < slots && mask[sl / K] != 0) ? 1.0 : 0.0;
            }
            for (long long r = (dlo > 0 ? dlo : 0) + threadIdx.x; r < dhi && r < slots; r += blockDim.x) {
                const int sl = slotOf[r];
                acc += (sl >= 0 && sl < slots && mask[sl / K] != 0) ? 1.0 : 0.0;
            }
            c = (int)block_sum_256(acc);
        }
        if (threadIdx.x == 0) C[e] = c;
    }
    if (blockIdx.x == 0) {
        double acc = 0.0;
        if (mask)
            for (long long t = threadIdx.x; t < numTokens; t += blockDim.x) acc += mask[t] != 0 ? 1.0 : 0.0;
        acc = block_sum_256(acc);
        if (threadIdx.x == 0) C[E] = mask ? (int)acc : numTokens;
    }
}

// P[e] = sum over counted t of exp(logits[t,e] - m[t]) / s[t]; one block of 256 threads per expert.
template <typename T>
__device__ void col_prob_sum_body(const T* __restrict__ logits, const T* __restrict__ m, const T* __restrict__ s,
                                  const int* __restrict__ mask, int numTokens, int E, double* P) {
    for (int e = blockIdx.x; e < E; e += gridDim.x) {
        double acc = 0.0;
        for (long long t = threadIdx.x; t < numTokens; t += blockDim.x)
            if (counted(mask, t)) acc += (double)(dev_exp(logits[t * E + e] - m[t]) / s[t]);
        acc = block_sum_256(acc);
        if (threadIdx.x == 0) P[e] = acc;
    }
}

// out[0] = coef * E * sum_e (C[e] / n) * (P[e] / n), n = C[E] (0 when n = 0); one thread, increasing e.
template <typename T>
__device__ void lbl_finish_body(const double* P, const int* C, int E, double coef, T* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        const double n = (double)C[E];
        double acc = 0.0;
        if (n > 0)
            for (int e = 0; e < E; e++) acc += ((double)C[e] / n) * (P[e] / n);
        out[0] = (T)(coef * (double)E * acc);
    }
}

// The upstream gradient of a scalar loss: g[0] when the gradient lives on the device, else 1.
template <typename T> __device__ __forceinline__ double upstream(const T* g) { return g ? (double)g[0] : 1.0; }

// dlogits[t,e] = scale * E/n * p[t,e] * (f_e - sum_e' f_e' p[t,e']) for counted t (f_e = C[e]/n), else 0.
template <typename T>
__device__ void lbl_grad_body(const T* __restrict__ logits, const int* __restrict__ C, const int* __restrict__ mask,
                              int numTokens, int E, double scale, const T* __restrict__ g, T* __restrict__ dlogits,
                              unsigned int* fault) {
    const int lane = lane_id();
    const int n = C[E];
    const double invN = n > 0 ? 1.0 / (double)n : 0.0;
    scale *= upstream(g);
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        T* out = dlogits + t * E;
        if (n == 0 || !counted(mask, t)) {
            for (int e = lane; e < E; e += 32) out[e] = T(0);
            continue;
        }
        T m, s;
        row_stats(l, E, m, s, fault);
        T a = T(0);
        for (int e = lane; e < E; e += 32) a += (T)(C[e] * invN) * (dev_exp(sanitize(l[e]) - m) / s);
        a = warp_sum(a);
        const T c = (T)(scale * (double)E * invN);
        for (int e = lane; e < E; e += 32) {
            const T p = dev_exp(sanitize(l[e]) - m) / s;
            out[e] = c * p * ((T)(C[e] * invN) - a);
        }
    }
}

// sq[t] = logsumexp(logits[t,:])^2 in double.
template <typename T>
__device__ void zloss_rows_body(const T* __restrict__ logits, int numTokens, int E, double* sq, unsigned int* fault) {
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        T m, s;
        row_stats(logits + t * E, E, m, s, fault);
        if (lane_id() == 0) {
            const double lse = (double)m + log((double)s);
            sq[t] = lse * lse;
        }
    }
}

// out[0] = coef * sum_i in[i] / n in the loss dtype; one block of 256 threads, fixed order.
template <typename T>
__device__ void scaled_mean_body(const double* in, long long n, double coef, T* out) {
    double acc = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) acc += in[i];
    acc = block_sum_256(acc);
    if (threadIdx.x == 0) out[0] = (T)(coef * acc / (double)n);
}

// dlogits[t,e] = scale * 2/T * lse_t * softmax(logits[t,:])[e].
template <typename T>
__device__ void zloss_grad_body(const T* __restrict__ logits, int numTokens, int E, double scale,
                                const T* __restrict__ g, T* __restrict__ dlogits, unsigned int* fault) {
    const int lane = lane_id();
    scale *= upstream(g);
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        T m, s;
        row_stats(l, E, m, s, fault);
        const T lse = m + dev_log(s);
        const T c = (T)(scale * 2.0 / (double)numTokens) * lse;
        for (int e = lane; e < E; e += 32) dlogits[t * E + e] = c * (dev_exp(sanitize(l[e]) - m) / s);
    }
}

extern "C" __global__ void lbl_counts(const int* planCounts, const int* offsets, const int* slotOf, const int* mask,
                                      int numTokens, int K, int E, int* C) {
    lbl_counts_body(planCounts, offsets, slotOf, mask, numTokens, K, E, C);
}

#define DEFINE_LOSSES(SUF, T)                                                                                  \
    extern "C" __global__ void softmax_stats_##SUF(const T* logits, const int* mask, int numTokens, int E, T* m,  \
                                                   T* s, unsigned int* fault) {                              \
        softmax_stats_body<T>(logits, mask, numTokens, E, m, s, fault);                                        \
    }                                                                                                          \
    extern "C" __global__ void col_prob_sum_##SUF(const T* logits, const T* m, const T* s, const int* mask,     \
                                                  int numTokens, int E, double* P) {                          \
        col_prob_sum_body<T>(logits, m, s, mask, numTokens, E, P);                                             \
    }                                                                                                          \
    extern "C" __global__ void lbl_finish_##SUF(const double* P, const int* C, int E, double coef, T* out) {   \
        lbl_finish_body<T>(P, C, E, coef, out);                                                                \
    }                                                                                                          \
    extern "C" __global__ void lbl_grad_##SUF(const T* logits, const int* C, const int* mask, int numTokens,    \
                                              int E, double scale, const T* g, T* dlogits,                     \
                                              unsigned int* fault) {                                           \
        lbl_grad_body<T>(logits, C, mask, numTokens, E, scale, g, dlogits, fault);                             \
    }                                                                                                          \
    extern "C" __global__ void scaled_mean_##SUF(const double* in, long long n, double coef, T* out) {         \
        scaled_mean_body<T>(in, n, coef, out);                                                                 \
    }                                                                                                          \
    extern "C" __global__ void zloss_rows_##SUF(const T* logits, int numTokens, int E, double* sq,             \
                                                unsigned int* fault) {                                        \
        zloss_rows_body<T>(logits, numTokens, E, sq, fault);                                                   \
    }                                                                                                          \
    extern "C" __global__ void zloss_grad_##SUF(const T* logits, int numTokens, int E, double scale,           \
                                                const T* g, T* dlogits, unsigned int* fault) {                \
        zloss_grad_body<T>(logits, numTokens, E, scale, g, dlogits, fault);                                    \
    }

DEFINE_LOSSES(f32, float)
DEFINE_LOSSES(f64, double)
