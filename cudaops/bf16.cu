// Mixed-precision (bfloat16) kernels: casts, the row permutations around the routing plan with bfloat16
// rows and float32 routing weights, the fused SwiGLU, and the elementwise Add of the tensor engine.
//
// bfloat16 values are handled as their bit patterns (unsigned short), converted with integer
// arithmetic that is bit for bit the Go reference (package internal/bf16): round to nearest even, NaN
// quieted with its payload kept (float32 sources), float64 rounded once through round-to-odd. Every
// kernel except SwiGLU and the weight-gradient dot products gives exactly the CPU reference's bits:
// products of a float32 and a bfloat16 are exact in double, and sums are formed in double in the
// reference's order before the one final rounding.
//
// Plans may come from a capacity: a slot s is dropped when rowOf[s] >= *kept (kept = &offsets[E]); its
// row is zero in dispatch, it takes no part in combine, and its weight gradient is 0 (as permute.cu).
//
// Vector paths move 8 elements per access (16 bytes of bfloat16, 32 of float32, 64 of float64); the
// host picks them when every row/array start is 16-byte aligned and the length a multiple of 8.
#include "common.cuh"

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf2f(bf16_t b) { return __uint_as_float((unsigned int)b << 16); }

// Round to the nearest bfloat16, ties to even; NaN keeps sign and payload and gets the quiet bit.
__device__ __forceinline__ bf16_t f2bf(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

// Round a double once to the nearest bfloat16: truncate to float toward zero, set the lowest bit when
// that was inexact (round-to-odd keeps the sticky information), then round to nearest even. NaN becomes
// the quiet NaN of its sign.
__device__ __forceinline__ bf16_t d2bf_slow(double d) {
    if (d != d) return (bf16_t)((((unsigned long long)__double_as_longlong(d)) >> 48) & 0x8000u) | 0x7fc0u;
    float r = __double2float_rz(d);
    if ((double)r != d) r = __uint_as_float(__float_as_uint(r) | 1u);
    return f2bf(r);
}

// d2bf_slow's result with integer operations where the result is a normal bfloat16 or rounds up to
// infinity (|d| in [2^-126, 2^128), exponent fields 897..1150): the double's top word keeps sign,
// exponent and the 7 leading fraction bits above bit 13; the bits below, with the low word as a sticky
// bit, round to nearest even (one rounding of d, which is what the round-to-odd float does); the
// exponent is rebiased by 1023 - 127 = 896. The conversion instructions of d2bf_slow run at a quarter of
// the integer rate, and the permutations convert every element.
__device__ __forceinline__ bf16_t d2bf(double d) {
    const unsigned int hi = (unsigned int)__double2hiint(d), lo = (unsigned int)__double2loint(d);
    const unsigned int mag = (hi & 0x7fffffffu) | (lo != 0u ? 1u : 0u);
    if (mag - 0x38100000u >= 0x47f00000u - 0x38100000u) return d2bf_slow(d);
    const unsigned int r = mag + 0xfffu + ((hi >> 13) & 1u) - 0x38000000u;
    return (bf16_t)((r >> 13) | ((hi >> 16) & 0x8000u));
}

// ---- 8-element chunks ----

__device__ __forceinline__ void load8(const bf16_t* p, bf16_t* v) {
    const uint4 r = __ldcs(reinterpret_cast<const uint4*>(p));
    const unsigned int w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; i++) v[2 * i] = (bf16_t)(w[i] & 0xffffu), v[2 * i + 1] = (bf16_t)(w[i] >> 16);
}
__device__ __forceinline__ void store8(bf16_t* p, const bf16_t* v, bool keep) {
    uint4 r;
    r.x = (unsigned int)v[0] | (unsigned int)v[1] << 16;
    r.y = (unsigned int)v[2] | (unsigned int)v[3] << 16;
    r.z = (unsigned int)v[4] | (unsigned int)v[5] << 16;
    r.w = (unsigned int)v[6] | (unsigned int)v[7] << 16;
    if (keep)
        *reinterpret_cast<uint4*>(p) = r;
    else
        __stcs(reinterpret_cast<uint4*>(p), r);
}
__device__ __forceinline__ void load8(const float* p, float* v) {
    const float4 a = __ldcs(reinterpret_cast<const float4*>(p)), b = __ldcs(reinterpret_cast<const float4*>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void store8(float* p, const float* v, bool keep) {
    const float4 a = make_float4(v[0], v[1], v[2], v[3]), b = make_float4(v[4], v[5], v[6], v[7]);
    if (keep) {
        reinterpret_cast<float4*>(p)[0] = a, reinterpret_cast<float4*>(p)[1] = b;
    } else {
        __stcs(reinterpret_cast<float4*>(p), a), __stcs(reinterpret_cast<float4*>(p) + 1, b);
    }
}
__device__ __forceinline__ void load8(const double* p, double* v) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const double2 a = __ldcs(reinterpret_cast<const double2*>(p) + i);
        v[2 * i] = a.x, v[2 * i + 1] = a.y;
    }
}
__device__ __forceinline__ void store8(double* p, const double* v, bool keep) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const double2 a = make_double2(v[2 * i], v[2 * i + 1]);
        if (keep)
            reinterpret_cast<double2*>(p)[i] = a;
        else
            __stcs(reinterpret_cast<double2*>(p) + i, a);
    }
}

