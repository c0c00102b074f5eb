package tests

import (
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/internal/floats"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// policyRun runs the routing-policy kernels at production sizes on backend b: sigmoid routing with a
// bias and groups (fused and separate weights), a capacity plan of skewed routing (segments of
// thousands of slots, tied weights), the drop-aware dispatch/combine/combine backward on it, the bias
// update and the diagnostics. It returns every result on the host, by name.
func policyRun(t *testing.T, b ops.Backend, dt tensor.Dtype, cfg ops.RouteConfig, T, E, H int, seed int64) map[string]*tensor.Dense {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	K := cfg.K
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s on %s: %v", what, b.Name(), err)
		}
	}
	dev := func(h *tensor.Dense) *tensor.Dense {
		d, err := b.FromHost(h)
		must("FromHost", err)
		return d
	}
	out := map[string]*tensor.Dense{}
	keep := func(name string, d *tensor.Dense) {
		h, err := b.ToHost(d)
		must("ToHost "+name, err)
		out[name] = h
	}
	newT := func(dt tensor.Dtype, shape ...int) *tensor.Dense {
		d, err := b.New(dt, shape...)
		must("New", err)
		return d
	}
	logits := dev(policyRand(rng, dt, 3, T, E))
	bias := dev(policyRand(rng, dt, 0.05, E))
	if cfg.Scoring != ops.Sigmoid {
		bias = nil // a selection bias is for sigmoid scoring only
	}
	idx, w := newT(tensor.Int32, T, K), newT(dt, T, K)
	must("RouteIndicesBias", b.RouteIndicesBias(logits, bias, cfg, idx))
	must("RouteWeights", b.RouteWeights(logits, idx, cfg, w))
	keep("idx", idx)
	keep("w", w)
	type fused interface {
		RouteBiased(logits, bias *tensor.Dense, cfg ops.RouteConfig, idx, w *tensor.Dense) error
	}
	if f, ok := b.(fused); ok {
		idx2, w2 := newT(tensor.Int32, T, K), newT(dt, T, K)
		must("RouteBiased", f.RouteBiased(logits, bias, cfg, idx2, w2))
		keep("idx fused", idx2)
		keep("w fused", w2)
	}
	dw := dev(policyRand(rng, dt, 1, T, K))
	dl := newT(dt, T, E)
	must("RouteWeightsGrad", b.RouteWeightsGrad(logits, idx, dw, cfg, dl))
	keep("dlogits", dl)

	// Skewed routing for the capacity plans: a quarter of all slots on expert 0; weights rounded to
	// eighths, so that many tie.
	sk := make([]int32, T*K)
	wq := make([]float64, T*K)
	for s := range sk {
		e := rng.Intn(E)
		if rng.Intn(4) == 0 {
			e = 0
		}
		sk[s] = int32(e)
		wq[s] = math.Round(8*rng.Float64()) / 8
	}
	for tok := 0; tok < T; tok++ { // distinct experts per token, as routing gives
		seen := map[int32]bool{}
		for j := 0; j < K; j++ {
			for seen[sk[tok*K+j]] {
				sk[tok*K+j] = (sk[tok*K+j] + 1) % int32(E)
			}
			seen[sk[tok*K+j]] = true
		}
	}
	skD := dev(tensor.New(tensor.WithShape(T, K), tensor.WithBacking(sk)))
	wqD := dev(floats.Dense(dt, wq, T, K))
	capacity := T * K / E
	x := dev(policyRand(rng, dt, 1, T, H))
	ye := dev(policyRand(rng, dt, 1, T*K, H))
	dy := dev(policyRand(rng, dt, 1, T, H))
	for _, pol := range []ops.DropPolicy{ops.DropPosition, ops.DropProbs} {
		p := pol.String()
		plan := newT(tensor.Int32, ops.PlanLen(T, K, E))
		must("CapacityPlan "+p, b.CapacityPlan(skD, wqD, E, capacity, pol, plan))
		keep("plan "+p, plan)
		xe, y, cgw := newT(dt, T*K, H), newT(dt, T, H), newT(dt, T, K)
		must("Dispatch", b.Dispatch(x, wqD, plan, xe))
		must("Combine", b.Combine(ye, wqD, plan, y))
		must("CombineGradWeights", b.CombineGradWeights(dy, ye, plan, cgw))
		keep("dispatch "+p, xe)
		keep("combine "+p, y)
		keep("cgw "+p, cgw)
		if f, ok := b.(ops.CombineBackwarder); ok {
			dye, dwf := newT(dt, T*K, H), newT(dt, T, K)
			must("CombineBackward", f.CombineBackward(dy, ye, wqD, plan, dye, dwf))
			keep("combine bwd dye "+p, dye)
			keep("combine bwd dw "+p, dwf)
		}
		cl := dev(policyRand(rng, dt, 1, T*K, H))
		must("ClearDroppedRows", b.ClearDroppedRows(cl, plan))
		keep("cleared "+p, cl)
		bb := dev(policyRand(rng, dt, 1, E))
		must("UpdateBalanceBias", b.UpdateBalanceBias(bb, plan, 0.001))
		keep("bias "+p, bb)
		st := newT(tensor.Float64, ops.RouteStatsLen(E))
		must("RouteStats", b.RouteStats(logits, plan, cfg, st))
		keep("stats "+p, st)
	}
	return out
}

