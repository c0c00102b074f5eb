// CPU emulation of the CUDA features the GEMM family (cudaops/gemm.cuh, gemm.cu) uses, so that the very
// same kernel source runs on the build host: every CTA is run by one coroutine per CUDA thread
// (ucontext), switched at __syncthreads and at the warp-wide mma.sync (tf32 m16n8k8, bf16 m16n8k16) and
// ldmatrix (plain and .trans); cp.async copies
// complete late (at the cp.async.wait_group that must cover them, the latest point the PTX memory model
// allows), so a read of a stage before its wait sees stale data; threads resume in a shuffled order
// after each barrier. Shared memory is poisoned (NaN) before each CTA, and every cp.async source must lie
// in a registered allocation. None of this is compiled into the library: see gemmemu.go (build tag
// expertrt_gemmemu).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#define GEMM_EMU 1
#define GEMM_DEV inline
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
// One CTA runs at a time on one OS thread, so a function-level static is exactly the CTA's shared copy.
#define __shared__ static
#define __align__(n) alignas(n)

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }

// Device primitives (gemm.cuh calls these; the CUDA build defines them with inline PTX).
void emu_syncthreads();
void emu_cp_async(void* dst, const void* src, int bytes, bool in);
void emu_cp_async_commit();
void emu_cp_async_wait(int n);
void emu_copy_now(void* dst, const void* src, int bytes, bool in);  // a synchronous global->shared copy
void emu_mma_tf32(float* d, const unsigned* a, const unsigned* b);
void emu_mma_bf16(float* d, const unsigned* a, const unsigned* b);
void emu_ldmatrix_x4(unsigned* d, const void* row, bool trans);
void emu_smem_read(const void* p, int bytes);  // fails the run unless aligned and inside shared memory
#define GEMM_SMEM_READ(p, bytes) emu_smem_read(p, bytes)
bool emu_global_read(const void* p, int bytes, bool in);  // false (and fails the run) unless aligned and allocated
bool emu_smem_write(const void* p, int bytes);            // false (and fails the run) unless aligned, in shared memory
void emu_fault(unsigned* f, unsigned code);
int emu_thread();  // thread index in the CTA of the running coroutine

inline void __syncthreads() { emu_syncthreads(); }
inline void cp_async16(void* s, const void* g, bool in) { emu_cp_async(s, g, 16, in); }
inline void cp_async_elem(float* s, const float* g, bool in) { emu_cp_async(s, g, 4, in); }
inline void cp_async_elem(double* s, const double* g, bool in) { emu_cp_async(s, g, 8, in); }
struct bf16;  // gemm.cuh
// No 2-byte cp.async exists: gemm.cuh copies single bfloat16 elements synchronously.
inline void cp_async_elem(bf16* s, const bf16* g, bool in) { emu_copy_now(s, g, 2, in); }
inline void cp_async_commit() { emu_cp_async_commit(); }
template <int N> inline void cp_async_wait() { emu_cp_async_wait(N); }
inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}
inline unsigned to_tf32(float x) {  // cvt.rna.tf32.f32
    unsigned u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
    return u;
}
inline void mma_tf32(float* d, const unsigned* a, const unsigned* b) { emu_mma_tf32(d, a, b); }
inline void mma_bf16(float* d, const unsigned* a, const unsigned* b) { emu_mma_bf16(d, a, b); }
inline void ldsm_x4(unsigned* d, const float* row) { emu_ldmatrix_x4(d, row, false); }
inline void ldsm_x4(unsigned* d, const bf16* row) { emu_ldmatrix_x4(d, row, false); }
inline void ldsm_x4_t(unsigned* d, const bf16* row) { emu_ldmatrix_x4(d, row, true); }
inline unsigned tf32_bits(unsigned u) {  // cvt.rna.tf32.f32 of the float with bits u
    float x;
    std::memcpy(&x, &u, 4);
    return to_tf32(x);
}
inline void gemm_fault(unsigned* f, unsigned code) { emu_fault(f, code); }
// Register-staged copies (SimtTile with RS): checked global loads (zero when !in) and shared stores.
// (Instantiated for double too, never called: RS tiles are float32.)
template <typename T> inline void ldg4(T* r, const T* g, bool in) {
    const bool ok = emu_global_read(g, 16, in);
    for (int e = 0; e < 4; e++) r[e] = in && ok ? g[e] : T(0);
}
template <typename T> inline T ldg1(const T* g, bool in) {
    const bool ok = emu_global_read(g, (int)sizeof(T), in);
    return in && ok ? *g : T(0);
}
template <typename T> inline void sts1(T* s, T v) {
    if (emu_smem_write(s, (int)sizeof(T))) *s = v;
}

