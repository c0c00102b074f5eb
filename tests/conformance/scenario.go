package conformance

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// scenario is one complete pass over the kernel set: route (unless idx is given), plan, dispatch,
// combine, grouped matmul and the losses, each against the reference, with invariants, sentinel-filled
// outputs, unchanged inputs and a second run compared bitwise.
type scenario struct {
	T, E, K, H, Out int
	dt              tensor.Dtype
	cfg             ops.RouteConfig
	logits          []float64 // [T,E], already rounded to dt
	idx             []int32   // optional [T,K]: skip routing and plan these indices
	seed            int64
}

func (sc scenario) String() string {
	return fmt.Sprintf("T=%d,E=%d,K=%d,H=%d,%v,%v", sc.T, sc.E, sc.K, sc.H, sc.dt, sc.cfg)
}

// randVals returns n values uniform in [-1, 1).
func randVals(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = 2*rng.Float64() - 1
	}
	return v
}

// gappedLogits returns [T,E] logits in [-2, 2) whose values inside a row are pairwise at least 1.6/E
// apart, so top-k is unambiguous in float32 and stable under small perturbations.
func gappedLogits(rng *rand.Rand, T, E int) []float64 {
	l := make([]float64, T*E)
	for t := 0; t < T; t++ {
		perm := rng.Perm(E)
		for e := 0; e < E; e++ {
			l[t*E+e] = 4*(float64(perm[e])+0.6*rng.Float64())/float64(E) - 2
		}
	}
	return l
}

// kernel runs f twice into fresh sentinel-filled outputs, checks guards, that the inputs are unchanged
// and that both runs agree bitwise, and returns the first output.
func (e *env) kernel(t testing.TB, what string, dt tensor.Dtype, shape []int, ins []input, f func(out *tensor.Dense) error) *tensor.Dense {
	t.Helper()
	o1 := e.out(t, dt, shape...)
	mustCall(t, what, func() error { return f(o1.d) })
	o1.checkGuard(t, what)
	o2 := e.out(t, dt, shape...)
	mustCall(t, what+" (second run)", func() error { return f(o2.d) })
	o2.checkGuard(t, what)
	sameBits(t, what, e.bits(t, o1.d), e.bits(t, o2.d))
	e.unchanged(t, what, ins...)
	return o1.d
}

// lossValue runs a loss kernel that writes a one-element tensor of dtype dt and reads the value back.
func (e *env) lossValue(dt tensor.Dtype, f func(loss *tensor.Dense) error) (float64, error) {
	loss, err := e.b.New(dt, 1)
	if err != nil {
		return 0, err
	}
	if err := f(loss); err != nil {
		return 0, err
	}
	h, err := e.b.ToHost(loss)
	if err != nil {
		return 0, err
	}
	switch v := h.Data().(type) {
	case []float32:
		return float64(v[0]), nil
	case []float64:
		return v[0], nil
	}
	return 0, fmt.Errorf("loss of dtype %v", h.Dtype())
}

// scalar runs a scalar-valued kernel twice and checks both runs agree bitwise and inputs are unchanged.
func (e *env) scalar(t testing.TB, what string, ins []input, f func() (float64, error)) float64 {
	t.Helper()
	var v1, v2 float64
	mustCall(t, what, func() (err error) { v1, err = f(); return err })
	mustCall(t, what+" (second run)", func() (err error) { v2, err = f(); return err })
	if math.Float64bits(v1) != math.Float64bits(v2) {
		t.Errorf("%s: not deterministic: %v vs %v", what, v1, v2)
	}
	e.unchanged(t, what, ins...)
	return v1
}

