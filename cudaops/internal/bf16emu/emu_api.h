// C API of the emulated bf16.cu kernels (kernels.cc): each runs one launch of grid blocks of block
// threads on the CPU. dtype codes: 0 float32, 1 float64, 2 bfloat16.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

void emu_cast(int from, int to, const void* src, void* dst, long long n, int vec, int grid, int block);
void emu_add(const void* a, const void* b, void* out, long long n, int incr, int vec, int grid, int block);
void emu_dispatch(int f32, int vec, const void* x, const float* w, const int* rowOf, const int* kept, void* out, int T,
                  int K, int H, int keep, int grid, int block);
void emu_combine(int f32, int vec, const void* ye, const float* w, const int* rowOf, const int* kept, void* out, int T,
                 int K, int H, int grid, int block);
void emu_gradw(int f32, int vec, const void* dy, const void* ye, const int* rowOf, const int* kept, float* dw, int T,
               int K, int H, int grid, int block);
void emu_swiglu(const void* gate, const void* up, void* out, long long n, int vec, int grid, int block);
void emu_swiglu_grad(const void* gate, const void* up, const void* dout, void* dgate, void* dup, long long n, int vec,
                     int grid, int block);

#ifdef __cplusplus
}
#endif
