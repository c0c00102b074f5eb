// Task losses of a training step and their gradients (ops.TrainingBackend):
//   MSELoss             = mean_i (pred_i - target_i)^2
//   SoftmaxCrossEntropy = mean over counted rows n of logsumexp(logits[n,:]) - logits[n, labels[n]]
// Labels are int32 in [0, C), or -1 for a row that is ignored; any other label sets FAULT_LABEL_RANGE
// (ops.ErrLabel at the next synchronisation) and the row is treated as ignored.
// Sums accumulate in double in a fixed order: per-block partial sums over a grid whose size depends
// only on the sizes (not on the GPU), then one block sums the partials in a fixed tree.
#include "common.cuh"

#define BLOCK 256

// Block reduction in a fixed tree order; blockDim.x must be BLOCK.
__device__ double block_sum_d(double v) {
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

__device__ long long block_count(long long v) {
    __shared__ long long cbuf[BLOCK];
    cbuf[threadIdx.x] = v;
    __syncthreads();
    for (int o = BLOCK / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) cbuf[threadIdx.x] += cbuf[threadIdx.x + o];
        __syncthreads();
    }
    const long long r = cbuf[0];
    __syncthreads();
    return r;
}

// The upstream gradient of a scalar loss: g[0] when given on the device, else 1.
template <typename T> __device__ __forceinline__ double upstream(const T* g) { return g ? (double)g[0] : 1.0; }

// partial[blockIdx.x] = sum over this block's grid-stride share of (p - t)^2.
template <typename T>
__device__ void mse_partial_body(const T* __restrict__ p, const T* __restrict__ t, long long n, double* partial) {
    double acc = 0.0;
    for (long long i = (long long)blockIdx.x * BLOCK + threadIdx.x; i < n; i += (long long)gridDim.x * BLOCK) {
        const double d = (double)p[i] - (double)t[i];
        acc += d * d;
    }
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// loss[0] = sum of the partials / n (0 when n == 0); one block.
template <typename T> __device__ void mean_finish_body(const double* partial, int parts, long long n, T* loss) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < parts; i += BLOCK) acc += partial[i];
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) loss[0] = n > 0 ? (T)(acc / (double)n) : T(0);
}

// dpred = scale * g * 2 (pred - target) / n.
template <typename T>
__device__ void mse_grad_body(const T* __restrict__ p, const T* __restrict__ t, long long n, double scale,
                              const T* __restrict__ g, T* __restrict__ dp) {
    const double c = scale * upstream(g) * 2.0 / (double)n;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dp[i] = (T)(c * ((double)p[i] - (double)t[i]));
}

// The row's max and sum of exp(x - max) (warp-wide; every lane gets them).
template <typename T> __device__ __forceinline__ void row_max_sum(const T* __restrict__ l, int C, T& m, double& s) {
    m = neg_inf<T>();
    for (int c = lane_id(); c < C; c += 32) m = l[c] > m ? l[c] : m;
    m = warp_max(m);
    s = 0.0;
    for (int c = lane_id(); c < C; c += 32) s += (double)dev_exp(l[c] - m);
    s = warp_sum(s);
}

// The label of row r: -1 (ignored) for -1 and, with a fault, for labels outside [0, C).
__device__ __forceinline__ int checked_label(const int* labels, long long r, int C, unsigned int* fault) {
    const int y = labels[r];
    if (y == -1) return -1;
    if (y < 0 || y >= C) {
        if (lane_id() == 0) atomicOr(fault, FAULT_LABEL_RANGE);
        return -1;
    }
    return y;
}

// rowLoss[r] = logsumexp(logits[r,:]) - logits[r, label] (0 for ignored rows), rowCount[r] = 1 or 0.
// One warp per row.
template <typename T>
__device__ void ce_rows_body(const T* __restrict__ logits, const int* __restrict__ labels, long long N, int C,
                             double* rowLoss, int* rowCount, unsigned int* fault) {
    for (long long r = global_warp(); r < N; r += num_warps()) {
        const int y = checked_label(labels, r, C, fault);
        if (y < 0) {
            if (lane_id() == 0) rowLoss[r] = 0.0, rowCount[r] = 0;
            continue;
        }
        const T* l = logits + r * C;
        T m;
        double s;
        row_max_sum(l, C, m, s);
        if (lane_id() == 0) {
            rowLoss[r] = (double)m + log(s) - (double)l[y];
            rowCount[r] = 1;
        }
    }
}

