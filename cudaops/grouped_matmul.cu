// Grouped matrix products over the expert-major segments of the plan (simple, correct, deterministic;
// not tuned: one thread per output element, fixed summation order).
//   gmm:       out[r,o] = sum_i x[r,i] * W[e,i,o]   (transposeW: W[e,o,i]),  e = expert of row r
//   gmm_gradw: dW[e,i,o] = sum_{r in segment e} x[r,i] * dy[r,o], in increasing r
// offsets has E+1 entries (offsets[E] = N).
#include "common.cuh"

// Expert e with offsets[e] <= r < offsets[e+1] (binary search; empty segments are skipped).
__device__ __forceinline__ int expert_of_row(const int* offsets, int E, int r) {
    int lo = 0, hi = E;  // invariant: offsets[lo] <= r < offsets[hi]
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (offsets[mid] <= r) lo = mid; else hi = mid;
    }
    return lo;
}

template <typename T>
__device__ void gmm_body(const T* __restrict__ x, const T* __restrict__ w, const int* __restrict__ offsets, int E,
                         int N, int In, int Out, int transposeW, T* __restrict__ out) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    for (long long r = (long long)blockIdx.y * blockDim.y + threadIdx.y; r < N; r += (long long)gridDim.y * blockDim.y) {
        if (o >= Out) continue;
        const int e = expert_of_row(offsets, E, (int)r);
        const T* xr = x + r * In;
        const T* we = w + (long long)e * In * Out;
        T acc = T(0);
        if (transposeW) {
            for (int i = 0; i < In; i++) acc += xr[i] * we[(long long)o * In + i];
        } else {
            for (int i = 0; i < In; i++) acc += xr[i] * we[(long long)i * Out + o];
        }
        out[r * Out + o] = acc;
    }
}

template <typename T>
__device__ void gmm_gradw_body(const T* __restrict__ x, const T* __restrict__ dy, const int* __restrict__ offsets,
                               int E, int In, int Out, T* __restrict__ dW) {
    const long long total = (long long)E * In * Out;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (long long)gridDim.x * blockDim.x) {
        const int o = (int)(k % Out);
        const int i = (int)((k / Out) % In);
        const int e = (int)(k / ((long long)Out * In));
        T acc = T(0);
        for (int r = offsets[e]; r < offsets[e + 1]; r++) acc += x[(long long)r * In + i] * dy[(long long)r * Out + o];
        dW[k] = acc;
    }
}

#define DEFINE_GMM(SUF, T)                                                                                     \
    extern "C" __global__ void gmm_##SUF(const T* x, const T* w, const int* offsets, int E, int N, int In,      \
                                         int Out, int transposeW, T* out) {                                   \
        gmm_body<T>(x, w, offsets, E, N, In, Out, transposeW, out);                                            \
    }                                                                                                          \
    extern "C" __global__ void gmm_gradw_##SUF(const T* x, const T* dy, const int* offsets, int E, int In,      \
                                               int Out, T* dW) {                                               \
        gmm_gradw_body<T>(x, dy, offsets, E, In, Out, dW);                                                     \
    }

DEFINE_GMM(f32, float)
DEFINE_GMM(f64, double)
