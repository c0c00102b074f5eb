//go:build expertrt_cuda

package tests

import (
	"testing"

	"github.com/expertrt/expertrt-go/cudaops"
	"gorgonia.org/tensor"
)

// TestCUDAGemmWGMMA: the Hopper wgmma TF32 tiles (gemm.variants lines with -DGEMM_WGMMA=1), each forced,
// on the grouped products (forward with both storage orders of W: the in-place and the transposed-copy
// B; dX; dW from transposed copies of x and dY, segments starting anywhere) and the dense MatMul in all
// four transpose combinations, against float64 loops within the TF32 truncation bound, every output
// twice and bitwise equal (guarded), guard bands intact. Shapes: the generic TF32 cases (odd ones fall
// back to the mma.sync tiles where an operand the tile reads in place has rows of other than a multiple
// of 4 elements) and cases the wgmma tile runs throughout: odd M and N, K not a multiple of 32, empty
// experts, one row, multi-wave grids, split-K dense products. The module of each variant must have been
// loaded afterwards (the planner did run it). Compute capability 9.0 only: elsewhere the test reports
// that it is skipped and why.
func TestCUDAGemmWGMMA(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	if !d.GemmWGMMA() {
		maj, min := d.ComputeCapability()
		t.Skipf("wgmma tiles need compute capability 9.0 (sm_90a), device has %d.%d", maj, min)
	}
	vs, err := d.GemmVariants()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vs {
		if v.WGMMA {
			names = append(names, v.Name)
		}
	}
	if len(names) == 0 {
		t.Fatal("no wgmma configurations in gemm.variants")
	}
	grouped := []groupedCase{
		{E: 1, N: 45, In: 24, Out: 40, pattern: "random"},
		{E: 4, N: 129, In: 36, Out: 20, pattern: "random"},   // K % 32 != 0, segments at any row
		{E: 8, N: 300, In: 64, Out: 136, pattern: "half"},    // one expert gets half the rows
		{E: 6, N: 150, In: 20, Out: 24, pattern: "one"},      // all rows on one expert, the rest empty
		{E: 70, N: 520, In: 40, Out: 36, pattern: "random"},  // many empty experts
		{E: 5, N: 1, In: 16, Out: 12, pattern: "random"},     // one row
		{E: 5, N: 170, In: 40, Out: 72, pattern: "capacity"}, // rows after offsets[E] untouched
		{E: 3, N: 700, In: 260, Out: 300, pattern: "random"}, // several k-tiles, partial last tiles
		{E: 4, N: 129, In: 33, Out: 7, pattern: "random"},    // odd K: dW on wgmma, the rest falls back
	}
	dense := []denseCase{
		{1, 1, 4, false}, {130, 70, 44, false}, {200, 9, 600, false}, {129, 257, 36, false},
		{512, 8, 256, false}, {8, 256, 2048, false}, {257, 255, 260, false}, {300, 520, 1000, false},
		{130, 70, 45, false}, {66, 131, 0, false},
	}
	if testing.Short() {
		grouped = []groupedCase{grouped[1], grouped[3], grouped[6], grouped[7]}
		dense = []denseCase{dense[1], dense[3], dense[6], dense[8]}
	}
	for _, n := range names {
		h, err := d.With(cudaops.WithTF32(true), cudaops.WithGemmVariant(n))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(n, func(t *testing.T) {
			bw := cudaops.NewBackend(h)
			for i, c := range grouped {
				runGrouped(t, bw, tensor.Float32, true, c, int64(100+i))
			}
			for i, c := range dense {
				for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
					runDense(t, bw, tensor.Float32, true, c, tr[0], tr[1], int64(200+i))
				}
			}
			if _, ok := h.GemmModuleLoadTimes()[n]; !ok {
				t.Errorf("%s: module never loaded: the planner did not run the variant", n)
			}
		})
	}
	// A layer-size product through the planner's own choice (TF32 on): the Mixtral expert shape.
	h, err := d.With(cudaops.WithTF32(true))
	if err != nil {
		t.Fatal(err)
	}
	runGrouped(t, cudaops.NewBackend(h), tensor.Float32, true, groupedCase{E: 8, N: 2048, In: 256, Out: 512, pattern: "random"}, 300)
}
