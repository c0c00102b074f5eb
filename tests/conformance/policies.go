package conformance

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// testPolicies: sigmoid scoring with a selection bias and group-limited selection, the route scale,
// capacity plans and what every kernel does with their dropped slots, aux-loss-free bias balancing and
// the routing diagnostics.
func (e *env) testPolicies(t *testing.T) {
	t.Run("SigmoidKnown", e.testSigmoidKnown)
	t.Run("CapacityKnown", e.testCapacityKnown)
	t.Run("Random", e.testPolicyRandom)
	t.Run("CapacityTies", e.testCapacityTies)
	t.Run("FiniteDifferences", e.testPolicyFD)
	t.Run("BadInputs", e.testPolicyBadInputs)
}

// policyConfigs are the routing configurations the policy cases run under for K experts of E.
func policyConfigs(K, E int) []ops.RouteConfig {
	cfgs := []ops.RouteConfig{
		{K: K, Scoring: ops.Sigmoid, Renormalize: true},
		{K: K, Scoring: ops.Sigmoid, Renormalize: false, Scale: 2.5},
		{K: K, Scoring: ops.SoftmaxTopK, Renormalize: true, Scale: 1.5},
		{K: K, Scoring: ops.SoftmaxTopK, Renormalize: false, Scale: 0.5},
		{K: K, Scoring: ops.TopKSoftmax, Scale: 3},
	}
	for _, g := range []int{2, 4, 8} {
		if E%g != 0 || E/g < 2 {
			continue
		}
		for _, tg := range []int{1, g / 2} {
			if tg < 1 || K > tg*(E/g) {
				continue
			}
			for _, m := range []ops.GroupMask{ops.GroupMaskZero, ops.GroupMaskExclude} {
				cfgs = append(cfgs, ops.RouteConfig{K: K, Scoring: ops.Sigmoid, Renormalize: true, Groups: g, TopKGroups: tg, GroupMask: m, Scale: 1.25})
			}
		}
	}
	return cfgs
}

// testSigmoidKnown: hand-worked DeepSeek-V3 routings, E=8 in 4 groups of 2.
//
//	token A, logits [0 1 2 -1 3 -2 0.5 1.5], no bias, keep 2 groups, k=2: sigmoid scores .50 .73 .88
//	  .27 .95 .12 .62 .82; group scores (top-2 sums) 1.23 1.15 1.07 1.44 -> groups 3 and 0 -> experts
//	  7 (.82) and 1 (.73). Without groups: experts 4 and 2.
//	token B, logits [2 -5 0 0 -1 -1 -2 -2], bias -0.9 everywhere, keep 1 group, k=2: values -.02 -.89
//	  -.40 -.40 -.63 -.63 -.78 -.78; group scores -.91 -.80 -1.26 -1.56 -> group 1 (experts 2, 3).
//	  GroupMaskExclude (the default, transformers 5.17): experts 2 and 3 (a tie at -.40).
//	  GroupMaskZero (earlier transformers): the dropped experts' values become 0 > -.40, so experts 0
//	  and 1 (a tie at 0: lower index first).
func (e *env) testSigmoidKnown(t *testing.T) {
	const E = 8
	rowA := []float64{0, 1, 2, -1, 3, -2, 0.5, 1.5}
	rowB := []float64{2, -5, 0, 0, -1, -1, -2, -2}
	minus := make([]float64, E)
	for i := range minus {
		minus[i] = -0.9
	}
	cases := []struct {
		name    string
		row     []float64
		bias    []float64
		cfg     ops.RouteConfig
		wantIdx []int32
		wantW   []float64
	}{
		{"groups", rowA, nil, ops.RouteConfig{K: 2, Scoring: ops.Sigmoid, Renormalize: true, Groups: 4, TopKGroups: 2, Scale: 2.5},
			[]int32{7, 1}, []float64{1.3198324703955537, 1.1801675296044463}},
		{"no groups", rowA, nil, ops.RouteConfig{K: 2, Scoring: ops.Sigmoid},
			[]int32{4, 2}, []float64{1 / (1 + math.Exp(-3)), 0.8807970779778823}},
		{"zero mask", rowB, minus, ops.RouteConfig{K: 2, Scoring: ops.Sigmoid, Groups: 4, TopKGroups: 1, GroupMask: ops.GroupMaskZero},
			[]int32{0, 1}, []float64{0.8807970779778823, 0.0066928509242848554}},
		{"exclude mask", rowB, minus, ops.RouteConfig{K: 2, Scoring: ops.Sigmoid, Groups: 4, TopKGroups: 1, GroupMask: ops.GroupMaskExclude},
			[]int32{2, 3}, []float64{0.5, 0.5}},
		{"default mask", rowB, minus, ops.RouteConfig{K: 2, Scoring: ops.Sigmoid, Groups: 4, TopKGroups: 1},
			[]int32{2, 3}, []float64{0.5, 0.5}},
		{"no groups, bias", rowB, minus, ops.RouteConfig{K: 2, Scoring: ops.Sigmoid},
			[]int32{0, 2}, []float64{0.8807970779778823, 0.5}},
	}
	for _, c := range cases {
		for _, dt := range e.o.Dtypes {
			t.Run(fmt.Sprintf("%s/%v", c.name, dt), func(t *testing.T) {
				lD := e.devF(t, dt, c.row, 1, E)
				var bD *tensor.Dense
				if c.bias != nil {
					bD = e.devF(t, dt, c.bias, E)
				}
				idx := e.out(t, tensor.Int32, 1, 2)
				mustCall(t, "RouteIndicesBias", func() error { return e.b.RouteIndicesBias(lD, bD, c.cfg, idx.d) })
				idx.checkGuard(t, "RouteIndicesBias")
				equalI(t, "RouteIndicesBias", e.readI(t, idx.d), c.wantIdx)
				if c.bias == nil {
					mustCall(t, "RouteIndices", func() error { return e.b.RouteIndices(lD, c.cfg, idx.d) })
					equalI(t, "RouteIndices (sigmoid, no bias)", e.readI(t, idx.d), c.wantIdx)
				}
				w := e.out(t, dt, 1, 2)
				mustCall(t, "RouteWeights", func() error { return e.b.RouteWeights(lD, idx.d, c.cfg, w.d) })
				closeTo(t, "RouteWeights (the unbiased scores)", e.readF(t, w.d), c.wantW, e.o.tol(dt), nil)
			})
		}
	}
}

