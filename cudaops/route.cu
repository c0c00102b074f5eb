// Router kernels: fused scoring + top-k + renormalisation, routing weights for given indices, and the
// routing-weight gradient. One warp per token (grid-striding), any number of experts E (each lane walks
// the experts e = lane, lane+32, ...), so E up to any size that fits in memory.
//
// Selection runs on the logits: softmax is monotonic, so the k largest probabilities are the k largest
// logits. Ties go to the lower expert index: the order is (value descending, index ascending), and round
// j of the k rounds picks the best element strictly after pick j-1 in that order.
//
// A token whose logits hold a NaN or +inf, or are all -inf, has no defined softmax: every kernel here
// reports FAULT_NONFINITE for it (ops.ErrNaN on the host, as the CPU backend's error) and still writes
// in-range indices (NaN ranks as -inf), so nothing reads outside its rows. Single -inf logits are valid.
//
// Weight modes (ops.Scoring and Renormalize):
//   0 (SoftmaxTopK without renormalisation): w_j = exp(l[i_j] - m) / sum_e exp(l[e] - m), m = max_e l[e];
//   1 (renormalised SoftmaxTopK, or TopKSoftmax): w_j = exp(l[i_j] - m) / sum_j' exp(l[i_j'] - m), m = l[i_0],
//     the softmax over the k selected logits (equal to p_j / sum_j' p_j');
//   2 (Sigmoid): w_j = s_j = sigmoid(l[i_j]);   3 (Sigmoid, renormalised): w_j = s_j / (sum_j' s_j' + 1e-20);
// every weight times the route scale (skipped when it is 1, so the default path is unchanged).
//
// Sigmoid (route_sigmoid): DeepSeek-V3's selection, exactly as ops' CPU backend computes it: s =
// (T)(1 / (1 + exp(-(double)l))) (double, rounded to the logits' dtype), c = s + bias[e] in T; groups
// of E/G consecutive experts score the sum of their two largest c (in T); the TG best groups are kept
// (ties to the lower group); dropped groups' c becomes 0 (or -inf when exclude); the k largest c are
// chosen (ties to the lower expert). Weights and gradients use the unbiased s in double. A NaN logit
// raises FAULT_NONFINITE; a NaN or infinite bias raises FAULT_BIAS_NONFINITE (both ops.ErrNaN).
// route_sigmoid has a register path (route_sigmoid_regs, the common shapes) and a shared-memory path
// (route_sigmoid_shared, any shape); both give the same indices and weights, bit for bit.
#include "common.cuh"

__device__ __forceinline__ double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ double sigmoid_slope(double x) { return sigmoid_d(x) * sigmoid_d(-x); }

// Scale applied to a softmax weight computed in T (ops' CPU backend: T(float64(w) * scale)).
template <typename T> __device__ __forceinline__ T scaled(T w, double scale) {
    return scale == 1.0 ? w : (T)((double)w * scale);
}

// Sigmoid weights of the K experts it[0..K-1] of one token; lanes write w[j] for j = lane, lane+32, ...
// The denominator sums s_j in increasing j on every lane (as the CPU does).
template <typename T>
__device__ void sigmoid_weights(const T* __restrict__ l, const int* it, int K, bool renorm, double scale, T* w) {
    const int lane = lane_id();
    double den = 1.0;
    if (renorm) {
        double sum = 0.0;
        for (int j0 = 0; j0 < K; j0 += 32) {
            const double sv = j0 + lane < K ? sigmoid_d((double)l[it[j0 + lane]]) : 0.0;
            const int n = K - j0 < 32 ? K - j0 : 32;
            for (int i = 0; i < n; i++) sum += __shfl_sync(FULL_MASK, sv, i);
        }
        den = sum + 1e-20;
    }
    for (int j = lane; j < K; j += 32) w[j] = (T)(scale * sigmoid_d((double)l[it[j]]) / den);
}

// row_nan: true, on every lane, when the row holds a NaN (reported as FAULT_NONFINITE into fault).
template <typename T> __device__ __forceinline__ bool row_nan(const T* __restrict__ l, int E, unsigned int* fault) {
    bool bad = false;
    for (int e = lane_id(); e < E; e += 32) bad |= l[e] != l[e];
    bad = __any_sync(FULL_MASK, bad);
    if (bad && fault && lane_id() == 0) atomicOr(fault, FAULT_NONFINITE);
    return bad;
}

