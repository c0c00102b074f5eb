//go:build expertrt_gemmemu

package gemmemu

import (
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/internal/gemmplan"
)

// skVariants are the variants TestGroupRowsStreamK forces: SIMT KC and RS float32, float64 and TF32
// mma.sync (the modules with gemm_sk_fixup).
var skVariants = []string{"f32_128x64x16_s3", "f32_256x128x8_rs_s2", "f32_128x32x8_s4", "f64_64x64x8_s3", "tf32_128x128x16_w4_s4"}

// TestGroupRowsStreamK runs grouped-rows products with stream-K forced (Options.StreamK) on devices of
// 1, 3 and 4 multiprocessors, so that the CTAs' iteration ranges cut tiles anywhere, after data-parallel
// waves or without them (few tiles): a tile split over
// two or more CTAs, CTAs with no iterations (fewer iterations than CTAs), K = 1 (one iteration per
// tile), odd N and K, empty experts, capacity plans (rows after offsets[E] stay unwritten), misaligned
// operands. Against the float64 reference with guards intact, and bitwise identical across cp.async
// modes and thread orders.
func TestGroupRowsStreamK(t *testing.T) {
	vs := map[string]gemmplan.Variant{}
	for _, v := range variants(t) {
		vs[v.Name] = v
	}
	type grouped struct {
		E, rows, k, n int
		pattern       string
		misalign      [3]int
	}
	gs := []grouped{
		{3, 200, 133, 20, "", [3]int{}},
		{70, 260, 45, 7, "", [3]int{}}, // many empty experts, odd N
		{5, 150, 132, 24, "one", [3]int{}},
		{4, 170, 100, 36, "capacity", [3]int{}},
		{6, 190, 132, 40, "capacity", [3]int{1, 0, 0}},
		{3, 130, 133, 33, "skew", [3]int{0, 1, 1}},
		{2, 9, 1, 5, "", [3]int{}},      // K = 1: no tile is split
		{8, 600, 300, 40, "", [3]int{}}, // data-parallel waves before the stream-K tiles
	}
	for _, name := range skVariants {
		v, ok := vs[name]
		if !ok {
			t.Fatalf("variant %s not in gemm.variants", name)
		}
		if !selected(name) {
			continue
		}
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(7))
			for gi, g := range gs {
				if testing.Short() && gi%2 == 1 {
					continue
				}
				off := segments(rng, g.E, g.rows, g.pattern)
				for _, tb := range []bool{false, true} {
					p := problem{Problem: gemmplan.Problem{Mode: gemmplan.GroupRows, Double: v.Double, TransB: tb, N: g.n, K: g.k, E: g.E, Rows: g.rows}, offsets: off, misalign: g.misalign}
					na, nb, _ := p.sizes()
					a, b := randVals(rng, na, p), randVals(rng, nb, p)
					want, mag := p.reference(a, b)
					for _, sms := range []int{1, 3, 4} {
						tgt := target
						tgt.SMs = sms
						opt := gemmplan.Options{Force: name, TF32: v.TF32, StreamK: true}
						r0, pl := runOn(t, tgt, p, a, b, opt, Mode{Seed: uint32(gi)})
						if pl.Variant.Name != name || !pl.StreamK || pl.Splits != 1 {
							t.Fatalf("%v on %d SMs: planned %s stream-K %t splits %d, forced %s with stream-K", p, sms, pl.Variant.Name, pl.StreamK, pl.Splits, name)
						}
						// a tile's partials: at most one per CTA
						check(t, name, p, r0, want, mag, pl.CTAs, tf32Term(pl.Variant))
						if r0.fault != 0 {
							t.Errorf("%v: fault %d on valid offsets", p, r0.fault)
						}
						r1, _ := runOn(t, tgt, p, a, b, opt, Mode{Eager: true, Seed: uint32(gi) + 77})
						if r1.bits != r0.bits {
							t.Errorf("%v on %d SMs: results differ between cp.async modes / thread orders", p, sms)
						}
					}
				}
			}
		})
	}
}

// TestGroupRowsStreamKBadOffsets: under stream-K, offsets that are not segments of [0, rows) still raise
// the fault word, and neither the main kernel nor gemm_sk_fixup writes outside C.
func TestGroupRowsStreamKBadOffsets(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	for _, off := range [][]int32{{0, 50, 20, 60}, {5, 10, 20, 60}, {-3, 10, 20, 60}, {0, 10, 20, 1 << 30}, {70, 80, 90, 100}} {
		p := problem{Problem: gemmplan.Problem{Mode: gemmplan.GroupRows, E: 3, Rows: 60, K: 40, N: 12}, offsets: off}
		na, nb, nc := p.sizes()
		a, b := randVals(rng, na, p), randVals(rng, nb, p)
		r, pl := run(t, p, a, b, gemmplan.Options{Force: "f32_128x32x8_s4", StreamK: true}, Mode{Seed: 1})
		if !pl.StreamK {
			t.Fatalf("stream-K forced, not planned")
		}
		if r.fault != 32 {
			t.Errorf("offsets %v: fault word %d, want 32 (GEMM_FAULT_OFFSETS)", off, r.fault)
		}
		for i, v := range r.c {
			inside := i >= guard && i < guard+nc
			if !inside && !math.IsNaN(v) {
				t.Errorf("offsets %v: guard %d written", off, i)
				break
			}
		}
		if off[0] == 5 { // rows before offsets[0] are not C's: untouched
			for i := guard; i < guard+5*p.N; i++ {
				if !math.IsNaN(r.c[i]) {
					t.Errorf("offsets %v: C[%d] before offsets[0] written", off, i-guard)
					break
				}
			}
		}
	}
}
