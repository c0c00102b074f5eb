//go:build expertrt_cuda

package tests

import "testing"

// TestCUDALayerGradientsMatchCPU: one forward and backward pass of the layer task's training graph (MSE
// + aux + z loss; G.Grad w.r.t. the input and every parameter; ops.Runner) on the GPU gives the CPU's
// cost, output, router logits and all five gradients: normwise relative differences (max|gpu-cpu| /
// max|cpu| per tensor) within 1e-4 in float32 and 1e-10 in float64. The data of every size routes with
// a top-k margin of at least 1e-4 (checked), so the comparison never depends on a rounding-level tie.
// The largest size runs the GEMM kernels on full tiles (H=256, F=512, 2048 routed rows).
func TestCUDALayerGradientsMatchCPU(t *testing.T) {
	checkLayerGradients(t, cudaBackend(t), 1e-4, 1e-10, []gradCase{
		{48, 8, 12, 4, 0}, {512, 64, 160, 8, 0}, {1024, 256, 512, 8, 12},
	})
}