// Weights of the K experts idx[0..K-1] of one token with logits l[0..E-1]; every lane gets the same
// denominators; lanes write w[j] for j = lane, lane+32, ... Full softmax statistics come from row_stats
// (which also reports invalid rows into fault); the k-softmax reads only the selected logits.
template <typename T>
__device__ void token_weights(const T* __restrict__ l, const int* idx, int E, int K, bool fullSoftmax, double scale,
                              T* w, unsigned int* fault) {
    const int lane = lane_id();
    if (fullSoftmax) {
        T m, s;
        row_stats(l, E, m, s, fault);
        for (int j = lane; j < K; j += 32) w[j] = scaled(dev_exp(sanitize(l[idx[j]]) - m) / s, scale);
    } else {
        T m = neg_inf<T>();
        for (int j = 0; j < K; j++) {
            T v = sanitize(l[idx[j]]);
            m = v > m ? v : m;
        }
        T s = T(0);
        for (int j = 0; j < K; j++) s += dev_exp(sanitize(l[idx[j]]) - m);
        for (int j = lane; j < K; j += 32) w[j] = scaled(dev_exp(sanitize(l[idx[j]]) - m) / s, scale);
    }
}

// idx[t,:] = the K best experts of token t; w[t,:] their weights when w is non-null. The first selection
// round sees every logit, so it also checks the row (a NaN or +inf, or a best value of -inf).
template <typename T>
__device__ void route_body(const T* __restrict__ logits, int* __restrict__ idx, T* __restrict__ w, int numTokens,
                           int E, int K, bool fullSoftmax, double scale, unsigned int* fault) {
    const int lane = lane_id();
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        int* it = idx + t * K;
        T pv = T(0);
        int pi = -1;
        bool bad = false;
        for (int j = 0; j < K; j++) {
            T bv = neg_inf<T>();
            int bi = 0x7fffffff;
            for (int e = lane; e < E; e += 32) {
                const T raw = l[e];
                if (j == 0) bad |= raw != raw || raw == pos_inf<T>();
                const T v = sanitize(raw);
                const bool after = pi < 0 || v < pv || (v == pv && e > pi);
                if (after && (v > bv || (v == bv && e < bi))) {
                    bv = v;
                    bi = e;
                }
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                const T ov = __shfl_xor_sync(FULL_MASK, bv, o);
                const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
                if (ov > bv || (ov == bv && oi < bi)) {
                    bv = ov;
                    bi = oi;
                }
            }
            if (j == 0 && (__any_sync(FULL_MASK, bad) || bv == neg_inf<T>()) && lane == 0 && fault)
                atomicOr(fault, FAULT_NONFINITE);
            if (lane == 0) it[j] = bi;
            pv = bv;
            pi = bi;
        }
        __syncwarp();
        if (w) token_weights(l, it, E, K, fullSoftmax, scale, w + t * K, (unsigned int*)0);
        __syncwarp();
    }
}

// Warp argmax round: the best (value descending, index ascending) of v[0..n) strictly after (pv, pi) in
// that order (pi < 0: no previous pick); every lane gets (bv, bi).
template <typename T>
__device__ __forceinline__ void next_best(const T* v, int n, T pv, int pi, T& bv, int& bi) {
    bv = neg_inf<T>();
    bi = 0x7fffffff;
    for (int e = lane_id(); e < n; e += 32) {
        const T x = v[e];
        const bool after = pi < 0 || x < pv || (x == pv && e > pi);
        if (after && (x > bv || (x == bv && e < bi))) {
            bv = x;
            bi = e;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const T ov = __shfl_xor_sync(FULL_MASK, bv, o);
        const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
        }
    }
}