func (e *env) runScenario(t *testing.T, sc scenario) {
	t.Helper()
	T, E, K, H, Out, dt := sc.T, sc.E, sc.K, sc.H, sc.Out, sc.dt
	tol := e.o.tol(dt)
	rng := rand.New(rand.NewSource(sc.seed))
	logits := roundTo(dt, sc.logits)
	logitsD := e.devF(t, dt, logits, T, E)
	inLogits := e.snapshot(t, "logits", logitsD)

	// ---- routing ----
	var idx []int32
	var idxD *tensor.Dense
	if sc.idx == nil {
		idx = refRouteIndices(logits, T, E, K)
		idxD = e.kernel(t, "RouteIndices", tensor.Int32, []int{T, K}, []input{inLogits}, func(out *tensor.Dense) error {
			return e.b.RouteIndices(logitsD, sc.cfg, out)
		})
		equalI(t, "RouteIndices", e.readI(t, idxD), idx)
		inIdx := e.snapshot(t, "idx", idxD)

		wD := e.kernel(t, "RouteWeights", dt, []int{T, K}, []input{inLogits, inIdx}, func(out *tensor.Dense) error {
			return e.b.RouteWeights(logitsD, idxD, sc.cfg, out)
		})
		w := e.readF(t, wD)
		closeTo(t, "RouteWeights", w, refRouteWeights(logits, idx, T, E, K, sc.cfg), tol, nil)
		for tok := 0; tok < T; tok++ {
			var s float64
			for j := 0; j < K; j++ {
				s += w[tok*K+j]
				if j > 0 && w[tok*K+j] > w[tok*K+j-1]*(1+tol) {
					t.Errorf("RouteWeights: token %d weights not in decreasing order: %v", tok, w[tok*K:(tok+1)*K])
				}
			}
			if sc.cfg.EffectiveRenormalize() && math.Abs(s-1) > 10*tol {
				t.Errorf("RouteWeights: token %d weights sum to %v, want 1 (%v)", tok, s, sc.cfg)
			}
		}

		dw := roundTo(dt, randVals(rng, T*K))
		dwD := e.devF(t, dt, dw, T, K)
		dlD := e.kernel(t, "RouteWeightsGrad", dt, []int{T, E}, []input{inLogits, inIdx, e.snapshot(t, "dw", dwD)}, func(out *tensor.Dense) error {
			return e.b.RouteWeightsGrad(logitsD, idxD, dwD, sc.cfg, out)
		})
		closeTo(t, "RouteWeightsGrad", e.readF(t, dlD), refRouteWeightsGrad(logits, idx, dw, T, E, K, sc.cfg), tol, nil)
	} else {
		idx = sc.idx
		idxD = e.devI(t, idx, T, K)
	}
	inIdx := e.snapshot(t, "idx", idxD)

	// ---- plan ----
	planWant := refPlan(idx, T, K, E)
	planD := e.kernel(t, "Plan", tensor.Int32, []int{ops.PlanLen(T, K, E)}, []input{inIdx}, func(out *tensor.Dense) error {
		return e.b.Plan(idxD, E, out)
	})
	plan := e.readI(t, planD)
	checkPlanInvariants(t, plan, idx, T, K, E)
	equalI(t, "Plan", plan, planWant)
	pv, err := ops.NewPlanView(planWant, T, K, E)
	if err != nil {
		t.Fatal(err)
	}
	inPlan := e.snapshot(t, "plan", planD)

	// ---- dispatch / combine ----
	N := T * K
	x := roundTo(dt, randVals(rng, T*H))
	xD := e.devF(t, dt, x, T, H)
	inX := e.snapshot(t, "x", xD)
	disp := e.kernel(t, "Dispatch", dt, []int{N, H}, []input{inX, inPlan}, func(out *tensor.Dense) error {
		return e.b.Dispatch(xD, nil, planD, out)
	})
	closeTo(t, "Dispatch", e.readF(t, disp), refDispatch(x, nil, pv, H), 0, nil) // a copy: exact

	wr := roundTo(dt, randVals(rng, T*K))
	wrD := e.devF(t, dt, wr, T, K)
	inW := e.snapshot(t, "w", wrD)
	dispW := e.kernel(t, "Dispatch(w)", dt, []int{N, H}, []input{inX, inW, inPlan}, func(out *tensor.Dense) error {
		return e.b.Dispatch(xD, wrD, planD, out)
	})
	closeTo(t, "Dispatch(w)", e.readF(t, dispW), refDispatch(x, wr, pv, H), tol, nil)

	ye := roundTo(dt, randVals(rng, N*H))
	yeD := e.devF(t, dt, ye, N, H)
	inYe := e.snapshot(t, "ye", yeD)
	comb := e.kernel(t, "Combine(w)", dt, []int{T, H}, []input{inYe, inW, inPlan}, func(out *tensor.Dense) error {
		return e.b.Combine(yeD, wrD, planD, out)
	})
	combScale := make([]float64, T*H)
	combScaleUnit := make([]float64, T*H)
	for tok := 0; tok < T; tok++ {
		for h := 0; h < H; h++ {
			for j := 0; j < K; j++ {
				v := ye[int(pv.RowOf[tok*K+j])*H+h]
				combScale[tok*H+h] += math.Abs(wr[tok*K+j] * v)
				combScaleUnit[tok*H+h] += math.Abs(v)
			}
		}
	}
	closeTo(t, "Combine(w)", e.readF(t, comb), refCombine(ye, wr, pv, H), tol, combScale)
	combNil := e.kernel(t, "Combine(nil)", dt, []int{T, H}, []input{inYe, inPlan}, func(out *tensor.Dense) error {
		return e.b.Combine(yeD, nil, planD, out)
	})
	closeTo(t, "Combine(nil)", e.readF(t, combNil), refCombine(ye, nil, pv, H), tol, combScaleUnit)

	// Invariant: combine(dispatch(x), unit weights) = K*x.
	round := e.kernel(t, "Combine(Dispatch(x), nil)", dt, []int{T, H}, []input{inPlan}, func(out *tensor.Dense) error {
		return e.b.Combine(disp, nil, planD, out)
	})
	kx := make([]float64, T*H)
	kxScale := make([]float64, T*H)
	for i := range x {
		kx[i] = float64(K) * x[i]
		kxScale[i] = math.Abs(kx[i])
	}
	closeTo(t, "Combine(Dispatch(x), unit weights) = K*x", e.readF(t, round), kx, tol, kxScale)

	dy := roundTo(dt, randVals(rng, T*H))
	dyD := e.devF(t, dt, dy, T, H)
	inDy := e.snapshot(t, "dy", dyD)
	dwc := e.kernel(t, "CombineGradWeights", dt, []int{T, K}, []input{inDy, inYe, inPlan}, func(out *tensor.Dense) error {
		return e.b.CombineGradWeights(dyD, yeD, planD, out)
	})
	dwWant, dwScale := refCombineGradWeights(dy, ye, pv, H)
	closeTo(t, "CombineGradWeights", e.readF(t, dwc), dwWant, tol, dwScale)

	// ---- grouped matmul: packed [N,H] x W [E,H,Out] ----
	In := H
	xp := roundTo(dt, randVals(rng, N*In))
	xpD := e.devF(t, dt, xp, N, In)
	inXp := e.snapshot(t, "packed x", xpD)
	wm := roundTo(dt, randVals(rng, E*In*Out))
	wmD := e.devF(t, dt, wm, E, In, Out)
	inWm := e.snapshot(t, "W", wmD)
	g := e.kernel(t, "GroupedMatMul", dt, []int{N, Out}, []input{inXp, inWm, inPlan}, func(out *tensor.Dense) error {
		return e.b.GroupedMatMul(xpD, wmD, planD, false, out)
	})
	gWant, gScale := refGroupedMatMul(xp, wm, pv.Offsets, E, In, Out, false)
	closeTo(t, "GroupedMatMul", e.readF(t, g), gWant, tol, gScale)

	wt := roundTo(dt, randVals(rng, E*Out*In))
	wtD := e.devF(t, dt, wt, E, Out, In)
	inWt := e.snapshot(t, "W^T", wtD)
	gt := e.kernel(t, "GroupedMatMul(transposeW)", dt, []int{N, Out}, []input{inXp, inWt, inPlan}, func(out *tensor.Dense) error {
		return e.b.GroupedMatMul(xpD, wtD, planD, true, out)
	})
	gtWant, gtScale := refGroupedMatMul(xp, wt, pv.Offsets, E, In, Out, true)
	closeTo(t, "GroupedMatMul(transposeW)", e.readF(t, gt), gtWant, tol, gtScale)

	dyp := roundTo(dt, randVals(rng, N*Out))
	dypD := e.devF(t, dt, dyp, N, Out)
	gw := e.kernel(t, "GroupedMatMulGradW", dt, []int{E, In, Out}, []input{inXp, e.snapshot(t, "dy", dypD), inPlan}, func(out *tensor.Dense) error {
		return e.b.GroupedMatMulGradW(xpD, dypD, planD, out)
	})
	gwWant, gwScale := refGroupedMatMulGradW(xp, dyp, pv.Offsets, E, In, Out)
	closeTo(t, "GroupedMatMulGradW", e.readF(t, gw), gwWant, tol, gwScale)

	// ---- losses ----
	lbl := e.scalar(t, "LoadBalancingLoss", []input{inLogits, inPlan}, func() (float64, error) {
		return e.lossValue(dt, func(l *tensor.Dense) error { return e.b.LoadBalancingLoss(logitsD, planD, nil, 1, l) })
	})
	closeTo(t, "LoadBalancingLoss", []float64{lbl}, []float64{refLoadBalancingLoss(logits, pv.Counts, T, E)}, tol, nil)
	const lblScale = 0.37
	lblG := e.kernel(t, "LoadBalancingLossGrad", dt, []int{T, E}, []input{inLogits, inPlan}, func(out *tensor.Dense) error {
		return e.b.LoadBalancingLossGrad(logitsD, planD, nil, lblScale, nil, out)
	})
	closeTo(t, "LoadBalancingLossGrad", e.readF(t, lblG), refLoadBalancingLossGrad(logits, pv.Counts, T, E, lblScale), tol, nil)
	// The upstream gradient as a one-element tensor of the backend (a device scalar on a GPU).
	const upstream = 0.5
	gD := e.devF(t, dt, []float64{upstream}, 1)
	lblGg := e.kernel(t, "LoadBalancingLossGrad(g)", dt, []int{T, E}, []input{inLogits, inPlan}, func(out *tensor.Dense) error {
		return e.b.LoadBalancingLossGrad(logitsD, planD, nil, lblScale, gD, out)
	})
	closeTo(t, "LoadBalancingLossGrad(g)", e.readF(t, lblGg), refLoadBalancingLossGrad(logits, pv.Counts, T, E, lblScale*upstream), tol, nil)
	// Losses scale by their coefficient.
	const coef = 0.25
	lblc := e.scalar(t, "LoadBalancingLoss(coef)", []input{inLogits, inPlan}, func() (float64, error) {
		return e.lossValue(dt, func(l *tensor.Dense) error { return e.b.LoadBalancingLoss(logitsD, planD, nil, coef, l) })
	})
	closeTo(t, "LoadBalancingLoss(coef)", []float64{lblc}, []float64{coef * refLoadBalancingLoss(logits, pv.Counts, T, E)}, tol, nil)

	// Token mask: every third token is padding; then no token at all is counted (loss 0, gradient 0).
	for _, pattern := range []string{"every third token padding", "all padding"} {
		mask := make([]int32, T)
		for tok := range mask {
			if pattern == "every third token padding" && tok%3 != 1 {
				mask[tok] = 1 + int32(tok%2) // any non-zero value counts
			}
		}
		maskD := e.devI(t, mask, T)
		inMask := e.snapshot(t, "mask", maskD)
		what := "LoadBalancingLoss(mask: " + pattern + ")"
		lm := e.scalar(t, what, []input{inLogits, inPlan, inMask}, func() (float64, error) {
			return e.lossValue(dt, func(l *tensor.Dense) error { return e.b.LoadBalancingLoss(logitsD, planD, maskD, coef, l) })
		})
		closeTo(t, what, []float64{lm}, []float64{coef * refLoadBalancingLossMasked(logits, idx, mask, T, K, E)}, tol, nil)
		lmG := e.kernel(t, what+" grad", dt, []int{T, E}, []input{inLogits, inPlan, inMask}, func(out *tensor.Dense) error {
			return e.b.LoadBalancingLossGrad(logitsD, planD, maskD, lblScale, gD, out)
		})
		closeTo(t, what+" grad", e.readF(t, lmG), refLoadBalancingLossMaskedGrad(logits, idx, mask, T, K, E, lblScale*upstream), tol, nil)
	}

	z := e.scalar(t, "ZLoss", []input{inLogits}, func() (float64, error) {
		return e.lossValue(dt, func(l *tensor.Dense) error { return e.b.ZLoss(logitsD, 1, l) })
	})
	closeTo(t, "ZLoss", []float64{z}, []float64{refZLoss(logits, T, E)}, tol, nil)
	const zScale = 1.7
	zG := e.kernel(t, "ZLossGrad", dt, []int{T, E}, []input{inLogits}, func(out *tensor.Dense) error {
		return e.b.ZLossGrad(logitsD, zScale, nil, out)
	})
	closeTo(t, "ZLossGrad", e.readF(t, zG), refZLossGrad(logits, T, E, zScale), tol, nil)
	zGg := e.kernel(t, "ZLossGrad(g)", dt, []int{T, E}, []input{inLogits}, func(out *tensor.Dense) error {
		return e.b.ZLossGrad(logitsD, zScale, gD, out)
	})
	closeTo(t, "ZLossGrad(g)", e.readF(t, zGg), refZLossGrad(logits, T, E, zScale*upstream), tol, nil)
}

