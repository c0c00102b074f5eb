// Runtime of the GEMM kernel emulator (see emu.h): kernel registry, CTA scheduler on coroutines, deferred
// cp.async, warp-wide mma.sync, allocation registry for address checks.
#include "emu.h"

#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "emu_api.h"

namespace {

struct Kernel {
    EmuThreadFn fn = nullptr;
    EmuReduceFn reduce = nullptr;
    int threads = 0, smem = 0, nargs = 23;
};
struct VariantInfo {
    std::map<std::string, Kernel> kernels;
    int config[8] = {0};
    bool hasConfig = false;
};
std::map<std::string, VariantInfo>& registry() {
    static std::map<std::string, VariantInfo> r;
    return r;
}

struct Copy {
    void* dst;
    const void* src;
    int bytes;
    bool in;
    int fill = 0;  // zero bytes after the copied ones (cp.async with src-size < cp-size)
};

// A recorded wgmma.mma_async (n: the instruction's N) of one thread.
struct WgOp {
    float* d;
    int n;
    unsigned long long da, db;
};
const unsigned EMU_SMEM_BASE = 1056;

enum Wait { RUNNING, AT_BARRIER, AT_MMA, AT_LDSM, DONE };

struct Thread {
    ucontext_t ctx;
    std::vector<char> stack;
    Wait state = RUNNING;
    std::vector<std::vector<Copy>> groups;  // committed, not yet complete
    std::vector<Copy> open;                 // issued since the last commit
    std::vector<std::vector<WgOp>> wgGroups;  // committed wgmma groups, not yet waited for
    std::vector<WgOp> wgOpen;                 // wgmma issued since the last commit
    // mma operands while waiting at AT_MMA (mmaK: 8 for tf32 m16n8k8, 16 for bf16 m16n8k16)
    int mmaK = 0;
    float* d = nullptr;
    const unsigned* a = nullptr;
    const unsigned* b = nullptr;
    // ldmatrix row address, destination registers and .trans while waiting at AT_LDSM
    const unsigned char* row = nullptr;
    unsigned* regs = nullptr;
    bool trans = false;
};

struct Run {
    const Kernel* k = nullptr;
    const uint64_t* args = nullptr;
    int bid = 0;
    unsigned char* smem = nullptr;
    std::vector<Thread> threads;
    int cur = -1;
    ucontext_t sched;
    bool eager = false;
    std::string err;
};
Run* run_ = nullptr;

struct Region {
    uintptr_t lo, hi;
};
std::vector<Region>& regions() {
    static std::vector<Region> r;
    return r;
}

void fail(const std::string& msg) {
    if (run_ && run_->err.empty()) run_->err = msg;
}

bool readable(const void* p, int bytes) {
    const uintptr_t a = (uintptr_t)p;
    for (const Region& r : regions())
        if (a >= r.lo && a + bytes <= r.hi) return true;
    return false;
}

void complete(const Copy& c) {
    if (c.in) std::memcpy(c.dst, c.src, c.bytes);
    else std::memset(c.dst, 0, c.bytes);
    if (c.fill) std::memset((char*)c.dst + c.bytes, 0, c.fill);
}

void yield_to_scheduler(Wait w) {
    Thread& t = run_->threads[run_->cur];
    t.state = w;
    swapcontext(&t.ctx, &run_->sched);
}

void trampoline() {
    Run* r = run_;
    Thread& t = r->threads[r->cur];
    r->k->fn(r->args, r->bid, r->cur, r->smem);
    if (!t.open.empty() || !t.groups.empty()) {
        // Copies still in flight when a CTA exits would land in the next CTA's shared memory.
        fail("thread " + std::to_string(r->cur) + " exited with cp.async copies not waited for");
    }
    if (!t.wgOpen.empty() || !t.wgGroups.empty()) fail("thread " + std::to_string(r->cur) + " exited with wgmma not waited for");
    t.state = DONE;
    swapcontext(&t.ctx, &r->sched);
}

// bfloat16 bits (low or high half of a 32-bit register) as a float: exact.
float bf16_half(unsigned reg, int hi) {
    const unsigned u = (hi ? reg >> 16 : reg & 0xffffu) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// The m16n8k16 bf16 mma (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"): lane
// 4g+t holds A(g, 2t..2t+1), A(g+8, 2t..2t+1), A(g, 2t+8..2t+9), A(g+8, 2t+8..2t+9) in a0..a3 and
// B(2t..2t+1, g), B(2t+8..2t+9, g) in b0, b1 (lower k in the low half); C/D as for m16n8k8. The products
// of two bfloat16 are exact in float32; the sum is taken in increasing k with one rounding per term
// (the hardware's order differs, within the same error bound).
void warp_mma_bf16(Run& r, int w) {
    float out[32][4];
    for (int lane = 0; lane < 32; lane++) {
        const int gid = lane >> 2, tig = lane & 3;
        for (int q = 0; q < 4; q++) {
            const int row = gid + 8 * (q >> 1), col = 2 * tig + (q & 1);
            float acc = r.threads[w * 32 + lane].d[q];
            for (int k = 0; k < 16; k++) {
                const int kk = k % 8;  // k within its half
                const Thread& ta = r.threads[w * 32 + (row % 8) * 4 + kk / 2];
                const float av = bf16_half(ta.a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], kk & 1);
                const Thread& tb = r.threads[w * 32 + col * 4 + kk / 2];
                const float bv = bf16_half(tb.b[k >= 8 ? 1 : 0], kk & 1);
                acc = std::fma(av, bv, acc);
            }
            out[lane][q] = acc;
        }
    }
    for (int lane = 0; lane < 32; lane++)
        for (int q = 0; q < 4; q++) r.threads[w * 32 + lane].d[q] = out[lane][q];
}

// Performs the warp's mma once all its 32 lanes wait at it: D = A·B + C for the m16n8k8 tf32 tile, from
// the fragments every lane holds (layouts of the PTX ISA), all lanes' results computed before any is
// written back.
void warp_mma(Run& r, int w) {
    for (int l = 0; l < 32; l++)
        if (r.threads[w * 32 + l].mmaK != r.threads[w * 32].mmaK) {
            fail("warp " + std::to_string(w) + ": lanes wait at different mma instructions");
            return;
        }
    if (r.threads[w * 32].mmaK == 16) {
        warp_mma_bf16(r, w);
        return;
    }
    float out[32][4];
    auto tf = [](unsigned u) {
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    };
    for (int lane = 0; lane < 32; lane++) {
        const int gid = lane >> 2, tig = lane & 3;
        for (int q = 0; q < 4; q++) {
            const int row = gid + 8 * (q >> 1), col = 2 * tig + (q & 1);
            float acc = r.threads[w * 32 + lane].d[q];
            for (int k = 0; k < 8; k++) {
                const Thread& ta = r.threads[w * 32 + (row % 8) * 4 + (k % 4)];
                const float av = tf(ta.a[(row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)]);
                const Thread& tb = r.threads[w * 32 + col * 4 + (k % 4)];
                const float bv = tf(tb.b[k >= 4 ? 1 : 0]);
                acc = std::fma(av, bv, acc);
            }
            out[lane][q] = acc;
        }
    }
    for (int lane = 0; lane < 32; lane++)
        for (int q = 0; q < 4; q++) r.threads[w * 32 + lane].d[q] = out[lane][q];
}

// Performs the warp's ldmatrix.m8n8.x4.b16 once all its 32 lanes wait at it: lane 8j+r names row r of
// matrix j (16 bytes of shared memory: 8 16-bit elements); every lane l receives in register j the
// 32-bit word l%4 of row l/4 of matrix j, i.e. elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1), the first in
// the low half; with .trans the elements (2(l%4), l/4) and (2(l%4)+1, l/4). All rows are read before any
// register is written.
void warp_ldsm(Run& r, int w) {
    unsigned out[32][4];
    const uintptr_t s0 = (uintptr_t)r.smem;
    for (int l = 0; l < 32; l++) {
        const uintptr_t a = (uintptr_t)r.threads[w * 32 + l].row;
        if (a % 16 != 0 || a < s0 || a + 16 > s0 + (uintptr_t)r.k->smem) {
            fail("ldmatrix: lane " + std::to_string(l) + " names a row outside the CTA's dynamic shared memory or not 16-byte aligned");
            return;
        }
    }
    const bool trans = r.threads[w * 32].trans;
    for (int l = 0; l < 32; l++)
        if (r.threads[w * 32 + l].trans != trans) {
            fail("warp " + std::to_string(w) + ": lanes mix ldmatrix and ldmatrix.trans");
            return;
        }
    for (int l = 0; l < 32; l++)
        for (int j = 0; j < 4; j++) {
            if (!trans) {
                std::memcpy(&out[l][j], r.threads[w * 32 + 8 * j + l / 4].row + 4 * (l % 4), 4);
                continue;
            }
            uint16_t lo, hi;
            std::memcpy(&lo, r.threads[w * 32 + 8 * j + 2 * (l % 4)].row + 2 * (l / 4), 2);
            std::memcpy(&hi, r.threads[w * 32 + 8 * j + 2 * (l % 4) + 1].row + 2 * (l / 4), 2);
            out[l][j] = (unsigned)lo | (unsigned)hi << 16;
        }
    for (int l = 0; l < 32; l++) std::memcpy(r.threads[w * 32 + l].regs, out[l], sizeof out[l]);
}

// Runs one CTA: coroutines until all are done; between rounds releases warps waiting at a warp-wide
// instruction (mma, ldmatrix), or the whole CTA at __syncthreads.
void run_cta(Run& r, int nthreads, std::mt19937& rng) {
    const size_t stackBytes = 256 << 10;
    r.threads.assign(nthreads, Thread());
    for (int i = 0; i < nthreads; i++) {
        Thread& t = r.threads[i];
        t.stack.resize(stackBytes);
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = t.stack.data();
        t.ctx.uc_stack.ss_size = stackBytes;
        t.ctx.uc_link = nullptr;
        makecontext(&t.ctx, trampoline, 0);
    }
    std::vector<int> order(nthreads);
    for (int i = 0; i < nthreads; i++) order[i] = i;
    for (;;) {
        std::shuffle(order.begin(), order.end(), rng);
        for (int i : order) {
            if (r.threads[i].state != RUNNING) continue;
            r.cur = i;
            swapcontext(&r.sched, &r.threads[i].ctx);
        }
        int done = 0, barrier = 0, mma = 0;
        for (const Thread& t : r.threads) {
            done += t.state == DONE;
            barrier += t.state == AT_BARRIER;
            mma += t.state == AT_MMA || t.state == AT_LDSM;
        }
        if (done == nthreads) return;
        bool released = false;
        for (int w = 0; w * 32 < nthreads; w++) {
            for (Wait op : {AT_MMA, AT_LDSM}) {
                int n = 0;
                for (int l = 0; l < 32; l++) n += r.threads[w * 32 + l].state == op;
                if (n == 32) {
                    if (op == AT_MMA) warp_mma(r, w);
                    else warp_ldsm(r, w);
                    if (!r.err.empty()) return;
                    for (int l = 0; l < 32; l++) r.threads[w * 32 + l].state = RUNNING;
                    released = true;
                } else if (n > 0) {  // the other lanes wait elsewhere or have exited: they never arrive
                    fail("warp " + std::to_string(w) + ": " + (op == AT_MMA ? "mma.sync" : "ldmatrix") + " reached by only " +
                         std::to_string(n) + " lanes");
                    return;
                }
            }
        }
        if (released) continue;
        if (barrier == nthreads) {
            for (Thread& t : r.threads) t.state = RUNNING;
            continue;
        }
        fail("CTA " + std::to_string(r.bid) + ": deadlock or divergent barrier (" + std::to_string(done) + " done, " +
             std::to_string(barrier) + " at __syncthreads, " + std::to_string(mma) + " at mma or ldmatrix)");
        return;
    }
}

}  // namespace

