// Elementwise kernels behind the tensor engine (package devengine's Kernels) and the fused SwiGLU.
//
// Arithmetic rounds like Go: one IEEE rounding per operation (__fadd_rn & co. keep nvcc from fusing a
// multiply and an add), so add/sub/mul/div, their incr forms, square, cube, inv, sqrt and invsqrt are
// bitwise equal to tensor's StdEng. Transcendental functions use CUDA's accurate (non fast-math) forms.
//
// Vector paths: a kernel given vec != 0 moves 16 bytes per load/store (float4 / double2); the host
// sets it only when every vector operand and the output are 16-byte aligned. Elements past the last
// whole vector are done by a scalar tail. out may alias a vector input (same element, read first).
#include "common.cuh"

// Operand modes (devengine.Operand): a vector, a scalar in device memory, an immediate scalar.
#define MODE_VEC 0
#define MODE_DEV 1
#define MODE_IMM 2

// Unary function codes: the order of devengine.UnaryOp.
#define U_NEG 0
#define U_INV 1
#define U_SQUARE 2
#define U_CUBE 3
#define U_EXP 4
#define U_TANH 5
#define U_LOG 6
#define U_LOG2 7
#define U_LOG10 8
#define U_SQRT 9
#define U_CBRT 10
#define U_INVSQRT 11
#define U_ABS 12
#define U_SIGN 13
#define U_SIGNBIT 14
#define U_SIGMOID 15
#define U_SOFTPLUS 16
#define U_LOG1P 17
#define U_EXPM1 18
#define U_SIN 19
#define U_COS 20
#define U_CEIL 21
#define U_FLOOR 22

// Comparison codes: the order of devengine.CmpOp.
#define C_GT 0
#define C_GTE 1
#define C_LT 2
#define C_LTE 3
#define C_EQ 4
#define C_NE 5

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double sqrt_rn(double a) { return __dsqrt_rn(a); }

// W consecutive elements through one 16-byte access (W = 16 / sizeof(T)), or one element (W = 1).
template <typename T, int W> struct VecIO;
template <typename T> struct VecIO<T, 1> {
    static __device__ __forceinline__ void load(const T* p, T* x) { x[0] = p[0]; }
    static __device__ __forceinline__ void store(T* p, const T* x) { p[0] = x[0]; }
};
template <> struct VecIO<float, 4> {
    static __device__ __forceinline__ void load(const float* p, float* x) {
        const float4 v = *reinterpret_cast<const float4*>(p);
        x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
    }
    static __device__ __forceinline__ void store(float* p, const float* x) {
        *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
    }
};
template <> struct VecIO<double, 2> {
    static __device__ __forceinline__ void load(const double* p, double* x) {
        const double2 v = *reinterpret_cast<const double2*>(p);
        x[0] = v.x, x[1] = v.y;
    }
    static __device__ __forceinline__ void store(double* p, const double* x) {
        *reinterpret_cast<double2*>(p) = make_double2(x[0], x[1]);
    }
};

template <typename T> struct VecW;
template <> struct VecW<float> { enum { W = 4 }; };
template <> struct VecW<double> { enum { W = 2 }; };

__device__ __forceinline__ long long gtid() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long gstride() { return (long long)gridDim.x * blockDim.x; }

// The broadcast value of a scalar operand (read once per thread), or 0 for a vector.
template <typename T> __device__ __forceinline__ T scalar_of(const T* p, int mode, double imm) {
    return mode == MODE_DEV ? p[0] : mode == MODE_IMM ? (T)imm : T(0);
}

template <typename T, int W>
__device__ __forceinline__ void load_operand(const T* p, int mode, T s, long long i, T* x) {
    if (mode == MODE_VEC) {
        VecIO<T, W>::load(p + i, x);
    } else {
#pragma unroll
        for (int k = 0; k < W; k++) x[k] = s;
    }
}

template <int OP, typename T> __device__ __forceinline__ T binop(T a, T b) {
    switch (OP) {
    case 0: return add_rn(a, b);
    case 1: return sub_rn(a, b);
    case 2: return mul_rn(a, b);
    default: return div_rn(a, b);
    }
}