// DeepSeek-V3 selection (see the header) and, when w is non-null, the sigmoid weights: the general path,
// for any E and G (route_sigmoid_body takes the register path when the shape allows). Dynamic shared
// memory per warp: E + G values of T (selection values, group scores), then G ints (kept flags) per
// warp after all warps' values. G <= 1: no groups.
template <typename T>
__device__ void route_sigmoid_shared(const T* __restrict__ logits, const T* __restrict__ bias, int* __restrict__ idx,
                                   T* __restrict__ w, int numTokens, int E, int K, bool renorm, double scale, int G,
                                   int TG, bool exclude, unsigned int* fault) {
    extern __shared__ unsigned char smem[];
    const int lane = lane_id(), warp = threadIdx.x >> 5, W = blockDim.x >> 5;
    const int Gs = G > 1 ? G : 0;
    T* ch = reinterpret_cast<T*>(smem) + warp * (E + Gs);
    T* gsc = ch + E;
    int* keep = reinterpret_cast<int*>(reinterpret_cast<T*>(smem) + W * (E + Gs)) + warp * Gs;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        int* it = idx + t * K;
        bool bad = false, badBias = false;
        for (int e = lane; e < E; e += 32) {
            const T v = l[e];
            bad |= v != v;
            T c = (T)sigmoid_d((double)v);
            if (bias) {
                const T b = bias[e];
                badBias |= b != b || b == pos_inf<T>() || b == neg_inf<T>();
                c += b;
            }
            ch[e] = sanitize(c);  // NaN ranks as -inf: indices stay in range on a faulty row
        }
        if (__any_sync(FULL_MASK, bad) && lane == 0 && fault) atomicOr(fault, FAULT_NONFINITE);
        if (__any_sync(FULL_MASK, badBias) && lane == 0 && fault) atomicOr(fault, FAULT_BIAS_NONFINITE);
        __syncwarp();
        if (G > 1) {
            const int gs = E / G;
            for (int g = lane; g < G; g += 32) {
                T t1 = neg_inf<T>(), t2 = neg_inf<T>();
                for (int i = 0; i < gs; i++) {
                    const T v = ch[g * gs + i];
                    if (v > t1) {
                        t2 = t1;
                        t1 = v;
                    } else if (v > t2) {
                        t2 = v;
                    }
                }
                gsc[g] = t1 + t2;
                keep[g] = 0;
            }
            __syncwarp();
            T pv = T(0);
            int pi = -1;
            for (int r = 0; r < TG; r++) {
                T bv;
                int bi;
                next_best(gsc, G, pv, pi, bv, bi);
                if (lane == 0 && bi < G) keep[bi] = 1;
                pv = bv;
                pi = bi;
            }
            __syncwarp();
            const T fill = exclude ? neg_inf<T>() : T(0);
            for (int e = lane; e < E; e += 32)
                if (!keep[e / gs]) ch[e] = fill;
            __syncwarp();
        }
        T pv = T(0);
        int pi = -1;
        for (int j = 0; j < K; j++) {
            T bv;
            int bi;
            next_best(ch, E, pv, pi, bv, bi);
            if (bi >= E) bi = 0;  // only reachable on a faulty row (NaN everywhere)
            if (lane == 0) it[j] = bi;
            pv = bv;
            pi = bi;
        }
        __syncwarp();
        if (w) sigmoid_weights(l, it, K, renorm, scale, w + t * K);
        __syncwarp();
    }
}

// Order keys: an unsigned integer per non-NaN value that increases with the value (-0 counts as +0, as
// comparisons do), so that a warp finds the best value with integer reductions (redux.sync, sm_80).
// Key 0 belongs to no value (its bit pattern is a NaN): it marks "no candidate".
__device__ __forceinline__ unsigned int order_key(float v) {
    const unsigned int b = __float_as_uint(v == 0.0f ? 0.0f : v);
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}
__device__ __forceinline__ unsigned long long order_key(double v) {
    const unsigned long long b = (unsigned long long)__double_as_longlong(v == 0.0 ? 0.0 : v);
    return (b & 0x8000000000000000ULL) ? ~b : b | 0x8000000000000000ULL;
}
template <typename T> struct order_key_t;
template <> struct order_key_t<float> { typedef unsigned int type; };
template <> struct order_key_t<double> { typedef unsigned long long type; };

// warp_best: the largest key over the warp and the lowest index among the lanes holding it (every lane
// gets both): the order (value descending, index ascending) of next_best. All lanes without a candidate
// (k = 0, i = 0x7fffffff) give (0, 0x7fffffff), as next_best's (-inf, 0x7fffffff).
__device__ __forceinline__ void warp_best(unsigned int k, int i, unsigned int& bk, int& bi) {
    bk = __reduce_max_sync(FULL_MASK, k);
    bi = (int)__reduce_min_sync(FULL_MASK, k == bk ? (unsigned int)i : 0xffffffffu);
}
__device__ __forceinline__ void warp_best(unsigned long long k, int i, unsigned long long& bk, int& bi) {
    const unsigned int hi = __reduce_max_sync(FULL_MASK, (unsigned int)(k >> 32));
    const unsigned int lo = __reduce_max_sync(FULL_MASK, (unsigned int)(k >> 32) == hi ? (unsigned int)k : 0u);
    bk = ((unsigned long long)hi << 32) | lo;
    bi = (int)__reduce_min_sync(FULL_MASK, k == bk ? (unsigned int)i : 0xffffffffu);
}

