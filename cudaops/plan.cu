// Routing plan on the device, without host synchronisation, in three launches:
//   plan_count:   the N = T*K slots are cut into chunks of `chunk` slots, one warp per chunk; each warp
//                 counts its chunk's slots per expert into scratch[chunk][e].
//   plan_scan:    one block turns scratch into each chunk's first row per expert (exclusive scan over the
//                 chunks, plus the expert's offset) and writes counts and offsets.
//   plan_scatter: each warp walks its chunk again 32 slots at a time (8 such rounds loaded ahead), in slot order; lanes holding the same
//                 expert find each other (one warp ballot per bit of the expert index) and take consecutive rows in lane order.
// Rows of one expert are therefore in increasing slot order (stable), and the result depends only on idx:
// integer arithmetic, no atomics on the layout. Out-of-range expert indices set the fault word and are
// clamped into [0, E) so that no write leaves the plan.
//
// Plan layout (ops/plan_layout.go): counts [E] | offsets [E+1] | rowOf [N] | slotOf [N].
#include "common.cuh"

__device__ __forceinline__ unsigned int lanemask_lt() { return (1u << lane_id()) - 1u; }

// Lanes whose expert equals this lane's (the mask __match_any_sync would give), from one ballot per bit
// of the expert index: much cheaper than match.any for the few bits of an expert index. v is -1 for
// lanes without a slot; bits = bit length of E.
__device__ __forceinline__ unsigned int peers_of(int v, int bits) {
    const unsigned int u = (unsigned int)(v + 1);
    unsigned int m = FULL_MASK;
    for (int b = 0; b < bits; b++) {
        const unsigned int bb = __ballot_sync(FULL_MASK, (u >> b) & 1u);
        m &= ((u >> b) & 1u) ? bb : ~bb;
    }
    return m;
}

#define PLAN_ITERS 8  // idx values each lane loads ahead (one round = 32 * PLAN_ITERS slots)

// Loads one round of a chunk: lane's slots base + 32*i + lane, clamped experts, -1 past the end.
__device__ __forceinline__ void load_round(const int* __restrict__ idx, long long base, long long end, int E,
                                           unsigned int* fault, int (&ev)[PLAN_ITERS]) {
    const int lane = lane_id();
#pragma unroll
    for (int i = 0; i < PLAN_ITERS; i++) {
        const long long s = base + 32 * i + lane;
        ev[i] = s < end ? checked_expert(idx[s], E, fault) : -1;
    }
}

// Dynamic shared memory: warpsPerBlock * E ints. chunk is a multiple of 32 * PLAN_ITERS.
extern "C" __global__ void plan_count(const int* __restrict__ idx, int N, int E, int chunk, int numChunks,
                                      int* __restrict__ scratch, unsigned int* fault) {
    extern __shared__ int cnt_all[];
    const int lane = lane_id();
    const int bits = 32 - __clz(E);
    int* cnt = cnt_all + (threadIdx.x >> 5) * E;
    const long long c = global_warp();
    if (c >= numChunks) return;  // whole warps exit together
    for (int e = lane; e < E; e += 32) cnt[e] = 0;
    __syncwarp();
    const long long begin = c * chunk;
    const long long end = begin + chunk < N ? begin + chunk : N;
    for (long long base = begin; base < end; base += 32 * PLAN_ITERS) {
        int ev[PLAN_ITERS];
        load_round(idx, base, end, E, fault, ev);
#pragma unroll
        for (int i = 0; i < PLAN_ITERS; i++) {
            const unsigned int peers = peers_of(ev[i], bits);
            if (ev[i] >= 0 && lane == __ffs(peers) - 1) cnt[ev[i]] += __popc(peers);
            __syncwarp();
        }
    }
    for (int e = lane; e < E; e += 32) scratch[c * E + e] = cnt[e];
}

// One block. counts[e] = sum_c scratch[c][e]; offsets = exclusive scan of counts (offsets[E] = N);
// scratch[c][e] becomes offsets[e] + sum_{c' < c} scratch[c'][e].
extern "C" __global__ void plan_scan(int* __restrict__ scratch, int numChunks, int E, int N, int* __restrict__ counts,
                                     int* __restrict__ offsets) {
    __shared__ int part[1024];
    const int tid = threadIdx.x;
    const int nt = blockDim.x;
    // Per-expert exclusive scan over chunks (threads over experts).
    // Loads are batched 8 at a time so that they are in flight together.
    for (int e = tid; e < E; e += nt) {
        int run = 0;
        for (int c0 = 0; c0 < numChunks; c0 += 8) {
            int v[8];
#pragma unroll
            for (int u = 0; u < 8; u++) v[u] = c0 + u < numChunks ? scratch[(long long)(c0 + u) * E + e] : 0;
#pragma unroll
            for (int u = 0; u < 8; u++) {
                if (c0 + u < numChunks) scratch[(long long)(c0 + u) * E + e] = run;
                run += v[u];
            }
        }
        counts[e] = run;
    }
    __syncthreads();
    // Exclusive scan of counts over experts: each thread owns a contiguous run of experts.
    const int per = (E + nt - 1) / nt;
    const int lo = tid * per < E ? tid * per : E;
    const int hi = lo + per < E ? lo + per : E;
    int local = 0;
    for (int e = lo; e < hi; e++) local += counts[e];
    part[tid] = local;
    __syncthreads();
    for (int o = 1; o < nt; o <<= 1) {
        const int v = tid >= o ? part[tid - o] : 0;
        __syncthreads();
        part[tid] += v;
        __syncthreads();
    }
    int run = part[tid] - local;
    for (int e = lo; e < hi; e++) {
        offsets[e] = run;
        run += counts[e];
    }
    if (tid == 0) offsets[E] = N;
    __syncthreads();
    for (int e = tid; e < E; e += nt) {
        const int off = offsets[e];
        for (int c0 = 0; c0 < numChunks; c0 += 8) {
            int v[8];
#pragma unroll
            for (int u = 0; u < 8; u++) v[u] = c0 + u < numChunks ? scratch[(long long)(c0 + u) * E + e] : 0;
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (c0 + u < numChunks) scratch[(long long)(c0 + u) * E + e] = v[u] + off;
        }
    }
}