// comparePolicyRuns compares two policyRun results: int32 tensors exactly, floats within tol.
func comparePolicyRuns(t *testing.T, got, want map[string]*tensor.Dense, tol float64) {
	t.Helper()
	for name, w := range want {
		g := got[name]
		if g == nil {
			if name != "idx fused" && name != "w fused" && name[:min(len(name), 12)] != "combine bwd " {
				t.Errorf("%s: missing", name)
			}
			continue
		}
		if w.Dtype() == tensor.Int32 {
			gv, wv := g.Data().([]int32), w.Data().([]int32)
			for i := range wv {
				if gv[i] != wv[i] {
					t.Errorf("%s: element %d is %d, want %d", name, i, gv[i], wv[i])
					break
				}
			}
			continue
		}
		gv, _ := floats.Of(g)
		wv, _ := floats.Of(w)
		m := 0.0
		for i := range wv {
			e := math.Abs(gv[i]-wv[i]) / math.Max(1, math.Abs(wv[i]))
			if e != e {
				m = math.Inf(1)
				break
			}
			m = math.Max(m, e)
		}
		if m > tol {
			t.Errorf("%s: max relative difference %.3g > %.3g", name, m, tol)
		}
	}
}

// TestSimPolicies runs the production-size policy pass on the simulated device against the CPU (the
// same host kernels behind the device boundary: checks the pass itself, which TestCUDAPolicies runs on
// a GPU).
func TestSimPolicies(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	b := simBackend(t)
	cfg := ops.RouteConfig{K: 8, Scoring: ops.Sigmoid, Renormalize: true, Groups: 8, TopKGroups: 4, Scale: 2.5}
	got := policyRun(t, b, tensor.Float32, cfg, 1024, 256, 16, 3)
	want := policyRun(t, ops.CPU(), tensor.Float32, cfg, 1024, 256, 16, 3)
	comparePolicyRuns(t, got, want, 0)
	// The capacity plans really drop slots and the skewed expert has long segments.
	pv, err := ops.NewPlanView(want["plan probs"].Data().([]int32), 1024, 8, 256)
	if err != nil {
		t.Fatal(err)
	}
	if pv.DroppedSlots() == 0 || pv.Counts[0] < 512 {
		t.Errorf("the skewed routing dropped %d slots, expert 0 got %d: the pass does not exercise capacity", pv.DroppedSlots(), pv.Counts[0])
	}
}

// policyRand returns a host tensor of values uniform in [-scale, scale).
func policyRand(rng *rand.Rand, dt tensor.Dtype, scale float64, shape ...int) *tensor.Dense {
	v := make([]float64, tensor.Shape(shape).TotalSize())
	for i := range v {
		v[i] = scale * (2*rng.Float64() - 1)
	}
	return floats.Dense(dt, v, shape...)
}
