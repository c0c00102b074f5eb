package conformance

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// allConfigs are the routing configurations every routed case runs under (TopKSoftmax ignores
// Renormalize; both settings are run to check that).
func allConfigs(k int) []ops.RouteConfig {
	return []ops.RouteConfig{
		{K: k, Scoring: ops.SoftmaxTopK, Renormalize: true},
		{K: k, Scoring: ops.SoftmaxTopK, Renormalize: false},
		{K: k, Scoring: ops.TopKSoftmax, Renormalize: false},
		{K: k, Scoring: ops.TopKSoftmax, Renormalize: true},
	}
}

// testBasics: New, FromHost, ToHost and Owns.
func (e *env) testBasics(t *testing.T) {
	if e.b.Name() == "" {
		t.Error("Name() is empty")
	}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32, tensor.Int32} {
		for _, shape := range [][]int{{1}, {3, 5}, {2, 3, 7}} {
			d, err := e.b.New(dt, shape...)
			if err != nil {
				t.Fatalf("New(%v, %v): %v", dt, shape, err)
			}
			if !e.b.Owns(d) {
				t.Errorf("Owns(New(%v, %v)) = false", dt, shape)
			}
			if d.Dtype() != dt || !d.Shape().Eq(tensor.Shape(shape)) {
				t.Errorf("New(%v, %v) gave %v %v", dt, shape, d.Dtype(), d.Shape())
			}
			for i, b := range e.bits(t, d) {
				if b != 0 {
					t.Errorf("New(%v, %v) is not zero-filled at %d", dt, shape, i)
					break
				}
			}
			n := d.Shape().TotalSize()
			var h *tensor.Dense
			if dt == tensor.Int32 {
				v := make([]int32, n)
				for i := range v {
					v[i] = int32(i*7919 - 100000)
				}
				h = hostInt32(v, shape...)
			} else {
				v := make([]float64, n)
				for i := range v {
					v[i] = math.Sin(float64(i)) * 1e3
				}
				if n > 1 {
					v[1] = math.Copysign(0, -1)
				}
				h = hostFloat(dt, v, shape...)
			}
			want := hostBits(h)
			dd, err := e.b.FromHost(h)
			if err != nil {
				t.Fatalf("FromHost(%v %v): %v", dt, shape, err)
			}
			if !e.b.Owns(dd) {
				t.Errorf("Owns(FromHost(...)) = false")
			}
			back := e.host(t, dd)
			if back.Dtype() != dt || !back.Shape().Eq(tensor.Shape(shape)) {
				t.Errorf("ToHost(FromHost(%v %v)) gave %v %v", dt, shape, back.Dtype(), back.Shape())
			}
			sameBits(t, fmt.Sprintf("ToHost(FromHost(%v %v)) round trip", dt, shape), hostBits(back), want)
		}
	}
}

func hostBits(h *tensor.Dense) []uint64 {
	switch v := h.Data().(type) {
	case []float64:
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = math.Float64bits(x)
		}
		return out
	case []float32:
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = uint64(math.Float32bits(x))
		}
		return out
	case []int32:
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = uint64(uint32(x))
		}
		return out
	}
	return nil
}

