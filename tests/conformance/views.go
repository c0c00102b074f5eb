package conformance

import (
	"fmt"
	"math"
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

// testFusedRoute: a backend's reinterpreting views (ops.Reinterpreter, which graphs' route nodes use
// for the weights in their buffer) share memory and refuse what is out of range or misaligned; a fused
// router (ops.FusedRouter) writes the indices of RouteIndicesBias exactly and the weights of
// RouteWeights within the dtype's tolerance, and only the indices when w is nil.
func (e *env) testFusedRoute(t *testing.T) {
	if r, ok := e.b.(ops.Reinterpreter); ok {
		for _, dt := range e.o.Dtypes {
			base := e.devI(t, make([]int32, 16), 16)
			v, err := r.ViewAs(base, dt, 16, 2, 2)
			if err != nil {
				t.Fatalf("%v ViewAs(int32[16], byte 16, 2x2): %v", dt, err)
			}
			if !v.Shape().Eq(tensor.Shape{2, 2}) || v.Dtype() != dt {
				t.Fatalf("%v ViewAs gave %v %v", dt, v.Dtype(), v.Shape())
			}
			// A kernel writing into the view writes the base's bytes from byte 16 on.
			x := e.devF(t, dt, []float64{1.5, -2, 0.25, 3}, 2, 2)
			plan := e.devI(t, []int32{2, 0, 2, 0, 1, 0, 1}, ops.PlanLen(2, 1, 1))
			mustCall(t, "Dispatch into a reinterpreted view", func() error { return e.b.Dispatch(x, nil, plan, v) })
			closeTo(t, "view contents", e.readF(t, v), []float64{1.5, -2, 0.25, 3}, 0, nil)
			var want []int32 // the values' bit patterns as little-endian 32-bit words, from byte 16 on
			for _, x := range []float64{1.5, -2, 0.25, 3} {
				if dt == tensor.Float32 {
					want = append(want, int32(math.Float32bits(float32(x))))
				} else {
					b := math.Float64bits(x)
					want = append(want, int32(uint32(b)), int32(uint32(b>>32)))
				}
			}
			want = append(append(make([]int32, 4), want...), make([]int32, 12-len(want))...)
			if got := e.readI(t, base); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%v: base words %v after writing the view, want %v", dt, got, want)
			}
			for _, bad := range []struct {
				off   int
				shape []int
			}{{2, []int{1}}, {int(dt.Size()) + 4, []int{1}}, {-8, []int{1}}, {56, []int{2}}, {0, []int{17}}} {
				if bad.off%int(dt.Size()) == 0 && bad.off >= 0 && bad.off+int(dt.Size())*bad.shape[0] <= 64 {
					continue
				}
				if _, err := r.ViewAs(base, dt, bad.off, bad.shape...); err == nil {
					t.Errorf("%v ViewAs(int32[16], byte %d, %v) succeeded, want an error", dt, bad.off, bad.shape)
				}
			}
		}
	}
	f, ok := e.b.(ops.FusedRouter)
	if !ok {
		return
	}
	const nT, nE = 13, 8
	for _, dt := range e.o.Dtypes {
		for _, cfg := range []ops.RouteConfig{
			{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true},
			{K: 3, Scoring: ops.SoftmaxTopK, Scale: 1.5},
			{K: 2, Scoring: ops.TopKSoftmax},
			{K: 2, Scoring: ops.Sigmoid, Renormalize: true, Groups: 4, TopKGroups: 2, Scale: 2.5},
		} {
			what := fmt.Sprintf("%v %v", dt, cfg)
			logits := e.devF(t, dt, ramp(nT*nE, 0.73), nT, nE)
			var bias *tensor.Dense
			if cfg.Scoring == ops.Sigmoid {
				bias = e.devF(t, dt, ramp(nE, 0.05), nE)
			}
			idx1, w1 := e.out(t, tensor.Int32, nT, cfg.K), e.out(t, dt, nT, cfg.K)
			mustCall(t, "RouteBiased "+what, func() error { return f.RouteBiased(logits, bias, cfg, idx1.d, w1.d) })
			idx2, w2 := e.out(t, tensor.Int32, nT, cfg.K), e.out(t, dt, nT, cfg.K)
			mustCall(t, "RouteIndicesBias "+what, func() error { return e.b.RouteIndicesBias(logits, bias, cfg, idx2.d) })
			mustCall(t, "RouteWeights "+what, func() error { return e.b.RouteWeights(logits, idx2.d, cfg, w2.d) })
			if got, want := e.readI(t, idx1.d), e.readI(t, idx2.d); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("fused router %s: indices %v, RouteIndicesBias %v", what, got, want)
			}
			closeTo(t, "fused router weights "+what, e.readF(t, w1.d), e.readF(t, w2.d), e.o.tol(dt), nil)
			idx3 := e.out(t, tensor.Int32, nT, cfg.K)
			mustCall(t, "RouteBiased without weights "+what, func() error { return f.RouteBiased(logits, bias, cfg, idx3.d, nil) })
			if got, want := e.readI(t, idx3.d), e.readI(t, idx2.d); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("fused router %s without weights: indices %v, want %v", what, got, want)
			}
		}
	}
}