EmuRegistrar::EmuRegistrar(const char* variant, const char* kernel, EmuThreadFn fn, int threads, int smem, int nargs) {
    Kernel& k = registry()[variant].kernels[kernel];
    k.fn = fn;
    k.threads = threads;
    k.smem = smem;
    k.nargs = nargs;
}
EmuRegistrar::EmuRegistrar(const char* variant, const char* kernel, EmuReduceFn fn, int nargs) {
    Kernel& k = registry()[variant].kernels[kernel];
    k.reduce = fn;
    k.nargs = nargs;
}
EmuRegistrar::EmuRegistrar(const char* variant, const int* config) {
    VariantInfo& v = registry()[variant];
    std::memcpy(v.config, config, sizeof v.config);
    v.hasConfig = true;
}

void emu_syncthreads() { yield_to_scheduler(AT_BARRIER); }

int emu_thread() { return run_->cur; }

void emu_cp_async(void* dst, const void* src, int bytes, bool in) {
    Run& r = *run_;
    const uintptr_t d = (uintptr_t)dst, s0 = (uintptr_t)r.smem;
    const int smemBytes = r.k->smem;
    if (d < s0 || d + bytes > s0 + smemBytes) {
        fail("cp.async destination outside the CTA's dynamic shared memory");
        return;
    }
    if (d % bytes != 0 || (uintptr_t)src % bytes != 0) {
        fail("cp.async of " + std::to_string(bytes) + " bytes at a misaligned address");
        return;
    }
    if (!readable(src, in ? bytes : 1)) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "cp.async source %p (%d bytes, %s) outside every allocation", src, bytes, in ? "read" : "zero-fill");
        fail(buf);
        return;
    }
    const Copy c{dst, src, bytes, in};
    if (r.eager) complete(c);
    else r.threads[r.cur].open.push_back(c);
}