// testKnown: T=3, E=4, K=2 with answers worked out by hand.
//
//	logits  t0: [1, 3, 2, 0] -> experts 1, 2
//	        t1: [2, 0, 2, 1] -> experts 0, 2 (tie between 0 and 2: lower index first)
//	        t2: [0, 1, -1, 4] -> experts 3, 1
//	slots s = t*2+j: s0->1 s1->2 s2->0 s3->2 s4->3 s5->1
//	counts [1 2 2 1], offsets [0 1 3 5 6]
//	rows: e0: s2 | e1: s0 s5 | e2: s1 s3 | e3: s4  => slotOf [2 0 5 1 3 4], rowOf [1 3 0 4 5 2]
func (e *env) testKnown(t *testing.T) {
	const T, E, K, H = 3, 4, 2, 2
	logits := []float64{1, 3, 2, 0, 2, 0, 2, 1, 0, 1, -1, 4}
	wantIdx := []int32{1, 2, 0, 2, 3, 1}
	wantPlan := []int32{
		1, 2, 2, 1, // counts
		0, 1, 3, 5, 6, // offsets
		1, 3, 0, 4, 5, 2, // rowOf
		2, 0, 5, 1, 3, 4, // slotOf
	}
	// sigma(1), sigma(-1); 1/2, 1/2; sigma(3), sigma(-3)
	renormW := []float64{0.7310585786300049, 0.2689414213699951, 0.5, 0.5, 0.9525741268224333, 0.04742587317756679}
	// e^3/(e+e^3+e^2+1), e^2/(...); e^2/(2e^2+1+e); e^4/(1+e+e^-1+e^4), e/(...)
	plainW := []float64{0.6439142598879724, 0.23688281808991013, 0.39948630465030277, 0.39948630465030277, 0.9303704656505479, 0.04632041798078525}
	x := []float64{1, 2, 3, 4, 5, 6}
	wantDisp := []float64{3, 4, 1, 2, 5, 6, 1, 2, 3, 4, 5, 6}
	// W[e] = (e+1)*I: rows of experts 0, 1, 1, 2, 2, 3
	wantGMM := []float64{3, 4, 2, 4, 10, 12, 3, 6, 9, 12, 20, 24}
	const wantLBL = 1.949749857637793
	const wantZ = 12.309913973179142

	for _, dt := range e.o.Dtypes {
		t.Run(dt.String(), func(t *testing.T) {
			tol := e.o.tol(dt)
			lD := e.devF(t, dt, logits, T, E)
			for _, cfg := range allConfigs(K) {
				idxD := e.out(t, tensor.Int32, T, K)
				mustCall(t, "RouteIndices", func() error { return e.b.RouteIndices(lD, cfg, idxD.d) })
				equalI(t, fmt.Sprintf("RouteIndices(%v)", cfg), e.readI(t, idxD.d), wantIdx)
				wD := e.out(t, dt, T, K)
				mustCall(t, "RouteWeights", func() error { return e.b.RouteWeights(lD, idxD.d, cfg, wD.d) })
				want := renormW
				if !cfg.EffectiveRenormalize() {
					want = plainW
				}
				closeTo(t, fmt.Sprintf("RouteWeights(%v)", cfg), e.readF(t, wD.d), want, tol, nil)
			}
			idxD := e.devI(t, wantIdx, T, K)
			planD := e.out(t, tensor.Int32, ops.PlanLen(T, K, E))
			mustCall(t, "Plan", func() error { return e.b.Plan(idxD, E, planD.d) })
			equalI(t, "Plan", e.readI(t, planD.d), wantPlan)

			xD := e.devF(t, dt, x, T, H)
			dD := e.out(t, dt, T*K, H)
			mustCall(t, "Dispatch", func() error { return e.b.Dispatch(xD, nil, planD.d, dD.d) })
			closeTo(t, "Dispatch", e.readF(t, dD.d), wantDisp, 0, nil)

			// Combine with unit weights gives 2x; with renormalised weights (summing to 1) gives x.
			cD := e.out(t, dt, T, H)
			mustCall(t, "Combine(nil)", func() error { return e.b.Combine(dD.d, nil, planD.d, cD.d) })
			closeTo(t, "Combine(Dispatch(x), nil)", e.readF(t, cD.d), []float64{2, 4, 6, 8, 10, 12}, 0, nil)
			wD := e.devF(t, dt, renormW, T, K)
			mustCall(t, "Combine(w)", func() error { return e.b.Combine(dD.d, wD, planD.d, cD.d) })
			closeTo(t, "Combine(Dispatch(x), renormalised w)", e.readF(t, cD.d), x, 4*tol, nil)

			// dw[t,j] = <dy[t], ye[rowOf[t*K+j]]> with ye = Dispatch(x), dy = [1, 10] per token.
			dyD := e.devF(t, dt, []float64{1, 10, 1, 10, 1, 10}, T, H)
			gwD := e.out(t, dt, T, K)
			mustCall(t, "CombineGradWeights", func() error { return e.b.CombineGradWeights(dyD, dD.d, planD.d, gwD.d) })
			closeTo(t, "CombineGradWeights", e.readF(t, gwD.d), []float64{21, 21, 43, 43, 65, 65}, 0, nil)

			W := make([]float64, E*H*H)
			for ex := 0; ex < E; ex++ {
				for i := 0; i < H; i++ {
					W[ex*H*H+i*H+i] = float64(ex + 1)
				}
			}
			WD := e.devF(t, dt, W, E, H, H)
			gD := e.out(t, dt, T*K, H)
			for _, tr := range []bool{false, true} {
				mustCall(t, "GroupedMatMul", func() error { return e.b.GroupedMatMul(dD.d, WD, planD.d, tr, gD.d) })
				closeTo(t, fmt.Sprintf("GroupedMatMul(transposeW=%t)", tr), e.readF(t, gD.d), wantGMM, 0, nil)
			}
			// dW[e] = x_e^T dy_e: with dy = packed rows of expert e, dW[e] = sum over e's rows of r r^T.
			gwWD := e.out(t, dt, E, H, H)
			mustCall(t, "GroupedMatMulGradW", func() error { return e.b.GroupedMatMulGradW(dD.d, dD.d, planD.d, gwWD.d) })
			wantDW := []float64{
				9, 12, 12, 16, // e0: [3,4]
				1 + 25, 2 + 30, 2 + 30, 4 + 36, // e1: [1,2], [5,6]
				1 + 9, 2 + 12, 2 + 12, 4 + 16, // e2: [1,2], [3,4]
				25, 30, 30, 36, // e3: [5,6]
			}
			closeTo(t, "GroupedMatMulGradW", e.readF(t, gwWD.d), wantDW, 0, nil)

			var lbl, z float64
			mustCall(t, "LoadBalancingLoss", func() (err error) {
				lbl, err = e.lossValue(dt, func(l *tensor.Dense) error { return e.b.LoadBalancingLoss(lD, planD.d, nil, 1, l) })
				return err
			})
			closeTo(t, "LoadBalancingLoss", []float64{lbl}, []float64{wantLBL}, tol, nil)
			mustCall(t, "ZLoss", func() (err error) {
				z, err = e.lossValue(dt, func(l *tensor.Dense) error { return e.b.ZLoss(lD, 1, l) })
				return err
			})
			closeTo(t, "ZLoss", []float64{z}, []float64{wantZ}, tol, nil)
		})
	}
}

