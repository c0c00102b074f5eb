//go:build expertrt_bf16emu

package bf16emu

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// The vector permutations convert elements with integer and float32 fast paths (bf16.cu, "bfloat16
// pairs") that hand zeros, subnormals, infinities, NaNs, tiny and huge products to the double path.
// These tests feed them exactly such values, and products and sums that land on or next to a bfloat16
// rounding tie, and require the CPU reference's bits (NaNs: any NaN, as the GPU's NaNs are canonical).

// specialBF16 draws from bit patterns at every boundary of the fast paths, mixed with ordinary values.
func specialBF16(rng *rand.Rand, n int) []ops.BF16 {
	pool := []uint16{0x0000, 0x8000, 0x0001, 0x807f, 0x0040, 0x007f, 0x0080, 0x8080, 0x7f7f, 0xff7f, 0x7f80, 0xff80,
		0x7fc0, 0xffc1, 0x7f81, 0x3f80, 0xbf80, 0x3f81, 0x3f7f, 0x1f80, 0x6000, 0x2000, 0x0c80, 0x0480, 0x7000}
	v := make([]ops.BF16, n)
	for i := range v {
		if rng.Intn(3) == 0 {
			v[i] = ops.BF16(pool[rng.Intn(len(pool))])
		} else {
			v[i] = ops.BF16FromFloat64(rng.NormFloat64() * math.Ldexp(1, rng.Intn(60)-30))
		}
	}
	return v
}

// specialWeights: zeros, ties (1 + 2^-8 times a bfloat16 is halfway between two of them), just above
// and below ties, subnormal, tiny, huge and infinite weights.
func specialWeights(rng *rand.Rand, n int) []float32 {
	pool := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 1 + 1.0/256, 1 + 1.0/256 + 0x1p-23, 1 + 1.0/256 - 0x1p-23,
		-(1 + 3.0/256), 0.5 + 1.0/512, 1e-40, 0x1p-100, 0x1p-126, 3e38, 0x1p100, float32(math.Inf(1)), 0.75}
	w := make([]float32, n)
	for i := range w {
		if rng.Intn(2) == 0 {
			w[i] = pool[rng.Intn(len(pool))]
		} else {
			w[i] = float32(rng.NormFloat64())
		}
	}
	return w
}

func isNaNBF16(b ops.BF16) bool { return b&0x7f80 == 0x7f80 && b&0x7f != 0 }

func sameBF16(t *testing.T, what string, got, want []ops.BF16) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] && !(isNaNBF16(got[i]) && isNaNBF16(want[i])) {
			t.Fatalf("%s: element %d: %#04x, reference %#04x", what, i, uint16(got[i]), uint16(want[i]))
		}
	}
}