// testCapacityKnown: T=4, K=2, E=3, capacity 2, worked out by hand.
//
//	indices [0 1 | 0 2 | 0 1 | 1 0]: expert 0 gets slots 0 2 4 7, expert 1 slots 1 5 6, expert 2 slot 3.
//	position: keep 0 2 | 1 5 | 3, drop 4 7 | 6.
//	probs, weights [.6 .4 | .1 .9 | .7 .3 | .2 .8]: keep 4 7 (.7 .8) | 1 5 | 3, drop 0 2 | 6.
func (e *env) testCapacityKnown(t *testing.T) {
	const T, K, E, C, H = 4, 2, 3, 2, 1
	idx := []int32{0, 1, 0, 2, 0, 1, 1, 0}
	w := []float64{0.6, 0.4, 0.1, 0.9, 0.7, 0.3, 0.2, 0.8}
	cases := []struct {
		policy   ops.DropPolicy
		wantPlan []int32
		disp     []float64 // Dispatch(x = [1 2 3 4], nil)
		comb     []float64 // Combine(Dispatch(x), nil): x times the kept slots of the token
	}{
		{ops.DropPosition,
			[]int32{4, 3, 1, 0, 2, 4, 5, 0, 2, 1, 4, 5, 3, 7, 6, 0, 2, 1, 5, 3, 4, 7, 6},
			[]float64{1, 2, 1, 3, 2, 0, 0, 0}, []float64{2, 4, 3, 0}},
		{ops.DropProbs,
			[]int32{4, 3, 1, 0, 2, 4, 5, 5, 2, 6, 4, 0, 3, 7, 1, 4, 7, 1, 5, 3, 0, 2, 6},
			[]float64{3, 4, 1, 3, 2, 0, 0, 0}, []float64{1, 2, 6, 4}},
	}
	x := []float64{1, 2, 3, 4}
	for _, c := range cases {
		for _, dt := range e.o.Dtypes {
			t.Run(fmt.Sprintf("%v/%v", c.policy, dt), func(t *testing.T) {
				idxD := e.devI(t, idx, T, K)
				var wD *tensor.Dense
				if c.policy == ops.DropProbs {
					wD = e.devF(t, dt, w, T, K)
				}
				plan := e.out(t, tensor.Int32, ops.PlanLen(T, K, E))
				mustCall(t, "CapacityPlan", func() error { return e.b.CapacityPlan(idxD, wD, E, C, c.policy, plan.d) })
				plan.checkGuard(t, "CapacityPlan")
				equalI(t, "CapacityPlan", e.readI(t, plan.d), c.wantPlan)
				xD := e.devF(t, dt, x, T, H)
				d := e.out(t, dt, T*K, H)
				mustCall(t, "Dispatch", func() error { return e.b.Dispatch(xD, nil, plan.d, d.d) })
				closeTo(t, "Dispatch (dropped rows zero)", e.readF(t, d.d), c.disp, 0, nil)
				y := e.out(t, dt, T, H)
				mustCall(t, "Combine", func() error { return e.b.Combine(d.d, nil, plan.d, y.d) })
				closeTo(t, "Combine(Dispatch(x)) (dropped slots left out)", e.readF(t, y.d), c.comb, 0, nil)

				// Balancing: routed counts [4 3 1], mean 8/3: experts 0 and 1 down, expert 2 up.
				bias := e.devF(t, dt, []float64{0.5, 0, -0.25}, E)
				mustCall(t, "UpdateBalanceBias", func() error { return e.b.UpdateBalanceBias(bias, plan.d, 0.125) })
				closeTo(t, "UpdateBalanceBias", e.readF(t, bias), []float64{0.375, -0.125, -0.125}, 0, nil)

				// Diagnostics: routed [4 3 1], kept [2 2 1], 3 dropped; uniform logits: entropy log 3.
				l := e.devF(t, dt, make([]float64, T*E), T, E)
				for _, sc := range []ops.Scoring{ops.SoftmaxTopK, ops.Sigmoid} {
					st := e.out(t, tensor.Float64, ops.RouteStatsLen(E))
					mustCall(t, "RouteStats", func() error { return e.b.RouteStats(l, plan.d, ops.RouteConfig{K: K, Scoring: sc}, st.d) })
					closeTo(t, fmt.Sprintf("RouteStats(%v)", sc), e.readF(t, st.d), []float64{4, 3, 1, 2, 2, 1, 3, math.Log(3)}, 1e-6, nil)
				}
			})
		}
	}
}

