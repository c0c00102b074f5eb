// CPU emulation of the CUDA features cudaops/bf16.cu (and common.cuh) use, so that the very same kernel
// source runs on the build host: a launch runs its blocks one after another and every warp as 32 OS
// threads, which meet at each warp shuffle (__shfl_xor_sync, __any_sync) through a barrier. 16-byte
// vector accesses are plain loads and stores; the float functions are the host's (CUDA's expf may differ
// in the last bit). Compiled only into the test package (build tag expertrt_bf16emu).
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

#define __device__
#define __global__
#define __forceinline__ inline
#define __noinline__
#define __restrict__
#define __launch_bounds__(...)

struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }

struct Dim3 { unsigned x = 0; };
extern thread_local Dim3 threadIdx, blockIdx, blockDim, gridDim;

// The warp of the running thread: a barrier of its 32 threads and one exchange slot per lane.
struct Warp {
    std::barrier<> bar{32};
    uint64_t slot[32];
};
extern thread_local Warp* emu_warp;

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int o) {
    static_assert(sizeof(T) <= 8, "shuffle of a wide type");
    const int lane = threadIdx.x & 31;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    emu_warp->slot[lane] = bits;
    emu_warp->bar.arrive_and_wait();
    T r;
    uint64_t other = emu_warp->slot[lane ^ o];
    std::memcpy(&r, &other, sizeof(T));
    emu_warp->bar.arrive_and_wait();
    return r;
}
inline bool __any_sync(unsigned, bool p) {
    const int lane = threadIdx.x & 31;
    emu_warp->slot[lane] = p;
    emu_warp->bar.arrive_and_wait();
    bool any = false;
    for (int i = 0; i < 32; i++) any |= emu_warp->slot[i] != 0;
    emu_warp->bar.arrive_and_wait();
    return any;
}
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }

template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
inline long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, 8); return i; }
inline double __hiloint2double(int hi, int lo) {
    const uint64_t u = (uint64_t)(uint32_t)hi << 32 | (uint32_t)lo;
    double d;
    std::memcpy(&d, &u, 8);
    return d;
}
inline int __double2hiint(double d) { uint64_t u; std::memcpy(&u, &d, 8); return (int)(uint32_t)(u >> 32); }
inline int __double2loint(double d) { uint64_t u; std::memcpy(&u, &d, 8); return (int)(uint32_t)u; }
inline float __double2float_rn(double d) { return (float)d; }
// cvt.rz.f32.f64: the float nearest d toward zero (the largest finite float for finite d beyond it).
inline float __double2float_rz(double d) {
    float f = (float)d;
    if (d == d && (double)f != d && std::fabs((double)f) > std::fabs(d)) f = std::nextafter(f, 0.0f);
    return f;
}
// mul.rz.f32: the product of two floats (exact in double) truncated toward zero.
inline float __fmul_rz(float a, float b) { return __double2float_rz((double)a * (double)b); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
using std::exp;
using std::fma;
using std::log;
inline float expf(float x) { return std::exp(x); }
inline float logf(float x) { return std::log(x); }
inline float fmaf(float a, float b, float c) { return std::fma(a, b, c); }

// launch runs body as a grid of grid blocks of block threads (block a multiple of 32).
void emu_launch(int grid, int block, const std::function<void()>& body);