// lane_best: the best of this lane's keys key[0..NV) (experts base + i; key 0: none left), ties to the
// lower expert: (0, 0x7fffffff) when none is left.
template <typename K_t, int NV>
__device__ __forceinline__ void lane_best(const K_t (&key)[NV], int base, K_t& bk, int& bi) {
    bk = 0;
    bi = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < NV; i++)
        if (key[i] > bk) {
            bk = key[i];
            bi = base + i;
        }
}

// 16-byte vectors of T, for the register path's row loads.
template <typename T> struct vec16;
template <> struct vec16<float> {
    typedef float4 type;
    static const int n = 4;
};
template <> struct vec16<double> {
    typedef double2 type;
    static const int n = 2;
};
__device__ __forceinline__ void unpack(float4 u, float* x) {
    x[0] = u.x;
    x[1] = u.y;
    x[2] = u.z;
    x[3] = u.w;
}
__device__ __forceinline__ void unpack(double2 u, double* x) {
    x[0] = u.x;
    x[1] = u.y;
}

// load_lane: x[i] = p[i] for i < cnt (i < NV; the rest untouched), by 16-byte loads when vec (then p is
// 16-byte aligned and cnt a multiple of vec16<T>::n): a lane's consecutive experts in NV/n loads rather
// than NV, fewer cache wavefronts per warp.
template <typename T, int NV>
__device__ __forceinline__ void load_lane(const T* __restrict__ p, int cnt, bool vec, T (&x)[NV]) {
    const int n = vec16<T>::n;
    if (vec) {
#pragma unroll
        for (int q = 0; q < NV; q += n)
            if (q < cnt) unpack(*reinterpret_cast<const typename vec16<T>::type*>(p + q), x + q);
    } else {
#pragma unroll
        for (int i = 0; i < NV; i++)
            if (i < cnt) x[i] = p[i];
    }
}

