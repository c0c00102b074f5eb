//go:build expertrt_bf16emu

// Package bf16emu runs the kernels of cudaops/bf16.cu on the CPU, compiled from the very same source as
// their PTX (emu.h supplies the CUDA features they use: warps of 32 threads meeting at each shuffle,
// thread and block indices, 16-byte vector types, the conversion intrinsics), so that their indexing,
// vector and scalar paths, grid-stride loops and bit-exact conversions are tested against the CPU
// reference on machines without a GPU:
//
//	go test -tags expertrt_bf16emu ./cudaops/internal/bf16emu
//
// What it cannot show: timing, memory faults the host would not raise, and CUDA's own expf (SwiGLU is
// compared within a tolerance).
package bf16emu

//go:generate go run gen.go

// #cgo CXXFLAGS: -std=c++20 -O1 -Wall -Wno-unknown-pragmas -Wno-unused-function -Wno-unused-variable
// #cgo LDFLAGS: -lpthread
// #include <stdlib.h>
// #include "emu_api.h"
import "C"

import "unsafe"

// Launch is a grid of Grid blocks of Block threads (a multiple of 32).
type Launch struct{ Grid, Block int }

// Dtype codes of the C API.
const (
	F32  = 0
	F64  = 1
	BF16 = 2
)

// Buffer is C memory (16-byte aligned, as device allocations are); free it with Free.
type Buffer struct {
	P     unsafe.Pointer
	Bytes int
}

// Alloc returns a zeroed buffer of bytes bytes.
func Alloc(bytes int) Buffer {
	p := C.calloc(C.size_t(max(bytes, 16)), 1)
	return Buffer{P: p, Bytes: bytes}
}

// Free releases b.
func (b Buffer) Free() { C.free(b.P) }

func b2i(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Cast runs cast_<from>_<to> over n elements.
func Cast(from, to int, src, dst Buffer, n int, vec bool, l Launch) {
	C.emu_cast(C.int(from), C.int(to), src.P, dst.P, C.longlong(n), b2i(vec), C.int(l.Grid), C.int(l.Block))
}

// Add runs ew_add_bf16.
func Add(a, b, out Buffer, n int, incr, vec bool, l Launch) {
	C.emu_add(a.P, b.P, out.P, C.longlong(n), b2i(incr), b2i(vec), C.int(l.Grid), C.int(l.Block))
}

// Dispatch runs dispatch_bf16_from_{bf16,f32}[_v8]; w may be the zero Buffer (no weights); kept holds
// offsets[E] (one int32: slots of rows >= it were dropped).
func Dispatch(f32, vec bool, x, w, rowOf, kept, out Buffer, T, K, H int, keep bool, l Launch) {
	C.emu_dispatch(b2i(f32), b2i(vec), x.P, (*C.float)(w.P), (*C.int)(rowOf.P), (*C.int)(kept.P), out.P, C.int(T), C.int(K), C.int(H), b2i(keep), C.int(l.Grid), C.int(l.Block))
}

// Combine runs combine_bf16_to_{bf16,f32}[_v8]; w may be the zero Buffer.
func Combine(f32, vec bool, ye, w, rowOf, kept, out Buffer, T, K, H int, l Launch) {
	C.emu_combine(b2i(f32), b2i(vec), ye.P, (*C.float)(w.P), (*C.int)(rowOf.P), (*C.int)(kept.P), out.P, C.int(T), C.int(K), C.int(H), C.int(l.Grid), C.int(l.Block))
}

// GradW runs combine_gradw_bf16_dy_{bf16,f32}[_v8].
func GradW(f32, vec bool, dy, ye, rowOf, kept, dw Buffer, T, K, H int, l Launch) {
	C.emu_gradw(b2i(f32), b2i(vec), dy.P, ye.P, (*C.int)(rowOf.P), (*C.int)(kept.P), (*C.float)(dw.P), C.int(T), C.int(K), C.int(H), C.int(l.Grid), C.int(l.Block))
}

// SwiGLU runs swiglu_bf16.
func SwiGLU(gate, up, out Buffer, n int, vec bool, l Launch) {
	C.emu_swiglu(gate.P, up.P, out.P, C.longlong(n), b2i(vec), C.int(l.Grid), C.int(l.Block))
}

// SwiGLUGrad runs swiglu_grad_bf16.
func SwiGLUGrad(gate, up, dout, dgate, dup Buffer, n int, vec bool, l Launch) {
	C.emu_swiglu_grad(gate.P, up.P, dout.P, dgate.P, dup.P, C.longlong(n), b2i(vec), C.int(l.Grid), C.int(l.Block))
}
