// Routing plan on the device, without host synchronisation.
//
// One-pass plan (plan_onepass, one launch; used when the host finds a grid whose blocks are all resident
// at once): every warp counts its tile of slots per expert, each block publishes its per-expert counts,
// all blocks meet at a grid barrier, then every block reads the counts of all blocks (expert totals ->
// offsets; earlier blocks -> its own first row per expert) and ranks its tiles. See plan_onepass below.
//
// General plan, in three launches (any size):
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


// ---------------------------------------------------------------------------------------------------
// One-pass plan.

#define ONEPASS_MAX_ROUNDS 8                    // tile rounds (32 slots each) a warp keeps in registers
#define BARRIER_TIMEOUT_NS 2000000000ull        // 2 s: a grid barrier that waits longer raises a fault

__device__ __forceinline__ unsigned long long global_timer_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// Barrier over all blocks of the launch, in two halves so that a block can work between arriving and
// waiting. All blocks must be resident at once (the host sizes the grid with the occupancy
// calculator). bar[0] counts arrivals, bar[1] is the generation: each block reads the generation before
// it arrives; the last block to arrive resets the count and bumps the generation, so the barrier is
// ready for the next launch without any host work. Memory written before grid_arrive is visible to
// every block after grid_wait (fences on both sides; readers use L1-bypassing loads). A block that
// waits longer than BARRIER_TIMEOUT_NS raises FAULT_GRID_BARRIER and goes on: a wrong result that the
// host reports, never a hang.
//
// grid_arrive: call from every thread; returns, in thread 0, the generation to wait on, or ~0u when
// this block arrived last (nothing to wait for).
__device__ unsigned int grid_arrive(unsigned int* bar) {
    __syncthreads();
    unsigned int wait = ~0u;
    if (threadIdx.x == 0) {
        volatile unsigned int* gen = bar + 1;
        const unsigned int g = *gen;
        __threadfence();
        if (atomicAdd(bar, 1u) == gridDim.x - 1) {
            atomicExch(bar, 0u);
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            wait = g;
        }
    }
    return wait;
}

// grid_wait: call from every thread with grid_arrive's result.
__device__ void grid_wait(unsigned int* bar, unsigned int wait, unsigned int* fault) {
    if (threadIdx.x == 0) {
        if (wait != ~0u) {
            volatile unsigned int* gen = bar + 1;
            const unsigned long long t0 = global_timer_ns();
            while (*gen == wait) {
                if (global_timer_ns() - t0 > BARRIER_TIMEOUT_NS) {
                    atomicOr(fault, FAULT_GRID_BARRIER);
                    break;
                }
            }
        }
        __threadfence();
    }
    __syncthreads();
}

// Exclusive scan of a[0..n) in shared memory, in place, by the whole block (each thread scans a
// contiguous run, then a warp-shuffle scan over the threads). Ends with __syncthreads.
__device__ void block_exclusive_scan(int* a, int n) {
    __shared__ int wsum[32];
    const int tid = threadIdx.x, lane = lane_id(), w = tid >> 5, nw = blockDim.x >> 5;
    const int per = (n + blockDim.x - 1) / blockDim.x;
    const int lo = tid * per < n ? tid * per : n;
    const int hi = lo + per < n ? lo + per : n;
    int local = 0;
    for (int e = lo; e < hi; e++) local += a[e];
    int v = local;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(FULL_MASK, v, o);
        if (lane >= o) v += y;
    }
    if (lane == 31) wsum[w] = v;
    __syncthreads();
    if (w == 0) {
        int x = lane < nw ? wsum[lane] : 0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(FULL_MASK, x, o);
            if (lane >= o) x += y;
        }
        if (lane < nw) wsum[lane] = x;
    }
    __syncthreads();
    int run = v - local + (w > 0 ? wsum[w - 1] : 0);
    for (int e = lo; e < hi; e++) {
        const int c = a[e];
        a[e] = run;
        run += c;
    }
    __syncthreads();
}

