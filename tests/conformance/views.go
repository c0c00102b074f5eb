package conformance

import (
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// testViews: View shares memory (a kernel writing into a view writes into the base), respects offsets,
// and rejects out-of-range requests. Where the backend has the fused CombineBackward, it must agree with
// the two separate kernels within the dtype's tolerance (a fused kernel may order its sums differently).
func (e *env) testViews(t *testing.T) {
	for _, dt := range e.o.Dtypes {
		vals := make([]float64, 24)
		for i := range vals {
			vals[i] = float64(i) - 5.5
		}
		base := e.devF(t, dt, vals, 24)
		v, err := e.b.View(base, 6, 3, 4)
		if err != nil {
			t.Fatalf("%v View(base[24], 6, 3, 4): %v", dt, err)
		}
		if !v.Shape().Eq(tensor.Shape{3, 4}) || v.Dtype() != dt {
			t.Fatalf("%v view has %v %v", dt, v.Dtype(), v.Shape())
		}
		closeTo(t, "view contents", e.readF(t, v), vals[6:18], 0, nil)
		for _, bad := range []struct {
			off   int
			shape []int
		}{{-1, []int{2}}, {20, []int{5}}, {0, []int{5, 5}}} {
			if _, err := e.b.View(base, bad.off, bad.shape...); err == nil {
				t.Errorf("%v View(base[24], %d, %v) succeeded, want an error", dt, bad.off, bad.shape)
			}
		}
		// writes through a view land in the base: dispatch of a 2-token, K=1, 1-expert plan into it
		x := e.devF(t, dt, []float64{1, 2, 3, 4}, 2, 2)
		plan := e.devI(t, []int32{2, 0, 2, 0, 1, 0, 1}, ops.PlanLen(2, 1, 1))
		out, err := e.b.View(base, 10, 2, 2)
		if err != nil {
			t.Fatal(err)
		}
		mustCall(t, "Dispatch into a view", func() error { return e.b.Dispatch(x, nil, plan, out) })
		want := append([]float64(nil), vals...)
		copy(want[10:14], []float64{1, 2, 3, 4})
		closeTo(t, "base after a kernel wrote into its view", e.readF(t, base), want, 0, nil)
	}
	fused, ok := e.b.(ops.CombineBackwarder)
	if !ok {
		return
	}
	for _, dt := range e.o.Dtypes {
		const nT, k, nE, h = 5, 2, 3, 7
		idx := []int32{0, 1, 2, 0, 1, 2, 0, 2, 1, 0}
		plan := e.devI(t, refPlan(idx, nT, k, nE), ops.PlanLen(nT, k, nE))
		dy := e.devF(t, dt, ramp(nT*h, 0.37), nT, h)
		ye := e.devF(t, dt, ramp(nT*k*h, -0.21), nT*k, h)
		w := e.devF(t, dt, ramp(nT*k, 0.11), nT, k)
		dye1, dw1 := e.out(t, dt, nT*k, h), e.out(t, dt, nT, k)
		mustCall(t, "CombineBackward", func() error { return fused.CombineBackward(dy, ye, w, plan, dye1.d, dw1.d) })
		dye2, dw2 := e.out(t, dt, nT*k, h), e.out(t, dt, nT, k)
		mustCall(t, "Dispatch(dy, w)", func() error { return e.b.Dispatch(dy, w, plan, dye2.d) })
		mustCall(t, "CombineGradWeights", func() error { return e.b.CombineGradWeights(dy, ye, plan, dw2.d) })
		closeTo(t, "fused dye", e.readF(t, dye1.d), e.readF(t, dye2.d), e.o.tol(dt), nil)
		closeTo(t, "fused dw", e.readF(t, dw1.d), e.readF(t, dw2.d), e.o.tol(dt), nil)
	}
}

// ramp gives n distinct values of both signs.
func ramp(n int, step float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(i%7-3)*step + float64(i)*0.01
	}
	return v
}