void emu_copy_now(void* dst, const void* src, int bytes, bool in) {
    Run& r = *run_;
    const uintptr_t d = (uintptr_t)dst, s0 = (uintptr_t)r.smem;
    if (d < s0 || d + bytes > s0 + r.k->smem || d % bytes != 0 || (uintptr_t)src % bytes != 0) {
        fail("element copy to shared memory: destination outside the CTA's dynamic shared memory or misaligned");
        return;
    }
    if (!readable(src, in ? bytes : 1)) {
        fail("element copy: source outside every allocation");
        return;
    }
    complete(Copy{dst, src, bytes, in});
}

void emu_cp_async_commit() {
    Thread& t = run_->threads[run_->cur];
    t.groups.push_back(t.open);
    t.open.clear();
}

void emu_cp_async_wait(int n) {
    Thread& t = run_->threads[run_->cur];
    while ((int)t.groups.size() > n) {
        for (const Copy& c : t.groups.front()) complete(c);
        t.groups.erase(t.groups.begin());
    }
}

unsigned emu_smem_addr(const void* p) {
    Run& r = *run_;
    const uintptr_t a = (uintptr_t)p, s0 = (uintptr_t)r.smem;
    if (a < s0 || a > s0 + (uintptr_t)r.k->smem) {
        fail("shared address of a pointer outside the CTA's dynamic shared memory");
        return 0;
    }
    return EMU_SMEM_BASE + (unsigned)(a - s0);
}