// policyCase is one random routing under a policy, through every kernel.
type policyCase struct {
	T, E, K, H, Out int
	dt              tensor.Dtype
	cfg             ops.RouteConfig
	bias            bool
	capacity        int
}

func (c policyCase) String() string {
	return fmt.Sprintf("T=%d,E=%d,K=%d,H=%d,%v,%v,bias=%t,C=%d", c.T, c.E, c.K, c.H, c.dt, c.cfg, c.bias, c.capacity)
}

// testPolicyRandom runs random routings over shapes, policies, capacities and drop policies.
func (e *env) testPolicyRandom(t *testing.T) {
	shapes := []shape{{5, 4, 2, 3, 2}, {16, 8, 2, 5, 3}, {33, 16, 4, 6, 2}, {9, 6, 3, 130, 4}, {64, 32, 6, 4, 3}, {12, 256, 8, 3, 2}}
	for si, s := range shapes {
		for _, dt := range e.o.Dtypes {
			for ci, cfg := range policyConfigs(s.K, s.E) {
				type combo struct {
					capacity int
					pol      ops.DropPolicy
				}
				c1 := max(1, s.T*s.K/s.E)
				combos := []combo{{0, ops.DropPosition}, {1, ops.DropPosition}, {1, ops.DropProbs}, {c1, ops.DropPosition}, {c1, ops.DropProbs}}
				for n, cb := range combos {
					// Each configuration meets one capacity and drop policy per shape, in turn (every
					// pairing over the shapes); Short keeps the small shapes only for the larger E.
					if n != (ci+si)%len(combos) || (e.o.Short && s.E > 32 && ci%3 != 0) {
						continue
					}
					c := cfg
					c.DropPolicy = cb.pol
					pc := policyCase{T: s.T, E: s.E, K: s.K, H: s.H, Out: s.Out, dt: dt, cfg: c,
						bias: cfg.Scoring == ops.Sigmoid && ci%2 == 0, capacity: cb.capacity}
					seed := int64(7000*si + 31*ci + 3*cb.capacity + int(cb.pol) + len(dt.String()))
					t.Run(pc.String(), func(t *testing.T) { e.runPolicy(t, pc, seed) })
				}
			}
		}
	}
}