// N elements from p (N = 8: one vector access per type above; N = 1: a scalar).
template <int N, typename E> __device__ __forceinline__ void loadN(const E* p, E* v) {
    if (N == 8)
        load8(p, v);
    else
        v[0] = p[0];
}
template <int N, typename E> __device__ __forceinline__ void storeN(E* p, const E* v, bool keep) {
    if (N == 8)
        store8(p, v, keep);
    else
        p[0] = v[0];
}

// Exact widening of a stored element to double.
__device__ __forceinline__ double wide(bf16_t b) { return (double)bf2f(b); }
__device__ __forceinline__ double wide(float f) { return (double)f; }
__device__ __forceinline__ double wide(double d) { return d; }

// One rounding of a double into an output element.
__device__ __forceinline__ void narrow(double d, bf16_t* o) { *o = d2bf(d); }
__device__ __forceinline__ void narrow(double d, float* o) { *o = (float)d; }

// ---- casts ----

// The conversions of ops.CPU().Cast, bit for bit (except NaN payloads of float64 <-> float32).
__device__ __forceinline__ void conv(float s, bf16_t* d) { *d = f2bf(s); }
__device__ __forceinline__ void conv(double s, bf16_t* d) { *d = d2bf(s); }
__device__ __forceinline__ void conv(bf16_t s, float* d) { *d = bf2f(s); }
__device__ __forceinline__ void conv(bf16_t s, double* d) { *d = (double)bf2f(s); }
__device__ __forceinline__ void conv(float s, double* d) { *d = (double)s; }
__device__ __forceinline__ void conv(double s, float* d) { *d = __double2float_rn(s); }

__device__ __forceinline__ long long gtid() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long gstride() { return (long long)gridDim.x * blockDim.x; }

template <typename S, typename D> __device__ void cast_body(const S* src, D* dst, long long n, int vec) {
    const long long nv = vec ? n / 8 : 0;
    for (long long v = gtid(); v < nv; v += gstride()) {
        S s[8];
        D d[8];
        load8(src + v * 8, s);
#pragma unroll
        for (int k = 0; k < 8; k++) conv(s[k], &d[k]);
        store8(dst + v * 8, d, false);
    }
    for (long long i = nv * 8 + gtid(); i < n; i += gstride()) conv(src[i], &dst[i]);
}

#define DEFINE_CAST(NAME, S, D)                                                                                \
    extern "C" __global__ void cast_##NAME(const S* src, D* dst, long long n, int vec) {                      \
        cast_body<S, D>(src, dst, n, vec);                                                                     \
    }

DEFINE_CAST(f32_bf16, float, bf16_t)
DEFINE_CAST(f64_bf16, double, bf16_t)
DEFINE_CAST(bf16_f32, bf16_t, float)
DEFINE_CAST(bf16_f64, bf16_t, double)
DEFINE_CAST(f32_f64, float, double)
DEFINE_CAST(f64_f32, double, float)

// ---- Add (tensor engine) ----

// out = bf16(a + b) (plus, when incr, out = bf16(out + that)): the float32 sum of two bfloat16 values is
// exact or far from a bfloat16 tie, so one rounding (ops.HostEngine's rule).
extern "C" __global__ void ew_add_bf16(const bf16_t* a, const bf16_t* b, bf16_t* out, long long n, int incr, int vec) {
    const long long nv = vec ? n / 8 : 0;
    for (long long v = gtid(); v < nv; v += gstride()) {
        bf16_t x[8], y[8], r[8];
        load8(a + v * 8, x);
        load8(b + v * 8, y);
        if (incr) load8(out + v * 8, r);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const bf16_t s = f2bf(bf2f(x[k]) + bf2f(y[k]));
            r[k] = incr ? f2bf(bf2f(r[k]) + bf2f(s)) : s;
        }
        store8(out + v * 8, r, true);
    }
    for (long long i = nv * 8 + gtid(); i < n; i += gstride()) {
        const bf16_t s = f2bf(bf2f(a[i]) + bf2f(b[i]));
        out[i] = incr ? f2bf(bf2f(out[i]) + bf2f(s)) : s;
    }
}

// ---- bfloat16 pairs: the fast paths of the permutations ----
//
// The vector paths of the bfloat16 permutations keep each 16-byte chunk as the uint4 it was loaded as
// (8 elements, element 2i in the low half of word i) and convert elements with integer and float32
// operations instead of the float <-> double conversion instructions (a quarter of the integer rate on
// sm_80/sm_90, and they were the bound of these kernels). Every fast path gives the bits of the slow one.

