//go:build expertrt_cuda

package tests

import (
	"testing"

	"github.com/expertrt/expertrt-go/cudaops"
	"gorgonia.org/tensor"
)

// TestCUDAGemmGroupedStreamK: the grouped products with stream-K forced on the grouped-rows products
// (Options.GemmStreamK: the device's resident CTAs share the tiles' k-iterations, gemm_sk_fixup sums
// the tiles two or more CTAs share) against float64 loops, with guard bands, rows after offsets[E]
// untouched and two runs bitwise equal (runGrouped): the planner's fp32 and fp64 variants, the fp32 KC
// and RS tiles and TF32 mma.sync. With 132 multiprocessors and these small grids most CTAs get a few
// k-iterations of one tile, some none: every tile is cut somewhere; the last two cases have enough
// tiles for data-parallel waves before the stream-K tiles.
func TestCUDAGemmGroupedStreamK(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	cases := []groupedCase{
		{E: 4, N: 129, In: 133, Out: 45, pattern: "random"},
		{E: 8, N: 300, In: 132, Out: 100, pattern: "half"},
		{E: 6, N: 150, In: 100, Out: 132, pattern: "one"},
		{E: 70, N: 520, In: 132, Out: 68, pattern: "random"}, // many empty experts
		{E: 3, N: 200, In: 128, Out: 133, misaligned: true, pattern: "random"},
		{E: 5, N: 170, In: 132, Out: 132, pattern: "capacity"}, // offsets[E] < N: the last rows dropped
		{E: 8, N: 8192, In: 72, Out: 520, pattern: "random"},   // forward: data-parallel waves, then stream-K
		{E: 8, N: 8192, In: 520, Out: 72, pattern: "random"},
	}
	type config struct {
		dt      tensor.Dtype
		tf32    bool
		variant string
	}
	configs := []config{
		{tensor.Float32, false, ""},
		{tensor.Float32, false, "f32_128x64x16_s3"},
		{tensor.Float32, false, "f32_256x128x8_rs_s2"},
		{tensor.Float64, false, ""},
		{tensor.Float32, true, "tf32_128x128x16_w4_s4"},
	}
	for _, c := range configs {
		label := c.variant
		if label == "" {
			label = "auto"
		}
		t.Run(c.dt.String()+"/"+label, func(t *testing.T) {
			h, err := d.With(cudaops.WithTF32(c.tf32), cudaops.WithGemmVariant(c.variant), cudaops.WithGemmStreamK(true))
			if err != nil {
				t.Fatal(err)
			}
			hb := cudaops.NewBackend(h)
			for i, gc := range cases {
				if testing.Short() && i%2 == 1 {
					continue
				}
				runGrouped(t, hb, c.dt, c.tf32, gc, int64(300+i))
			}
		})
	}
}