// Hopper wgmma tile (gemm_wgmma.cuh). Shared-window addresses: the dynamic shared memory starts at
// address EMU_SMEM_BASE, which like the GPU's (after the static scheduler buffer) is 16- but not
// 1024-aligned. wgmma.mma_async is recorded at issue and executed by each thread for its own
// accumulators when a wgmma.wait_group covers it (the latest point the PTX allows), reading shared
// memory through the descriptors (K-major, 128-byte swizzle on the address bits; other layouts fail the
// run) with the inputs truncated to tf32.
unsigned emu_smem_addr(const void* p);
void emu_cp_async_part(unsigned saddr, const void* src, int bytes);  // 16-byte unit, the first `bytes` read
void emu_wgmma(float* d, int n, unsigned long long da, unsigned long long db);
void emu_wgmma_commit();
void emu_wgmma_wait(int n);
inline unsigned smem_u32(const void* p) { return emu_smem_addr(p); }
inline void wg_fence() {}
inline void wg_commit() { emu_wgmma_commit(); }
template <int N> inline void wg_wait() { emu_wgmma_wait(N); }
inline void fence_proxy_async() {}
inline void cp_async16_part(unsigned s, const void* g, int bytes) { emu_cp_async_part(s, g, bytes); }
inline void wg_reg_fence(float&) {}
template <int N> struct WgMma {
    static void mma(float (&d)[N / 2], unsigned long long da, unsigned long long db) { emu_wgmma(d, N, da, db); }
};

// Registration of a variant's kernels (one translation unit per variant, see gen.go).
typedef void (*EmuThreadFn)(const uint64_t* args, int bid, int tid, unsigned char* smem);
typedef void (*EmuReduceFn)(const uint64_t* args, long long first, long long stride);
struct EmuRegistrar {
    // nargs: the kernel's parameters (23: GemmArgs; 26: GemmArgs of a SwiGLU product; 7: gemm_transpose)
    EmuRegistrar(const char* variant, const char* kernel, EmuThreadFn fn, int threads, int smem, int nargs = 23);
    EmuRegistrar(const char* variant, const char* kernel, EmuReduceFn fn, int nargs = 8);
    EmuRegistrar(const char* variant, const int* config);
};

inline int emu_i32(uint64_t v) { return (int)(int32_t)(uint32_t)v; }

// The GemmArgs of a kernel's first 23 argument slots (gemm.cu's GEMM_PARAMS, in order).
#define GEMM_EMU_ARGS(a)                                                                                          \
    {(const void*)a[0], (const void*)a[1], (void*)a[2], (void*)a[3], (const int*)a[4], (unsigned*)a[5],          \
     (long long)a[6], (long long)a[7], (long long)a[8], (long long)a[9], (long long)a[10], (long long)a[11],      \
     emu_i32(a[12]), emu_i32(a[13]), emu_i32(a[14]), emu_i32(a[15]), emu_i32(a[16]), emu_i32(a[17]),             \
     emu_i32(a[18]), emu_i32(a[19]), emu_i32(a[20]), emu_i32(a[21]), emu_i32(a[22])}

#define GEMM_EMU_KERNEL(NAME, AT, BT, VEC, TC)                                                                      \
    static void NAME##_thread(const uint64_t* a, int bid, int tid, unsigned char* smem) {                       \
        const GemmArgs p = GEMM_EMU_ARGS(a);                                                                     \
        gemm_entry<GemmCfg<AT, BT, VEC, TC>::type, AT, BT>(p, smem, bid, tid);                                  \
    }                                                                                                            \
    static EmuRegistrar NAME##_reg(GEMM_EMU_VARIANT, #NAME, NAME##_thread, GemmNN::NT, GemmNN::SMEM);

