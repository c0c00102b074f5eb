//go:build expertrt_gemmemu

package gemmemu

import (
	"math"
	"math/rand"
	"strings"
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
	cases := append(append([]rowsCase{}, rowsCases...),
		rowsCase{2, 9, 1, 5, "", [3]int{}},      // K = 1: no tile is split
		rowsCase{8, 600, 300, 40, "", [3]int{}}, // data-parallel waves before the stream-K tiles
	)
	forRowsCases(t, skVariants, cases, 7, func(t *testing.T, v gemmplan.Variant, gi int, p problem, a, b, want, mag []float64) {
		for _, sms := range []int{1, 3, 4} {
			tgt := target
			tgt.SMs = sms
			opt := gemmplan.Options{Force: v.Name, TF32: v.TF32, StreamK: true}
			r0, pl := runOn(t, tgt, p, a, b, opt, Mode{Seed: uint32(gi)})
			if pl.Variant.Name != v.Name || !pl.StreamK || pl.Splits != 1 {
				t.Fatalf("%v on %d SMs: planned %s stream-K %t splits %d, forced %s with stream-K", p, sms, pl.Variant.Name, pl.StreamK, pl.Splits, v.Name)
			}
			// a tile's partials: at most one per CTA
			check(t, v.Name, p, r0, want, mag, pl.CTAs, tf32Term(pl.Variant))
			if r0.fault != 0 {
				t.Errorf("%v: fault %d on valid offsets", p, r0.fault)
			}
			r1, _ := runOn(t, tgt, p, a, b, opt, Mode{Eager: true, Seed: uint32(gi) + 77})
			if r1.bits != r0.bits {
				t.Errorf("%v on %d SMs: results differ between cp.async modes / thread orders", p, sms)
			}
		}
	})
}

// TestGroupRowsStreamKBadOffsets: under stream-K, offsets that are not segments of [0, rows) still raise
// the fault word, and neither the main kernel nor gemm_sk_fixup writes outside C.
func TestGroupRowsStreamKBadOffsets(t *testing.T) {
	checkBadOffsets(t, gemmplan.Options{Force: "f32_128x32x8_s4", StreamK: true}, func(pl *gemmplan.Plan) bool { return pl.StreamK })
}

// TestModeMismatchFaults: a grouped-rows launch whose kernel does not run its mode (a stream-K launch on
// the kernel without stream-K, or the reverse; the planner never makes one) raises GEMM_FAULT_MODE and
// writes nothing, instead of leaving its output silently unwritten.
func TestModeMismatchFaults(t *testing.T) {
	p := problem{Problem: gemmplan.Problem{Mode: gemmplan.GroupRows, E: 3, Rows: 60, K: 12, N: 10}, offsets: []int32{0, 20, 20, 60}}
	na, nb, _ := p.sizes()
	rng := rand.New(rand.NewSource(5))
	a, b := randVals(rng, na, p), randVals(rng, nb, p)
	for _, sk := range []bool{false, true} {
		opt := gemmplan.Options{Force: "f32_128x32x8_s4", StreamK: sk}
		r, pl := runEdited(t, target, p, a, b, opt, Mode{Seed: 1}, func(ls []gemmplan.Launch) []gemmplan.Launch {
			main := ls[0]
			if sk {
				main.Kernel = "gemm_" + strings.TrimPrefix(main.Kernel, "gemm_sk_")
			} else {
				main.Kernel = "gemm_sk_" + strings.TrimPrefix(main.Kernel, "gemm_")
			}
			return []gemmplan.Launch{main}
		})
		if pl.StreamK != sk {
			t.Fatalf("stream-K %t: planned stream-K %t", sk, pl.StreamK)
		}
		if r.fault != 256 {
			t.Errorf("stream-K %t on the other kernel: fault word %d, want 256 (GEMM_FAULT_MODE)", sk, r.fault)
		}
		for i, v := range r.c {
			if !math.IsNaN(v) {
				t.Errorf("stream-K %t on the other kernel: element %d written", sk, i)
				break
			}
		}
	}
}