// runPolicy: route (with the bias), weights and their gradient, the capacity plan, then every plan
// kernel on it, the balancing update and the diagnostics, each against the reference.
func (e *env) runPolicy(t *testing.T, pc policyCase, seed int64) {
	T, E, K, H, Out, dt := pc.T, pc.E, pc.K, pc.H, pc.Out, pc.dt
	tol := e.o.tol(dt)
	rng := rand.New(rand.NewSource(seed))
	logits := roundTo(dt, gappedLogits(rng, T, E))
	lD := e.devF(t, dt, logits, T, E)
	inL := e.snapshot(t, "logits", lD)
	var bias []float64
	var bD *tensor.Dense
	ins := []input{inL}
	if pc.bias {
		bias = roundTo(dt, randVals(rng, E))
		for i := range bias {
			bias[i] = rnd(dt, bias[i]*0.1)
		}
		bD = e.devF(t, dt, bias, E)
		ins = append(ins, e.snapshot(t, "bias", bD))
	}
	idx := refPolicyIndices(dt, logits, bias, T, E, pc.cfg)
	idxD := e.kernel(t, "RouteIndicesBias", tensor.Int32, []int{T, K}, ins, func(out *tensor.Dense) error {
		return e.b.RouteIndicesBias(lD, bD, pc.cfg, out)
	})
	equalI(t, "RouteIndicesBias", e.readI(t, idxD), idx)
	inIdx := e.snapshot(t, "idx", idxD)
	wD := e.kernel(t, "RouteWeights", dt, []int{T, K}, []input{inL, inIdx}, func(out *tensor.Dense) error {
		return e.b.RouteWeights(lD, idxD, pc.cfg, out)
	})
	w := e.readF(t, wD)
	closeTo(t, "RouteWeights", w, refPolicyWeights(logits, idx, T, E, K, pc.cfg), tol, nil)
	dw := roundTo(dt, randVals(rng, T*K))
	dwD := e.devF(t, dt, dw, T, K)
	dlD := e.kernel(t, "RouteWeightsGrad", dt, []int{T, E}, []input{inL, inIdx, e.snapshot(t, "dw", dwD)}, func(out *tensor.Dense) error {
		return e.b.RouteWeightsGrad(lD, idxD, dwD, pc.cfg, out)
	})
	closeTo(t, "RouteWeightsGrad", e.readF(t, dlD), refPolicyWeightsGrad(logits, idx, dw, T, E, K, pc.cfg), tol, nil)

	var planD *tensor.Dense
	var planWant []int32
	if pc.capacity == 0 {
		planWant = refPlan(idx, T, K, E)
		planD = e.kernel(t, "Plan", tensor.Int32, []int{ops.PlanLen(T, K, E)}, []input{inIdx}, func(out *tensor.Dense) error {
			return e.b.Plan(idxD, E, out)
		})
	} else {
		var pw *tensor.Dense
		pins := []input{inIdx}
		if pc.cfg.DropPolicy == ops.DropProbs {
			pw = wD
			pins = append(pins, e.snapshot(t, "w", wD))
		}
		planWant = refCapacityPlan(idx, w, T, K, E, pc.capacity, pc.cfg.DropPolicy)
		planD = e.kernel(t, "CapacityPlan", tensor.Int32, []int{ops.PlanLen(T, K, E)}, pins, func(out *tensor.Dense) error {
			return e.b.CapacityPlan(idxD, pw, E, pc.capacity, pc.cfg.DropPolicy, out)
		})
	}
	plan := e.readI(t, planD)
	equalI(t, "plan", plan, planWant)
	checkCapacityPlanInvariants(t, plan, idx, T, K, E, pc.capacity)
	pv, err := ops.NewPlanView(planWant, T, K, E)
	if err != nil {
		t.Fatal(err)
	}
	e.planKernels(t, pv, plan, planD, idx, logits, lD, H, Out, dt, rng)

	// Balancing and diagnostics.
	b0 := roundTo(dt, randVals(rng, E))
	biasD := e.devF(t, dt, b0, E)
	const rate = 0.001
	mustCall(t, "UpdateBalanceBias", func() error { return e.b.UpdateBalanceBias(biasD, planD, rate) })
	closeTo(t, "UpdateBalanceBias", e.readF(t, biasD), refBalanceBias(dt, b0, pv.Counts, T, K, rate), 0, nil)
	e.unchanged(t, "UpdateBalanceBias", e.snapshot(t, "plan", planD))
	st := e.kernel(t, "RouteStats", tensor.Float64, []int{ops.RouteStatsLen(E)}, []input{inL}, func(out *tensor.Dense) error {
		return e.b.RouteStats(lD, planD, pc.cfg, out)
	})
	closeTo(t, "RouteStats", e.readF(t, st), refRouteStats(logits, pv, T, E, pc.cfg.Scoring == ops.Sigmoid), 1e-9, nil)
}

