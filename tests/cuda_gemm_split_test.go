//go:build expertrt_cuda

package tests

import (
	"fmt"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops"
	"gorgonia.org/tensor"
)

// TestCUDAGemmGroupedSplit: the grouped products with the reduction of the grouped-rows products
// (forward x·W[e] and dX = dY·W[e]ᵀ) split in 2 and 3 (Options.GemmSplits; gemm_reduce_rows sums the
// partials of the rows the offsets cover) against float64 loops, with guard bands, rows after
// offsets[E] untouched and two runs bitwise equal (runGrouped): the planner's variant, the fp32 KC and
// RS tiles, fp64, TF32 mma.sync and, where the device runs it, the wgmma tile (K = 132: rows of whole
// 16-byte vectors). The shapes have K from 45 to 133, so every split count applies.
func TestCUDAGemmGroupedSplit(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	configs := append(append([]gemmConfig{}, scheduleConfigs...),
		gemmConfig{tensor.Float32, true, "wg_tf32_128x256x32_s4"}) // the planner's choice elsewhere than sm_90
	for _, c := range configs {
		for _, s := range []int{2, 3} {
			t.Run(fmt.Sprintf("%v/%s/splits%d", c.dt, c.label(), s), func(t *testing.T) {
				runGroupedWith(t, d, c, scheduleCases, 100, cudaops.WithGemmSplits(s))
			})
		}
	}
}

// scheduleConfigs are the configurations of the split-K and stream-K tests: the planner's fp32 and fp64
// choices, the fp32 KC and RS tiles, TF32 mma.sync.
var scheduleConfigs = []gemmConfig{
	{tensor.Float32, false, ""},
	{tensor.Float32, false, "f32_128x64x16_s3"},
	{tensor.Float32, false, "f32_256x128x8_rs_s2"},
	{tensor.Float64, false, ""},
	{tensor.Float32, true, "tf32_128x128x16_w4_s4"},
}

// scheduleCases are the grouped shapes of the split-K and stream-K tests.
var scheduleCases = []groupedCase{
	{E: 4, N: 129, In: 133, Out: 45, pattern: "random"},
	{E: 8, N: 300, In: 132, Out: 100, pattern: "half"},
	{E: 6, N: 150, In: 100, Out: 132, pattern: "one"},
	{E: 70, N: 520, In: 132, Out: 68, pattern: "random"}, // many empty experts
	{E: 3, N: 200, In: 128, Out: 133, misaligned: true, pattern: "random"},
	{E: 5, N: 170, In: 132, Out: 132, pattern: "capacity"}, // offsets[E] < N: the last rows dropped
}

// gemmConfig is a product class and a forced tile configuration ("": the planner's).
type gemmConfig struct {
	dt      tensor.Dtype
	tf32    bool
	variant string
}

func (c gemmConfig) label() string {
	if c.variant == "" {
		return "auto"
	}
	return c.variant
}

// runGroupedWith runs runGrouped on cases (the odd ones only without -short, seeds from seed0) on a
// handle of d with c's options and extra.
func runGroupedWith(t *testing.T, d *cudaops.Device, c gemmConfig, cases []groupedCase, seed0 int64, extra ...cudaops.Option) {
	h, err := d.With(append([]cudaops.Option{cudaops.WithTF32(c.tf32), cudaops.WithGemmVariant(c.variant)}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	hb := cudaops.NewBackend(h)
	for i, gc := range cases {
		if testing.Short() && i%2 == 1 {
			continue
		}
		runGrouped(t, hb, c.dt, c.tf32, gc, seed0+int64(i))
	}
}