#define GEMM_EMU_SWIGLU_KERNEL(NAME, VEC)                                                                             \
    static void NAME##_thread(const uint64_t* a, int bid, int tid, unsigned char* smem) {                       \
        GemmArgs p = GEMM_EMU_ARGS(a);                                                                           \
        p.B2 = (const void*)a[23];                                                                               \
        p.G = (void*)a[24];                                                                                      \
        p.U = (void*)a[25];                                                                                      \
        gemm_entry<GemmCfg<false, false, VEC, GEMM_T>::type, false, false, true>(p, smem, bid, tid);            \
    }                                                                                                            \
    static EmuRegistrar NAME##_reg(GEMM_EMU_VARIANT, #NAME, NAME##_thread, GemmNN::NT, GemmNN::SMEM, 26);

#define GEMM_EMU_SK_KERNEL(NAME, BT, VEC)                                                                             \
    static void NAME##_thread(const uint64_t* a, int bid, int tid, unsigned char* smem) {                       \
        const GemmArgs p = GEMM_EMU_ARGS(a);                                                                     \
        gemm_entry<GemmCfg<false, BT, VEC, GEMM_T>::type, false, BT, false, true>(p, smem, bid, tid);           \
    }                                                                                                            \
    static EmuRegistrar NAME##_reg(GEMM_EMU_VARIANT, #NAME, NAME##_thread, GemmNN::NT, GemmNN::SMEM);

#define GEMM_EMU_SK_FIXUP(NAME)                                                                                     \
    static void NAME##_thread(const uint64_t* a, int bid, int tid, unsigned char*) {                             \
        const GemmArgs p = GEMM_EMU_ARGS(a);                                                                     \
        gemm_sk_fixup_body<GemmNN>(p, bid, tid);                                                                 \
    }                                                                                                            \
    static EmuRegistrar NAME##_reg(GEMM_EMU_VARIANT, #NAME, NAME##_thread, GemmNN::NT, 0);

#define GEMM_EMU_CONFIG(...)                                    \
    static const int emu_config[8] = {__VA_ARGS__};           \
    static EmuRegistrar emu_config_reg(GEMM_EMU_VARIANT, emu_config);

#define GEMM_EMU_REDUCE(NAME, TW, TC)                                                                         \
    static void NAME##_all(const uint64_t* a, long long first, long long stride) {                              \
        gemm_reduce_body<TW, TC>((const TW*)a[0], (TC*)a[1], emu_i32(a[2]), emu_i32(a[3]), emu_i32(a[4]),     \
                                 (long long)a[5], (long long)a[6], emu_i32(a[7]), first, stride);              \
    }                                                                                                          \
    static EmuRegistrar NAME##_reg(GEMM_EMU_VARIANT, #NAME, NAME##_all);

// gemm_reduce_rows(W, C, offsets, splits, rows, N, E, ldcR, ldcC, vec).
#define GEMM_EMU_REDUCE_ROWS(NAME, TW, TC)                                                                            \
    static void NAME##_all(const uint64_t* a, long long first, long long stride) {                                    \
        gemm_reduce_rows_body<TW, TC>((const TW*)a[0], (TC*)a[1], (const int*)a[2], emu_i32(a[3]), emu_i32(a[4]),    \
                                      emu_i32(a[5]), emu_i32(a[6]), (long long)a[7], (long long)a[8], emu_i32(a[9]), \
                                      first, stride);                                                                 \
    }                                                                                                                 \
    static EmuRegistrar NAME##_reg(GEMM_EMU_VARIANT, #NAME, NAME##_all, 10);

// gemm_transpose(in, out, R, C, ldo, strideIn, strideOut) of the wgmma modules.
#define GEMM_EMU_TRANSPOSE(NAME)                                                                                  \
    static void NAME##_thread(const uint64_t* a, int bid, int tid, unsigned char*) {                             \
        __shared__ float t[32][33];                                                                              \
        gemm_transpose_body((const float*)a[0], (float*)a[1], emu_i32(a[2]), emu_i32(a[3]), (long long)a[4],   \
                            (long long)a[5], (long long)a[6], bid, tid, t);                                      \
    }                                                                                                            \
    static EmuRegistrar NAME##_reg(GEMM_EMU_VARIANT, #NAME, NAME##_thread, 256, 0, 7);