// planKernels runs dispatch, combine and their gradients, the grouped matmul (and ClearDroppedRows)
// and the load-balancing loss on a (capacity) plan against the reference.
func (e *env) planKernels(t *testing.T, pv ops.PlanView, plan []int32, planD *tensor.Dense, idx []int32, logits []float64, lD *tensor.Dense, H, Out int, dt tensor.Dtype, rng *rand.Rand) {
	T, K, E := pv.T, pv.K, pv.E
	N := T * K
	tol := e.o.tol(dt)
	inPlan := e.snapshot(t, "plan", planD)
	x := roundTo(dt, randVals(rng, T*H))
	xD := e.devF(t, dt, x, T, H)
	inX := e.snapshot(t, "x", xD)
	disp := e.kernel(t, "Dispatch", dt, []int{N, H}, []input{inX, inPlan}, func(out *tensor.Dense) error {
		return e.b.Dispatch(xD, nil, planD, out)
	})
	closeTo(t, "Dispatch", e.readF(t, disp), refDispatch(x, nil, pv, H), 0, nil)
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
	unit := make([]float64, T*H)
	for i := range unit {
		unit[i] = float64(K)
	}
	comb := e.kernel(t, "Combine(w)", dt, []int{T, H}, []input{inYe, inW, inPlan}, func(out *tensor.Dense) error {
		return e.b.Combine(yeD, wrD, planD, out)
	})
	closeTo(t, "Combine(w)", e.readF(t, comb), refCombine(ye, wr, pv, H), tol, unit)
	combN := e.kernel(t, "Combine(nil)", dt, []int{T, H}, []input{inYe, inPlan}, func(out *tensor.Dense) error {
		return e.b.Combine(yeD, nil, planD, out)
	})
	closeTo(t, "Combine(nil)", e.readF(t, combN), refCombine(ye, nil, pv, H), tol, unit)

	dy := roundTo(dt, randVals(rng, T*H))
	dyD := e.devF(t, dt, dy, T, H)
	inDy := e.snapshot(t, "dy", dyD)
	cgw := e.kernel(t, "CombineGradWeights", dt, []int{T, K}, []input{inDy, inYe, inPlan}, func(out *tensor.Dense) error {
		return e.b.CombineGradWeights(dyD, yeD, planD, out)
	})
	cgwWant, cgwScale := refCombineGradWeights(dy, ye, pv, H)
	closeTo(t, "CombineGradWeights", e.readF(t, cgw), cgwWant, tol, cgwScale)
	if fused, ok := e.b.(ops.CombineBackwarder); ok {
		dye := e.out(t, dt, N, H)
		dwo := e.out(t, dt, T, K)
		mustCall(t, "CombineBackward", func() error { return fused.CombineBackward(dyD, yeD, wrD, planD, dye.d, dwo.d) })
		closeTo(t, "CombineBackward dye", e.readF(t, dye.d), refDispatch(dy, wr, pv, H), tol, nil)
		closeTo(t, "CombineBackward dw", e.readF(t, dwo.d), cgwWant, tol, cgwScale)
		e.unchanged(t, "CombineBackward", inDy, inYe, inW, inPlan)
	}

	// Grouped matmul: the kept rows against the reference; ClearDroppedRows zeroes the rest.
	xp := roundTo(dt, randVals(rng, N*H))
	xpD := e.devF(t, dt, xp, N, H)
	wm := roundTo(dt, randVals(rng, E*H*Out))
	wmD := e.devF(t, dt, wm, E, H, Out)
	kept := int(pv.Offsets[E])
	g := e.kernel(t, "GroupedMatMul", dt, []int{N, Out}, []input{e.snapshot(t, "packed", xpD), e.snapshot(t, "W", wmD), inPlan}, func(out *tensor.Dense) error {
		if err := e.b.GroupedMatMul(xpD, wmD, planD, false, out); err != nil {
			return err
		}
		return e.b.ClearDroppedRows(out, planD)
	})
	gWant, gScale := refGroupedMatMul(xp, wm, pv.Offsets, E, H, Out, false)
	closeTo(t, "GroupedMatMul + ClearDroppedRows", e.readF(t, g), gWant, tol, gScale)
	onlyGMM := e.out(t, dt, N, Out)
	mustCall(t, "GroupedMatMul", func() error { return e.b.GroupedMatMul(xpD, wmD, planD, false, onlyGMM.d) })
	closeTo(t, "GroupedMatMul (kept rows)", e.readF(t, onlyGMM.d)[:kept*Out], gWant[:kept*Out], tol, gScale[:kept*Out])
	rows := e.devF(t, dt, xp, N, H)
	mustCall(t, "ClearDroppedRows", func() error { return e.b.ClearDroppedRows(rows, planD) })
	wantRows := append([]float64(nil), xp...)
	clear(wantRows[kept*H:])
	closeTo(t, "ClearDroppedRows", e.readF(t, rows), wantRows, 0, nil)
	dyp := roundTo(dt, randVals(rng, N*Out))
	dypD := e.devF(t, dt, dyp, N, Out)
	gw := e.kernel(t, "GroupedMatMulGradW", dt, []int{E, H, Out}, []input{inPlan}, func(out *tensor.Dense) error {
		return e.b.GroupedMatMulGradW(xpD, dypD, planD, out)
	})
	gwWant, gwScale := refGroupedMatMulGradW(xp, dyp, pv.Offsets, E, H, Out)
	closeTo(t, "GroupedMatMulGradW", e.readF(t, gw), gwWant, tol, gwScale)

	// The load-balancing loss counts every routed slot, dropped or not.
	lbl := e.scalar(t, "LoadBalancingLoss", []input{inPlan}, func() (float64, error) {
		return e.lossValue(dt, func(l *tensor.Dense) error { return e.b.LoadBalancingLoss(lD, planD, nil, 1, l) })
	})
	closeTo(t, "LoadBalancingLoss", []float64{lbl}, []float64{refLoadBalancingLoss(logits, pv.Counts, T, E)}, tol, nil)
	mask := make([]int32, T)
	for tok := range mask {
		mask[tok] = int32(tok % 2)
	}
	maskD := e.devI(t, mask, T)
	lm := e.scalar(t, "LoadBalancingLoss(mask)", []input{inPlan}, func() (float64, error) {
		return e.lossValue(dt, func(l *tensor.Dense) error { return e.b.LoadBalancingLoss(lD, planD, maskD, 1, l) })
	})
	closeTo(t, "LoadBalancingLoss(mask)", []float64{lm}, []float64{refLoadBalancingLossMasked(logits, idx, mask, T, K, E)}, tol, nil)
	lmG := e.kernel(t, "LoadBalancingLossGrad(mask)", dt, []int{T, E}, []input{inPlan}, func(out *tensor.Dense) error {
		return e.b.LoadBalancingLossGrad(lD, planD, maskD, 1, nil, out)
	})
	closeTo(t, "LoadBalancingLossGrad(mask)", e.readF(t, lmG), refLoadBalancingLossMaskedGrad(logits, idx, mask, T, K, E, 1), tol, nil)
}

