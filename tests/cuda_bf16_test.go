//go:build expertrt_cuda

package tests

import "testing"

// GPU tests of mixed precision at layer sizes (checks in bf16_parity_test.go). TestCUDAConformance/BF16
// covers every rule of ops.MixedPrecisionBackend at small sizes.

// TestCUDABF16Kernels: bf16.cu against the CPU reference at Mixtral-like sizes (vector paths) and odd
// ones (scalar paths, H not a multiple of 8).
func TestCUDABF16Kernels(t *testing.T) {
	b := cudaBackend(t)
	checkBF16Kernels(t, b, []permShape{{4096, 8, 2, 1024}, {1000, 16, 4, 1030}, {333, 64, 6, 2048}}, 1<<20+5, 8192*1792+3)
}

// TestCUDABF16GEMM: the bfloat16 grouped and dense products at the Mixtral-like shape (H=1024, F=3584,
// E=8, K=2; T=2048 keeps the CPU reference short) and a small-expert one, on the GEMM family's bf16
// tensor-core kernels (Bf16Tile).
func TestCUDABF16GEMM(t *testing.T) {
	checkBF16GEMM(t, cudaBackend(t), []gemmShape{{2048, 1024, 3584, 8, 2}, {512, 2048, 1408, 64, 6}})
}

// TestCUDABF16Training: mixed-precision Adam training of the layer task on the GPU against the CPU.
func TestCUDABF16Training(t *testing.T) { checkBF16Training(t, cudaBackend(t)) }
