//go:build expertrt_gemmemu

package gemmemu

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/internal/gemmplan"
	"github.com/expertrt/expertrt-go/internal/bf16"
)

// swigluOut is one run of a SwiGLU product: h, g, u with their guards (nil when not kept).
type swigluOut struct {
	h, g, u []float64
	hbits   string
	fault   int32
	kernel  string
}

// runSwiGLU plans and runs the SwiGLU product p (p.N features, p.K inputs) on x, w1, w3; keep: store
// the two products. Operands at p.misalign (A: x; B: w1 and w3; C: h, g and u).
func runSwiGLU(t testing.TB, p problem, x, w1, w3 []float64, keep bool, opt gemmplan.Options, mode Mode) swigluOut {
	t.Helper()
	elem := 4
	switch {
	case p.Double:
		elem = 8
	case p.BF16:
		elem = 2
	}
	na, nb, nc := p.sizes()
	X := newOperand(t, na, p.misalign[0], elem)
	W1, W3 := newOperand(t, nb, p.misalign[1], elem), newOperand(t, nb, p.misalign[1], elem)
	H := newOperand(t, nc, p.misalign[2], elem)
	for _, o := range []*operand{X, W1, W3, H} {
		defer o.buf.Free()
	}
	X.set(x)
	W1.set(w1)
	W3.set(w3)
	var Gp, Up *operand
	if keep {
		Gp, Up = newOperand(t, nc, p.misalign[2], elem), newOperand(t, nc, p.misalign[2], elem)
		defer Gp.buf.Free()
		defer Up.buf.Free()
	}
	off, err := Alloc(4 * len(p.offsets))
	if err != nil {
		t.Fatal(err)
	}
	defer off.Free()
	copy(off.Int32s(), p.offsets)
	fault, err := Alloc(4)
	if err != nil {
		t.Fatal(err)
	}
	defer fault.Free()
	fault.Int32s()[0] = 0
	q := p.Problem
	q.SwiGLU = true
	q.A, q.B, q.B2, q.C, q.Offsets, q.Fault = X.addr(), W1.addr(), W3.addr(), H.addr(), off.Addr(0), fault.Addr(0)
	if keep {
		q.G, q.U = Gp.addr(), Up.addr()
	}
	pl, err := gemmplan.Make(q, target, opt, variants(t))
	if err != nil {
		t.Fatalf("%v: plan: %v", p, err)
	}
	ls := pl.Launches(0)
	if len(ls) != 1 {
		t.Fatalf("%v: %d launches, want 1", p, len(ls))
	}
	if err := Launch(ls[0], mode); err != nil {
		t.Fatalf("%v (variant %s): %v", p, pl.Variant.Name, err)
	}
	r := swigluOut{h: H.all(), hbits: string(H.buf.Bytes()), fault: fault.Int32s()[0], kernel: pl.Variant.Name + "/" + ls[0].Kernel}
	if keep {
		r.g, r.u = Gp.all(), Up.all()
	}
	return r
}

// swigluRef is h from the stored products, in float64: with g and u as stored (rounded to the output
// type), h = g·sigmoid(g)·u.
func swigluRef(g, u float64) float64 { return g / (1 + math.Exp(-g)) * u }