// testTies: equal scores go to the lower expert index, in every scoring mode, also for -0 vs +0.
func (e *env) testTies(t *testing.T) {
	negZero := math.Copysign(0, -1)
	cases := []struct {
		name    string
		E, K    int
		rows    [][]float64
		wantIdx [][]int32
	}{
		{"all equal E=4 K=2", 4, 2, [][]float64{{0.5, 0.5, 0.5, 0.5}, {-3, -3, -3, -3}}, [][]int32{{0, 1}, {0, 1}}},
		{"all equal E=4 K=4", 4, 4, [][]float64{{1, 1, 1, 1}}, [][]int32{{0, 1, 2, 3}}},
		{"pair tie K=1", 4, 1, [][]float64{{1, 2, 2, 0}, {0, 5, 5, 5}, {7, 7, 1, 1}}, [][]int32{{1}, {1}, {0}}},
		{"pair tie K=3", 4, 3, [][]float64{{1, 2, 2, 0}, {0, 5, 5, 5}, {1, 0, 1, 0}}, [][]int32{{1, 2, 0}, {1, 2, 3}, {0, 2, 1}}},
		{"tie at the boundary", 5, 2, [][]float64{{3, 1, 1, 1, 0}, {0, 1, 1, 1, 3}}, [][]int32{{0, 1}, {4, 1}}},
		{"signed zeros", 3, 1, [][]float64{{negZero, 0, -1}, {0, negZero, -1}}, [][]int32{{0}, {0}}},
		{"signed zeros K=2", 3, 2, [][]float64{{-1, negZero, 0}, {-1, 0, negZero}}, [][]int32{{1, 2}, {1, 2}}},
	}
	bigE := 256
	allEq := make([]float64, bigE)
	want8 := make([]int32, 8)
	for i := range want8 {
		want8[i] = int32(i)
	}
	cases = append(cases, struct {
		name    string
		E, K    int
		rows    [][]float64
		wantIdx [][]int32
	}{"all equal E=256 K=8", bigE, 8, [][]float64{allEq, allEq}, [][]int32{want8, want8}})

	for _, c := range cases {
		for _, dt := range e.o.Dtypes {
			for _, cfg := range allConfigs(c.K) {
				t.Run(fmt.Sprintf("%s/%v/%v", c.name, dt, cfg), func(t *testing.T) {
					T := len(c.rows)
					var logits []float64
					var want []int32
					for i := range c.rows {
						logits = append(logits, c.rows[i]...)
						want = append(want, c.wantIdx[i]...)
					}
					lD := e.devF(t, dt, logits, T, c.E)
					idxD := e.out(t, tensor.Int32, T, c.K)
					mustCall(t, "RouteIndices", func() error { return e.b.RouteIndices(lD, cfg, idxD.d) })
					equalI(t, "RouteIndices (ties to the lower expert index)", e.readI(t, idxD.d), want)
					// The whole pipeline on these logits.
					e.runScenario(t, scenario{T: T, E: c.E, K: c.K, H: 3, Out: 2, dt: dt, cfg: cfg, logits: logits, seed: 5})
				})
			}
		}
	}
}

