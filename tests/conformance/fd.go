package conformance

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// fdStep is the central-difference step.
const fdStep = 1e-6

// fdGrad returns the central-difference gradient of f at v: (f(v+h e_i) - f(v-h e_i)) / 2h.
func fdGrad(v []float64, f func(v []float64) float64) []float64 {
	g := make([]float64, len(v))
	p := append([]float64(nil), v...)
	for i := range v {
		p[i] = v[i] + fdStep
		fp := f(p)
		p[i] = v[i] - fdStep
		fm := f(p)
		p[i] = v[i]
		g[i] = (fp - fm) / (2 * fdStep)
	}
	return g
}

// fdClose compares an analytic gradient with a finite-difference one: |g-fd| <= tol*max(1,|g|).
func fdClose(t testing.TB, what string, g, fd []float64, tol float64) {
	t.Helper()
	if len(g) != len(fd) {
		t.Errorf("%s: gradient has %d elements, want %d", what, len(g), len(fd))
		return
	}
	bad := 0
	for i := range g {
		if d := math.Abs(g[i] - fd[i]); !(d <= tol*math.Max(1, math.Abs(g[i]))) {
			if bad < 5 {
				t.Errorf("%s: element %d: kernel %.12g, finite difference %.12g (|diff| %.3g)", what, i, g[i], fd[i], d)
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d elements differ", what, bad, len(g))
	}
}

func dotF(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// testFiniteDifferences checks every gradient kernel against central differences of the forward
// kernels, in float64, through the backend (each evaluation is FromHost, kernel, ToHost).
func (e *env) testFiniteDifferences(t *testing.T) {
	dt := tensor.Float64
	shapes := []shape{{4, 5, 2, 3, 2}, {3, 4, 1, 2, 3}, {3, 3, 3, 2, 2}, {5, 6, 4, 1, 1}}
	for si, s := range shapes {
		T, E, K, H, Out := s.T, s.E, s.K, s.H, s.Out
		N := T * K
		t.Run(fmt.Sprintf("T=%d,E=%d,K=%d,H=%d", T, E, K, H), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(100 + si)))
			logits := gappedLogits(rng, T, E)
			for i := range logits {
				logits[i] *= 1.5 // spread the probabilities; the gap stays > 1e-1
			}
			idx := refRouteIndices(logits, T, E, K)
			idxD := e.devI(t, idx, T, K)
			planD := e.out(t, tensor.Int32, ops.PlanLen(T, K, E)).d
			mustCall(t, "Plan", func() error { return e.b.Plan(idxD, E, planD) })

			// forward evaluates a float64 kernel with one varying input and returns its output.
			forward := func(shape []int, run func(out *tensor.Dense) error) []float64 {
				out := e.out(t, dt, shape...).d
				mustCall(t, "forward", func() error { return run(out) })
				return e.readF(t, out)
			}

			for _, cfg := range allConfigs(K)[:3] {
				dw := randVals(rng, T*K)
				dwD := e.devF(t, dt, dw, T, K)
				lD := e.devF(t, dt, logits, T, E)
				g := forward([]int{T, E}, func(out *tensor.Dense) error { return e.b.RouteWeightsGrad(lD, idxD, dwD, cfg, out) })
				fd := fdGrad(logits, func(l []float64) float64 {
					ld := e.devF(t, dt, l, T, E)
					return dotF(dw, forward([]int{T, K}, func(out *tensor.Dense) error { return e.b.RouteWeights(ld, idxD, cfg, out) }))
				})
				fdClose(t, fmt.Sprintf("RouteWeightsGrad(%v)", cfg), g, fd, e.o.FDTol)
			}

			x := randVals(rng, T*H)
			ye := randVals(rng, N*H)
			w := randVals(rng, T*K)
			dy := randVals(rng, T*H)
			dout := randVals(rng, N*H)
			yeD, wD, dyD, doutD := e.devF(t, dt, ye, N, H), e.devF(t, dt, w, T, K),
				e.devF(t, dt, dy, T, H), e.devF(t, dt, dout, N, H)

			// Dispatch wrt x: the gradient is Combine(dout, nil).
			g := forward([]int{T, H}, func(out *tensor.Dense) error { return e.b.Combine(doutD, nil, planD, out) })
			fd := fdGrad(x, func(v []float64) float64 {
				vd := e.devF(t, dt, v, T, H)
				return dotF(dout, forward([]int{N, H}, func(out *tensor.Dense) error { return e.b.Dispatch(vd, nil, planD, out) }))
			})
			fdClose(t, "Dispatch wrt x (= Combine(dout, nil))", g, fd, e.o.FDTol)

			// Combine wrt expert outputs: Dispatch(dy, w).
			g = forward([]int{N, H}, func(out *tensor.Dense) error { return e.b.Dispatch(dyD, wD, planD, out) })
			fd = fdGrad(ye, func(v []float64) float64 {
				vd := e.devF(t, dt, v, N, H)
				return dotF(dy, forward([]int{T, H}, func(out *tensor.Dense) error { return e.b.Combine(vd, wD, planD, out) }))
			})
			fdClose(t, "Combine wrt ye (= Dispatch(dy, w))", g, fd, e.o.FDTol)

			// Combine wrt weights: CombineGradWeights(dy, ye).
			g = forward([]int{T, K}, func(out *tensor.Dense) error { return e.b.CombineGradWeights(dyD, yeD, planD, out) })
			fd = fdGrad(w, func(v []float64) float64 {
				vd := e.devF(t, dt, v, T, K)
				return dotF(dy, forward([]int{T, H}, func(out *tensor.Dense) error { return e.b.Combine(yeD, vd, planD, out) }))
			})
			fdClose(t, "Combine wrt w (= CombineGradWeights)", g, fd, e.o.FDTol)

			// GroupedMatMul wrt x and W, both storage orders.
			In := H
			xp := randVals(rng, N*In)
			wm := randVals(rng, E*In*Out)
			dyp := randVals(rng, N*Out)
			xpD, dypD := e.devF(t, dt, xp, N, In), e.devF(t, dt, dyp, N, Out)
			for _, tr := range []bool{false, true} {
				wShape := []int{E, In, Out}
				if tr {
					wShape = []int{E, Out, In}
				}
				wmTD := e.devF(t, dt, wm, wShape...)
				// dx = dy . W^T: the same weights with the other storage order.
				g = forward([]int{N, In}, func(out *tensor.Dense) error { return e.b.GroupedMatMul(dypD, wmTD, planD, !tr, out) })
				fd = fdGrad(xp, func(v []float64) float64 {
					vd := e.devF(t, dt, v, N, In)
					return dotF(dyp, forward([]int{N, Out}, func(out *tensor.Dense) error { return e.b.GroupedMatMul(vd, wmTD, planD, tr, out) }))
				})
				fdClose(t, fmt.Sprintf("GroupedMatMul(transposeW=%t) wrt x", tr), g, fd, e.o.FDTol)
			}
			g = forward([]int{E, In, Out}, func(out *tensor.Dense) error { return e.b.GroupedMatMulGradW(xpD, dypD, planD, out) })
			fd = fdGrad(wm, func(v []float64) float64 {
				vd := e.devF(t, dt, v, E, In, Out)
				return dotF(dyp, forward([]int{N, Out}, func(out *tensor.Dense) error { return e.b.GroupedMatMul(xpD, vd, planD, false, out) }))
			})
			fdClose(t, "GroupedMatMul wrt W (= GroupedMatMulGradW)", g, fd, e.o.FDTol)

			// Losses (the plan's counts are constants).
			lD := e.devF(t, dt, logits, T, E)
			for _, scale := range []float64{1, 0.37} {
				g = forward([]int{T, E}, func(out *tensor.Dense) error { return e.b.LoadBalancingLossGrad(lD, planD, nil, scale, nil, out) })
				fd = fdGrad(logits, func(v []float64) float64 {
					var l float64
					mustCall(t, "LoadBalancingLoss", func() (err error) {
						l, err = e.lossValue(dt, func(o *tensor.Dense) error { return e.b.LoadBalancingLoss(e.devF(t, dt, v, T, E), planD, nil, 1, o) })
						return err
					})
					return scale * l
				})
				fdClose(t, fmt.Sprintf("LoadBalancingLossGrad(scale=%v)", scale), g, fd, e.o.FDTol)

				mask := make([]int32, T)
				for tok := range mask {
					mask[tok] = int32(tok % 2)
				}
				maskD := e.devI(t, mask, T)
				g = forward([]int{T, E}, func(out *tensor.Dense) error { return e.b.LoadBalancingLossGrad(lD, planD, maskD, scale, nil, out) })
				fd = fdGrad(logits, func(v []float64) float64 {
					var l float64
					mustCall(t, "LoadBalancingLoss(mask)", func() (err error) {
						l, err = e.lossValue(dt, func(o *tensor.Dense) error { return e.b.LoadBalancingLoss(e.devF(t, dt, v, T, E), planD, maskD, 1, o) })
						return err
					})
					return scale * l
				})
				fdClose(t, fmt.Sprintf("LoadBalancingLossGrad(mask, scale=%v)", scale), g, fd, e.o.FDTol)

				g = forward([]int{T, E}, func(out *tensor.Dense) error { return e.b.ZLossGrad(lD, scale, nil, out) })
				fd = fdGrad(logits, func(v []float64) float64 {
					var l float64
					mustCall(t, "ZLoss", func() (err error) {
						l, err = e.lossValue(dt, func(o *tensor.Dense) error { return e.b.ZLoss(e.devF(t, dt, v, T, E), 1, o) })
						return err
					})
					return scale * l
				})
				fdClose(t, fmt.Sprintf("ZLossGrad(scale=%v)", scale), g, fd, e.o.FDTol)
			}
		})
	}
}
