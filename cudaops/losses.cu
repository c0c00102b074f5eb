// Router auxiliary losses and their gradients (not bandwidth-critical; deterministic fixed-order sums).
//   LoadBalancingLoss = E * sum_e f_e * P_e,  f_e = counts[e] / T,  P_e = mean_t softmax(logits)[t,e]
//   ZLoss             = mean_t logsumexp(logits[t,:])^2
// Per-token statistics use one warp per token; column means use one block per expert with a fixed tree
// reduction; sums over tokens accumulate in double.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void row_stats(const T* __restrict__ l, int E, T& m, T& s) {
    const int lane = lane_id();
    m = neg_inf<T>();
    for (int e = lane; e < E; e += 32) m = l[e] > m ? l[e] : m;
    m = warp_max(m);
    s = T(0);
    for (int e = lane; e < E; e += 32) s += dev_exp(l[e] - m);
    s = warp_sum(s);
}

// m[t] = max_e logits[t,e], s[t] = sum_e exp(logits[t,e] - m[t]).
template <typename T>
__device__ void softmax_stats_body(const T* __restrict__ logits, int numTokens, int E, T* m, T* s) {
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        T mt, st;
        row_stats(logits + t * E, E, mt, st);
        if (lane_id() == 0) {
            m[t] = mt;
            s[t] = st;
        }
    }
}

// Block reduction in a fixed tree order; blockDim.x must be 256.
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

// P[e] = mean_t exp(logits[t,e] - m[t]) / s[t]; one block of 256 threads per expert (grid-striding).
template <typename T>
__device__ void col_mean_prob_body(const T* __restrict__ logits, const T* __restrict__ m, const T* __restrict__ s,
                                   int numTokens, int E, double* P) {
    for (int e = blockIdx.x; e < E; e += gridDim.x) {
        double acc = 0.0;
        for (long long t = threadIdx.x; t < numTokens; t += blockDim.x)
            acc += (double)(dev_exp(logits[t * E + e] - m[t]) / s[t]);
        acc = block_sum_256(acc);
        if (threadIdx.x == 0) P[e] = acc / (double)numTokens;
    }
}

// out[0] = coef * E * sum_e (counts[e] / T) * P[e], one thread, increasing e; stored in the loss dtype.
template <typename T>
__device__ void lbl_finish_body(const double* P, const int* counts, int numTokens, int E, double coef, T* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double acc = 0.0;
        for (int e = 0; e < E; e++) acc += ((double)counts[e] / (double)numTokens) * P[e];
        out[0] = (T)(coef * (double)E * acc);
    }
}

// The upstream gradient of a scalar loss: g[0] when the gradient lives on the device, else 1.
template <typename T> __device__ __forceinline__ double upstream(const T* g) { return g ? (double)g[0] : 1.0; }

// dlogits[t,e] = scale * E/T * p[t,e] * (f_e - sum_e' f_e' p[t,e']).
template <typename T>
__device__ void lbl_grad_body(const T* __restrict__ logits, const int* __restrict__ counts, int numTokens, int E,
                              double scale, const T* __restrict__ g, T* __restrict__ dlogits) {
    const int lane = lane_id();
    const double invT = 1.0 / (double)numTokens;
    scale *= upstream(g);
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        T m, s;
        row_stats(l, E, m, s);
        T a = T(0);
        for (int e = lane; e < E; e += 32) a += (T)(counts[e] * invT) * (dev_exp(l[e] - m) / s);
        a = warp_sum(a);
        const T c = (T)(scale * (double)E * invT);
        for (int e = lane; e < E; e += 32) {
            const T p = dev_exp(l[e] - m) / s;
            dlogits[t * E + e] = c * p * ((T)(counts[e] * invT) - a);
        }
    }
}

// sq[t] = logsumexp(logits[t,:])^2 in double.
template <typename T>
__device__ void zloss_rows_body(const T* __restrict__ logits, int numTokens, int E, double* sq) {
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        T m, s;
        row_stats(logits + t * E, E, m, s);
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
                                const T* __restrict__ g, T* __restrict__ dlogits) {
    const int lane = lane_id();
    scale *= upstream(g);
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        T m, s;
        row_stats(l, E, m, s);
        const T lse = m + dev_log(s);
        const T c = (T)(scale * 2.0 / (double)numTokens) * lse;
        for (int e = lane; e < E; e += 32) dlogits[t * E + e] = c * (dev_exp(l[e] - m) / s);
    }
}

#define DEFINE_LOSSES(SUF, T)                                                                                  \
    extern "C" __global__ void softmax_stats_##SUF(const T* logits, int numTokens, int E, T* m, T* s) {        \
        softmax_stats_body<T>(logits, numTokens, E, m, s);                                                     \
    }                                                                                                          \
    extern "C" __global__ void col_mean_prob_##SUF(const T* logits, const T* m, const T* s, int numTokens,     \
                                                   int E, double* P) {                                        \
        col_mean_prob_body<T>(logits, m, s, numTokens, E, P);                                                  \
    }                                                                                                          \
    extern "C" __global__ void lbl_finish_##SUF(const double* P, const int* counts, int numTokens, int E,      \
                                                double coef, T* out) {                                         \
        lbl_finish_body<T>(P, counts, numTokens, E, coef, out);                                                \
    }                                                                                                          \
    extern "C" __global__ void lbl_grad_##SUF(const T* logits, const int* counts, int numTokens, int E,        \
                                              double scale, const T* g, T* dlogits) {                          \
        lbl_grad_body<T>(logits, counts, numTokens, E, scale, g, dlogits);                                     \
    }                                                                                                          \
    extern "C" __global__ void scaled_mean_##SUF(const double* in, long long n, double coef, T* out) {         \
        scaled_mean_body<T>(in, n, coef, out);                                                                 \
    }                                                                                                          \
    extern "C" __global__ void zloss_rows_##SUF(const T* logits, int numTokens, int E, double* sq) {           \
        zloss_rows_body<T>(logits, numTokens, E, sq);                                                          \
    }                                                                                                          \
    extern "C" __global__ void zloss_grad_##SUF(const T* logits, int numTokens, int E, double scale,           \
                                                const T* g, T* dlogits) {                                      \
        zloss_grad_body<T>(logits, numTokens, E, scale, g, dlogits);                                           \
    }

DEFINE_LOSSES(f32, float)
DEFINE_LOSSES(f64, double)