type shape struct{ T, E, K, H, Out int }

// testRandom: random logits (no near-ties) over a grid of shapes, every scoring mode, both dtypes.
func (e *env) testRandom(t *testing.T) {
	shapes := []shape{
		{1, 1, 1, 1, 1},    // T=1, E=1
		{1, 4, 2, 3, 2},    // T=1
		{3, 4, 2, 5, 3},    // the known-answer sizes, H odd
		{7, 1, 1, 7, 2},    // E=1, k=1
		{5, 3, 3, 4, 5},    // k=E
		{6, 8, 8, 3, 2},    // k=E
		{64, 8, 2, 13, 6},  // Mixtral-like
		{33, 16, 4, 1, 3},  // H=1
		{9, 6, 2, 130, 4},  // H=130 (not a multiple of 4)
		{16, 256, 8, 5, 3}, // large E, many empty experts
		{8, 1024, 8, 3, 2}, // larger E
		{2, 1024, 1, 7, 1}, // larger E, k=1
	}
	for si, s := range shapes {
		if e.o.Short && s.E > 256 {
			continue
		}
		for _, dt := range e.o.Dtypes {
			for ci, cfg := range allConfigs(s.K) {
				seed := int64(1000*si + 10*ci + len(dt.String()))
				rng := rand.New(rand.NewSource(seed))
				sc := scenario{T: s.T, E: s.E, K: s.K, H: s.H, Out: s.Out, dt: dt, cfg: cfg,
					logits: gappedLogits(rng, s.T, s.E), seed: seed}
				t.Run(sc.String(), func(t *testing.T) { e.runScenario(t, sc) })
			}
		}
	}
}

// testLargeLogits: logits of large magnitude and offset (a softmax without max subtraction overflows).
func (e *env) testLargeLogits(t *testing.T) {
	for _, dt := range e.o.Dtypes {
		for ci, cfg := range allConfigs(2) {
			for _, shift := range []float64{3000, -3000} {
				rng := rand.New(rand.NewSource(int64(ci)))
				const T, E = 5, 8
				l := gappedLogits(rng, T, E)
				for i := range l {
					l[i] = 200*l[i] + shift
				}
				sc := scenario{T: T, E: E, K: 2, H: 3, Out: 2, dt: dt, cfg: cfg, logits: l, seed: int64(ci)}
				t.Run(fmt.Sprintf("shift=%v/%v", shift, sc), func(t *testing.T) { e.runScenario(t, sc) })
			}
		}
	}
}