// route_sigmoid_regs: route_sigmoid_shared's results (bitwise: the same selection values, group scores,
// kept groups, order and weights) with every value in registers, for K <= 32 (lane j holds choice j).
// Lane L holds the nv consecutive experts L*nv .. L*nv+nv-1 (those below E; nv <= NV <= 8, nv*32 >= E).
// With groups, nv divides the group size gs, so each lane's experts lie in one group and group g is
// lanes g*P .. g*P+P-1 (P = gs/nv, G*P = E/nv <= 32 lanes). Why this gives the same answer:
//   - a group's score is the sum of its two largest values; the two largest of a multiset do not depend
//     on the order they are found in (the values are never NaN, and never -0: c = s + bias with s >= +0,
//     a fill of +0, or -inf), so a tree over lanes gives the sequential scan's t1 + t2 bit for bit;
//   - next_best's TG rounds keep the groups that rank below TG in (score descending, index ascending)
//     among the non-NaN scores (a NaN score, possible only with an infinite bias, is never picked and
//     never outranks): counting, for each group, the better groups gives the same set;
//   - the k rounds of next_best pick the experts in (value descending, index ascending) order: here each
//     lane offers its best remaining expert, the warp takes the best offer (warp_best), and the lane
//     that gave it removes it and offers its next best.
template <typename T, int NV>
__device__ void route_sigmoid_regs(const T* __restrict__ logits, const T* __restrict__ bias, int* __restrict__ idx,
                                   T* __restrict__ w, int numTokens, int E, int K, bool renorm, double scale, int G,
                                   int TG, bool exclude, int nv, unsigned int* fault) {
    typedef typename order_key_t<T>::type K_t;
    const int lane = lane_id(), base = lane * nv, cnt = min(nv, E - base);  // cnt: this lane's experts
    const int P = G > 1 ? E / G / nv : 1, g = lane / P, r = lane - g * P;
    // Logits and bias by 16-byte loads when every lane's run starts aligned and holds whole vectors (nv
    // and E multiples of the vector length n, the pointer aligned): a warp's loads touch the row's cache
    // lines n times fewer.
    const int n = vec16<T>::n;
    const bool vecL = nv % n == 0 && E % n == 0 && ((uintptr_t)logits & 15) == 0;
    const bool vecB = nv % n == 0 && E % n == 0 && ((uintptr_t)bias & 15) == 0;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        int* it = idx + t * K;
        T c[NV];
        bool bad = false, badBias = false;
        load_lane(l + base, cnt, vecL, c);
#pragma unroll
        for (int q = 0; q < NV; q += n) {
            T b[n];
            if (bias) {
                if (vecB) {
                    if (q < cnt) unpack(*reinterpret_cast<const typename vec16<T>::type*>(bias + base + q), b);
                } else {
#pragma unroll
                    for (int k = 0; k < n; k++)
                        if (q + k < cnt) b[k] = bias[base + q + k];
                }
            }
#pragma unroll
            for (int k = 0; k < n; k++) {
                const int i = q + k;
                if (i < cnt) {
                    const T v = c[i];
                    bad |= v != v;
                    T s = (T)sigmoid_d((double)v);
                    if (bias) {
                        badBias |= b[k] != b[k] || b[k] == pos_inf<T>() || b[k] == neg_inf<T>();
                        s += b[k];
                    }
                    c[i] = sanitize(s);  // NaN ranks as -inf: indices stay in range on a faulty row
                } else {
                    c[i] = neg_inf<T>();
                }
            }
        }
        if (__any_sync(FULL_MASK, bad) && lane == 0 && fault) atomicOr(fault, FAULT_NONFINITE);
        if (__any_sync(FULL_MASK, badBias) && lane == 0 && fault) atomicOr(fault, FAULT_BIAS_NONFINITE);
        if (G > 1) {
            T t1 = neg_inf<T>(), t2 = neg_inf<T>();
#pragma unroll
            for (int i = 0; i < NV; i++) {
                if (i < nv) {
                    if (c[i] > t1) {
                        t2 = t1;
                        t1 = c[i];
                    } else if (c[i] > t2) {
                        t2 = c[i];
                    }
                }
            }
            // Segmented tree over the group's P lanes (any P): after the step with offset o, lane r of a
            // group holds the two largest of lanes r .. min(r + 2o, P) - 1; lane r = 0 ends with the group's.
            for (int o = 1; o < P; o <<= 1) {
                const T u1 = __shfl_down_sync(FULL_MASK, t1, o), u2 = __shfl_down_sync(FULL_MASK, t2, o);
                if (r + o < P) {
                    if (u1 > t1) {
                        t2 = t1 > u2 ? t1 : u2;
                        t1 = u1;
                    } else {
                        t2 = t2 > u1 ? t2 : u1;
                    }
                }
            }
            const T score = t1 + t2;  // the group's score on its lane r = 0
            const T mine = __shfl_sync(FULL_MASK, score, (g < G ? g : 0) * P);
            int rank = 0;
            for (int h = 0; h < G; h++) {
                const T o = __shfl_sync(FULL_MASK, score, h * P);
                rank += o > mine || (o == mine && h < g);
            }
            if (g < G && !(mine == mine && rank < TG)) {
                const T fill = exclude ? neg_inf<T>() : T(0);
#pragma unroll
                for (int i = 0; i < NV; i++) c[i] = fill;
            }
        }
        K_t key[NV];
#pragma unroll
        for (int i = 0; i < NV; i++) key[i] = i < cnt ? order_key(c[i]) : K_t(0);
        K_t lk;
        int li;
        lane_best(key, base, lk, li);
        int sel = 0;  // lane j: the j-th choice
        for (int j = 0; j < K; j++) {
            K_t bk;
            int bi;
            warp_best(lk, li, bk, bi);
            if (li == bi) {  // the lane that offered the winner offers its next best
#pragma unroll
                for (int i = 0; i < NV; i++)
                    if (base + i == bi) key[i] = 0;
                lane_best(key, base, lk, li);
            }
            if (bi >= E) bi = 0;  // unreachable: K <= E experts all have keys
            if (lane == j) sel = bi;
        }
        if (lane < K) it[lane] = sel;
        if (w) {
            // sigmoid_weights with the choices in registers (K <= 32): the same sums in the same order.
            const double sv = lane < K ? sigmoid_d((double)l[sel]) : 0.0;
            double den = 1.0;
            if (renorm) {
                double sum = 0.0;
                for (int i = 0; i < K; i++) sum += __shfl_sync(FULL_MASK, sv, i);
                den = sum + 1e-20;
            }
            if (lane < K) w[t * K + lane] = (T)(scale * sv / den);
        }
        __syncwarp();
    }
}