// Dynamic shared memory: warpsPerBlock * E ints.
extern "C" __global__ void plan_scatter(const int* __restrict__ idx, int N, int E, int chunk, int numChunks,
                                        const int* __restrict__ scratch, int* __restrict__ rowOf,
                                        int* __restrict__ slotOf) {
    extern __shared__ int next_all[];
    const int lane = lane_id();
    const int bits = 32 - __clz(E);
    int* next = next_all + (threadIdx.x >> 5) * E;
    const long long c = global_warp();
    if (c >= numChunks) return;
    for (int e = lane; e < E; e += 32) next[e] = scratch[c * E + e];
    __syncwarp();
    const long long begin = c * chunk;
    const long long end = begin + chunk < N ? begin + chunk : N;
    for (long long base = begin; base < end; base += 32 * PLAN_ITERS) {
        int ev[PLAN_ITERS];
        load_round(idx, base, end, E, nullptr, ev);
#pragma unroll
        for (int i = 0; i < PLAN_ITERS; i++) {
            const int e = ev[i];
            const long long s = base + 32 * i + lane;
            const unsigned int peers = peers_of(e, bits);
            int r = 0;
            if (e >= 0) r = next[e] + __popc(peers & lanemask_lt());
            __syncwarp();
            if (e >= 0) {
                rowOf[s] = r;
                slotOf[r] = (int)s;
                if (lane == __ffs(peers) - 1) next[e] += __popc(peers);
            }
            __syncwarp();
        }
    }
}

// Single-launch plan for small problems (one block of 32 warps; E <= 256, so that 32 per-warp counter
// rows fit in shared memory). Warp w owns slots [w*chunk, (w+1)*chunk), chunk a multiple of
// 32 * PLAN_ITERS. Same result as plan_count + plan_scan + plan_scatter, without the global scratch.
// Dynamic shared memory: 32 * E ints.
extern "C" __global__ void __launch_bounds__(1024) plan_small(const int* __restrict__ idx, int N, int E, int chunk,
                                                              int* __restrict__ counts, int* __restrict__ offsets,
                                                              int* __restrict__ rowOf, int* __restrict__ slotOf,
                                                              unsigned int* fault) {
    extern __shared__ int cnt_all[];
    __shared__ int part[1024];
    const int tid = threadIdx.x;
    const int lane = lane_id();
    const int bits = 32 - __clz(E);
    const int w = tid >> 5;
    int* cnt = cnt_all + w * E;
    for (int e = lane; e < E; e += 32) cnt[e] = 0;
    __syncwarp();
    const long long begin = (long long)w * chunk;
    const long long end = begin + chunk < N ? begin + chunk : N;
    for (long long base = begin; base < end; base += 32 * PLAN_ITERS) {
        int ev[PLAN_ITERS];
        load_round(idx, base, end, E, fault, ev);
#pragma unroll
        for (int i = 0; i < PLAN_ITERS; i++) {
            const unsigned int peers = peers_of(ev[i], bits);
            if (ev[i] >= 0 && lane == __ffs(peers) - 1) cnt[ev[i]] += __popc(peers);
            __syncwarp();
        }
    }
    __syncthreads();
    // Thread e: exclusive scan of expert e's counts over the warps, then the scan over experts.
    int total = 0;
    if (tid < E) {
        for (int v = 0; v < 32; v++) {
            const int c = cnt_all[v * E + tid];
            cnt_all[v * E + tid] = total;
            total += c;
        }
        counts[tid] = total;
    }
    part[tid] = total;
    __syncthreads();
    for (int o = 1; o < 1024; o <<= 1) {
        const int v = tid >= o ? part[tid - o] : 0;
        __syncthreads();
        part[tid] += v;
        __syncthreads();
    }
    if (tid < E) {
        const int off = part[tid] - total;
        offsets[tid] = off;
        for (int v = 0; v < 32; v++) cnt_all[v * E + tid] += off;
    }
    if (tid == 0) offsets[E] = N;
    __syncthreads();
    for (long long base = begin; base < end; base += 32 * PLAN_ITERS) {
        int ev[PLAN_ITERS];
        load_round(idx, base, end, E, nullptr, ev);
#pragma unroll
        for (int i = 0; i < PLAN_ITERS; i++) {
            const int e = ev[i];
            const long long s = base + 32 * i + lane;
            const unsigned int peers = peers_of(e, bits);
            int r = 0;
            if (e >= 0) r = cnt[e] + __popc(peers & lanemask_lt());
            __syncwarp();
            if (e >= 0) {
                rowOf[s] = r;
                slotOf[r] = (int)s;
                if (lane == __ffs(peers) - 1) cnt[e] += __popc(peers);
            }
            __syncwarp();
        }
    }
}
