// C interface of the GEMM kernel emulator (emu.cc), for cgo.
#pragma once
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
// emu_alloc returns 256-byte aligned memory registered as readable by cp.async; emu_free releases it.
void* emu_alloc(size_t bytes);
void emu_free(void* p);
// emu_config copies the variant's gemm_config[8]; -1 when the variant is unknown.
int emu_config(const char* variant, int* out8);
// emu_variants writes the registered variant names, one per line.
int emu_variants(char* buf, int n);
// emu_launch runs one kernel of a variant over the grid; 0 on success, else -1 with a message in err.
// eager: cp.async copies complete at issue instead of at the covering wait; seed: thread order.
int emu_launch(const char* variant, const char* kernel, int grid, int block, int smem, const uint64_t* args, int nargs,
               int eager, unsigned seed, char* err, int errlen);
#ifdef __cplusplus
}
#endif