// Registers per lane of route_sigmoid_regs for E experts in G groups (G <= 1: none) and K <= 32
// choices: the least nv with 32*nv >= E that divides the group size; 0 when that exceeds 8 or K > 32
// (then route_sigmoid_shared runs).
__device__ __forceinline__ int sigmoid_regs_per_lane(int E, int G, int K) {
    if (K > 32) return 0;
    int nv = (E + 31) / 32;
    if (G > 1) {
        const int gs = E / G;
        while (nv <= 8 && gs % nv != 0) nv++;
    }
    return nv <= 8 ? nv : 0;
}

template <typename T>
__device__ void route_sigmoid_body(const T* __restrict__ logits, const T* __restrict__ bias, int* __restrict__ idx,
                                   T* __restrict__ w, int numTokens, int E, int K, bool renorm, double scale, int G,
                                   int TG, bool exclude, unsigned int* fault) {
    const int nv = sigmoid_regs_per_lane(E, G, K);
    if (nv == 0)
        route_sigmoid_shared(logits, bias, idx, w, numTokens, E, K, renorm, scale, G, TG, exclude, fault);
    else if (nv <= 4)
        route_sigmoid_regs<T, 4>(logits, bias, idx, w, numTokens, E, K, renorm, scale, G, TG, exclude, nv, fault);
    else
        route_sigmoid_regs<T, 8>(logits, bias, idx, w, numTokens, E, K, renorm, scale, G, TG, exclude, nv, fault);
}

// w[t,:] = weights of the given experts idx[t,:] (validated: out-of-range indices raise the fault word
// and are clamped so that no access leaves the row; invalid logit rows raise FAULT_NONFINITE).
template <typename T>
__device__ void route_weights_body(const T* __restrict__ logits, const int* __restrict__ idx, T* __restrict__ w,
                                   int numTokens, int E, int K, int mode, double scale, unsigned int* fault) {
    extern __shared__ int sidx[];  // [warps per block][K]
    const int lane = lane_id();
    int* my = sidx + (threadIdx.x >> 5) * K;
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        for (int j = lane; j < K; j += 32) my[j] = checked_expert(idx[t * K + j], E, fault);
        __syncwarp();
        if (mode >= 2) {
            row_nan(l, E, fault);
            sigmoid_weights(l, my, K, mode == 3, scale, w + t * K);
        } else {
            if (mode == 1) row_check(l, E, fault);  // the full softmax checks in row_stats
            token_weights(l, my, E, K, mode == 0, scale, w + t * K, fault);
        }
        __syncwarp();
    }
}