// 2^896 = 2^(1023-127): the exponent bias difference of double and bfloat16.
__device__ __forceinline__ double two896() { return __hiloint2double(0x77f00000, 0); }

// Element h (0: low half, 1: high half) of word w as a float (exact).
__device__ __forceinline__ float pair_f(unsigned int w, int h) { return __uint_as_float(h ? (w & 0xffff0000u) : (w << 16)); }

// The top word of a double holding element h of w's sign, exponent field (zero-extended to 11 bits) and
// fraction: the arithmetic shift copies the sign into the three new exponent bits, the mask clears them.
__device__ __forceinline__ unsigned int pair_hi(unsigned int w, int h) {
    const int f = (int)(h ? (w & 0xffff0000u) : (w << 16));
    return (unsigned int)(f >> 3) & 0x8fffe000u;
}

// Element h of w times 2^-896, exactly, for every finite element: a bfloat16 exponent field e in 1..254
// becomes the double exponent field e (value scaled by 2^(127-1023)); a zero or subnormal becomes the
// double zero or subnormal of the same fraction (m * 2^-133 * 2^-896 = (m << 45) * 2^-1074). Not for
// infinities and NaNs (chunk_nonfinite).
__device__ __forceinline__ double pair_d896(unsigned int w, int h) { return __hiloint2double((int)pair_hi(w, h), 0); }

// Element h of w as a double, exactly, when it is normal (exponent field 1..254, rebiased by adding 896);
// not for zeros, subnormals, infinities and NaNs (chunk_special).
__device__ __forceinline__ double pair_d(unsigned int w, int h) { return __hiloint2double((int)(pair_hi(w, h) + (896u << 20)), 0); }

// Whether some 16-bit half of each word's exponent bits (mask 0x7f80) is zero, for the four words:
// (y - 0x00010001) sets bit 15 or 31 exactly when the half below it is zero (halves of y < 0x8000).
__device__ __forceinline__ unsigned int halfzero(unsigned int y) { return (y - 0x00010001u) & 0x80008000u; }

// True when some element of the chunk is an infinity or a NaN (exponent field all ones).
__device__ __forceinline__ bool chunk_nonfinite(uint4 c) {
    const unsigned int m = 0x7f807f80u;
    return (halfzero(~c.x & m) | halfzero(~c.y & m) | halfzero(~c.z & m) | halfzero(~c.w & m)) != 0u;
}

// True when some element of the chunk is zero, subnormal, infinite or NaN (exponent field 0 or all ones).
__device__ __forceinline__ bool chunk_special(uint4 c) {
    const unsigned int m = 0x7f807f80u;
    return (halfzero(c.x & m) | halfzero(c.y & m) | halfzero(c.z & m) | halfzero(c.w & m) | chunk_nonfinite(c)) != 0u;
}

__device__ __forceinline__ unsigned int word_at(uint4 c, int i) { return i == 0 ? c.x : i == 1 ? c.y : i == 2 ? c.z : c.w; }

// bf16(s * v) for a float32 s and a bfloat16 v (given as its float), rounded once, as
// d2bf((double)s * v): the exact product has at most 32 significant bits, so its float32 truncation p
// and the remainder fmaf(s, v, -p) (exact when |p| >= 2^-118) give its round-to-odd float32 (p with
// the remainder's stickiness in the last bit), which rounds to the bfloat16 nearest the product. ok
// turns false for zero, tiny and non-finite products, whose result this is not (the caller redoes the
// chunk on the double path, so that the common case has no branch per element).
__device__ __forceinline__ unsigned int mul_bf_fast(float s, float v, bool& ok) {
    const float p = __fmul_rz(s, v);
    const float e = __fmaf_rn(s, v, -p);
    const unsigned int u = __float_as_uint(p) | (__float_as_uint(e) != 0u ? 1u : 0u);
    ok &= (u & 0x7fffffffu) - 0x04800000u < 0x7f800000u - 0x04800000u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// The chunk c with every element multiplied by s and rounded once to bfloat16.
__device__ __forceinline__ uint4 scale_chunk(float s, uint4 c) {
    unsigned int r[4];
    bool ok = true;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const unsigned int w = word_at(c, i);
        r[i] = (mul_bf_fast(s, pair_f(w, 0), ok) & 0xffffu) | mul_bf_fast(s, pair_f(w, 1), ok) << 16;
    }
    if (!ok) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const unsigned int w = word_at(c, i);
            r[i] = (unsigned int)d2bf_slow((double)s * (double)pair_f(w, 0)) |
                   (unsigned int)d2bf_slow((double)s * (double)pair_f(w, 1)) << 16;
        }
    }
    uint4 o;
    o.x = r[0], o.y = r[1], o.z = r[2], o.w = r[3];
    return o;
}

