//go:build expertrt_gemmemu

package gemmemu

import (
	"crypto/sha256"
	"fmt"
	"math/rand"
	"os"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/internal/gemmplan"
)

// tailRows are the valid rows of the last m-tile in TestTailTiles: one row, around the 64-row warp
// tiles of the 4x2-warp SIMT tiles (63, 64, 65: one, one, two warp rows active), past half a 256-row
// tile (129) and one short of it (255).
var tailRows = []int{1, 63, 64, 65, 129, 255}

// tailCases: for each tail t, a dense product of BM+t rows (a full m-tile, then one of t rows) in all
// four layouts, and a grouped-rows product (nn, nt) whose experts end in tiles of each tail, with an
// empty expert; N = BN+8 (the last n-tile's warps past column 8 idle too) and K = 5*BK+4 (a partial last
// k-tile; a multiple of 4, so aligned operands take the 16-byte kernels, misaligned ones the others).
func tailCases(v gemmplan.Variant) []problem {
	var ps []problem
	N, K := v.BN+8, 5*v.BK+4
	for _, t := range tailRows {
		// Tails 63 and 129 with every operand misaligned: the one-element (non-VEC) kernels.
		var mis [3]int
		if t == 63 || t == 129 {
			mis = [3]int{1, 1, 1}
		}
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			ps = append(ps, problem{Problem: gemmplan.Problem{Mode: gemmplan.Dense, Double: v.Double, TransA: tr[0], TransB: tr[1], M: v.BM + t, N: N, K: K}, misalign: mis})
		}
	}
	// Expert e has tailRows[e] rows plus e full tiles (expert 2 also none: empty expert 6 follows it).
	off := []int32{0}
	for e, t := range tailRows {
		off = append(off, off[len(off)-1]+int32(t+e%3*v.BM))
		if e == 2 {
			off = append(off, off[len(off)-1])
		}
	}
	rows := int(off[len(off)-1])
	for _, tb := range []bool{false, true} {
		ps = append(ps, problem{Problem: gemmplan.Problem{Mode: gemmplan.GroupRows, Double: v.Double, TransB: tb, N: N, K: K, E: len(off) - 1, Rows: rows}, offsets: off})
	}
	return ps
}

// TestTailTiles runs the SIMT variants (those EXPERTRT_GEMMEMU_VARIANTS selects) on products whose last
// m-tile has few valid rows, where the warps past the last row skip their multiplications (SimtTile),
// against the float64 reference, in both cp.async modes and two thread orders (bitwise equal).
// EXPERTRT_GEMMEMU_DIGEST=file appends one line per result (variant, problem, sha256 of C with its
// guards), so that two versions of the kernel source can be compared bit for bit.
func TestTailTiles(t *testing.T) {
	for _, v := range variants(t) {
		v := v
		if !selected(v.Name) || v.TF32 || v.BF16 {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(13))
			for i, p := range tailCases(v) {
				na, nb, _ := p.sizes()
				a, b := randVals(rng, na, p), randVals(rng, nb, p)
				want, mag := p.reference(a, b)
				opt := gemmplan.Options{Force: v.Name}
				r0, pl := run(t, p, a, b, opt, Mode{Seed: uint32(i)})
				if pl.Variant.Name != v.Name {
					t.Fatalf("%v: planned %s, forced %s", p, pl.Variant.Name, v.Name)
				}
				check(t, v.Name, p, r0, want, mag, pl.Splits, 0)
				r1, _ := run(t, p, a, b, opt, Mode{Eager: true, Seed: uint32(i) + 1000})
				if r1.bits != r0.bits {
					t.Errorf("%v: results differ between cp.async modes / thread orders", p)
				}
				writeDigest(t, v.Name, p, pl.Splits, r0.bits)
			}
		})
	}
}

// writeDigest appends a result's line to the file EXPERTRT_GEMMEMU_DIGEST names (if set): variant,
// problem, splits and the sha256 of C with its guards, to compare two versions of the kernel source
// bit for bit (run the tests once per version and diff the files).
func writeDigest(t testing.TB, variant string, p problem, splits int, bits string) {
	t.Helper()
	path := os.Getenv("EXPERTRT_GEMMEMU_DIGEST")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s %v mis=%v off=%v splits=%d %x\n", variant, p, p.misalign, p.offsets, splits, sha256.Sum256([]byte(bits))); err != nil {
		t.Fatal(err)
	}
}