// dlogits[t,:] = d(sum_j dw[t,j] * w[t,j]) / dlogits[t,:].
//   full softmax:  dl[e] = p[e] * (g[e] - sum_j dw[j] * w[j]),  g[e] = sum_{j: i_j = e} dw[j];
//   k-softmax:     dl[e] = g'[e] - w-weighted, i.e. dl[i_j] += w[j] * (dw[j] - sum_j' dw[j'] w[j']), else 0.
template <typename T>
__device__ void route_weights_grad_body(const T* __restrict__ logits, const int* __restrict__ idx,
                                        const T* __restrict__ dw, T* __restrict__ dlogits, int numTokens, int E,
                                        int K, int mode, double scale, unsigned int* fault) {
    const bool fullSoftmax = mode == 0;
    extern __shared__ unsigned char smem[];
    const int warpInBlock = threadIdx.x >> 5;
    int* my = reinterpret_cast<int*>(smem) + warpInBlock * K;
    const int warpsPerBlock = blockDim.x >> 5;
    T* myw = reinterpret_cast<T*>(reinterpret_cast<int*>(smem) + ((warpsPerBlock * K + 1) & ~1)) + warpInBlock * K;
    const int lane = lane_id();
    const T sc = (T)scale;  // softmax modes: d/dw' = scale * dw for w = scale * w' (exact when 1)
    for (long long t = global_warp(); t < numTokens; t += num_warps()) {
        const T* l = logits + t * E;
        for (int j = lane; j < K; j += 32) my[j] = checked_expert(idx[t * K + j], E, fault);
        __syncwarp();
        if (mode >= 2) {
            // Sigmoid: dl_e = sum_{j: i_j = e} (scale/D) (dw_j - dot) sigmoid'(l_e), dot = sum_j dw_j s_j / D
            // (D = sum_j s_j + 1e-20 when renormalised; else D = 1, dot = 0), in double as on the CPU.
            const bool renorm = mode == 3;
            row_nan(l, E, fault);
            double den = 1.0, dot = 0.0;
            if (renorm) {
                double sum = 0.0;
                for (int j = 0; j < K; j++) sum += sigmoid_d((double)l[my[j]]);
                den = sum + 1e-20;
                for (int j = 0; j < K; j++) dot += (double)dw[t * K + j] * sigmoid_d((double)l[my[j]]) / den;
            }
            T* out = dlogits + t * E;
            for (int e = lane; e < E; e += 32) {
                double g = 0.0;
                for (int j = 0; j < K; j++)
                    if (my[j] == e) g += scale / den * ((double)dw[t * K + j] - dot) * sigmoid_slope((double)l[e]);
                out[e] = (T)g;
            }
            __syncwarp();
            continue;
        }
        T m = T(0), s = T(1);  // the full softmax's statistics, computed once for weights and gradient
        if (fullSoftmax) {
            row_stats(l, E, m, s, fault);
            for (int j = lane; j < K; j += 32) myw[j] = dev_exp(sanitize(l[my[j]]) - m) / s;
        } else {
            row_check(l, E, fault);
            token_weights(l, my, E, K, false, 1.0, myw, (unsigned int*)0);
        }
        __syncwarp();
        T dot = T(0);
        for (int j = 0; j < K; j++) dot += sc * dw[t * K + j] * myw[j];
        T* out = dlogits + t * E;
        if (fullSoftmax) {
            for (int e = lane; e < E; e += 32) {
                T g = T(0);
                for (int j = 0; j < K; j++)
                    if (my[j] == e) g += sc * dw[t * K + j];
                const T p = dev_exp(sanitize(l[e]) - m) / s;
                out[e] = p * (g - dot);
            }
        } else {
            for (int e = lane; e < E; e += 32) {
                T g = T(0);
                for (int j = 0; j < K; j++)
                    if (my[j] == e) g += myw[j] * (sc * dw[t * K + j] - dot);
                out[e] = g;
            }
        }
        __syncwarp();
    }
}

#define DEFINE_ROUTE(SUF, T, MINB)                                                                              \
    extern "C" __global__ void route_##SUF(const T* logits, int* idx, T* w, int numTokens, int E, int K,       \
                                           int fullSoftmax, double scale, unsigned int* fault) {              \
        route_body<T>(logits, idx, w, numTokens, E, K, fullSoftmax != 0, scale, fault);                       \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(256, MINB)                                                   \
        route_sigmoid_##SUF(const T* logits, const T* bias, int* idx, T* w, int numTokens, int E, int K,      \
                            int renorm, double scale, int G, int TG, int exclude, unsigned int* fault) {      \
        route_sigmoid_body<T>(logits, bias, idx, w, numTokens, E, K, renorm != 0, scale, G, TG, exclude != 0,  \
                              fault);                                                                         \
    }                                                                                                         \
    extern "C" __global__ void route_weights_##SUF(const T* logits, const int* idx, T* w, int numTokens, int E, \
                                                   int K, int mode, double scale, unsigned int* fault) {      \
        route_weights_body<T>(logits, idx, w, numTokens, E, K, mode, scale, fault);                           \
    }                                                                                                         \
    extern "C" __global__ void route_weights_grad_##SUF(const T* logits, const int* idx, const T* dw,          \
                                                        T* dlogits, int numTokens, int E, int K, int mode,    \
                                                        double scale, unsigned int* fault) {                  \
        route_weights_grad_body<T>(logits, idx, dw, dlogits, numTokens, E, K, mode, scale, fault);            \
    }

// route_sigmoid launches at most 8 warps per block (sigmoidLaunchFor); for float, 4 blocks per SM (64
// registers) keep a T=4096 route in one wave on an H100/H200 without spilling; double needs more.
DEFINE_ROUTE(f32, float, 4)
DEFINE_ROUTE(f64, double, 3)
