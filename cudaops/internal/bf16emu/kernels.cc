// The kernels of cudaops/bf16.cu, compiled for the CPU with emu.h, behind a C API (emu_api.h).
#include "emu.h"
#include "srchash.h"  // changes with the kernel sources: Go rebuilds this file

#include "../../bf16.cu"

#include "emu_api.h"

extern "C" {

void emu_cast(int from, int to, const void* src, void* dst, long long n, int vec, int grid, int block) {
    emu_launch(grid, block, [&] {
        // dtype codes: 0 float32, 1 float64, 2 bfloat16
        if (from == 0 && to == 2) cast_f32_bf16((const float*)src, (bf16_t*)dst, n, vec);
        if (from == 1 && to == 2) cast_f64_bf16((const double*)src, (bf16_t*)dst, n, vec);
        if (from == 2 && to == 0) cast_bf16_f32((const bf16_t*)src, (float*)dst, n, vec);
        if (from == 2 && to == 1) cast_bf16_f64((const bf16_t*)src, (double*)dst, n, vec);
        if (from == 0 && to == 1) cast_f32_f64((const float*)src, (double*)dst, n, vec);
        if (from == 1 && to == 0) cast_f64_f32((const double*)src, (float*)dst, n, vec);
    });
}

void emu_add(const void* a, const void* b, void* out, long long n, int incr, int vec, int grid, int block) {
    emu_launch(grid, block, [&] { ew_add_bf16((const bf16_t*)a, (const bf16_t*)b, (bf16_t*)out, n, incr, vec); });
}

void emu_dispatch(int f32, int vec, const void* x, const float* w, const int* rowOf, const int* kept, void* out, int T,
                  int K, int H, int keep, int grid, int block) {
    emu_launch(grid, block, [&] {
        bf16_t* o = (bf16_t*)out;
        if (f32 && vec) dispatch_bf16_from_f32_v8((const float*)x, w, rowOf, kept, o, T, K, H, keep);
        if (f32 && !vec) dispatch_bf16_from_f32((const float*)x, w, rowOf, kept, o, T, K, H, keep);
        if (!f32 && vec) dispatch_bf16_from_bf16_v8((const bf16_t*)x, w, rowOf, kept, o, T, K, H, keep);
        if (!f32 && !vec) dispatch_bf16_from_bf16((const bf16_t*)x, w, rowOf, kept, o, T, K, H, keep);
    });
}

void emu_combine(int f32, int vec, const void* ye, const float* w, const int* rowOf, const int* kept, void* out, int T,
                 int K, int H, int grid, int block) {
    emu_launch(grid, block, [&] {
        const bf16_t* y = (const bf16_t*)ye;
        if (f32 && vec) combine_bf16_to_f32_v8(y, w, rowOf, kept, (float*)out, T, K, H);
        if (f32 && !vec) combine_bf16_to_f32(y, w, rowOf, kept, (float*)out, T, K, H);
        if (!f32 && vec) combine_bf16_to_bf16_v8(y, w, rowOf, kept, (bf16_t*)out, T, K, H);
        if (!f32 && !vec) combine_bf16_to_bf16(y, w, rowOf, kept, (bf16_t*)out, T, K, H);
    });
}

void emu_gradw(int f32, int vec, const void* dy, const void* ye, const int* rowOf, const int* kept, float* dw, int T,
               int K, int H, int grid, int block) {
    emu_launch(grid, block, [&] {
        const bf16_t* y = (const bf16_t*)ye;
        if (f32 && vec) combine_gradw_bf16_dy_f32_v8((const float*)dy, y, rowOf, kept, dw, T, K, H);
        if (f32 && !vec) combine_gradw_bf16_dy_f32((const float*)dy, y, rowOf, kept, dw, T, K, H);
        if (!f32 && vec) combine_gradw_bf16_dy_bf16_v8((const bf16_t*)dy, y, rowOf, kept, dw, T, K, H);
        if (!f32 && !vec) combine_gradw_bf16_dy_bf16((const bf16_t*)dy, y, rowOf, kept, dw, T, K, H);
    });
}

void emu_swiglu(const void* gate, const void* up, void* out, long long n, int vec, int grid, int block) {
    emu_launch(grid, block, [&] { swiglu_bf16((const bf16_t*)gate, (const bf16_t*)up, (bf16_t*)out, n, vec); });
}

void emu_swiglu_grad(const void* gate, const void* up, const void* dout, void* dgate, void* dup, long long n, int vec,
                     int grid, int block) {
    emu_launch(grid, block, [&] {
        swiglu_grad_bf16((const bf16_t*)gate, (const bf16_t*)up, (const bf16_t*)dout, (bf16_t*)dgate, (bf16_t*)dup, n,
                         vec);
    });
}
}