template <int OP, typename T, int W>
__device__ void binary_body(const T* a, int am, T as, const T* b, int bm, T bs, T* out, long long n, int incr) {
    const long long nv = n / W;
    for (long long v = gtid(); v < nv; v += gstride()) {
        const long long i = v * W;
        T x[W], y[W], r[W];
        load_operand<T, W>(a, am, as, i, x);
        load_operand<T, W>(b, bm, bs, i, y);
        if (incr) VecIO<T, W>::load(out + i, r);
#pragma unroll
        for (int k = 0; k < W; k++) {
            const T z = binop<OP>(x[k], y[k]);
            r[k] = incr ? add_rn(r[k], z) : z;
        }
        VecIO<T, W>::store(out + i, r);
    }
    if (W > 1) {
        for (long long i = nv * W + gtid(); i < n; i += gstride()) {
            T x, y;
            load_operand<T, 1>(a, am, as, i, &x);
            load_operand<T, 1>(b, bm, bs, i, &y);
            const T z = binop<OP>(x, y);
            out[i] = incr ? add_rn(out[i], z) : z;
        }
    }
}

template <int OP, typename T>
__device__ void binary_entry(const T* a, int am, double aimm, const T* b, int bm, double bimm, T* out, long long n,
                             int incr, int vec) {
    const T as = scalar_of(a, am, aimm), bs = scalar_of(b, bm, bimm);
    if (vec)
        binary_body<OP, T, VecW<T>::W>(a, am, as, b, bm, bs, out, n, incr);
    else
        binary_body<OP, T, 1>(a, am, as, b, bm, bs, out, n, incr);
}

#define DEFINE_BINARY(NAME, OP, SUF, T)                                                                        \
    extern "C" __global__ void ew_##NAME##_##SUF(const T* a, int am, double aimm, const T* b, int bm,         \
                                                  double bimm, T* out, long long n, int incr, int vec) {       \
        binary_entry<OP, T>(a, am, aimm, b, bm, bimm, out, n, incr, vec);                                     \
    }

DEFINE_BINARY(add, 0, f32, float)
DEFINE_BINARY(sub, 1, f32, float)
DEFINE_BINARY(mul, 2, f32, float)
DEFINE_BINARY(div, 3, f32, float)
DEFINE_BINARY(add, 0, f64, double)
DEFINE_BINARY(sub, 1, f64, double)
DEFINE_BINARY(mul, 2, f64, double)
DEFINE_BINARY(div, 3, f64, double)

// ---- comparisons ----

template <typename T> __device__ __forceinline__ bool cmp(int op, T x, T y) {
    switch (op) {
    case C_GT: return x > y;
    case C_GTE: return x >= y;
    case C_LT: return x < y;
    case C_LTE: return x <= y;
    case C_EQ: return x == y;
    default: return x != y;
    }
}

// out[i] = a[i] op b[i]: a bool byte when boolOut, else 1 or 0 in T.
template <typename T>
__device__ void compare_body(int op, const T* a, int am, double aimm, const T* b, int bm, double bimm, void* out,
                             long long n, int boolOut) {
    const T as = scalar_of(a, am, aimm), bs = scalar_of(b, bm, bimm);
    for (long long i = gtid(); i < n; i += gstride()) {
        const T x = am == MODE_VEC ? a[i] : as;
        const T y = bm == MODE_VEC ? b[i] : bs;
        const bool r = cmp(op, x, y);
        if (boolOut)
            reinterpret_cast<unsigned char*>(out)[i] = r ? 1 : 0;
        else
            reinterpret_cast<T*>(out)[i] = r ? T(1) : T(0);
    }
}

extern "C" __global__ void ew_cmp_f32(int op, const float* a, int am, double aimm, const float* b, int bm, double bimm,
                                      void* out, long long n, int boolOut) {
    compare_body<float>(op, a, am, aimm, b, bm, bimm, out, n, boolOut);
}
extern "C" __global__ void ew_cmp_f64(int op, const double* a, int am, double aimm, const double* b, int bm,
                                      double bimm, void* out, long long n, int boolOut) {
    compare_body<double>(op, a, am, aimm, b, bm, bimm, out, n, boolOut);
}

// ---- unary functions ----

