// Routing-policy kernels: capacity plans, clearing the rows of dropped slots, aux-loss-free bias
// balancing and the routing diagnostics. Integer work is exact and every float sum runs in a fixed
// order, so results are deterministic (ops' CPU backend is the reference; see ops/backend_routing.go).
//
// Capacity plan (after a dropless plan of the same indices into scratch, cudaops.Device.CapacityPlan):
//   cap_offsets:  one block; kept counts min(count, C) -> offsets (exclusive scan), and each expert's
//                 first dropped row dbase[e] = offsets[E] + exclusive scan of the dropped counts.
//   cap_scatter:  one block per expert (grid-striding). The dropless segment lists the expert's slots in
//                 slot order. position: the first C keep their place. probs: the C-th largest weight v
//                 is found by an MSB-first radix select over order-preserving integer keys (8-bit
//                 digits: 4 passes for float, 8 for double), with `need` = how many slots of weight
//                 exactly v are kept; then one pass in slot order keeps key > v, and key == v while
//                 fewer than `need` equal keys came before (ties to the lower slot). Kept slots take rows
//                 offsets[e] + (kept before), dropped ones dbase[e] + (dropped before).
#include "common.cuh"

__device__ __forceinline__ unsigned int lanemask_lt_() { return (1u << lane_id()) - 1u; }