// checkCapacityPlanInvariants checks a (capacity) plan's structure without the reference: routed counts
// sum to T*K, segments hold min(count, C) rows (all rows without a capacity), rowOf and slotOf are
// inverse permutations, kept rows of an expert are its slots in increasing slot order, dropped rows
// follow expert by expert in slot order.
func checkCapacityPlanInvariants(t testing.TB, plan, idx []int32, T, K, E, C int) {
	t.Helper()
	pv, err := ops.NewPlanView(plan, T, K, E)
	if err != nil {
		t.Errorf("plan invariants: %v", err)
		return
	}
	n := T * K
	var sum int32
	for e := 0; e < E; e++ {
		sum += pv.Counts[e]
		want := pv.Counts[e]
		if C > 0 {
			want = min(want, int32(C))
		}
		if pv.Offsets[e+1]-pv.Offsets[e] != want {
			t.Errorf("plan: expert %d keeps %d rows, want min(count %d, C %d)", e, pv.Offsets[e+1]-pv.Offsets[e], pv.Counts[e], C)
			return
		}
	}
	if int(sum) != n || pv.Offsets[0] != 0 {
		t.Errorf("plan: counts sum to %d (want %d), offsets[0] = %d", sum, n, pv.Offsets[0])
		return
	}
	seen := make([]bool, n)
	for s := 0; s < n; s++ {
		r := pv.RowOf[s]
		if r < 0 || int(r) >= n || seen[r] || pv.SlotOf[r] != int32(s) {
			t.Errorf("plan: rowOf/slotOf are not inverse permutations at slot %d (row %d)", s, r)
			return
		}
		seen[r] = true
	}
	check := func(e, lo, hi int, what string) bool {
		for r := lo; r < hi; r++ {
			s := pv.SlotOf[r]
			if idx[s] != int32(e) || (r > lo && pv.SlotOf[r-1] >= s) {
				t.Errorf("plan: %s rows of expert %d wrong or out of slot order at row %d", what, e, r)
				return false
			}
		}
		return true
	}
	d := int(pv.Offsets[E])
	for e := 0; e < E; e++ {
		if !check(e, int(pv.Offsets[e]), int(pv.Offsets[e+1]), "kept") {
			return
		}
		nd := int(pv.Counts[e] - (pv.Offsets[e+1] - pv.Offsets[e]))
		if !check(e, d, d+nd, "dropped") {
			return
		}
		d += nd
	}
}

// testCapacityTies: the probs policy with equal weights keeps the lower slots; signed zeros are equal.
func (e *env) testCapacityTies(t *testing.T) {
	const T, K, E, C = 6, 1, 2, 2
	idx := []int32{0, 0, 0, 0, 1, 1}
	negZero := math.Copysign(0, -1)
	for _, w := range [][]float64{
		{0.5, 0.5, 0.5, 0.5, 1, 1},
		{0.1, 0.9, 0.9, 0.9, 2, 2},
		{negZero, 0, negZero, 0, 0, negZero},
		{math.Inf(1), 1, math.Inf(1), math.Inf(-1), 1, 1},
	} {
		for _, dt := range e.o.Dtypes {
			t.Run(fmt.Sprintf("%v/%v", w, dt), func(t *testing.T) {
				plan := e.out(t, tensor.Int32, ops.PlanLen(T, K, E))
				wD := e.devF(t, dt, w, T, K)
				mustCall(t, "CapacityPlan", func() error { return e.b.CapacityPlan(e.devI(t, idx, T, K), wD, E, C, ops.DropProbs, plan.d) })
				equalI(t, "CapacityPlan(probs) ties", e.readI(t, plan.d), refCapacityPlan(idx, roundTo(dt, w), T, K, E, C, ops.DropProbs))
			})
		}
	}
}

