package conformance

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// ---- GroupedSwiGLU (ops.GroupedSwiGLUBackend) ----

// testGroupedSwiGLU checks a backend's fused gate/up products with their SwiGLU, where it has one: over
// the backend's own plan of random routes (odd sizes, an expert without rows, one expert, a single
// feature), gate and up equal the backend's GroupedMatMul bit for bit and the float64 products within
// tolerance (relative to the sum of |x·w| terms), h is the SwiGLU of the stored products within
// tolerance, with and without the products kept (the same bits), guards intact, inputs unchanged,
// repeated runs bitwise equal.
func (e *env) testGroupedSwiGLU(t *testing.T) {
	fb, ok := e.b.(ops.GroupedSwiGLUBackend)
	if !ok {
		t.Skipf("backend %s has no fused GroupedSwiGLU (the op composes GroupedMatMul and SwiGLU there)", e.b.Name())
	}
	shapes := []struct{ T, K, E, H, F int }{{1, 1, 1, 1, 1}, {7, 2, 4, 5, 3}, {33, 2, 8, 17, 45}, {64, 3, 5, 40, 72}}
	for _, dt := range e.o.Dtypes {
		tol := e.o.tol(dt)
		for si, s := range shapes {
			what := fmt.Sprintf("GroupedSwiGLU(%v, T=%d K=%d E=%d H=%d F=%d)", dt, s.T, s.K, s.E, s.H, s.F)
			rng := rand.New(rand.NewSource(int64(700 + si)))
			// Distinct experts per token, never the last one when E > K (an expert without rows).
			pick := s.E
			if s.E > s.K {
				pick = s.E - 1
			}
			idx := make([]int32, s.T*s.K)
			for tk := 0; tk < s.T; tk++ {
				perm := rng.Perm(pick)
				for j := 0; j < s.K; j++ {
					idx[tk*s.K+j] = int32(perm[j])
				}
			}
			idxD := e.devI(t, idx, s.T, s.K)
			planD := e.out(t, tensor.Int32, ops.PlanLen(s.T, s.K, s.E))
			mustCall(t, what+": Plan", func() error { return e.b.Plan(idxD, s.E, planD.d) })
			plan := e.readI(t, planD.d)
			off := plan[s.E : 2*s.E+1]

			N := s.T * s.K
			x := roundTo(dt, randVals(rng, N*s.H))
			w1 := randVals(rng, s.E*s.H*s.F)
			for i := range w1 {
				w1[i] *= 4 // gates in both tails of the sigmoid
			}
			w1, w3 := roundTo(dt, w1), roundTo(dt, randVals(rng, s.E*s.H*s.F))
			xD, w1D, w3D := e.devF(t, dt, x, N, s.H), e.devF(t, dt, w1, s.E, s.H, s.F), e.devF(t, dt, w3, s.E, s.H, s.F)
			ins := []input{e.snapshot(t, "x", xD), e.snapshot(t, "w1", w1D), e.snapshot(t, "w3", w3D), e.snapshot(t, "plan", planD.d)}

			// float64 products and the magnitudes of their terms.
			g, u := make([]float64, N*s.F), make([]float64, N*s.F)
			mg, mu := make([]float64, N*s.F), make([]float64, N*s.F)
			for ex := 0; ex < s.E; ex++ {
				for r := int(off[ex]); r < int(off[ex+1]); r++ {
					for f := 0; f < s.F; f++ {
						i := r*s.F + f
						for k := 0; k < s.H; k++ {
							a := x[r*s.H+k]
							b1, b3 := w1[(ex*s.H+k)*s.F+f], w3[(ex*s.H+k)*s.F+f]
							g[i] += a * b1
							u[i] += a * b3
							mg[i] += math.Abs(a * b1)
							mu[i] += math.Abs(a * b3)
						}
					}
				}
			}

			var hBits []uint64
			for run := 0; run < 3; run++ {
				keep := run < 2
				oh, og, ou := e.out(t, dt, N, s.F), e.out(t, dt, N, s.F), e.out(t, dt, N, s.F)
				mustCall(t, what, func() error {
					if keep {
						return e.errAfterSync(fb.GroupedSwiGLU(xD, w1D, w3D, planD.d, oh.d, og.d, ou.d))
					}
					return e.errAfterSync(fb.GroupedSwiGLU(xD, w1D, w3D, planD.d, oh.d, nil, nil))
				})
				oh.checkGuard(t, what+": h")
				bits := e.bits(t, oh.d)
				if run == 0 {
					og.checkGuard(t, what+": gate")
					ou.checkGuard(t, what+": up")
					gotG, gotU := e.readF(t, og.d), e.readF(t, ou.d)
					closeTo(t, what+": gate", gotG, g, tol, mg)
					closeTo(t, what+": up", gotU, u, tol, mu)
					scale := make([]float64, len(gotG))
					for i := range scale {
						scale[i] = math.Abs(gotG[i] * gotU[i])
					}
					closeTo(t, what+": h", e.readF(t, oh.d), refSwiGLU(gotG, gotU), tol, scale)
					// The products are GroupedMatMul's, bit for bit.
					for i, w := range []*tensor.Dense{w1D, w3D} {
						om := e.out(t, dt, N, s.F)
						mustCall(t, what+": GroupedMatMul", func() error { return e.errAfterSync(e.b.GroupedMatMul(xD, w, planD.d, false, om.d)) })
						sameBits(t, what+": "+[]string{"gate", "up"}[i]+" vs GroupedMatMul", e.bits(t, []*tensor.Dense{og.d, ou.d}[i]), e.bits(t, om.d))
					}
					hBits = bits
				} else {
					sameBits(t, fmt.Sprintf("%s: h of run %d (products kept: %t)", what, run, keep), hBits, bits)
				}
			}
			e.unchanged(t, what, ins...)
		}
	}
}