// Order-preserving keys: larger value -> larger key; -0 and +0 share one key.
__device__ __forceinline__ unsigned long long order_key(float x) {
    unsigned int u = __float_as_uint(x == 0.0f ? 0.0f : x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ unsigned long long order_key(double x) {
    unsigned long long u = (unsigned long long)__double_as_longlong(x == 0.0 ? 0.0 : x);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// One block (up to 1024 threads): counts[e] = dlCounts[e]; offsets = exclusive scan of min(count, C),
// offsets[E] = kept slots; dbase[e] = offsets[E] + exclusive scan of (count - min(count, C)).
extern "C" __global__ void cap_offsets(const int* __restrict__ dlCounts, int E, int C, int* __restrict__ counts,
                                       int* __restrict__ offsets, int* __restrict__ dbase) {
    __shared__ int partK[1024], partD[1024];
    const int tid = threadIdx.x, nt = blockDim.x;
    const int per = (E + nt - 1) / nt;
    const int lo = tid * per < E ? tid * per : E;
    const int hi = lo + per < E ? lo + per : E;
    int lk = 0, ld = 0;
    for (int e = lo; e < hi; e++) {
        const int c = dlCounts[e];
        const int k = c < C ? c : C;
        lk += k;
        ld += c - k;
    }
    partK[tid] = lk;
    partD[tid] = ld;
    __syncthreads();
    for (int o = 1; o < nt; o <<= 1) {
        const int vk = tid >= o ? partK[tid - o] : 0;
        const int vd = tid >= o ? partD[tid - o] : 0;
        __syncthreads();
        partK[tid] += vk;
        partD[tid] += vd;
        __syncthreads();
    }
    const int totalK = partK[nt - 1];
    int runK = partK[tid] - lk, runD = partD[tid] - ld;
    for (int e = lo; e < hi; e++) {
        const int c = dlCounts[e];
        const int k = c < C ? c : C;
        counts[e] = c;
        offsets[e] = runK;
        dbase[e] = totalK + runD;
        runK += k;
        runD += c - k;
    }
    if (tid == 0) offsets[E] = totalK;
}

// Exclusive prefix of a per-thread flag over the block (warps in order), and the block's total.
__device__ __forceinline__ int block_prefix(bool p, int& total) {
    __shared__ int wsum[32];
    const int lane = lane_id(), warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const unsigned int b = __ballot_sync(FULL_MASK, p);
    if (lane == 0) wsum[warp] = __popc(b);
    __syncthreads();
    int before = 0;
    total = 0;
    for (int i = 0; i < nw; i++) {
        if (i < warp) before += wsum[i];
        total += wsum[i];
    }
    __syncthreads();
    return before + __popc(b & lanemask_lt_());
}

// One block per expert (blockDim a multiple of 32, at most 1024). dlOffsets/dlSlotOf: the dropless plan.
template <typename T>
__device__ void cap_scatter_body(const int* __restrict__ dlOffsets, const int* __restrict__ dlSlotOf,
                                 const T* __restrict__ w, int E, int C, int probs, const int* __restrict__ offsets,
                                 const int* __restrict__ dbase, int* __restrict__ rowOf, int* __restrict__ slotOf,
                                 unsigned int* fault) {
    __shared__ int hist[256];
    __shared__ int sel[2];
    const int tid = threadIdx.x, nt = blockDim.x;
    const int bits = 8 * (int)sizeof(T);
    for (int e = blockIdx.x; e < E; e += gridDim.x) {
        const int o = dlOffsets[e];
        const int n = dlOffsets[e + 1] - o;
        const int base = offsets[e], db = dbase[e];
        if (n <= C || !probs) {
            bool nan = false;
            for (int i = tid; i < n; i += nt) {
                const int s = dlSlotOf[o + i];
                if (probs) nan |= w[s] != w[s];  // every weight is checked, as on the CPU
                const int r = i < C ? base + i : db + (i - C);
                rowOf[s] = r;
                slotOf[r] = s;
            }
            if (nan && fault) atomicOr(fault, FAULT_WEIGHT_NAN);
            continue;
        }
        // Radix select of the C-th largest key.
        bool nan = false;
        unsigned long long prefix = 0, mask = 0;
        int remaining = C;
        for (int shift = bits - 8; shift >= 0; shift -= 8) {
            for (int i = tid; i < 256; i += nt) hist[i] = 0;
            __syncthreads();
            for (int i = tid; i < n; i += nt) {
                const T x = w[dlSlotOf[o + i]];
                nan |= x != x;
                const unsigned long long k = order_key(x);
                if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255], 1);
            }
            __syncthreads();
            if (tid == 0) {
                int cum = 0, d = 255;
                for (; d > 0; d--) {
                    if (cum + hist[d] >= remaining) break;
                    cum += hist[d];
                }
                sel[0] = d;
                sel[1] = remaining - cum;
            }
            __syncthreads();
            prefix |= (unsigned long long)sel[0] << shift;
            mask |= 255ull << shift;
            remaining = sel[1];
            __syncthreads();
        }
        if (__syncthreads_or(nan) && tid == 0 && fault) atomicOr(fault, FAULT_WEIGHT_NAN);
        const int need = remaining;  // slots of weight exactly v that keep their place, lowest slots first
        int runEq = 0, runKept = 0;
        for (int c0 = 0; c0 < n; c0 += nt) {
            const int i = c0 + tid;
            const bool valid = i < n;
            const int s = valid ? dlSlotOf[o + i] : 0;
            const unsigned long long k = valid ? order_key(w[s]) : 0;
            int totEq, totKept;
            const bool eq = valid && k == prefix;
            const int eqBefore = runEq + block_prefix(eq, totEq);
            const bool kept = valid && (k > prefix || (eq && eqBefore < need));
            const int keptBefore = runKept + block_prefix(kept, totKept);
            if (valid) {
                const int r = kept ? base + keptBefore : db + (i - keptBefore);
                rowOf[s] = r;
                slotOf[r] = s;
            }
            runEq += totEq;
            runKept += totKept;
        }
    }
}

// rows (as 32-bit words, rowWords per row) [N rows]: zero every row from *kept on.
extern "C" __global__ void clear_rows(unsigned int* rows, const int* kept, long long N, long long rowWords) {
    const long long from = (long long)(*kept) * rowWords, to = N * rowWords;
    for (long long i = from + (long long)blockIdx.x * blockDim.x + threadIdx.x; i < to; i += (long long)gridDim.x * blockDim.x)
        rows[i] = 0u;
}

// bias[e] = (T)((double)bias[e] + rate * sign(slots/E - counts[e])).
template <typename T>
__device__ void balance_bias_body(T* bias, const int* counts, int E, long long slots, double rate) {
    const double mean = (double)slots / (double)E;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < E; e += gridDim.x * blockDim.x) {
        const double d = mean - (double)counts[e];
        const double step = d > 0 ? rate : (d < 0 ? -rate : 0.0);
        bias[e] = (T)((double)bias[e] + step);
    }
}

