// Optimizer kernels of a training step (ops.TrainingBackend): the global gradient norm with its clipping
// factor, and one fused update per parameter for Adam(W) and SGD with momentum. Updates are computed in
// double from the stored values and rounded once into the parameter's dtype; hyper-parameters arrive
// as doubles; the clipping factor is read from the device (no host synchronisation).
#include "common.cuh"

#define BLOCK 256

__device__ double block_sum_o(double v) {
    __shared__ double buf[BLOCK];
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int o = BLOCK / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) buf[threadIdx.x] += buf[threadIdx.x + o];
        __syncthreads();
    }
    const double r = buf[0];
    __syncthreads();
    return r;
}

// partial[blockIdx.x] = sum of g^2 over this block's grid-stride share, in double. A NaN or infinite
// gradient sets FAULT_GRAD_NONFINITE.
template <typename T> __device__ void sumsq_partial_body(const T* __restrict__ g, long long n, double* partial,
                                                          unsigned int* fault) {
    double acc = 0.0;
    bool bad = false;
    for (long long i = (long long)blockIdx.x * BLOCK + threadIdx.x; i < n; i += (long long)gridDim.x * BLOCK) {
        const double x = (double)g[i];
        bad |= !isfinite(x);
        acc += x * x;
    }
    if (bad) atomicOr(fault, FAULT_GRAD_NONFINITE);
    acc = block_sum_o(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

extern "C" __global__ void sumsq_partial_f32(const float* g, long long n, double* partial, unsigned int* fault) {
    sumsq_partial_body<float>(g, n, partial, fault);
}
extern "C" __global__ void sumsq_partial_f64(const double* g, long long n, double* partial, unsigned int* fault) {
    sumsq_partial_body<double>(g, n, partial, fault);
}

// scale[0] = min(1, maxNorm / (sqrt(sum of the partials) + 1e-6)) (1 for maxNorm = +inf), or NaN when the sum is not finite;
// one block, partials summed in a fixed tree.
extern "C" __global__ void norm_scale_finish(const double* partial, int parts, double maxNorm, double* scale) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < parts; i += BLOCK) acc += partial[i];
    acc = block_sum_o(acc);
    if (threadIdx.x == 0) {
        if (!isfinite(acc)) {
            scale[0] = __longlong_as_double(0x7ff8000000000000ULL);
        } else {
            const double s = maxNorm / (sqrt(acc) + 1e-6);
            scale[0] = s < 1.0 ? s : 1.0;
        }
    }
}

// One Adam(W) step on n elements (ops.AdamStep): bc1 = 1 - beta1^step, bc2 = 1 - beta2^step.
template <typename T>
__device__ void adam_body(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                          long long n, double lr, double b1, double b2, double eps, double wd, int decoupled,
                          double bc1, double bc2, const double* __restrict__ clip) {
    const double c = clip ? clip[0] : 1.0;
    if (!isfinite(c)) return;  // GradNormScale saw a non-finite gradient: the step is skipped (ErrNaN at the next sync)
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const double pi = (double)p[i];
        double gi = c * (double)g[i];
        if (!decoupled) gi += wd * pi;
        const double mi = b1 * (double)m[i] + (1.0 - b1) * gi;
        const double vi = b2 * (double)v[i] + (1.0 - b2) * gi * gi;
        m[i] = (T)mi;
        v[i] = (T)vi;
        double upd = (mi / bc1) / (sqrt(vi / bc2) + eps);
        if (decoupled) upd += wd * pi;
        p[i] = (T)(pi - lr * upd);
    }
}

// One SGD step on n elements (ops.SGDStep); buf is 0 when momentum is 0.
template <typename T>
__device__ void sgd_body(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, long long n, double lr,
                         double mom, double wd, int nesterov, const double* __restrict__ clip) {
    const double c = clip ? clip[0] : 1.0;
    if (!isfinite(c)) return;  // as in adam_body
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const double pi = (double)p[i];
        double gr = c * (double)g[i] + wd * pi;
        if (buf) {
            const double b = mom * (double)buf[i] + gr;
            buf[i] = (T)b;
            gr = nesterov ? gr + mom * b : b;
        }
        p[i] = (T)(pi - lr * gr);
    }
}

#define DEFINE_OPTIM(SUF, T)                                                                                   \
    extern "C" __global__ void adam_##SUF(T* p, const T* g, T* m, T* v, long long n, double lr, double b1,     \
                                          double b2, double eps, double wd, int decoupled, double bc1,         \
                                          double bc2, const double* clip) {                                    \
        adam_body<T>(p, g, m, v, n, lr, b1, b2, eps, wd, decoupled, bc1, bc2, clip);                           \
    }                                                                                                          \
    extern "C" __global__ void sgd_##SUF(T* p, const T* g, T* buf, long long n, double lr, double mom,         \
                                         double wd, int nesterov, const double* clip) {                        \
        sgd_body<T>(p, g, buf, n, lr, mom, wd, nesterov, clip);                                                \
    }

DEFINE_OPTIM(f32, float)
DEFINE_OPTIM(f64, double)
