// Small utility kernels: fills (Memset of 8-byte values) and the timing spin.
#include "common.cuh"

extern "C" __global__ void fill_u64(unsigned long long* p, long long n, unsigned long long v) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) p[i] = v;
}

// Busy-waits for ns nanoseconds of the GPU's global timer (used before timed regions: the GPU stays
// busy while the host issues the launches being timed, so launch latency is not measured).
extern "C" __global__ void spin_ns(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < ns);
}