// testPlanPatterns: plans of given index patterns (not produced by routing): everything on one expert,
// empty experts, E=1, repeated experts inside one token, unsorted indices, huge E with few tokens.
func (e *env) testPlanPatterns(t *testing.T) {
	fill := func(n int, v int32) []int32 {
		s := make([]int32, n)
		for i := range s {
			s[i] = v
		}
		return s
	}
	patterns := []struct {
		name    string
		T, K, E int
		idx     []int32
	}{
		{"all tokens on one expert (K=1)", 5, 1, 4, fill(5, 2)},
		{"all tokens on the last expert", 4, 1, 7, fill(4, 6)},
		{"E=1 K=1", 9, 1, 1, fill(9, 0)},
		{"empty experts", 4, 2, 6, []int32{1, 4, 4, 1, 1, 4, 4, 1}},
		{"only expert 0 and E-1", 3, 2, 5, []int32{4, 0, 0, 4, 4, 0}},
		{"repeated expert inside a token", 3, 2, 3, []int32{1, 1, 0, 0, 2, 1}},
		{"unsorted indices", 2, 3, 4, []int32{3, 0, 2, 2, 1, 0}},
		{"E=1024 few tokens", 3, 2, 1024, []int32{1023, 0, 512, 1023, 7, 512}},
	}
	for pi, p := range patterns {
		for _, dt := range e.o.Dtypes {
			t.Run(fmt.Sprintf("%s/%v", p.name, dt), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(pi)))
				sc := scenario{T: p.T, E: p.E, K: p.K, H: 5, Out: 3, dt: dt,
					cfg:    ops.RouteConfig{K: p.K, Scoring: ops.SoftmaxTopK, Renormalize: true},
					logits: gappedLogits(rng, p.T, p.E), idx: p.idx, seed: int64(pi)}
				e.runScenario(t, sc)
			})
		}
	}
}