// testPolicyFD checks the sigmoid and scaled weight gradients, and the gradients of dispatch, combine
// and the grouped matmul on a capacity plan, against central differences (float64).
func (e *env) testPolicyFD(t *testing.T) {
	dt := tensor.Float64
	const T, E, K, H, Out = 5, 8, 2, 3, 2
	N := T * K
	rng := rand.New(rand.NewSource(404))
	logits := gappedLogits(rng, T, E)
	forward := func(shape []int, run func(out *tensor.Dense) error) []float64 {
		out := e.out(t, dt, shape...).d
		mustCall(t, "forward", func() error { return run(out) })
		return e.readF(t, out)
	}
	for _, cfg := range policyConfigs(K, E) {
		t.Run(cfg.String(), func(t *testing.T) {
			idx := refPolicyIndices(dt, logits, nil, T, E, cfg)
			idxD := e.devI(t, idx, T, K)
			dw := randVals(rng, T*K)
			dwD := e.devF(t, dt, dw, T, K)
			lD := e.devF(t, dt, logits, T, E)
			g := forward([]int{T, E}, func(out *tensor.Dense) error { return e.b.RouteWeightsGrad(lD, idxD, dwD, cfg, out) })
			fd := fdGrad(logits, func(l []float64) float64 {
				ld := e.devF(t, dt, l, T, E)
				return dotF(dw, forward([]int{T, K}, func(out *tensor.Dense) error { return e.b.RouteWeights(ld, idxD, cfg, out) }))
			})
			fdClose(t, fmt.Sprintf("RouteWeightsGrad(%v)", cfg), g, fd, e.o.FDTol)
		})
	}
	for _, pol := range []ops.DropPolicy{ops.DropPosition, ops.DropProbs} {
		t.Run("capacity/"+pol.String(), func(t *testing.T) {
			idx := refRouteIndices(logits, T, E, K)
			w := randVals(rng, T*K)
			idxD, wD := e.devI(t, idx, T, K), e.devF(t, dt, w, T, K)
			planD := e.out(t, tensor.Int32, ops.PlanLen(T, K, E)).d
			mustCall(t, "CapacityPlan", func() error { return e.b.CapacityPlan(idxD, wD, E, 1, pol, planD) })
			x, ye, dy, dout := randVals(rng, T*H), randVals(rng, N*H), randVals(rng, T*H), randVals(rng, N*H)
			yeD, dyD, doutD := e.devF(t, dt, ye, N, H), e.devF(t, dt, dy, T, H), e.devF(t, dt, dout, N, H)
			g := forward([]int{T, H}, func(out *tensor.Dense) error { return e.b.Combine(doutD, nil, planD, out) })
			fd := fdGrad(x, func(v []float64) float64 {
				vd := e.devF(t, dt, v, T, H)
				return dotF(dout, forward([]int{N, H}, func(out *tensor.Dense) error { return e.b.Dispatch(vd, nil, planD, out) }))
			})
			fdClose(t, "Dispatch wrt x (capacity)", g, fd, e.o.FDTol)
			g = forward([]int{N, H}, func(out *tensor.Dense) error { return e.b.Dispatch(dyD, wD, planD, out) })
			fd = fdGrad(ye, func(v []float64) float64 {
				vd := e.devF(t, dt, v, N, H)
				return dotF(dy, forward([]int{T, H}, func(out *tensor.Dense) error { return e.b.Combine(vd, wD, planD, out) }))
			})
			fdClose(t, "Combine wrt ye (capacity: dropped rows get 0)", g, fd, e.o.FDTol)
			g = forward([]int{T, K}, func(out *tensor.Dense) error { return e.b.CombineGradWeights(dyD, yeD, planD, out) })
			fd = fdGrad(w, func(v []float64) float64 {
				vd := e.devF(t, dt, v, T, K)
				return dotF(dy, forward([]int{T, H}, func(out *tensor.Dense) error { return e.b.Combine(yeD, vd, planD, out) }))
			})
			fdClose(t, "Combine wrt w (capacity: dropped slots get 0)", g, fd, e.o.FDTol)
			// Grouped matmul as the op runs it (GroupedMatMul, then ClearDroppedRows).
			xp, wm, dyp := randVals(rng, N*H), randVals(rng, E*H*Out), randVals(rng, N*Out)
			wmD, dypD := e.devF(t, dt, wm, E, H, Out), e.devF(t, dt, dyp, N, Out)
			gmm := func(a, b *tensor.Dense, tr bool) func(out *tensor.Dense) error {
				return func(out *tensor.Dense) error {
					if err := e.b.GroupedMatMul(a, b, planD, tr, out); err != nil {
						return err
					}
					return e.b.ClearDroppedRows(out, planD)
				}
			}
			// dx = dy . W[e]^T: the same tensor read with the other storage order.
			g = forward([]int{N, H}, gmm(dypD, wmD, true))
			fd = fdGrad(xp, func(v []float64) float64 {
				return dotF(dyp, forward([]int{N, Out}, gmm(e.devF(t, dt, v, N, H), wmD, false)))
			})
			fdClose(t, "GroupedMatMul wrt x (capacity)", g, fd, e.o.FDTol)
		})
	}
}