__device__ __forceinline__ uint4 zero_chunk() {
    uint4 z;
    z.x = 0u, z.y = 0u, z.z = 0u, z.w = 0u;
    return z;
}

// ---- permutations around the plan (one warp per token; see permute.cu) ----

// Chunks in flight per lane: every lane issues UD (dispatch) or UC (combine, weight gradients: double
// accumulators take registers) independent 16-byte loads before it stores or reduces, as permute.cu's
// UNROLL does for float32.
#define UD 4
#define UC 2

// out[rowOf[t*K+j]] = bf16(scale * x[t]) with scale = w[t*K+j] (float32) or 1: bfloat16 rows without
// weights are copied bit for bit; otherwise the exact double product is rounded once; dropped slots get
// zero rows. KEEP: plain stores (the rows stay in L2 for the expert GEMM), else streaming stores.
template <typename In, int N>
__device__ void dispatch_bf16_body(const In* __restrict__ x, const float* __restrict__ w, const int* __restrict__ rowOf,
                                   const int* __restrict__ kept, bf16_t* __restrict__ out, int numTokens, int K, int H,
                                   bool keep) {
    const int lane = lane_id();
    const int nc = H / N;
    const int lim = *kept;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const In* src = x + t * H;
        for (int c0 = lane; c0 < nc; c0 += 32 * UD) {
            In v[UD][N];
#pragma unroll
            for (int u = 0; u < UD; u++) {
                const int c = c0 + 32 * u;
                if (c < nc) loadN<N>(src + (long long)c * N, v[u]);
            }
            for (int j = 0; j < K; j++) {
                const long long s = t * K + j;
                const int r = rowOf[s];
                const bool drop = r >= lim;
                bf16_t* dst = out + (long long)r * H;
                const double sc = w ? (double)w[s] : 1.0;
#pragma unroll
                for (int u = 0; u < UD; u++) {
                    const int c = c0 + 32 * u;
                    if (c >= nc) continue;
                    bf16_t o[N];
                    if (drop) {
#pragma unroll
                        for (int k = 0; k < N; k++) o[k] = 0;
                    } else if (sizeof(In) == 2 && !w) {
#pragma unroll
                        for (int k = 0; k < N; k++) o[k] = (bf16_t)v[u][k];
                    } else {
#pragma unroll
                        for (int k = 0; k < N; k++) o[k] = d2bf(sc * wide(v[u][k]));
                    }
                    storeN<N>(dst + (long long)c * N, o, keep);
                }
            }
        }
    }
}

// out[t] = sum_{j=0..K-1} scale(t,j) * ye[rowOf[t*K+j]] (ye bfloat16, scale = w (float32) or 1), summed
// in double in increasing j over the kept slots, rounded once to Out (bfloat16 or float32).
template <typename Out, int N>
__device__ void combine_bf16_body(const bf16_t* __restrict__ ye, const float* __restrict__ w, const int* __restrict__ rowOf,
                                  const int* __restrict__ kept, Out* __restrict__ out, int numTokens, int K, int H) {
    const int lane = lane_id();
    const int nc = H / N;
    const int lim = *kept;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        for (int c0 = lane; c0 < nc; c0 += 32 * UC) {
            double acc[UC][N];
#pragma unroll
            for (int u = 0; u < UC; u++)
#pragma unroll
                for (int k = 0; k < N; k++) acc[u][k] = 0.0;
            for (int j = 0; j < K; j++) {
                const long long s = t * K + j;
                const int r = rowOf[s];
                if (r >= lim) continue;  // a dropped slot (the same for every lane of the warp)
                const double sc = w ? (double)w[s] : 1.0;
                const bf16_t* src = ye + (long long)r * H;
                bf16_t v[UC][N];
#pragma unroll
                for (int u = 0; u < UC; u++) {
                    const int c = c0 + 32 * u;
                    if (c < nc) loadN<N>(src + (long long)c * N, v[u]);
                }
#pragma unroll
                for (int u = 0; u < UC; u++)
#pragma unroll
                    for (int k = 0; k < N; k++) acc[u][k] = fma(sc, wide(v[u][k]), acc[u][k]); // exact product
            }
#pragma unroll
            for (int u = 0; u < UC; u++) {
                const int c = c0 + 32 * u;
                if (c >= nc) continue;
                Out o[N];
#pragma unroll
                for (int k = 0; k < N; k++) narrow(acc[u][k], &o[k]);
                storeN<N>(out + t * H + (long long)c * N, o, false);
            }
        }
    }
}