__device__ __noinline__ float unary_f(int op, float x) {
    switch (op) {
    case U_NEG: return -x;
    case U_INV: return div_rn(1.0f, x);
    case U_SQUARE: return mul_rn(x, x);
    case U_CUBE: return mul_rn(mul_rn(x, x), x);
    case U_EXP: return expf(x);
    case U_TANH: return tanhf(x);
    case U_LOG: return logf(x);
    case U_LOG2: return log2f(x);
    case U_LOG10: return log10f(x);
    case U_SQRT: return sqrt_rn(x);
    case U_CBRT: return cbrtf(x);
    case U_INVSQRT: return div_rn(1.0f, sqrt_rn(x));
    case U_ABS: return fabsf(x);
    case U_SIGN: return x < 0.0f ? -1.0f : (x > 0.0f ? 1.0f : x);
    case U_SIGNBIT: return signbit(x) ? -1.0f : 1.0f;
    case U_SIGMOID: // Gorgonia's _sigmoidf32: in float64, rounded once
        if (x < -88.0f) return 0.0f;
        if (x > 15.0f) return 1.0f;
        return (float)__ddiv_rn(1.0, __dadd_rn(1.0, exp(-(double)x)));
    case U_SOFTPLUS: // Gorgonia's _softplusf32
        if (x < -103.0f) return 0.0f;
        if (x > 14.0f) return x;
        return (float)log1p(exp((double)x));
    case U_LOG1P: return log1pf(x);
    case U_EXPM1: return expm1f(x);
    case U_SIN: return sinf(x);
    case U_COS: return cosf(x);
    case U_CEIL: return ceilf(x);
    case U_FLOOR: return floorf(x);
    }
    return __int_as_float(0x7fc00000);
}

__device__ __noinline__ double unary_f(int op, double x) {
    switch (op) {
    case U_NEG: return -x;
    case U_INV: return div_rn(1.0, x);
    case U_SQUARE: return mul_rn(x, x);
    case U_CUBE: return mul_rn(mul_rn(x, x), x);
    case U_EXP: return exp(x);
    case U_TANH: return tanh(x);
    case U_LOG: return log(x);
    case U_LOG2: return log2(x);
    case U_LOG10: return log10(x);
    case U_SQRT: return sqrt_rn(x);
    case U_CBRT: return cbrt(x);
    case U_INVSQRT: return div_rn(1.0, sqrt_rn(x));
    case U_ABS: return fabs(x);
    case U_SIGN: return x < 0.0 ? -1.0 : (x > 0.0 ? 1.0 : x);
    case U_SIGNBIT: return signbit(x) ? -1.0 : 1.0;
    case U_SIGMOID: // Gorgonia's _sigmoidf64
        if (x < -709.0) return 0.0;
        if (x > 19.0) return 1.0;
        return __ddiv_rn(1.0, __dadd_rn(1.0, exp(-x)));
    case U_SOFTPLUS: // Gorgonia's _softplusf64
        if (x < -708.0) return 0.0;
        if (x > 16.0) return x;
        return log1p(exp(x));
    case U_LOG1P: return log1p(x);
    case U_EXPM1: return expm1(x);
    case U_SIN: return sin(x);
    case U_COS: return cos(x);
    case U_CEIL: return ceil(x);
    case U_FLOOR: return floor(x);
    }
    return __longlong_as_double(0x7ff8000000000000ULL);
}

template <typename T, int W> __device__ void unary_body(int op, const T* a, T* out, long long n, int incr) {
    const long long nv = n / W;
    for (long long v = gtid(); v < nv; v += gstride()) {
        const long long i = v * W;
        T x[W], r[W];
        VecIO<T, W>::load(a + i, x);
        if (incr) VecIO<T, W>::load(out + i, r);
#pragma unroll
        for (int k = 0; k < W; k++) {
            const T z = unary_f(op, x[k]);
            r[k] = incr ? add_rn(r[k], z) : z;
        }
        VecIO<T, W>::store(out + i, r);
    }
    if (W > 1) {
        for (long long i = nv * W + gtid(); i < n; i += gstride()) {
            const T z = unary_f(op, a[i]);
            out[i] = incr ? add_rn(out[i], z) : z;
        }
    }
}

extern "C" __global__ void ew_unary_f32(int op, const float* a, float* out, long long n, int incr, int vec) {
    if (vec)
        unary_body<float, 4>(op, a, out, n, incr);
    else
        unary_body<float, 1>(op, a, out, n, incr);
}
extern "C" __global__ void ew_unary_f64(int op, const double* a, double* out, long long n, int incr, int vec) {
    if (vec)
        unary_body<double, 2>(op, a, out, n, incr);
    else
        unary_body<double, 1>(op, a, out, n, incr);
}

// ---- reductions ----