// One-launch plan. Grid: G blocks of W warps, all resident (grid_barrier). Warp w of block b owns the
// tile of 32 * rounds slots starting at (b * W + w) * 32 * rounds, loaded once into registers (lane
// holds slots tile + 32 i + lane, i < rounds). Phases:
//   1. each warp counts its tile per expert (peer masks from ballots, kept for phase 3) into its row of
//      wc[W][E]; the rows become exclusive prefixes over the warps, and the block's totals go to
//      scratch[b][e];
//   2. grid barrier (the warp rows become prefixes while it waits); every block sums scratch over all blocks (tot[e]) and over the blocks before it
//      (base[e]); offsets = exclusive scan of tot (block 0 writes counts and offsets);
//   3. each warp ranks its slots in slot order: row = offsets[e] + base[e] + wc[w][e] + (earlier lanes
//      of the same expert in this round), the warp's counter advancing round by round.
// The result is identical to the three-launch path (stable, integer only, deterministic).
// Dynamic shared memory: (W + 2) * E ints. scratch: G * E ints.
extern "C" __global__ void __launch_bounds__(512, 1) plan_onepass(const int* __restrict__ idx, int N, int E, int rounds,
                                                               int* __restrict__ scratch, int* __restrict__ counts,
                                                               int* __restrict__ offsets, int* __restrict__ rowOf,
                                                               int* __restrict__ slotOf, unsigned int* fault,
                                                               unsigned int* bar) {
    extern __shared__ int sh[];
    const int tid = threadIdx.x, nt = blockDim.x, lane = lane_id(), w = tid >> 5, W = nt >> 5;
    const int bits = 32 - __clz(E);
    int* wc = sh;            // [W][E]
    int* base = sh + W * E;  // [E]
    int* tot = base + E;     // [E]
    for (int i = tid; i < (W + 2) * E; i += nt) sh[i] = 0;
    __syncthreads();

    // Phase 1.
    const long long begin = ((long long)blockIdx.x * W + w) * 32 * rounds;
    int ev[ONEPASS_MAX_ROUNDS];
    unsigned int pm[ONEPASS_MAX_ROUNDS];
#pragma unroll
    for (int i = 0; i < ONEPASS_MAX_ROUNDS; i++) {
        const long long s = begin + 32 * i + lane;
        ev[i] = (i < rounds && s < N) ? checked_expert(idx[s], E, fault) : -1;
    }
    int* my = wc + w * E;
#pragma unroll
    for (int i = 0; i < ONEPASS_MAX_ROUNDS; i++) {
        if (i < rounds) {
            pm[i] = peers_of(ev[i], bits);
            if (ev[i] >= 0 && lane == __ffs(pm[i]) - 1) my[ev[i]] += __popc(pm[i]);
            __syncwarp();
        }
    }
    __syncthreads();
    for (int e = tid; e < E; e += nt) {
        int run = 0;
        for (int v = 0; v < W; v++) run += wc[v * E + e];
        __stcg(scratch + blockIdx.x * E + e, run);
    }

    // Phase 2 (the host keeps G * E <= onePassMaxCells, so 32-bit cell indices). While the other
    // blocks arrive, the warp rows become exclusive prefixes over the warps.
    const unsigned int wait = grid_arrive(bar);
    for (int e = tid; e < E; e += nt) {
        int run = 0;
        for (int v = 0; v < W; v++) {
            const int c = wc[v * E + e];
            wc[v * E + e] = run;
            run += c;
        }
    }
    grid_wait(bar, wait, fault);
    const int cells = gridDim.x * E;
    for (int j0 = tid; j0 < cells; j0 += 8 * nt) {
        int v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int j = j0 + u * nt;
            v[u] = j < cells ? __ldcg(scratch + j) : 0;
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int j = j0 + u * nt;
            if (j < cells && v[u] != 0) {
                const int b = j / E;
                const int e = j - b * E;
                atomicAdd(&tot[e], v[u]);
                if (b < (int)blockIdx.x) atomicAdd(&base[e], v[u]);
            }
        }
    }
    __syncthreads();
    if (blockIdx.x == 0)
        for (int e = tid; e < E; e += nt) counts[e] = tot[e];
    block_exclusive_scan(tot, E);  // tot[e] = offsets[e]
    for (int e = tid; e < E; e += nt) {
        if (blockIdx.x == 0) offsets[e] = tot[e];
        base[e] += tot[e];
    }
    if (blockIdx.x == 0 && tid == 0) offsets[E] = N;
    __syncthreads();

    // Phase 3.
#pragma unroll
    for (int i = 0; i < ONEPASS_MAX_ROUNDS; i++) {
        if (i < rounds) {
            const int e = ev[i];
            const long long s = begin + 32 * i + lane;
            int r = 0;
            if (e >= 0) r = base[e] + my[e] + __popc(pm[i] & lanemask_lt());
            __syncwarp();
            if (e >= 0) {
                rowOf[s] = r;
                slotOf[r] = (int)s;
                if (lane == __ffs(pm[i]) - 1) my[e] += __popc(pm[i]);
            }
            __syncwarp();
        }
    }
}
