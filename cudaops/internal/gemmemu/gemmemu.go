//go:build expertrt_gemmemu

// Package gemmemu runs the cudaops GEMM kernels (cudaops/gemm.cu, gemm.cuh) on the CPU, compiled from
// the very same source as the PTX (emu.h supplies the CUDA features they use), so that the kernels'
// indexing, scheduling, pipelining and bounds handling, and the launch plans of package gemmplan, are
// tested on machines without a GPU:
//
//	go test -tags expertrt_gemmemu ./cudaops/internal/gemmemu
//
// Each CTA runs as one coroutine per CUDA thread, switched at __syncthreads, mma.sync and ldmatrix;
// cp.async copies land only at the cp.async.wait_group that must cover them; threads resume in a
// shuffled order after every barrier; shared memory starts as NaN; cp.async sources must lie in memory from Alloc.
// What it cannot show: timing, bank conflicts, hardware faults, and races that need true parallelism
// beyond barrier ordering (compute-sanitizer racecheck covers those on the GPU). The emulator is one
// device: launches must not run concurrently (its tests are serial).
package gemmemu

//go:generate go run gen.go

// #cgo CXXFLAGS: -std=c++17 -O1 -Wall -Wno-unknown-pragmas -Wno-unused-function -Wno-unused-variable
// #include <stdlib.h>
// #include "emu_api.h"
import "C"

import (
	"fmt"
	"strings"
	"unsafe"

	"github.com/expertrt/expertrt-go/cudaops/internal/gemmplan"
)

// Buffer is emulator memory (cp.async may read it).
type Buffer struct {
	p     unsafe.Pointer
	bytes int
}

// Alloc returns a buffer of at least bytes bytes, 256-byte aligned.
func Alloc(bytes int) (*Buffer, error) {
	p := C.emu_alloc(C.size_t(max(bytes, 1)))
	if p == nil {
		return nil, fmt.Errorf("gemmemu: allocating %d bytes failed", bytes)
	}
	return &Buffer{p: p, bytes: bytes}, nil
}

// Free releases the buffer.
func (b *Buffer) Free() { C.emu_free(b.p) }

// Addr is the buffer's address plus off bytes, as a kernel argument.
func (b *Buffer) Addr(off int) uint64 { return uint64(uintptr(b.p)) + uint64(off) }

// Bytes views the buffer.
func (b *Buffer) Bytes() []byte { return unsafe.Slice((*byte)(b.p), b.bytes) }

// Float32s views the buffer as float32s.
func (b *Buffer) Float32s() []float32 { return unsafe.Slice((*float32)(b.p), b.bytes/4) }

// Float64s views the buffer as float64s.
func (b *Buffer) Float64s() []float64 { return unsafe.Slice((*float64)(b.p), b.bytes/8) }

// Uint16s views the buffer as uint16s (bfloat16 bit patterns).
func (b *Buffer) Uint16s() []uint16 { return unsafe.Slice((*uint16)(b.p), b.bytes/2) }

// Int32s views the buffer as int32s.
func (b *Buffer) Int32s() []int32 { return unsafe.Slice((*int32)(b.p), b.bytes/4) }

// Config returns the variant's gemm_config as compiled into the emulator.
func Config(variant string) ([8]int32, error) {
	var out [8]C.int
	cs := C.CString(variant)
	defer C.free(unsafe.Pointer(cs))
	if C.emu_config(cs, &out[0]) != 0 {
		return [8]int32{}, fmt.Errorf("gemmemu: variant %s is not compiled in (go generate)", variant)
	}
	var r [8]int32
	for i, v := range out {
		r[i] = int32(v)
	}
	return r, nil
}

// Variants lists the compiled variants.
func Variants() []string {
	buf := make([]byte, 1<<16)
	n := C.emu_variants((*C.char)(unsafe.Pointer(&buf[0])), C.int(len(buf)))
	return strings.Fields(string(buf[:min(int(n), len(buf))]))
}

// Mode controls the emulation of one launch.
type Mode struct {
	// Eager completes cp.async copies at issue instead of at the latest allowed point.
	Eager bool
	// Seed orders the threads after each barrier.
	Seed uint32
}

// Launch runs one planned launch.
func Launch(l gemmplan.Launch, m Mode) error {
	cv, ck := C.CString(l.Variant), C.CString(l.Kernel)
	defer C.free(unsafe.Pointer(cv))
	defer C.free(unsafe.Pointer(ck))
	args := (*C.uint64_t)(C.malloc(C.size_t(8 * max(len(l.Args), 1))))
	defer C.free(unsafe.Pointer(args))
	as := unsafe.Slice((*uint64)(unsafe.Pointer(args)), max(len(l.Args), 1))
	copy(as, l.Args)
	var errBuf [512]C.char
	eager := 0
	if m.Eager {
		eager = 1
	}
	if C.emu_launch(cv, ck, C.int(l.Grid), C.int(l.Block), C.int(l.Smem), args, C.int(len(l.Args)), C.int(eager),
		C.uint(m.Seed), &errBuf[0], C.int(len(errBuf))) != 0 {
		return fmt.Errorf("gemmemu: %s/%s grid %d: %s", l.Variant, l.Kernel, l.Grid, C.GoString(&errBuf[0]))
	}
	return nil
}
