// Package cudaops is the CUDA backend of ExpertRT-Go: a small runtime on the CUDA driver API
// (gorgonia.org/cu), the route, plan, dispatch/combine, grouped-matmul, loss, elementwise and optimizer
// kernels as PTX embedded in the binary, a tensor.Engine over device memory (the shared glue of package
// devengine over this package's kernels), per-training-step device memory, and an ops.Backend that runs
// the op types on device tensors. docs/device-engine.md describes the engine and the memory rules.
//
// Everything that touches the driver is behind the build tag expertrt_cuda:
//
//	go build -tags expertrt_cuda ./...
//
// Without the tag this package holds only logic that needs no driver, tested by CPU CI: the kernel
// declarations and their check against the PTX (kernel_sigs.go, kernelsig.go), device options, the
// fault block and the mapping of device faults to the ops sentinel errors, launch shapes and kernel
// names (grid.go, kernel_args.go); so `go vet ./...`, `go test ./...` and binaries built without the tag
// need no CUDA driver. Building with the tag needs cuda.h and libcuda.so (install-toolchain.sh);
// running needs an NVIDIA driver and GPU; nvcc is needed only to regenerate the PTX (go generate).
//
// Devices and options: Open(ordinal, opts...) opens a device whose Options (sync checks, plan mode,
// TF32, GEMM tile configuration, ...) are fixed for its lifetime; Device.With returns another handle on
// the same device (memory, stream, kernels) with other options. Linking the package registers with ops
// one Backend per GPU, named "cuda:N" (GPU 0's also answers to "cuda": ops.LookupBackend), which opens
// its device on first use, with default options or with those given to OpenRegistered before.
//
// Kernel sources are the .cu files of this directory (one per kernel family); `go generate ./cudaops`
// compiles them with nvcc to ptx/*.ptx (compute_80, JIT-compiled by the driver for the GPU at hand), and
// the generated PTX is committed, so users need no nvcc. ci-check.sh fails when the committed PTX is
// stale: its recorded sources (ptx/sources.sha256) are not the current ones, or its code (nvcc's banner
// comment aside, ptx-diff.sh) differs from what the same nvcc release compiles now. The matrix products (grouped expert matmul, dense MatMul) are the
// GEMM family gemm.cu, compiled once per tile configuration of gemm.variants into ptx/gemm/ and loaded
// on first use; the device options TF32 and GemmVariant select its kernels (docs/gemm.md).
package cudaops

//go:generate ./gen-ptx.sh