// checkPlanInvariants checks the structural properties of a plan without the reference.
func checkPlanInvariants(t testing.TB, plan, idx []int32, T, K, E int) {
	t.Helper()
	pv, err := ops.NewPlanView(plan, T, K, E)
	if err != nil {
		t.Errorf("plan invariants: %v", err)
		return
	}
	n := T * K
	var sum int32
	for e, c := range pv.Counts {
		if c < 0 {
			t.Errorf("plan: counts[%d] = %d < 0", e, c)
		}
		sum += c
	}
	if int(sum) != n {
		t.Errorf("plan: counts sum to %d, want T*K = %d", sum, n)
	}
	if pv.Offsets[0] != 0 || int(pv.Offsets[E]) != n {
		t.Errorf("plan: offsets[0] = %d, offsets[E] = %d, want 0 and %d", pv.Offsets[0], pv.Offsets[E], n)
	}
	for e := 0; e < E; e++ {
		if pv.Offsets[e+1] != pv.Offsets[e]+pv.Counts[e] {
			t.Errorf("plan: offsets is not the exclusive scan of counts at expert %d", e)
			return
		}
	}
	seenRow := make([]bool, n)
	perToken := make([]int, T)
	for s := 0; s < n; s++ {
		r := pv.RowOf[s]
		if r < 0 || int(r) >= n {
			t.Errorf("plan: rowOf[%d] = %d out of range", s, r)
			return
		}
		if seenRow[r] {
			t.Errorf("plan: rowOf is not a permutation (row %d twice)", r)
			return
		}
		seenRow[r] = true
		if pv.SlotOf[r] != int32(s) {
			t.Errorf("plan: slotOf[rowOf[%d]] = %d, want %d (not inverse permutations)", s, pv.SlotOf[r], s)
			return
		}
	}
	for e := 0; e < E; e++ {
		for r := pv.Offsets[e]; r < pv.Offsets[e+1]; r++ {
			s := pv.SlotOf[r]
			if s < 0 || int(s) >= n {
				t.Errorf("plan: slotOf[%d] = %d out of range", r, s)
				return
			}
			if idx[s] != int32(e) {
				t.Errorf("plan: row %d is in expert %d's segment but holds slot %d of expert %d", r, e, s, idx[s])
				return
			}
			if r > pv.Offsets[e] && pv.SlotOf[r-1] >= s {
				t.Errorf("plan: rows of expert %d not in increasing slot order at row %d", e, r)
				return
			}
			perToken[int(s)/K]++
		}
	}
	for tok, c := range perToken {
		if c != K {
			t.Errorf("plan: token %d appears %d times, want K = %d", tok, c, K)
			return
		}
	}
}