// checkSwiGLU compares one SwiGLU run with the plain grouped products of the same variant: the kept
// products bit for bit (guards and dropped rows included), h within the rounding of the activation
// (float32: 2^-20·|g·u|, the kernel's expf and three roundings; float64: 2^-48·|g·u|; bfloat16: its one
// rounding of h, 2^-7·|g·u|) from those products, guards and dropped rows of h untouched.
func checkSwiGLU(t testing.TB, p problem, r swigluOut, g, u result) {
	t.Helper()
	_, _, nc := p.sizes()
	off := guard + p.misalign[2]
	for name, pair := range map[string][2][]float64{"gate": {r.g, g.c}, "up": {r.u, u.c}} {
		got, want := pair[0], pair[1]
		if len(got) != len(want) {
			t.Fatalf("%v: %s: %d elements, the plain product %d", p, name, len(got), len(want))
		}
		for i := range got {
			if math.Float64bits(got[i]) != math.Float64bits(want[i]) && !(math.IsNaN(got[i]) && math.IsNaN(want[i])) {
				t.Errorf("%v (%s): %s[%d] = %v, the plain product %v (guard %t)", p, r.kernel, name, i-off, got[i], want[i], i < off || i >= off+nc)
				return
			}
		}
	}
	tolRel := math.Ldexp(1, -20)
	switch {
	case p.Double:
		tolRel = math.Ldexp(1, -48)
	case p.BF16:
		tolRel = math.Ldexp(1, -7)
	}
	bad := 0
	for i, v := range r.h {
		j := i - off
		if j < 0 || j >= nc || p.dropped(j) {
			if !math.IsNaN(v) {
				t.Errorf("%v (%s): h element %d (guard or dropped row) was written: %v", p, r.kernel, j, v)
				return
			}
			continue
		}
		gv, uv := g.c[i], u.c[i]
		want := swigluRef(gv, uv)
		if !(math.Abs(v-want) <= tolRel*math.Abs(gv*uv)+1e-300) {
			if bad < 4 {
				t.Errorf("%v (%s): h[%d] (row %d, feature %d) = %.9g, want %.9g from gate %.9g, up %.9g", p, r.kernel, j, j/p.N, j%p.N, v, want, gv, uv)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%v (%s): %d of %d elements of h wrong", p, r.kernel, bad, nc)
	}
	if r.fault != 0 {
		t.Errorf("%v: fault %d", p, r.fault)
	}
}

// swigluCases: odd sizes (one-element copies), whole tiles with 16-byte copies, misaligned operands,
// empty experts, one expert taking every row, rows dropped after offsets[E], a tile's features partly
// past F.
func swigluCases(rng *rand.Rand, v gemmplan.Variant, short bool) []problem {
	mk := func(E, rows, F, K int, pattern string, mis [3]int) problem {
		p := problem{Problem: gemmplan.Problem{Mode: gemmplan.GroupRows, Double: v.Double, BF16: v.BF16, N: F, K: K, E: E, Rows: rows}}
		p.offsets = segments(rng, E, rows, pattern)
		p.misalign = mis
		return p
	}
	half := v.BN / 2
	// Operands start guard + misalign elements into their buffers: pad puts them on 16 bytes.
	per := 16 / v.ElemBytes()
	pad := (per - guard%per) % per
	al := [3]int{pad, pad, pad}
	ps := []problem{
		mk(5, 70, 37, 29, "random", [3]int{}),
		mk(3, 2*v.BM+5, 2*half+8, 2*v.BK+16, "capacity", al),
	}
	if !short {
		ps = append(ps,
			mk(4, v.BM+3, half+8, v.BK+8, "one", [3]int{pad + 1, pad, pad}),
			mk(4, 50, 3*half, 40, "skew", [3]int{pad, pad + 1, pad + 1}),
			mk(1, 1, 8, 8, "random", al),
			mk(7, 90, half-8, 24, "random", al),
		)
	}
	return ps
}

// TestSwiGLU runs the gemm_swiglu kernels of every variant (or those EXPERTRT_GEMMEMU_VARIANTS selects)
// against the plain grouped products of the same variant, in both cp.async completion modes and two
// thread orders (h bitwise equal across them), with and without the kept products (h bitwise equal).
func TestSwiGLU(t *testing.T) {
	short := testing.Short()
	for _, v := range variants(t) {
		v := v
		if !selected(v.Name) || v.WG { // the wgmma modules have no SwiGLU kernels
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(11))
			opt := gemmplan.Options{Force: v.Name, TF32: v.TF32}
			kernels := map[string]bool{}
			for _, p := range swigluCases(rng, v, short) {
				na, nb, _ := p.sizes()
				x, w1, w3 := randVals(rng, na, p), randVals(rng, nb, p), randVals(rng, nb, p)
				// Larger gate values reach both tails of the sigmoid.
				for i := range w1 {
					w1[i] *= 4
					if p.BF16 {
						w1[i] = bf16.FromFloat64(w1[i]).Float64()
					}
				}
				g, plG := run(t, p, x, w1, opt, Mode{Seed: 1})
				u, _ := run(t, p, x, w3, opt, Mode{Seed: 1})
				if plG.Variant.Name != v.Name {
					t.Fatalf("planned %s", plG.Variant.Name)
				}
				wantG, magG := p.reference(x, w1)
				check(t, "gate product", p, g, wantG, magG, 1, tf32Term(v))
				r := runSwiGLU(t, p, x, w1, w3, true, opt, Mode{Seed: 1})
				kernels[r.kernel] = true
				checkSwiGLU(t, p, r, g, u)
				for _, m := range []Mode{{Eager: true, Seed: 2}, {Seed: 3}} {
					if r2 := runSwiGLU(t, p, x, w1, w3, m.Seed == 3, opt, m); r2.hbits != r.hbits {
						t.Errorf("%v: h differs between runs (mode %+v, products kept %t)", p, m, m.Seed == 3)
					}
				}
			}
			t.Logf("kernels run: %v", fmt.Sprint(kernels))
			if len(kernels) != 2 {
				t.Errorf("ran %v, want both gemm_swiglu_nn and gemm_swiglu_nn_v16", kernels)
			}
		})
	}
}