// The host pointer of `bytes` bytes at shared-window address s (nullptr and a failed run when outside).
static unsigned char* smem_at(unsigned s, int bytes) {
    Run& r = *run_;
    if (s < EMU_SMEM_BASE || s - EMU_SMEM_BASE + bytes > (unsigned)r.k->smem) {
        fail("shared-window address " + std::to_string(s) + " outside the CTA's dynamic shared memory");
        return nullptr;
    }
    return r.smem + (s - EMU_SMEM_BASE);
}

void emu_cp_async_part(unsigned saddr, const void* src, int bytes) {
    Run& r = *run_;
    unsigned char* dst = smem_at(saddr, 16);
    if (!dst) return;
    if (saddr % 16 != 0 || (uintptr_t)src % 16 != 0 || bytes < 0 || bytes > 16) {
        fail("cp.async of 16 bytes: misaligned address or src-size " + std::to_string(bytes));
        return;
    }
    if (!readable(src, bytes ? bytes : 1)) {
        fail("cp.async source outside every allocation");
        return;
    }
    Copy c{dst, src, bytes, bytes > 0, 16 - bytes};
    if (r.eager) complete(c);
    else r.threads[r.cur].open.push_back(c);
}

void emu_wgmma(float* d, int n, unsigned long long da, unsigned long long db) {
    run_->threads[run_->cur].wgOpen.push_back(WgOp{d, n, da, db});
}