// dw[t,j] = <dy[t], ye[rowOf[t*K+j]]> (ye bfloat16, dy bfloat16 or float32, dw float32): per-lane
// double sums over the lane's chunks in increasing order, then a butterfly warp sum, rounded once; 0 for
// a dropped slot.
template <typename Dy, int N>
__device__ void combine_gradw_bf16_body(const Dy* __restrict__ dy, const bf16_t* __restrict__ ye, const int* __restrict__ rowOf,
                                        const int* __restrict__ kept, float* __restrict__ dw, int numTokens, int K, int H) {
    const int lane = lane_id();
    const int nc = H / N;
    const int lim = *kept;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const Dy* g = dy + t * H;
        for (int j = 0; j < K; j++) {
            const int r = rowOf[t * K + j];
            if (r >= lim) {  // the same for every lane: no shuffle is skipped by part of the warp
                if (lane == 0) dw[t * K + j] = 0.0f;
                continue;
            }
            const bf16_t* src = ye + (long long)r * H;
            double acc = 0.0;
            for (int c0 = lane; c0 < nc; c0 += 32 * UC) {
                Dy gv[UC][N];
                bf16_t yv[UC][N];
#pragma unroll
                for (int u = 0; u < UC; u++) {
                    const int c = c0 + 32 * u;
                    if (c < nc) {
                        loadN<N>(g + (long long)c * N, gv[u]);
                        loadN<N>(src + (long long)c * N, yv[u]);
                    }
                }
#pragma unroll
                for (int u = 0; u < UC; u++) {
                    if (c0 + 32 * u >= nc) continue;
#pragma unroll
                    for (int k = 0; k < N; k++) acc = fma(wide(gv[u][k]), wide(yv[u][k]), acc);
                }
            }
            acc = warp_sum(acc);
            if (lane == 0) dw[t * K + j] = (float)acc;
        }
    }
}

// ---- vector paths with bfloat16 rows (uint4 chunks; see "bfloat16 pairs") ----

// Chunks in flight per lane: a bfloat16 chunk holds half the bytes of permute.cu's float32 one, so the
// copies keep twice as many (DV, GV) and combine loads several slots' rows before it accumulates.
#define DV 8
#define GV 4

// dispatch_bf16_body's result for bfloat16 x with H % 8 == 0 and 16-byte aligned rows.
__device__ void dispatch_bf16_v8_body(const bf16_t* __restrict__ x, const float* __restrict__ w, const int* __restrict__ rowOf,
                                      const int* __restrict__ kept, bf16_t* __restrict__ out, int numTokens, int K, int H,
                                      bool keep) {
    const int lane = lane_id();
    const int nc = H / 8;
    const int lim = *kept;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const uint4* src = reinterpret_cast<const uint4*>(x + t * H);
        for (int c0 = lane; c0 < nc; c0 += 32 * DV) {
            uint4 v[DV];
#pragma unroll
            for (int u = 0; u < DV; u++) {
                const int c = c0 + 32 * u;
                v[u] = c < nc ? __ldcs(src + c) : zero_chunk();
            }
            for (int j = 0; j < K; j++) {
                const long long s = t * K + j;
                const int r = rowOf[s];
                const bool drop = r >= lim;
                uint4* dst = reinterpret_cast<uint4*>(out + (long long)r * H);
                const float sc = w ? w[s] : 1.0f;
#pragma unroll
                for (int u = 0; u < DV; u++) {
                    const int c = c0 + 32 * u;
                    if (c >= nc) continue;
                    const uint4 o = drop ? zero_chunk() : (w ? scale_chunk(sc, v[u]) : v[u]);
                    if (keep)
                        dst[c] = o;
                    else
                        __stcs(dst + c, o);
                }
            }
        }
    }
}

// acc[k] += sc * element k of chunk c (k = 0..7), each an exact product added with one rounding as
// fma(sc, wide(v), acc) does: sc896 = sc * 2^896 times the element scaled by 2^-896 is the same product.
__device__ __forceinline__ void acc_chunk(double* acc, float sc, double sc896, uint4 c) {
    if (!chunk_nonfinite(c)) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const unsigned int w = word_at(c, i);
            acc[2 * i] = fma(sc896, pair_d896(w, 0), acc[2 * i]);
            acc[2 * i + 1] = fma(sc896, pair_d896(w, 1), acc[2 * i + 1]);
        }
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const unsigned int w = word_at(c, i);
            acc[2 * i] = fma((double)sc, (double)pair_f(w, 0), acc[2 * i]);
            acc[2 * i + 1] = fma((double)sc, (double)pair_f(w, 1), acc[2 * i + 1]);
        }
    }
}

// d2bf's integer path for one of the 8 sums of a chunk (bits 0..15 of the result); ok turns false when
// the sum is outside its range.
__device__ __forceinline__ unsigned int d2bf_fast(double d, bool& ok) {
    const unsigned int hi = (unsigned int)__double2hiint(d), lo = (unsigned int)__double2loint(d);
    const unsigned int mag = (hi & 0x7fffffffu) | (lo != 0u ? 1u : 0u);
    ok &= mag - 0x38100000u < 0x47f00000u - 0x38100000u;
    const unsigned int r = mag + 0xfffu + ((hi >> 13) & 1u) - 0x38000000u;
    return ((r >> 13) & 0x7fffu) | ((hi >> 16) & 0x8000u);
}