// testBadInputs: data-dependent faults return errors that wrap the ops sentinels (the same on every
// backend), never panic: expert indices outside [0,E) are ErrExpertIndex; a logits row with a NaN or
// +Inf, or all -Inf, is ErrNaN for every kernel that reads logits; -Inf logits in a row with a finite
// one are valid, and rows left out by the load-balancing loss's mask are not checked.
func (e *env) testBadInputs(t *testing.T) {
	const T, K, E = 3, 2, 4
	wantErr := func(t *testing.T, what string, sentinel error, err error) {
		t.Helper()
		switch {
		case err == nil:
			t.Errorf("%s: no error, want one wrapping %v", what, sentinel)
		case !errors.Is(err, sentinel):
			t.Errorf("%s: error %q does not wrap %v", what, err, sentinel)
		}
	}
	for _, bad := range []int32{E, -1, 1 << 30, math.MinInt32} {
		idx := []int32{0, 1, 2, bad, 3, 0}
		t.Run(fmt.Sprintf("expert index %d", bad), func(t *testing.T) {
			idxD := e.devI(t, idx, T, K)
			planD := e.out(t, tensor.Int32, ops.PlanLen(T, K, E))
			wantErr(t, "Plan", ops.ErrExpertIndex, call(t, "Plan", func() error { return e.b.Plan(idxD, E, planD.d) }))
			for _, dt := range e.o.Dtypes {
				lD := e.devF(t, dt, make([]float64, T*E), T, E)
				for _, cfg := range allConfigs(K)[:3] {
					wD := e.out(t, dt, T, K)
					wantErr(t, fmt.Sprintf("RouteWeights(%v, %v)", dt, cfg), ops.ErrExpertIndex,
						call(t, "RouteWeights", func() error { return e.b.RouteWeights(lD, idxD, cfg, wD.d) }))
					dwD := e.devF(t, dt, make([]float64, T*K), T, K)
					dlD := e.out(t, dt, T, E)
					wantErr(t, fmt.Sprintf("RouteWeightsGrad(%v, %v)", dt, cfg), ops.ErrExpertIndex,
						call(t, "RouteWeightsGrad", func() error { return e.b.RouteWeightsGrad(lD, idxD, dwD, cfg, dlD.d) }))
				}
			}
		})
	}
	inf := math.Inf(1)
	rows := []struct {
		name string
		row  []float64 // logits of token 1
		ok   bool
	}{
		{"NaN first", []float64{math.NaN(), 1, 2, 0}, false},
		{"NaN last", []float64{0, 1, 2, math.NaN()}, false},
		{"+Inf", []float64{0, inf, 2, 1}, false},
		{"all -Inf", []float64{-inf, -inf, -inf, -inf}, false},
		{"NaN and -Inf", []float64{-inf, math.NaN(), -inf, -inf}, false},
		{"some -Inf", []float64{-inf, 1, -inf, 0.5}, true},
	}
	for _, r := range rows {
		t.Run("logits row "+r.name, func(t *testing.T) {
			for _, dt := range e.o.Dtypes {
				l := []float64{0.5, 1, 2, 0}
				l = append(l, r.row...)
				l = append(l, 3, 1, 0, 2)
				lD := e.devF(t, dt, l, T, E)
				idx := []int32{2, 1, 1, 3, 0, 3} // token 1: experts 1 and 3 (finite in "some -Inf")
				idxD := e.devI(t, idx, T, K)
				planD := e.out(t, tensor.Int32, ops.PlanLen(T, K, E))
				mustCall(t, "Plan", func() error { return e.b.Plan(idxD, E, planD.d) })
				dwD := e.devF(t, dt, []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, T, K)
				checks := map[string]func() error{}
				for _, cfg := range allConfigs(K)[:3] {
					checks[fmt.Sprintf("RouteIndices(%v)", cfg)] = func() error { return e.b.RouteIndices(lD, cfg, e.out(t, tensor.Int32, T, K).d) }
					checks[fmt.Sprintf("RouteWeights(%v)", cfg)] = func() error { return e.b.RouteWeights(lD, idxD, cfg, e.out(t, dt, T, K).d) }
					checks[fmt.Sprintf("RouteWeightsGrad(%v)", cfg)] = func() error {
						return e.b.RouteWeightsGrad(lD, idxD, dwD, cfg, e.out(t, dt, T, E).d)
					}
				}
				checks["LoadBalancingLoss"] = func() error {
					_, err := e.lossValue(dt, func(o *tensor.Dense) error { return e.b.LoadBalancingLoss(lD, planD.d, nil, 1, o) })
					return err
				}
				checks["LoadBalancingLossGrad"] = func() error {
					return e.b.LoadBalancingLossGrad(lD, planD.d, nil, 1, nil, e.out(t, dt, T, E).d)
				}
				checks["ZLoss"] = func() error {
					_, err := e.lossValue(dt, func(o *tensor.Dense) error { return e.b.ZLoss(lD, 1, o) })
					return err
				}
				checks["ZLossGrad"] = func() error { return e.b.ZLossGrad(lD, 1, nil, e.out(t, dt, T, E).d) }
				for what, f := range checks {
					err := call(t, what, f)
					if r.ok {
						if err != nil {
							t.Errorf("%v %s: %v", dt, what, err)
						}
						continue
					}
					wantErr(t, fmt.Sprintf("%v %s", dt, what), ops.ErrNaN, err)
				}
				// The load-balancing loss does not read the rows its mask leaves out.
				maskD := e.devI(t, []int32{1, 0, 1}, T)
				var lm float64
				if err := call(t, "LoadBalancingLoss(mask)", func() (err error) {
					lm, err = e.lossValue(dt, func(o *tensor.Dense) error { return e.b.LoadBalancingLoss(lD, planD.d, maskD, 1, o) })
					return err
				}); err != nil || math.IsNaN(lm) {
					t.Errorf("%v LoadBalancingLoss with the bad row masked: %v, %v", dt, lm, err)
				}
				if err := call(t, "LoadBalancingLossGrad(mask)", func() error {
					return e.b.LoadBalancingLossGrad(lD, planD.d, maskD, 1, nil, e.out(t, dt, T, E).d)
				}); err != nil {
					t.Errorf("%v LoadBalancingLossGrad with the bad row masked: %v", dt, err)
				}
				if !r.ok {
					continue
				}
				// -Inf logits rank last and get weight 0.
				got := e.out(t, tensor.Int32, T, K)
				mustCall(t, "RouteIndices", func() error { return e.b.RouteIndices(lD, allConfigs(K)[0], got.d) })
				if v := e.readI(t, got.d); v[2] != 1 || v[3] != 3 {
					t.Errorf("%v RouteIndices with -Inf logits: token 1 got experts %v, want [1 3]", dt, v[2:4])
				}
			}
		})
	}
}