// Block reduction in a fixed tree order over blockDim.x (a power of two, at most 1024) values.
__device__ double block_sum(double v) {
    __shared__ double buf[1024];
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int o = blockDim.x >> 1; o > 0; o >>= 1) {
        if (threadIdx.x < o) buf[threadIdx.x] += buf[threadIdx.x + o];
        __syncthreads();
    }
    const double r = buf[0];
    __syncthreads();
    return r;
}

// out[o] = sum over m of a[o,m] (inner == 1): one block per row (grid-striding over rows), threads
// striding over m, then a fixed tree; accumulated in double.
template <typename T> __device__ void sum_rows_body(const T* a, T* out, long long outer, long long mid) {
    for (long long o = blockIdx.x; o < outer; o += gridDim.x) {
        double acc = 0.0;
        for (long long m = threadIdx.x; m < mid; m += blockDim.x) acc += (double)a[o * mid + m];
        acc = block_sum(acc);
        if (threadIdx.x == 0) out[o] = (T)acc;
    }
}

// out[o,i] = sum over m of a[o,m,i] (inner > 1): one thread per output, m in increasing order.
template <typename T>
__device__ void sum_inner_body(const T* a, T* out, long long outer, long long mid, long long inner) {
    const long long n = outer * inner;
    for (long long j = gtid(); j < n; j += gstride()) {
        const long long o = j / inner, i = j - o * inner;
        const T* p = a + o * mid * inner + i;
        double acc = 0.0;
        for (long long m = 0; m < mid; m++) acc += (double)p[m * inner];
        out[j] = (T)acc;
    }
}

extern "C" __global__ void __launch_bounds__(1024) sum_rows_f32(const float* a, float* out, long long outer, long long mid) {
    sum_rows_body<float>(a, out, outer, mid);
}
extern "C" __global__ void __launch_bounds__(1024) sum_rows_f64(const double* a, double* out, long long outer, long long mid) {
    sum_rows_body<double>(a, out, outer, mid);
}
extern "C" __global__ void sum_inner_f32(const float* a, float* out, long long outer, long long mid, long long inner) {
    sum_inner_body<float>(a, out, outer, mid, inner);
}
extern "C" __global__ void sum_inner_f64(const double* a, double* out, long long outer, long long mid,
                                         long long inner) {
    sum_inner_body<double>(a, out, outer, mid, inner);
}

// ---- data movement ----

// dst[j] = src[sum_k idx_k(j) * s_k] for the row-major multi-index idx(j) of j in shape (d0..d7; unused
// trailing dims are 1 with stride 0).
template <typename E>
__device__ void permute_body(E* dst, const E* src, long long n, int nd, long long d0, long long d1, long long d2,
                             long long d3, long long d4, long long d5, long long d6, long long d7, long long s0,
                             long long s1, long long s2, long long s3, long long s4, long long s5, long long s6,
                             long long s7) {
    const long long d[8] = {d0, d1, d2, d3, d4, d5, d6, d7};
    const long long s[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
    for (long long j = gtid(); j < n; j += gstride()) {
        long long rem = j, off = 0;
        for (int k = nd - 1; k >= 0; k--) {
            const long long q = rem / d[k];
            off += (rem - q * d[k]) * s[k];
            rem = q;
        }
        dst[j] = src[off];
    }
}

#define DEFINE_PERMUTE(SUF, E)                                                                                 \
    extern "C" __global__ void permute_##SUF(E* dst, const E* src, long long n, int nd, long long d0,          \
                                             long long d1, long long d2, long long d3, long long d4,           \
                                             long long d5, long long d6, long long d7, long long s0,           \
                                             long long s1, long long s2, long long s3, long long s4,           \
                                             long long s5, long long s6, long long s7) {                       \
        permute_body<E>(dst, src, n, nd, d0, d1, d2, d3, d4, d5, d6, d7, s0, s1, s2, s3, s4, s5, s6, s7);     \
    }

DEFINE_PERMUTE(u8, unsigned char)
DEFINE_PERMUTE(u16, unsigned short)
DEFINE_PERMUTE(u32, unsigned int)
DEFINE_PERMUTE(u64, unsigned long long)

// dst[r*dp + c] = src[r*sp + c] for r < rows, c < cols (elements).
template <typename E>
__device__ void copy2d_body(E* dst, long long dp, const E* src, long long sp, long long rows, long long cols) {
    const long long n = rows * cols;
    for (long long j = gtid(); j < n; j += gstride()) {
        const long long r = j / cols, c = j - r * cols;
        dst[r * dp + c] = src[r * sp + c];
    }
}

