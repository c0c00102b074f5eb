// Shared device helpers for the cudaops kernels. Compiled into each .cu file (one PTX module per family).
#pragma once

#include <stdint.h>

#define FULL_MASK 0xffffffffu

// Fault codes that kernels OR into the device fault word; the host reads it at the next synchronisation.
#define FAULT_EXPERT_RANGE 1u  // an expert index outside [0, E)
#define FAULT_GRID_BARRIER 2u  // a grid barrier timed out (not all blocks of a launch were resident)
#define FAULT_NONFINITE 4u     // a logits row with a NaN or +inf, or all -inf (its softmax is undefined)
#define FAULT_LABEL_RANGE 8u   // a class label outside [0, C) and not the ignore label -1
#define FAULT_GRAD_NONFINITE 16u  // a NaN or infinite gradient
// 32u: GEMM_FAULT_OFFSETS (gemm.cuh, which does not include this file): grouped-matmul offsets are invalid
#define FAULT_BIAS_NONFINITE 64u  // a selection bias entry that is NaN or infinite (route_sigmoid)
#define FAULT_WEIGHT_NAN 128u     // a NaN routing weight under the probs drop policy (capacity plans)
// 256u: GEMM_FAULT_MODE (gemm.cuh): a GEMM launch whose mode its kernel does not run (a planner bug)

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }
__device__ __forceinline__ long long global_warp() { return ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; }
__device__ __forceinline__ long long num_warps() { return ((long long)gridDim.x * blockDim.x) >> 5; }

// Positive/negative infinity without <cmath> host dependencies.
template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() { return __longlong_as_double(0xfff0000000000000ULL); }
template <typename T> __device__ __forceinline__ T pos_inf() { return -neg_inf<T>(); }

// NaN ranks as -inf wherever values are compared, so that a faulty row still gives in-range indices.
template <typename T> __device__ __forceinline__ T sanitize(T v) { return v != v ? neg_inf<T>() : v; }

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }

// Butterfly all-reduce: every lane ends with the same value, summed in the same order on every run.
template <typename T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
template <typename T> __device__ __forceinline__ T warp_max(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        T u = __shfl_xor_sync(FULL_MASK, v, o);
        v = u > v ? u : v;
    }
    return v;
}

// Softmax statistics of one row l[0..E-1], shared by every softmax of the kernels: m = max_e l[e] and
// s = sum_e exp(l[e] - m), reduced over the warp in a fixed order (every lane gets both). The result is
// false, on every lane, when the row holds a NaN or +inf or is all -inf (the softmax is undefined);
// NaN then counts as -inf so that the values stay defined. Reports FAULT_NONFINITE into fault (when
// non-null) for such rows.
template <typename T>
__device__ __forceinline__ bool row_stats(const T* __restrict__ l, int E, T& m, T& s, unsigned int* fault) {
    const int lane = lane_id();
    bool bad = false;
    m = neg_inf<T>();
    for (int e = lane; e < E; e += 32) {
        const T v = l[e];
        bad |= v != v || v == pos_inf<T>();
        const T c = sanitize(v);
        m = c > m ? c : m;
    }
    m = warp_max(m);
    s = T(0);
    for (int e = lane; e < E; e += 32) s += dev_exp(sanitize(l[e]) - m);
    s = warp_sum(s);
    const bool ok = !__any_sync(FULL_MASK, bad) && m != neg_inf<T>();
    if (!ok && fault && lane == 0) atomicOr(fault, FAULT_NONFINITE);
    return ok;
}

// row_check is row_stats' validity test alone (no exponentials): false, on every lane, for a row with a
// NaN or +inf or all -inf, reported as FAULT_NONFINITE into fault (when non-null).
template <typename T> __device__ __forceinline__ bool row_check(const T* __restrict__ l, int E, unsigned int* fault) {
    const int lane = lane_id();
    bool bad = false;
    T m = neg_inf<T>();
    for (int e = lane; e < E; e += 32) {
        const T v = l[e];
        bad |= v != v || v == pos_inf<T>();
        m = v > m ? v : m;
    }
    m = warp_max(m);
    const bool ok = !__any_sync(FULL_MASK, bad) && m != neg_inf<T>();
    if (!ok && fault && lane == 0) atomicOr(fault, FAULT_NONFINITE);
    return ok;
}

// 16-byte vectors: float4 (4 floats) and double2 (2 doubles); the scalar forms are the fallback path.
__device__ __forceinline__ float4 vscale(float s, float4 v) { return make_float4(s * v.x, s * v.y, s * v.z, s * v.w); }
__device__ __forceinline__ double2 vscale(double s, double2 v) { return make_double2(s * v.x, s * v.y); }
__device__ __forceinline__ float vscale(float s, float v) { return s * v; }
__device__ __forceinline__ double vscale(double s, double v) { return s * v; }

__device__ __forceinline__ float4 vfma(float s, float4 v, float4 a) {
    return make_float4(fmaf(s, v.x, a.x), fmaf(s, v.y, a.y), fmaf(s, v.z, a.z), fmaf(s, v.w, a.w));
}
__device__ __forceinline__ double2 vfma(double s, double2 v, double2 a) { return make_double2(fma(s, v.x, a.x), fma(s, v.y, a.y)); }
__device__ __forceinline__ float vfma(float s, float v, float a) { return fmaf(s, v, a); }
__device__ __forceinline__ double vfma(double s, double v, double a) { return fma(s, v, a); }

__device__ __forceinline__ float vdot(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }
__device__ __forceinline__ double vdot(double2 a, double2 b) { return a.x * b.x + a.y * b.y; }
__device__ __forceinline__ float vdot(float a, float b) { return a * b; }
__device__ __forceinline__ double vdot(double a, double b) { return a * b; }

template <typename V> __device__ __forceinline__ V vzero();
template <> __device__ __forceinline__ float4 vzero<float4>() { return make_float4(0.f, 0.f, 0.f, 0.f); }
template <> __device__ __forceinline__ double2 vzero<double2>() { return make_double2(0.0, 0.0); }
template <> __device__ __forceinline__ float vzero<float>() { return 0.f; }
template <> __device__ __forceinline__ double vzero<double>() { return 0.0; }

// Streaming loads/stores: data touched once should not evict what other kernels keep in L2.
template <typename V> __device__ __forceinline__ V load_stream(const V* p) { return __ldcs(p); }
template <typename V> __device__ __forceinline__ void store_stream(V* p, V v) { __stcs(p, v); }

// Clamp an expert index into [0, E) and report a fault when it was outside.
__device__ __forceinline__ int checked_expert(int e, int E, unsigned int* fault) {
    if (e < 0 || e >= E) {
        if (fault) atomicOr(fault, FAULT_EXPERT_RANGE);
        return e < 0 ? 0 : E - 1;
    }
    return e;
}