func TestPermuteSpecials(t *testing.T) {
	for si, s := range []struct{ T, E, K, H int }{{33, 4, 2, 64}, {9, 5, 1, 1040}, {7, 6, 3, 24}, {6, 8, 5, 16}} {
		rng := rand.New(rand.NewSource(int64(100 + si)))
		r := newRouting(rng, s.T, s.E, s.K, s.H, 0)
		n := s.T * s.K
		x, ye, w := specialBF16(rng, s.T*s.H), specialBF16(rng, n*s.H), specialWeights(rng, n)
		// Rows of ye that sum a tie with a tiny value: slot 0 of a token gets 1 (times a tie weight), slot 1
		// the tiny value, so only the sticky bit of the double sum decides the rounding.
		for tk := 0; tk < s.T && s.K >= 2; tk += 2 {
			r0, r1 := int(r.rowOf[tk*s.K]), int(r.rowOf[tk*s.K+1])
			for h := 0; h < s.H; h++ {
				ye[r0*s.H+h], ye[r1*s.H+h] = 0x3f80, ops.BF16([]uint16{0x1f80, 0x2b80, 0xab80}[h%3])
			}
			w[tk*s.K] = 1 + 1.0/256
		}
		// Tokens 2, 6, 10, ...: dy = x holds zeros and negative subnormals, the rows ye of their slots 2^97,
		// so the weight gradient -(H/2) 2^-36 is wrong by orders of magnitude unless zeros and subnormals
		// leave the gradient's fast path (which takes normal numbers only).
		for tk := 2; tk < s.T && s.K >= 2; tk += 4 {
			for h := 0; h < s.H; h++ {
				x[tk*s.H+h] = ops.BF16([]uint16{0x0000, 0x8001}[h%2])
			}
			for j := 0; j < s.K; j++ {
				row := int(r.rowOf[tk*s.K+j])
				for h := 0; h < s.H; h++ {
					ye[row*s.H+h] = 0x7000
				}
			}
		}
		// Odd tokens: weight 0 is a float32 just above 257/258, and x holds ±(1 + 2^-7) in its even
		// columns: the product is 1 + 2^-8 (a bfloat16 tie) plus less than a float32 unit, so the
		// remainder fmaf(s, v, -p) alone tells that it rounds away from zero.
		up := math.Nextafter32(float32(257.0/258.0), 2)
		if float64(up)*129/128 <= 257.0/256 {
			t.Fatalf("weight %v does not lift the product above the tie", up)
		}
		for tk := 1; tk < s.T; tk += 2 {
			w[tk*s.K] = up
			for h := 0; h < s.H; h += 2 {
				x[tk*s.H+h] = ops.BF16([]uint16{0x3f81, 0xbf81}[(h/2)%2])
			}
		}
		// Every fourth token: weight 1 is the subnormal 32264 * 2^-149 and x holds 1 + 2^-6 in its odd
		// columns: the product is 2^-134 (the tie between 0 and the least bfloat16 subnormal) plus 2^-152,
		// a remainder float32 cannot hold, so only the double path rounds it up.
		tiny := math.Float32frombits(32264)
		for tk := 3; tk < s.T && s.K >= 2; tk += 4 {
			w[tk*s.K+1] = tiny
			for h := 1; h < s.H; h += 2 {
				x[tk*s.H+h] = 0x3f82
			}
		}
		rowOf, kept := bufOf(r.rowOf), bufOf(r.kept)
		xb, yb, wb := bufOf(x), bufOf(ye), bufOf(w)
		l := Launch{2, 96}
		for _, weighted := range []bool{false, true} {
			var wt *tensor.Dense
			var wbuf Buffer
			if weighted {
				wt, wbuf = dense(w, s.T, s.K), wb
			}
			name := fmt.Sprintf("T=%d K=%d H=%d weighted=%t", s.T, s.K, s.H, weighted)
			want := tensor.New(tensor.Of(ops.BFloat16), tensor.WithShape(n, s.H))
			if err := ops.CPU().Dispatch(dense(x, s.T, s.H), wt, r.plan, want); err != nil {
				t.Fatal(err)
			}
			out := Alloc(2 * n * s.H)
			Dispatch(false, true, xb, wbuf, rowOf, kept, out, s.T, s.K, s.H, true, l)
			sameBF16(t, "dispatch "+name, sliceOf[ops.BF16](out, n*s.H), want.Data().([]ops.BF16))
			out.Free()
			for _, f32 := range []bool{false, true} {
				dt := ops.BFloat16
				if f32 {
					dt = tensor.Float32
				}
				want := tensor.New(tensor.Of(dt), tensor.WithShape(s.T, s.H))
				if err := ops.CPU().Combine(dense(ye, n, s.H), wt, r.plan, want); err != nil {
					t.Fatal(err)
				}
				out := Alloc(int(dt.Size()) * s.T * s.H)
				Combine(f32, true, yb, wbuf, rowOf, kept, out, s.T, s.K, s.H, l)
				if f32 {
					sameBits(t, "combine f32 "+name, sliceOf[float32](out, s.T*s.H), want.Data().([]float32))
				} else {
					sameBF16(t, "combine "+name, sliceOf[ops.BF16](out, s.T*s.H), want.Data().([]ops.BF16))
				}
				out.Free()
			}
		}
		// Weight gradients: the same order of sums as the reference up to the warp reduction, so at most
		// one float32 unit apart; infinities and NaNs must agree exactly.
		want := tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(s.T, s.K))
		if err := ops.CPU().CombineGradWeights(dense(x, s.T, s.H), dense(ye, n, s.H), r.plan, want); err != nil {
			t.Fatal(err)
		}
		out := Alloc(4 * n)
		GradW(false, true, xb, yb, rowOf, kept, out, s.T, s.K, s.H, l)
		got := sliceOf[float32](out, n)
		for i, v := range want.Data().([]float32) {
			g := got[i]
			switch {
			case v != v || math.IsInf(float64(v), 0):
				if !(g != g && v != v) && g != v {
					t.Fatalf("gradw T=%d K=%d H=%d: element %d: %v, reference %v", s.T, s.K, s.H, i, g, v)
				}
			case math.Abs(float64(g-v)) > 0x1p-23*math.Abs(float64(v))+1e-30:
				t.Fatalf("gradw T=%d K=%d H=%d: element %d: %v, reference %v", s.T, s.K, s.H, i, g, v)
			}
		}
		out.Free()
		for _, b := range []Buffer{rowOf, kept, xb, yb, wb} {
			b.Free()
		}
	}
}