#define DEFINE_COPY2D(SUF, E)                                                                                  \
    extern "C" __global__ void copy2d_##SUF(E* dst, long long dp, const E* src, long long sp, long long rows,  \
                                            long long cols) {                                                  \
        copy2d_body<E>(dst, dp, src, sp, rows, cols);                                                          \
    }

DEFINE_COPY2D(u8, unsigned char)
DEFINE_COPY2D(u16, unsigned short)
DEFINE_COPY2D(u32, unsigned int)
DEFINE_COPY2D(u64, unsigned long long)

// ---- SwiGLU ----

// silu(a) = a * sigmoid(a); its derivative is sigmoid(a) * (1 + a * (1 - sigmoid(a))).
__device__ __forceinline__ float sigmoid_t(float a) { return 1.0f / (1.0f + expf(-a)); }
__device__ __forceinline__ double sigmoid_t(double a) { return 1.0 / (1.0 + exp(-a)); }

template <typename T, int W> __device__ void swiglu_body(const T* gate, const T* up, T* out, long long n) {
    const long long nv = n / W;
    for (long long v = gtid(); v < nv; v += gstride()) {
        const long long i = v * W;
        T g[W], u[W], r[W];
        VecIO<T, W>::load(gate + i, g);
        VecIO<T, W>::load(up + i, u);
#pragma unroll
        for (int k = 0; k < W; k++) r[k] = g[k] * sigmoid_t(g[k]) * u[k];
        VecIO<T, W>::store(out + i, r);
    }
    if (W > 1)
        for (long long i = nv * W + gtid(); i < n; i += gstride()) out[i] = gate[i] * sigmoid_t(gate[i]) * up[i];
}

template <typename T, int W>
__device__ void swiglu_grad_body(const T* gate, const T* up, const T* dout, T* dgate, T* dup, long long n) {
    const long long nv = n / W;
    for (long long v = gtid(); v < nv + (W > 1 ? n - nv * W : 0); v += gstride()) {
        // Whole vectors first, then (W > 1) the tail elements one by one.
        const bool tail = v >= nv;
        const long long i = tail ? nv * W + (v - nv) : v * W;
        T g[W], u[W], d[W], dg[W], du[W];
        if (tail) {
            g[0] = gate[i], u[0] = up[i], d[0] = dout[i];
        } else {
            VecIO<T, W>::load(gate + i, g);
            VecIO<T, W>::load(up + i, u);
            VecIO<T, W>::load(dout + i, d);
        }
        const int m = tail ? 1 : W;
        for (int k = 0; k < m; k++) {
            const T s = sigmoid_t(g[k]);
            const T silu = g[k] * s;
            const T dsilu = s * (T(1) + g[k] * (T(1) - s));
            dg[k] = d[k] * u[k] * dsilu;
            du[k] = d[k] * silu;
        }
        if (tail) {
            dgate[i] = dg[0], dup[i] = du[0];
        } else {
            VecIO<T, W>::store(dgate + i, dg);
            VecIO<T, W>::store(dup + i, du);
        }
    }
}

extern "C" __global__ void swiglu_f32(const float* gate, const float* up, float* out, long long n, int vec) {
    if (vec)
        swiglu_body<float, 4>(gate, up, out, n);
    else
        swiglu_body<float, 1>(gate, up, out, n);
}
extern "C" __global__ void swiglu_f64(const double* gate, const double* up, double* out, long long n, int vec) {
    if (vec)
        swiglu_body<double, 2>(gate, up, out, n);
    else
        swiglu_body<double, 1>(gate, up, out, n);
}
extern "C" __global__ void swiglu_grad_f32(const float* gate, const float* up, const float* dout, float* dgate,
                                           float* dup, long long n, int vec) {
    if (vec)
        swiglu_grad_body<float, 4>(gate, up, dout, dgate, dup, n);
    else
        swiglu_grad_body<float, 1>(gate, up, dout, dgate, dup, n);
}
extern "C" __global__ void swiglu_grad_f64(const double* gate, const double* up, const double* dout, double* dgate,
                                           double* dup, long long n, int vec) {
    if (vec)
        swiglu_grad_body<double, 2>(gate, up, dout, dgate, dup, n);
    else
        swiglu_grad_body<double, 1>(gate, up, dout, dgate, dup, n);
}