// testScheduling: results do not depend on the number of threads (GOMAXPROCS 1, 7 and the default).
func (e *env) testScheduling(t *testing.T) {
	const T, E, K, H, Out = 700, 16, 2, 96, 40
	for _, dt := range e.o.Dtypes {
		t.Run(dt.String(), func(t *testing.T) {
			rng := rand.New(rand.NewSource(77))
			cfg := ops.RouteConfig{K: K, Scoring: ops.SoftmaxTopK, Renormalize: true}
			lD := e.devF(t, dt, gappedLogits(rng, T, E), T, E)
			xD := e.devF(t, dt, randVals(rng, T*H), T, H)
			yeD := e.devF(t, dt, randVals(rng, T*K*H), T*K, H)
			dyD := e.devF(t, dt, randVals(rng, T*H), T, H)
			dwD := e.devF(t, dt, randVals(rng, T*K), T, K)
			wmD := e.devF(t, dt, randVals(rng, E*H*Out), E, H, Out)
			dypD := e.devF(t, dt, randVals(rng, T*K*Out), T*K, Out)

			// Every kernel, run at one GOMAXPROCS setting, returns the bits of all its outputs.
			runAll := func() [][]uint64 {
				var res [][]uint64
				o := func(dt tensor.Dtype, shape ...int) *tensor.Dense { return e.out(t, dt, shape...).d }
				idx := o(tensor.Int32, T, K)
				mustCall(t, "RouteIndices", func() error { return e.b.RouteIndices(lD, cfg, idx) })
				w := o(dt, T, K)
				mustCall(t, "RouteWeights", func() error { return e.b.RouteWeights(lD, idx, cfg, w) })
				dl := o(dt, T, E)
				mustCall(t, "RouteWeightsGrad", func() error { return e.b.RouteWeightsGrad(lD, idx, dwD, cfg, dl) })
				plan := o(tensor.Int32, ops.PlanLen(T, K, E))
				mustCall(t, "Plan", func() error { return e.b.Plan(idx, E, plan) })
				d := o(dt, T*K, H)
				mustCall(t, "Dispatch", func() error { return e.b.Dispatch(xD, w, plan, d) })
				c := o(dt, T, H)
				mustCall(t, "Combine", func() error { return e.b.Combine(yeD, w, plan, c) })
				cw := o(dt, T, K)
				mustCall(t, "CombineGradWeights", func() error { return e.b.CombineGradWeights(dyD, yeD, plan, cw) })
				g := o(dt, T*K, Out)
				mustCall(t, "GroupedMatMul", func() error { return e.b.GroupedMatMul(yeD, wmD, plan, false, g) })
				gw := o(dt, E, H, Out)
				mustCall(t, "GroupedMatMulGradW", func() error { return e.b.GroupedMatMulGradW(yeD, dypD, plan, gw) })
				lg := o(dt, T, E)
				mustCall(t, "LoadBalancingLossGrad", func() error { return e.b.LoadBalancingLossGrad(lD, plan, nil, 0.3, nil, lg) })
				zg := o(dt, T, E)
				mustCall(t, "ZLossGrad", func() error { return e.b.ZLossGrad(lD, 0.3, nil, zg) })
				var lbl, z float64
				mustCall(t, "LoadBalancingLoss", func() (err error) {
					lbl, err = e.lossValue(dt, func(l *tensor.Dense) error { return e.b.LoadBalancingLoss(lD, plan, nil, 1, l) })
					return err
				})
				mustCall(t, "ZLoss", func() (err error) {
					z, err = e.lossValue(dt, func(l *tensor.Dense) error { return e.b.ZLoss(lD, 1, l) })
					return err
				})
				for _, d := range []*tensor.Dense{idx, w, dl, plan, d, c, cw, g, gw, lg, zg} {
					res = append(res, e.bits(t, d))
				}
				return append(res, []uint64{math.Float64bits(lbl), math.Float64bits(z)})
			}
			names := []string{"RouteIndices", "RouteWeights", "RouteWeightsGrad", "Plan", "Dispatch(w)", "Combine(w)",
				"CombineGradWeights", "GroupedMatMul", "GroupedMatMulGradW", "LoadBalancingLossGrad", "ZLossGrad", "losses"}
			base := runAll()
			for _, procs := range []int{1, 7} {
				old := runtime.GOMAXPROCS(procs)
				got := runAll()
				runtime.GOMAXPROCS(old)
				for i := range base {
					sameBits(t, fmt.Sprintf("%s with GOMAXPROCS=%d vs %d", names[i], procs, old), got[i], base[i])
				}
			}
		})
	}
}