void emu_wgmma_commit() {
    Thread& t = run_->threads[run_->cur];
    t.wgGroups.push_back(t.wgOpen);
    t.wgOpen.clear();
}

// Element (row, k) of a K-major 128-byte-swizzled operand (32-bit elements) at descriptor desc, as a
// tf32 value (low 13 mantissa bits dropped).
static float wg_elem(unsigned long long desc, int row, int k) {
    const unsigned start = (unsigned)(desc & 0x3FFF) << 4;
    const unsigned lbo = (unsigned)(desc >> 16) & 0x3FFF, sbo = (unsigned)(desc >> 32) & 0x3FFF;
    const unsigned base = (unsigned)(desc >> 49) & 7, layout = (unsigned)(desc >> 62);
    const unsigned long long fields = 0x3FFFull | 0x3FFFull << 16 | 0x3FFFull << 32 | 7ull << 49 | 3ull << 62;
    if (lbo != 1 || sbo != 64 || base != 0 || layout != 1 || (desc & ~fields) != 0) {
        fail("wgmma descriptor is not the K-major 128-byte swizzle with LBO 1, SBO 1024 the emulator models");
        return 0;
    }
    unsigned a = start + (unsigned)(row / 8) * sbo * 16 + (unsigned)(row % 8) * 128 + (unsigned)k * 4;
    a ^= ((a >> 7) & 7) << 4;  // Swizzle<3,4,3>: 16-byte chunk index ^= 128-byte row index mod 8
    const unsigned char* p = smem_at(a, 4);
    if (!p) return 0;
    unsigned u;
    std::memcpy(&u, p, 4);
    u &= 0xffffe000u;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Executes one wgmma.mma_async.m64nNk8.f32.tf32.tf32 for thread tid's accumulators: warp w = (tid/32)%4
// of the warpgroup holds rows 16w + lane/4 (+8); d[4j..4j+3] = columns 8j + 2(lane%4) + {0,1} of those
// rows. D += A·Bᵀ with A 64 x 8 and B N x 8, both K-major; the 8 products summed exactly, one rounding.
static void wg_exec(const WgOp& op, int tid) {
    const int w = (tid / 32) % 4, lane = tid % 32;
    for (int j = 0; j < op.n / 8; j++)
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 2; c++) {
                const int row = 16 * w + lane / 4 + 8 * h, col = 8 * j + 2 * (lane % 4) + c;
                double s = 0;
                for (int k = 0; k < 8; k++) s += (double)wg_elem(op.da, row, k) * (double)wg_elem(op.db, col, k);
                float& d = op.d[4 * j + 2 * h + c];
                d = (float)((double)d + s);
            }
}

void emu_wgmma_wait(int n) {
    Thread& t = run_->threads[run_->cur];
    if (!t.wgOpen.empty()) {
        fail("wgmma.wait_group with uncommitted wgmma");
        return;
    }
    while ((int)t.wgGroups.size() > n) {
        for (const WgOp& op : t.wgGroups.front()) wg_exec(op, run_->cur);
        t.wgGroups.erase(t.wgGroups.begin());
    }
}

void emu_mma_tf32(float* d, const unsigned* a, const unsigned* b) {
    Thread& t = run_->threads[run_->cur];
    t.mmaK = 8;
    t.d = d;
    t.a = a;
    t.b = b;
    yield_to_scheduler(AT_MMA);
}

void emu_mma_bf16(float* d, const unsigned* a, const unsigned* b) {
    Thread& t = run_->threads[run_->cur];
    t.mmaK = 16;
    t.d = d;
    t.a = a;
    t.b = b;
    yield_to_scheduler(AT_MMA);
}

void emu_ldmatrix_x4(unsigned* d, const void* row, bool trans) {
    Thread& t = run_->threads[run_->cur];
    t.trans = trans;
    t.row = static_cast<const unsigned char*>(row);
    t.regs = d;
    yield_to_scheduler(AT_LDSM);
}

void emu_smem_read(const void* p, int bytes) {
    const Run& r = *run_;
    const uintptr_t a = (uintptr_t)p, s0 = (uintptr_t)r.smem;
    if (a % bytes != 0 || a < s0 || a + bytes > s0 + (uintptr_t)r.k->smem) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "thread %d: %d-byte shared read at offset %lld: misaligned or outside the CTA's dynamic shared memory",
                      r.cur, bytes, (long long)(a - s0));
        fail(buf);
    }
}

