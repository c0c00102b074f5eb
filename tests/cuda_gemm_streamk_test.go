//go:build expertrt_cuda

package tests

import (
	"testing"

	"github.com/expertrt/expertrt-go/cudaops"
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
	cases := append(append([]groupedCase{}, scheduleCases...),
		groupedCase{E: 8, N: 8192, In: 72, Out: 520, pattern: "random"}, // forward: data-parallel waves, then stream-K
		groupedCase{E: 8, N: 8192, In: 520, Out: 72, pattern: "random"},
	)
	for _, c := range scheduleConfigs {
		t.Run(c.dt.String()+"/"+c.label(), func(t *testing.T) {
			runGroupedWith(t, d, c, cases, 300, cudaops.WithGemmStreamK(true))
		})
	}
}