// Stores the 8 sums of a chunk rounded to bfloat16 (d2bf, one branch per chunk).
__device__ __forceinline__ void store_acc(bf16_t* p, const double* acc) {
    unsigned int r[4];
    bool ok = true;
#pragma unroll
    for (int i = 0; i < 4; i++) r[i] = d2bf_fast(acc[2 * i], ok) | d2bf_fast(acc[2 * i + 1], ok) << 16;
    if (!ok) {
#pragma unroll
        for (int i = 0; i < 4; i++) r[i] = (unsigned int)d2bf_slow(acc[2 * i]) | (unsigned int)d2bf_slow(acc[2 * i + 1]) << 16;
    }
    uint4 o;
    o.x = r[0], o.y = r[1], o.z = r[2], o.w = r[3];
    __stcs(reinterpret_cast<uint4*>(p), o);
}
__device__ __forceinline__ void store_acc(float* p, const double* acc) {
    float o[8];
#pragma unroll
    for (int k = 0; k < 8; k++) o[k] = (float)acc[k];
    store8(p, o, false);
}

// Loads chunks c0 + 32u (u < NV) of the rows of slots j0..j0+NJ-1 of token t into v; use[jj] tells
// whether slot j0+jj exists and is kept (the same for every lane of the warp), sc its weight.
template <int NV, int NJ>
__device__ __forceinline__ void load_slots(const bf16_t* __restrict__ ye, const float* __restrict__ w, const int* __restrict__ rowOf,
                                           int lim, long long t, int K, int H, int j0, int c0, uint4 (&v)[NJ][NV],
                                           bool (&use)[NJ], float (&sc)[NJ]) {
    const int nc = H / 8;
#pragma unroll
    for (int jj = 0; jj < NJ; jj++) {
        const int j = j0 + jj;
        const long long s = t * K + (j < K ? j : 0);
        const int r = rowOf[s];
        use[jj] = j < K && r < lim;
        sc[jj] = w ? w[s] : 1.0f;
        const uint4* src = reinterpret_cast<const uint4*>(ye + (long long)r * H);
#pragma unroll
        for (int u = 0; u < NV; u++) {
            const int c = c0 + 32 * u;
            v[jj][u] = use[jj] && c < nc ? __ldcs(src + c) : zero_chunk();
        }
    }
}

// combine_bf16_body's result with H % 8 == 0 and 16-byte aligned rows. The rows of NJ slots are loaded
// before any is added; the kept ones are added in increasing j, so the sums are formed in the same
// order. ONE (K <= NJ): every slot is in flight at once and each chunk is summed and stored in turn, so
// only one chunk's accumulators are live and NV chunks per row fit; otherwise the accumulators of the
// NV chunks persist across the groups of NJ slots.
template <typename Out, int NV, int NJ, bool ONE>
__device__ void combine_bf16_v8_rows(const bf16_t* __restrict__ ye, const float* __restrict__ w, const int* __restrict__ rowOf,
                                     const int* __restrict__ kept, Out* __restrict__ out, int numTokens, int K, int H) {
    const int lane = lane_id();
    const int nc = H / 8;
    const int lim = *kept;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        for (int c0 = lane; c0 < nc; c0 += 32 * NV) {
            uint4 v[NJ][NV];
            bool use[NJ];
            float sc[NJ];
            if (ONE) {
                load_slots<NV, NJ>(ye, w, rowOf, lim, t, K, H, 0, c0, v, use, sc);
#pragma unroll
                for (int u = 0; u < NV; u++) {
                    double acc[8];
#pragma unroll
                    for (int k = 0; k < 8; k++) acc[k] = 0.0;
#pragma unroll
                    for (int jj = 0; jj < NJ; jj++)
                        if (use[jj]) acc_chunk(acc, sc[jj], (double)sc[jj] * two896(), v[jj][u]);
                    const int c = c0 + 32 * u;
                    if (c < nc) store_acc(out + t * H + (long long)c * 8, acc);
                }
            } else {
                double acc[NV][8];
#pragma unroll
                for (int u = 0; u < NV; u++)
#pragma unroll
                    for (int k = 0; k < 8; k++) acc[u][k] = 0.0;
                for (int j0 = 0; j0 < K; j0 += NJ) {
                    load_slots<NV, NJ>(ye, w, rowOf, lim, t, K, H, j0, c0, v, use, sc);
#pragma unroll
                    for (int jj = 0; jj < NJ; jj++) {
                        if (!use[jj]) continue;
                        const double sc896 = (double)sc[jj] * two896();
#pragma unroll
                        for (int u = 0; u < NV; u++) acc_chunk(acc[u], sc[jj], sc896, v[jj][u]);
                    }
                }
#pragma unroll
                for (int u = 0; u < NV; u++) {
                    const int c = c0 + 32 * u;
                    if (c < nc) store_acc(out + t * H + (long long)c * 8, acc[u]);
                }
            }
        }
    }
}