// testPolicyBadInputs: a NaN logit (sigmoid) or a NaN or infinite bias is ErrNaN; infinite logits are
// valid under sigmoid; a bias with a softmax scoring is ErrConfig; NaN weights under the probs policy
// are ErrNaN; out-of-range indices in a capacity plan are ErrExpertIndex.
func (e *env) testPolicyBadInputs(t *testing.T) {
	const T, K, E = 3, 2, 4
	wantErr := func(t *testing.T, what string, sentinel, err error) {
		t.Helper()
		if err == nil || !errors.Is(err, sentinel) {
			t.Errorf("%s: error %v, want one wrapping %v", what, err, sentinel)
		}
	}
	cfgs := []ops.RouteConfig{{K: K, Scoring: ops.Sigmoid, Renormalize: true}, {K: K, Scoring: ops.Sigmoid, Groups: 2, TopKGroups: 1}}
	inf := math.Inf(1)
	for _, dt := range e.o.Dtypes {
		t.Run(dt.String(), func(t *testing.T) {
			good := []float64{0.5, 1, 2, 0, 1, 0, -1, 2, 3, 1, 0, 2}
			for _, cfg := range cfgs {
				for _, c := range []struct {
					name   string
					row    []float64
					bias   []float64
					ok     bool
					expect []int32 // indices of token 1 when ok
				}{
					{"NaN logit", []float64{0, math.NaN(), 1, 2}, nil, false, nil},
					{"NaN bias", []float64{0, 1, 2, 3}, []float64{0, 0, math.NaN(), 0}, false, nil},
					{"+Inf bias", []float64{0, 1, 2, 3}, []float64{0, inf, 0, 0}, false, nil},
					{"-Inf bias", []float64{0, 1, 2, 3}, []float64{0, 0, 0, -inf}, false, nil},
					{"infinite logits", []float64{-inf, inf, 0, -inf}, nil, true, nil},
				} {
					l := append(append(append([]float64{}, good[:E]...), c.row...), good[2*E:]...)
					lD := e.devF(t, dt, l, T, E)
					var bD *tensor.Dense
					if c.bias != nil {
						bD = e.devF(t, dt, c.bias, E)
					}
					what := fmt.Sprintf("%s %v", c.name, cfg)
					idx := e.out(t, tensor.Int32, T, K)
					err := call(t, what, func() error { return e.b.RouteIndicesBias(lD, bD, cfg, idx.d) })
					if c.ok {
						if err != nil {
							t.Errorf("%s: %v", what, err)
							continue
						}
						equalI(t, what, e.readI(t, idx.d), refPolicyIndices(dt, roundTo(dt, l), nil, T, E, cfg))
						wD := e.out(t, dt, T, K)
						mustCall(t, what+" weights", func() error { return e.b.RouteWeights(lD, idx.d, cfg, wD.d) })
						closeTo(t, what+" weights", e.readF(t, wD.d), refPolicyWeights(roundTo(dt, l), e.readI(t, idx.d), T, E, K, cfg), e.o.tol(dt), nil)
						continue
					}
					wantErr(t, what, ops.ErrNaN, err)
					if c.bias == nil {
						okIdx := e.devI(t, []int32{0, 1, 1, 2, 2, 3}, T, K)
						wantErr(t, what+" weights", ops.ErrNaN, call(t, what, func() error { return e.b.RouteWeights(lD, okIdx, cfg, e.out(t, dt, T, K).d) }))
						dw := e.devF(t, dt, make([]float64, T*K), T, K)
						wantErr(t, what+" grad", ops.ErrNaN, call(t, what, func() error {
							return e.b.RouteWeightsGrad(lD, okIdx, dw, cfg, e.out(t, dt, T, E).d)
						}))
						st := e.out(t, tensor.Float64, ops.RouteStatsLen(E))
						planD := e.out(t, tensor.Int32, ops.PlanLen(T, K, E))
						mustCall(t, "Plan", func() error { return e.b.Plan(okIdx, E, planD.d) })
						wantErr(t, what+" stats", ops.ErrNaN, call(t, what, func() error { return e.b.RouteStats(lD, planD.d, cfg, st.d) }))
					}
				}
			}
			lD := e.devF(t, dt, good, T, E)
			bD := e.devF(t, dt, make([]float64, E), E)
			for _, sc := range []ops.Scoring{ops.SoftmaxTopK, ops.TopKSoftmax} {
				err := call(t, "bias with softmax", func() error {
					return e.b.RouteIndicesBias(lD, bD, ops.RouteConfig{K: K, Scoring: sc}, e.out(t, tensor.Int32, T, K).d)
				})
				wantErr(t, fmt.Sprintf("a bias with %v", sc), ops.ErrConfig, err)
			}
			idxD := e.devI(t, []int32{0, 1, 1, 2, 2, 3}, T, K)
			wD := e.devF(t, dt, []float64{0.1, 0.2, math.NaN(), 0.4, 0.5, 0.6}, T, K)
			wantErr(t, "CapacityPlan(probs) with a NaN weight", ops.ErrNaN, call(t, "CapacityPlan", func() error {
				return e.b.CapacityPlan(idxD, wD, E, 1, ops.DropProbs, e.out(t, tensor.Int32, ops.PlanLen(T, K, E)).d)
			}))
			for _, bad := range []int32{E, -1} {
				badD := e.devI(t, []int32{0, 1, 1, bad, 2, 3}, T, K)
				for _, pol := range []ops.DropPolicy{ops.DropPosition, ops.DropProbs} {
					okW := e.devF(t, dt, []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, T, K)
					wantErr(t, fmt.Sprintf("CapacityPlan(%v) with index %d", pol, bad), ops.ErrExpertIndex, call(t, "CapacityPlan", func() error {
						return e.b.CapacityPlan(badD, okW, E, 1, pol, e.out(t, tensor.Int32, ops.PlanLen(T, K, E)).d)
					}))
				}
			}
		})
	}
}