bool emu_global_read(const void* p, int bytes, bool in) {
    if ((uintptr_t)p % bytes != 0 || !readable(p, in ? bytes : 1)) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "thread %d: %d-byte global load at %p (%s): misaligned or outside every allocation",
                      run_->cur, bytes, p, in ? "read" : "zero-fill");
        fail(buf);
        return false;
    }
    return true;
}

bool emu_smem_write(const void* p, int bytes) {
    const Run& r = *run_;
    const uintptr_t a = (uintptr_t)p, s0 = (uintptr_t)r.smem;
    if (a % bytes != 0 || a < s0 || a + bytes > s0 + (uintptr_t)r.k->smem) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "thread %d: %d-byte shared store at offset %lld: misaligned or outside the CTA's dynamic shared memory",
                      r.cur, bytes, (long long)(a - s0));
        fail(buf);
        return false;
    }
    return true;
}

void emu_fault(unsigned* f, unsigned code) { *f |= code; }

// ---------------------------------------------------------------- C API (emu_api.h)

void* emu_alloc(size_t bytes) {
    void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    if (p) regions().push_back(Region{(uintptr_t)p, (uintptr_t)p + (bytes + 255) / 256 * 256 + 256});
    return p;
}

void emu_free(void* p) {
    auto& rs = regions();
    rs.erase(std::remove_if(rs.begin(), rs.end(), [p](const Region& r) { return r.lo == (uintptr_t)p; }), rs.end());
    std::free(p);
}

int emu_config(const char* variant, int* out8) {
    auto it = registry().find(variant);
    if (it == registry().end() || !it->second.hasConfig) return -1;
    std::memcpy(out8, it->second.config, sizeof it->second.config);
    return 0;
}

int emu_variants(char* buf, int n) {
    std::string s;
    for (auto& kv : registry()) s += kv.first + "\n";
    std::snprintf(buf, n, "%s", s.c_str());
    return (int)s.size();
}

int emu_launch(const char* variant, const char* kernel, int grid, int block, int smem, const uint64_t* args, int nargs,
               int eager, unsigned seed, char* err, int errlen) {
    auto report = [&](const std::string& m) {
        std::snprintf(err, errlen, "%s", m.c_str());
        return -1;
    };
    auto vit = registry().find(variant);
    if (vit == registry().end()) return report(std::string("unknown variant ") + variant);
    auto kit = vit->second.kernels.find(kernel);
    if (kit == vit->second.kernels.end()) return report(std::string("variant ") + variant + " has no kernel " + kernel);
    const Kernel& k = kit->second;
    if (grid <= 0 || block <= 0) return report("empty launch");
    if (k.reduce) {
        if (nargs != k.nargs) return report(std::string(kernel) + " takes " + std::to_string(k.nargs) + " arguments, got " + std::to_string(nargs));
        for (long long t = 0; t < (long long)grid * block; t++) k.reduce(args, t, (long long)grid * block);
        return 0;
    }
    if (nargs != k.nargs) return report(std::string(kernel) + " takes " + std::to_string(k.nargs) + " arguments, got " + std::to_string(nargs));
    if (block != k.threads) return report("block of " + std::to_string(block) + " threads, kernel needs " + std::to_string(k.threads));
    if (smem < k.smem) return report("dynamic shared memory " + std::to_string(smem) + " < " + std::to_string(k.smem));
    std::vector<unsigned char> sm((size_t)smem + 64);
    unsigned char* smemp = sm.data() + (16 - (uintptr_t)sm.data() % 16) % 16;
    std::mt19937 rng(seed);
    Run r;
    r.k = &k;
    r.args = args;
    r.smem = smemp;
    r.eager = eager != 0;
    run_ = &r;
    for (int b = 0; b < grid && r.err.empty(); b++) {
        r.bid = b;
        std::memset(smemp, 0xff, smem);  // NaN everywhere: unwritten stages show
        run_cta(r, block, rng);
    }
    run_ = nullptr;
    if (!r.err.empty()) return report(r.err);
    return 0;
}