template <typename Out>
__device__ void combine_bf16_v8_body(const bf16_t* __restrict__ ye, const float* __restrict__ w, const int* __restrict__ rowOf,
                                     const int* __restrict__ kept, Out* __restrict__ out, int numTokens, int K, int H) {
    if (K <= 2)
        combine_bf16_v8_rows<Out, 4, 2, true>(ye, w, rowOf, kept, out, numTokens, K, H);
    else
        combine_bf16_v8_rows<Out, 1, 4, false>(ye, w, rowOf, kept, out, numTokens, K, H);
}

// acc += <chunk g, chunk y> in increasing element order, as the scalar fma(wide(g), wide(y), acc).
__device__ __forceinline__ double dot_chunk(double acc, uint4 g, uint4 y) {
    if (!chunk_special(g) && !chunk_special(y)) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const unsigned int a = word_at(g, i), b = word_at(y, i);
            acc = fma(pair_d(a, 0), pair_d(b, 0), acc);
            acc = fma(pair_d(a, 1), pair_d(b, 1), acc);
        }
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const unsigned int a = word_at(g, i), b = word_at(y, i);
            acc = fma((double)pair_f(a, 0), (double)pair_f(b, 0), acc);
            acc = fma((double)pair_f(a, 1), (double)pair_f(b, 1), acc);
        }
    }
    return acc;
}

// combine_gradw_bf16_body's result for bfloat16 dy with H % 8 == 0 and 16-byte aligned rows.
__device__ void combine_gradw_bf16_v8_body(const bf16_t* __restrict__ dy, const bf16_t* __restrict__ ye, const int* __restrict__ rowOf,
                                           const int* __restrict__ kept, float* __restrict__ dw, int numTokens, int K, int H) {
    const int lane = lane_id();
    const int nc = H / 8;
    const int lim = *kept;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const uint4* g = reinterpret_cast<const uint4*>(dy + t * H);
        for (int j = 0; j < K; j++) {
            const int r = rowOf[t * K + j];
            if (r >= lim) {  // the same for every lane: no shuffle is skipped by part of the warp
                if (lane == 0) dw[t * K + j] = 0.0f;
                continue;
            }
            const uint4* src = reinterpret_cast<const uint4*>(ye + (long long)r * H);
            double acc = 0.0;
            for (int c0 = lane; c0 < nc; c0 += 32 * GV) {
                uint4 gv[GV], yv[GV];
#pragma unroll
                for (int u = 0; u < GV; u++) {
                    const int c = c0 + 32 * u;
                    // dy is read once per slot: its later reads hit L1/L2 (ye is streamed).
                    gv[u] = c < nc ? g[c] : zero_chunk();
                    yv[u] = c < nc ? __ldcs(src + c) : zero_chunk();
                }
#pragma unroll
                for (int u = 0; u < GV; u++) {
                    if (c0 + 32 * u < nc) acc = dot_chunk(acc, gv[u], yv[u]);
                }
            }
            acc = warp_sum(acc);
            if (lane == 0) dw[t * K + j] = (float)acc;
        }
    }
}

#define DEFINE_PERMUTE_BF16(SUF, N, In, Out, Dy)                                                                \
    extern "C" __global__ void dispatch_bf16_from_##SUF(const In* x, const float* w, const int* rowOf,          \
                                                         const int* kept, bf16_t* out, int numTokens, int K,    \
                                                         int H, int keep) {                                     \
        dispatch_bf16_body<In, N>(x, w, rowOf, kept, out, numTokens, K, H, keep != 0);                         \
    }                                                                                                          \
    extern "C" __global__ void combine_bf16_to_##SUF(const bf16_t* ye, const float* w, const int* rowOf,        \
                                                      const int* kept, Out* out, int numTokens, int K, int H) { \
        combine_bf16_body<Out, N>(ye, w, rowOf, kept, out, numTokens, K, H);                                   \
    }                                                                                                          \
    extern "C" __global__ void combine_gradw_bf16_dy_##SUF(const Dy* dy, const bf16_t* ye, const int* rowOf,    \
                                                            const int* kept, float* dw, int numTokens, int K,   \
                                                            int H) {                                            \
        combine_gradw_bf16_body<Dy, N>(dy, ye, rowOf, kept, dw, numTokens, K, H);                              \
    }

// SUF names the float-side dtype of each kernel: the dispatch source, the combine result, the
// gradient dy.
DEFINE_PERMUTE_BF16(bf16, 1, bf16_t, bf16_t, bf16_t)
DEFINE_PERMUTE_BF16(f32, 1, float, float, float)