// loss[0] = sum rowLoss / sum rowCount (0 when no row counts); one block.
template <typename T> __device__ void ce_finish_body(const double* rowLoss, const int* rowCount, long long N, T* loss) {
    double acc = 0.0;
    long long cnt = 0;
    for (long long r = threadIdx.x; r < N; r += BLOCK) {
        acc += rowLoss[r];
        cnt += rowCount[r];
    }
    acc = block_sum_d(acc);
    cnt = block_count(cnt);
    if (threadIdx.x == 0) loss[0] = cnt > 0 ? (T)(acc / (double)cnt) : T(0);
}

// count[0] = number of labels in [0, C); one block.
extern "C" __global__ void ce_count(const int* labels, long long N, int C, long long* count) {
    long long cnt = 0;
    for (long long r = threadIdx.x; r < N; r += BLOCK) {
        const int y = labels[r];
        cnt += (y >= 0 && y < C) ? 1 : 0;
    }
    cnt = block_count(cnt);
    if (threadIdx.x == 0) count[0] = cnt;
}

// dlogits[r,:] = scale * g * (softmax(logits[r,:]) - onehot(label)) / count, 0 for ignored rows.
template <typename T>
__device__ void ce_grad_body(const T* __restrict__ logits, const int* __restrict__ labels, long long N, int C,
                             double scale, const T* __restrict__ g, const long long* count, T* __restrict__ dl,
                             unsigned int* fault) {
    const long long cnt = count[0];
    const double c = cnt > 0 ? scale * upstream(g) / (double)cnt : 0.0;
    for (long long r = global_warp(); r < N; r += num_warps()) {
        const int y = checked_label(labels, r, C, fault);
        T* d = dl + r * C;
        if (y < 0) {
            for (int k = lane_id(); k < C; k += 32) d[k] = T(0);
            continue;
        }
        const T* l = logits + r * C;
        T m;
        double s;
        row_max_sum(l, C, m, s);
        for (int k = lane_id(); k < C; k += 32) {
            const double p = (double)dev_exp(l[k] - m) / s;
            d[k] = (T)(c * (p - (k == y ? 1.0 : 0.0)));
        }
    }
}

#define DEFINE_TASK_LOSSES(SUF, T)                                                                             \
    extern "C" __global__ void mse_partial_##SUF(const T* p, const T* t, long long n, double* partial) {       \
        mse_partial_body<T>(p, t, n, partial);                                                                 \
    }                                                                                                          \
    extern "C" __global__ void mean_finish_##SUF(const double* partial, int parts, long long n, T* loss) {     \
        mean_finish_body<T>(partial, parts, n, loss);                                                          \
    }                                                                                                          \
    extern "C" __global__ void mse_grad_##SUF(const T* p, const T* t, long long n, double scale, const T* g,   \
                                              T* dp) {                                                         \
        mse_grad_body<T>(p, t, n, scale, g, dp);                                                               \
    }                                                                                                          \
    extern "C" __global__ void ce_rows_##SUF(const T* logits, const int* labels, long long N, int C,          \
                                             double* rowLoss, int* rowCount, unsigned int* fault) {            \
        ce_rows_body<T>(logits, labels, N, C, rowLoss, rowCount, fault);                                       \
    }                                                                                                          \
    extern "C" __global__ void ce_finish_##SUF(const double* rowLoss, const int* rowCount, long long N,        \
                                               T* loss) {                                                      \
        ce_finish_body<T>(rowLoss, rowCount, N, loss);                                                         \
    }                                                                                                          \
    extern "C" __global__ void ce_grad_##SUF(const T* logits, const int* labels, long long N, int C,          \
                                             double scale, const T* g, const long long* count, T* dl,          \
                                             unsigned int* fault) {                                            \
        ce_grad_body<T>(logits, labels, N, C, scale, g, count, dl, fault);                                     \
    }

DEFINE_TASK_LOSSES(f32, float)
DEFINE_TASK_LOSSES(f64, double)
