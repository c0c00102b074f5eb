//go:build expertrt_gemmemu

package gemmemu

import (
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/internal/gemmplan"
)

// splitVariants are the variants TestGroupRowsSplit forces: SIMT KC and RS float32, float64, TF32
// mma.sync and wgmma (its tile writes the partials through gemm_entry like the others).
var splitVariants = []string{"f32_128x64x16_s3", "f32_256x128x8_rs_s2", "f32_128x32x8_s4", "f64_64x64x8_s3", "tf32_128x128x16_w4_s4", "wg_tf32_128x256x32_s4"}

// TestGroupRowsSplit runs grouped-rows products with the reduction split in 2 and 3 (Options.Splits)
// on a few variants: odd N and K, K not a multiple of the chunk, empty experts, capacity plans (rows
// after offsets[E] must stay unwritten), misaligned operands; against the float64 reference, guards
// intact, and bitwise identical across cp.async modes and thread orders.
func TestGroupRowsSplit(t *testing.T) {
	forRowsCases(t, splitVariants, rowsCases, 5, func(t *testing.T, v gemmplan.Variant, gi int, p problem, a, b, want, mag []float64) {
		for _, s := range []int{2, 3} {
			opt := gemmplan.Options{Force: v.Name, TF32: v.TF32, Splits: s}
			r0, pl := run(t, p, a, b, opt, Mode{Seed: uint32(gi)})
			if pl.Variant.Name != v.Name {
				if v.WG {
					continue // A's rows are not whole 16-byte vectors: the wgmma tile cannot read it
				}
				t.Fatalf("%v: planned %s, forced %s", p, pl.Variant.Name, v.Name)
			}
			wantS := min(s, (p.K+v.BK-1)/v.BK)
			if _, c := splitChunk(p.K, v.BK, wantS); pl.Splits < 2 || pl.KChunk != c {
				t.Fatalf("%v splits %d: planned %d splits of %d, want chunk %d", p, s, pl.Splits, pl.KChunk, c)
			}
			check(t, v.Name, p, r0, want, mag, pl.Splits, tf32Term(pl.Variant))
			if r0.fault != 0 {
				t.Errorf("%v: fault %d on valid offsets", p, r0.fault)
			}
			r1, _ := run(t, p, a, b, opt, Mode{Eager: true, Seed: uint32(gi) + 77})
			if r1.bits != r0.bits {
				t.Errorf("%v splits %d: results differ between cp.async modes / thread orders", p, s)
			}
		}
	})
}

// rowsCase is a grouped-rows problem of the split and stream-K tests: E experts over rows (segments of
// the pattern), reduction k, n columns, operand misalignment.
type rowsCase struct {
	E, rows, k, n int
	pattern       string
	misalign      [3]int
}

// rowsCases: odd N and K, K not a multiple of the chunk, empty experts, capacity plans (rows after
// offsets[E] must stay unwritten), misaligned operands.
var rowsCases = []rowsCase{
	{3, 200, 133, 20, "", [3]int{}},
	{70, 260, 45, 7, "", [3]int{}}, // many empty experts, odd N
	{5, 150, 132, 24, "one", [3]int{}},
	{4, 170, 100, 36, "capacity", [3]int{}},
	{6, 190, 132, 40, "capacity", [3]int{1, 0, 0}},
	{3, 130, 133, 33, "skew", [3]int{0, 1, 1}},
}

// forRowsCases runs fn, in a subtest per variant of names (those selected), on every case (the odd
// ones only without -short) with B in both layouts: the problem, random inputs and the float64
// reference.
func forRowsCases(t *testing.T, names []string, cases []rowsCase, seed int64, fn func(t *testing.T, v gemmplan.Variant, gi int, p problem, a, b, want, mag []float64)) {
	vs := map[string]gemmplan.Variant{}
	for _, v := range variants(t) {
		vs[v.Name] = v
	}
	for _, name := range names {
		v, ok := vs[name]
		if !ok {
			t.Fatalf("variant %s not in gemm.variants", name)
		}
		if !selected(name) {
			continue
		}
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			for gi, g := range cases {
				if testing.Short() && gi%2 == 1 {
					continue
				}
				off := segments(rng, g.E, g.rows, g.pattern)
				for _, tb := range []bool{false, true} {
					p := problem{Problem: gemmplan.Problem{Mode: gemmplan.GroupRows, Double: v.Double, TransB: tb, N: g.n, K: g.k, E: g.E, Rows: g.rows}, offsets: off, misalign: g.misalign}
					na, nb, _ := p.sizes()
					a, b := randVals(rng, na, p), randVals(rng, nb, p)
					want, mag := p.reference(a, b)
					fn(t, v, gi, p, a, b, want, mag)
				}
			}
		})
	}
}

// splitChunk mirrors the planner's chunking: s chunks of a multiple of bk.
func splitChunk(k, bk, s int) (int, int) {
	c := (k + s - 1) / s
	c = (c + bk - 1) / bk * bk
	return (k + c - 1) / c, c
}

// TestGroupRowsSplitBadOffsets: with the reduction split, offsets that are not segments of [0, rows)
// still raise the fault word, and neither the tiles nor gemm_reduce_rows (which clamps offsets[0] and
// offsets[E] to [0, rows]) write outside C.
func TestGroupRowsSplitBadOffsets(t *testing.T) {
	checkBadOffsets(t, gemmplan.Options{Force: "f32_128x32x8_s4", Splits: 2}, func(pl *gemmplan.Plan) bool { return pl.Splits == 2 })
}

// checkBadOffsets runs a grouped-rows product planned with opt (planned checks the plan) on offsets
// that are not segments of [0, rows): the fault word is raised and nothing outside C is written.
func checkBadOffsets(t *testing.T, opt gemmplan.Options, planned func(*gemmplan.Plan) bool) {
	rng := rand.New(rand.NewSource(9))
	for _, off := range [][]int32{{0, 50, 20, 60}, {5, 10, 20, 60}, {-3, 10, 20, 60}, {0, 10, 20, 1 << 30}, {70, 80, 90, 100}} {
		p := problem{Problem: gemmplan.Problem{Mode: gemmplan.GroupRows, E: 3, Rows: 60, K: 40, N: 12}, offsets: off}
		na, nb, nc := p.sizes()
		a, b := randVals(rng, na, p), randVals(rng, nb, p)
		r, pl := run(t, p, a, b, opt, Mode{Seed: 1})
		if !planned(pl) {
			t.Fatalf("options %+v: planned %s, %d splits, stream-K %t", opt, pl.Variant.Name, pl.Splits, pl.StreamK)
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