// The vector kernels run in blocks of 256 threads (warpGridFor); at most 64 registers let 4 blocks share
// an SM, so that T=4096 tokens (512 blocks) fit in one wave on 132 SMs rather than leaving a tail.
#define PERMUTE_BOUNDS __launch_bounds__(256, 4)

extern "C" __global__ void PERMUTE_BOUNDS dispatch_bf16_from_bf16_v8(const bf16_t* x, const float* w, const int* rowOf, const int* kept,
                                                      bf16_t* out, int numTokens, int K, int H, int keep) {
    dispatch_bf16_v8_body(x, w, rowOf, kept, out, numTokens, K, H, keep != 0);
}
extern "C" __global__ void PERMUTE_BOUNDS combine_bf16_to_bf16_v8(const bf16_t* ye, const float* w, const int* rowOf, const int* kept,
                                                   bf16_t* out, int numTokens, int K, int H) {
    combine_bf16_v8_body<bf16_t>(ye, w, rowOf, kept, out, numTokens, K, H);
}
extern "C" __global__ void PERMUTE_BOUNDS combine_gradw_bf16_dy_bf16_v8(const bf16_t* dy, const bf16_t* ye, const int* rowOf, const int* kept,
                                                         float* dw, int numTokens, int K, int H) {
    combine_gradw_bf16_v8_body(dy, ye, rowOf, kept, dw, numTokens, K, H);
}
extern "C" __global__ void PERMUTE_BOUNDS dispatch_bf16_from_f32_v8(const float* x, const float* w, const int* rowOf, const int* kept,
                                                     bf16_t* out, int numTokens, int K, int H, int keep) {
    dispatch_bf16_body<float, 8>(x, w, rowOf, kept, out, numTokens, K, H, keep != 0);
}
extern "C" __global__ void PERMUTE_BOUNDS combine_bf16_to_f32_v8(const bf16_t* ye, const float* w, const int* rowOf, const int* kept,
                                                  float* out, int numTokens, int K, int H) {
    combine_bf16_v8_body<float>(ye, w, rowOf, kept, out, numTokens, K, H);
}
extern "C" __global__ void PERMUTE_BOUNDS combine_gradw_bf16_dy_f32_v8(const float* dy, const bf16_t* ye, const int* rowOf, const int* kept,
                                                        float* dw, int numTokens, int K, int H) {
    combine_gradw_bf16_body<float, 8>(dy, ye, rowOf, kept, dw, numTokens, K, H);
}

// ---- SwiGLU (float32 arithmetic, one rounding per output) ----

__device__ __forceinline__ float sigmoid_f(float a) { return 1.0f / (1.0f + expf(-a)); }

extern "C" __global__ void swiglu_bf16(const bf16_t* gate, const bf16_t* up, bf16_t* out, long long n, int vec) {
    const long long nv = vec ? n / 8 : 0;
    for (long long v = gtid(); v < nv; v += gstride()) {
        bf16_t g[8], u[8], r[8];
        load8(gate + v * 8, g);
        load8(up + v * 8, u);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const float a = bf2f(g[k]);
            r[k] = f2bf(a * sigmoid_f(a) * bf2f(u[k]));
        }
        store8(out + v * 8, r, true);
    }
    for (long long i = nv * 8 + gtid(); i < n; i += gstride()) {
        const float a = bf2f(gate[i]);
        out[i] = f2bf(a * sigmoid_f(a) * bf2f(up[i]));
    }
}

__device__ __forceinline__ void swiglu_grad_one(bf16_t g, bf16_t u, bf16_t d, bf16_t* dg, bf16_t* du) {
    const float a = bf2f(g), s = sigmoid_f(a), dy = bf2f(d);
    *dg = f2bf(dy * bf2f(u) * (s * (1.0f + a * (1.0f - s))));
    *du = f2bf(dy * (a * s));
}

extern "C" __global__ void swiglu_grad_bf16(const bf16_t* gate, const bf16_t* up, const bf16_t* dout, bf16_t* dgate,
                                            bf16_t* dup, long long n, int vec) {
    const long long nv = vec ? n / 8 : 0;
    for (long long v = gtid(); v < nv; v += gstride()) {
        bf16_t g[8], u[8], d[8], dg[8], du[8];
        load8(gate + v * 8, g);
        load8(up + v * 8, u);
        load8(dout + v * 8, d);
#pragma unroll
        for (int k = 0; k < 8; k++) swiglu_grad_one(g[k], u[k], d[k], &dg[k], &du[k]);
        store8(dgate + v * 8, dg, true);
        store8(dup + v * 8, du, true);
    }
    for (long long i = nv * 8 + gtid(); i < n; i += gstride()) swiglu_grad_one(gate[i], up[i], dout[i], &dgate[i], &dup[i]);
}