// stats[0..E) = routed counts, [E..2E) = kept counts, [2E] = dropped slots (of N).
extern "C" __global__ void route_stats_counts(const int* counts, const int* offsets, int E, long long N, double* stats) {
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < E; e += gridDim.x * blockDim.x) {
        stats[e] = (double)counts[e];
        stats[E + e] = (double)(offsets[e + 1] - offsets[e]);
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) stats[2 * E] = (double)(N - offsets[E]);
}

__device__ __forceinline__ double logistic(double x) { return 1.0 / (1.0 + exp(-x)); }

// ent[t] = entropy (nats, double) of token t's router distribution: softmax(row), or the sigmoid scores
// over their sum (0 when they sum to 0); one warp per token. Invalid rows raise FAULT_NONFINITE (softmax:
// NaN, +inf or all -inf; sigmoid: NaN) and get 0.
template <typename T>
__device__ void row_entropy_body(const T* __restrict__ logits, int numTokens, int E, int sigmoid, double* ent,
                                 unsigned int* fault) {
    const int lane = lane_id();
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        bool bad = false;
        double h = 0.0;
        if (sigmoid) {
            double sum = 0.0;
            for (int e = lane; e < E; e += 32) {
                const T v = l[e];
                bad |= v != v;
                sum += v != v ? 0.0 : logistic((double)v);
            }
            sum = warp_sum(sum);
            if (sum > 0)
                for (int e = lane; e < E; e += 32) {
                    const T v = l[e];
                    const double q = v != v ? 0.0 : logistic((double)v) / sum;
                    if (q > 0) h -= q * log(q);
                }
        } else {
            double m = -1.0 / 0.0;
            for (int e = lane; e < E; e += 32) {
                const double v = (double)l[e];
                bad |= v != v || v == 1.0 / 0.0;
                if (v == v) m = v > m ? v : m;
            }
            m = warp_max(m);
            bad |= m == -1.0 / 0.0;
            if (!__any_sync(FULL_MASK, bad)) {
                double z = 0.0;
                for (int e = lane; e < E; e += 32) z += exp((double)l[e] - m);
                z = warp_sum(z);
                for (int e = lane; e < E; e += 32) {
                    const double q = exp((double)l[e] - m) / z;
                    if (q > 0) h -= q * log(q);
                }
            }
        }
        const bool anyBad = __any_sync(FULL_MASK, bad);
        h = warp_sum(h);
        if (lane == 0) {
            ent[t] = anyBad ? 0.0 : h;
            if (anyBad && fault) atomicOr(fault, FAULT_NONFINITE);
        }
    }
}

#define DEFINE_POLICIES(SUF, T)                                                                                 \
    extern "C" __global__ void cap_scatter_##SUF(const int* dlOffsets, const int* dlSlotOf, const T* w, int E,   \
                                                 int C, int probs, const int* offsets, const int* dbase,       \
                                                 int* rowOf, int* slotOf, unsigned int* fault) {               \
        cap_scatter_body<T>(dlOffsets, dlSlotOf, w, E, C, probs, offsets, dbase, rowOf, slotOf, fault);          \
    }                                                                                                           \
    extern "C" __global__ void balance_bias_##SUF(T* bias, const int* counts, int E, long long slots, double rate) { \
        balance_bias_body<T>(bias, counts, E, slots, rate);                                                      \
    }                                                                                                           \
    extern "C" __global__ void row_entropy_##SUF(const T* logits, int numTokens, int E, int sigmoid, double* ent, \
                                                 unsigned int* fault) {                                        \
        row_entropy_body<T>(logits, numTokens, E, sigmoid, ent, fault);                                          \
    }

DEFINE_POLICIES(f32, float)
DEFINE_POLICIES(f64, double)
