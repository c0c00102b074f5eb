package tests

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Builder-level validation: wrong ranks, shapes and dtypes, bad k, return errors (never panic) from the
// graph-building functions.

func mat(g *G.ExprGraph, dt tensor.Dtype, name string, shape ...int) *G.Node {
	return G.NewTensor(g, dt, len(shape), G.WithShape(shape...), G.WithName(name))
}

// noPanic runs f and fails on a panic; it returns f's error.
func noPanic(t *testing.T, what string, f func() error) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s panicked: %v", what, r)
			err = nil
		}
	}()
	return f()
}

func TestBuilderValidation(t *testing.T) {
	const T, E, K, H = 4, 5, 2, 3
	g := G.NewGraph()
	f64, f32, i32 := tensor.Float64, tensor.Float32, tensor.Int32
	logits := mat(g, f64, "logits", T, E)
	good := ops.RouteConfig{K: K, Scoring: ops.SoftmaxTopK, Renormalize: true}
	r, err := ops.Route(logits, good)
	if err != nil {
		t.Fatalf("valid Route: %v", err)
	}
	idx := mat(g, i32, "idx", T, K)
	wts := mat(g, f64, "wts", T, K)
	given, err := ops.NewRouting(idx, wts, E)
	if err != nil {
		t.Fatalf("valid NewRouting: %v", err)
	}
	x := mat(g, f64, "x", T, H)
	packed := mat(g, f64, "packed", T*K, H)
	w := mat(g, f64, "w", E, H, 7)

	cases := []struct {
		name string
		want error // the sentinel the error wraps
		f    func() error
	}{
		{"Route logits rank 1", ops.ErrShape, func() error { _, err := ops.Route(mat(g, f64, "l1", T), good); return err }},
		{"Route logits rank 3", ops.ErrShape, func() error { _, err := ops.Route(mat(g, f64, "l3", 2, T, E), good); return err }},
		{"Route int32 logits", ops.ErrDtype, func() error { _, err := ops.Route(mat(g, i32, "li", T, E), good); return err }},
		{"Route k=0", ops.ErrConfig, func() error { _, err := ops.Route(logits, ops.RouteConfig{K: 0}); return err }},
		{"Route k<0", ops.ErrConfig, func() error { _, err := ops.Route(logits, ops.RouteConfig{K: -1}); return err }},
		{"Route k>E", ops.ErrConfig, func() error { _, err := ops.Route(logits, ops.RouteConfig{K: E + 1}); return err }},
		{"Route unknown scoring", ops.ErrConfig, func() error { _, err := ops.Route(logits, ops.RouteConfig{K: 1, Scoring: 7}); return err }},
		{"Route nil logits", ops.ErrShape, func() error { _, err := ops.Route(nil, good); return err }},
		{"NewRouting float indices", ops.ErrDtype, func() error { _, err := ops.NewRouting(wts, wts, E); return err }},
		{"NewRouting int weights", ops.ErrDtype, func() error { _, err := ops.NewRouting(idx, idx, E); return err }},
		{"NewRouting shape mismatch", ops.ErrShape, func() error { _, err := ops.NewRouting(idx, mat(g, f64, "w3", T, K+1), E); return err }},
		{"NewRouting E=0", ops.ErrConfig, func() error { _, err := ops.NewRouting(idx, wts, 0); return err }},
		{"NewRouting indices rank 1", ops.ErrShape, func() error { _, err := ops.NewRouting(mat(g, i32, "i1", T), mat(g, f64, "w1", T), E); return err }},
		{"PlanOf float indices", ops.ErrDtype, func() error { _, err := ops.PlanOf(wts, E); return err }},
		{"PlanOf E=0", ops.ErrConfig, func() error { _, err := ops.PlanOf(idx, 0); return err }},
		{"Dispatch x rank 1", ops.ErrShape, func() error { _, err := ops.Dispatch(mat(g, f64, "x1", T), r); return err }},
		{"Dispatch x rank 3", ops.ErrShape, func() error { _, err := ops.Dispatch(mat(g, f64, "x3", 1, T, H), r); return err }},
		{"Dispatch wrong T", ops.ErrShape, func() error { _, err := ops.Dispatch(mat(g, f64, "xT", T+1, H), r); return err }},
		{"Dispatch int x", ops.ErrDtype, func() error { _, err := ops.Dispatch(mat(g, i32, "xi", T, H), r); return err }},
		{"Dispatch nil routing", ops.ErrConfig, func() error { _, err := ops.Dispatch(x, nil); return err }},
		{"Dispatch nil x", ops.ErrShape, func() error { _, err := ops.Dispatch(nil, r); return err }},
		{"Combine wrong rows", ops.ErrShape, func() error { _, err := ops.Combine(mat(g, f64, "yr", T*K+1, H), r); return err }},
		{"Combine rows = T", ops.ErrShape, func() error { _, err := ops.Combine(x, r); return err }},
		{"Combine rank 3", ops.ErrShape, func() error { _, err := ops.Combine(mat(g, f64, "y3", 1, T*K, H), r); return err }},
		{"Combine dtype mismatch", ops.ErrDtype, func() error { _, err := ops.Combine(mat(g, f32, "y32", T*K, H), r); return err }},
		{"Combine nil routing", ops.ErrConfig, func() error { _, err := ops.Combine(packed, nil); return err }},
		{"CombineWeighted wrong weight shape", ops.ErrShape, func() error {
			_, err := ops.CombineWeighted(packed, mat(g, f64, "cw", T, K+1), r)
			return err
		}},
		{"GroupedMatMul w rank 2", ops.ErrShape, func() error { _, err := ops.GroupedMatMul(packed, mat(g, f64, "w2", H, 7), r); return err }},
		{"GroupedMatMul wrong E", ops.ErrShape, func() error { _, err := ops.GroupedMatMul(packed, mat(g, f64, "wE", E+1, H, 7), r); return err }},
		{"GroupedMatMul wrong In", ops.ErrShape, func() error { _, err := ops.GroupedMatMul(packed, mat(g, f64, "wI", E, H+1, 7), r); return err }},
		{"GroupedMatMul w dtype mismatch", ops.ErrDtype, func() error { _, err := ops.GroupedMatMul(packed, mat(g, f32, "w32", E, H, 7), r); return err }},
		{"GroupedMatMul x rows = T", ops.ErrShape, func() error { _, err := ops.GroupedMatMul(x, w, r); return err }},
		{"GroupedMatMul x rank 3", ops.ErrShape, func() error { _, err := ops.GroupedMatMul(mat(g, f64, "p3", 1, T*K, H), w, r); return err }},
		{"GroupedMatMul int x", ops.ErrDtype, func() error { _, err := ops.GroupedMatMul(mat(g, i32, "pi", T*K, H), w, r); return err }},
		{"GroupedMatMul nil routing", ops.ErrConfig, func() error { _, err := ops.GroupedMatMul(packed, w, nil); return err }},
		{"LoadBalancingLoss without logits", ops.ErrConfig, func() error { _, err := ops.LoadBalancingLoss(given, 0.1); return err }},
		{"LoadBalancingLoss nil routing", ops.ErrConfig, func() error { _, err := ops.LoadBalancingLoss(nil, 0.1); return err }},
		{"ZLoss rank 1", ops.ErrShape, func() error { _, err := ops.ZLoss(mat(g, f64, "z1", E), 0.1); return err }},
		{"ZLoss int logits", ops.ErrDtype, func() error { _, err := ops.ZLoss(mat(g, i32, "zi", T, E), 0.1); return err }},
		{"ZLoss nil", ops.ErrShape, func() error { _, err := ops.ZLoss(nil, 0.1); return err }},
		{"Combine routing without weights", ops.ErrConfig, func() error {
			_, err := ops.Combine(packed, &ops.Routing{Indices: idx, Plan: r.Plan, Config: r.Config, T: T, E: E})
			return err
		}},
		{"CombineWeighted nil weights", ops.ErrConfig, func() error { _, err := ops.CombineWeighted(packed, nil, r); return err }},
		{"LoadBalancingLoss NaN coef", ops.ErrConfig, func() error { _, err := ops.LoadBalancingLoss(r, math.NaN()); return err }},
		{"LoadBalancingLoss negative coef", ops.ErrConfig, func() error { _, err := ops.LoadBalancingLoss(r, -0.1); return err }},
		{"LoadBalancingLoss Inf coef", ops.ErrConfig, func() error { _, err := ops.LoadBalancingLoss(r, math.Inf(1)); return err }},
		{"ZLoss NaN coef", ops.ErrConfig, func() error { _, err := ops.ZLoss(logits, math.NaN()); return err }},
		{"ZLoss negative coef", ops.ErrConfig, func() error { _, err := ops.ZLoss(logits, -1); return err }},
		{"LoadBalancingLossMasked float mask", ops.ErrDtype, func() error {
			_, err := ops.LoadBalancingLossMasked(r, mat(g, f64, "mf", T), 0.1)
			return err
		}},
		{"LoadBalancingLossMasked wrong length", ops.ErrShape, func() error {
			_, err := ops.LoadBalancingLossMasked(r, mat(g, i32, "ml", T+1), 0.1)
			return err
		}},
		// T*K >= 2^31 does not fit the int32 plan: refused when the graph is built (nothing is allocated).
		{"Route T*K = 2^31", ops.ErrShape, func() error { _, err := ops.Route(mat(g, f32, "huge", 1<<29, 8), ops.RouteConfig{K: 4}); return err }},
		{"PlanOf T*K = 2^31", ops.ErrShape, func() error { _, err := ops.PlanOf(mat(g, i32, "hugeIdx", 1<<30, 2), 4); return err }},
		{"NewRouting T*K > 2^31", ops.ErrShape, func() error {
			_, err := ops.NewRouting(mat(g, i32, "hugeI", 1<<31, 3), mat(g, f32, "hugeW", 1<<31, 3), 4)
			return err
		}},
	}
	for _, c := range cases {
		if err := noPanic(t, c.name, c.f); err == nil {
			t.Errorf("%s: builder accepted invalid input", c.name)
		} else if !errors.Is(err, c.want) {
			t.Errorf("%s: error %q does not wrap %v", c.name, err, c.want)
		} else if !strings.HasPrefix(err.Error(), "ops:") {
			t.Logf("%s: error without the ops: prefix: %v", c.name, err)
		}
	}
}

// TestDtypeMessagesNameTheInputs: a dtype mismatch names the inputs the user made (the weights come
// from Route over the user's logits), not only "weights must be float64".
func TestDtypeMessagesNameTheInputs(t *testing.T) {
	g := G.NewGraph()
	logits := mat(g, tensor.Float32, "router_logits", 4, 3)
	r, err := ops.Route(logits, ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ops.Combine(mat(g, tensor.Float64, "expert_out", 8, 5), r)
	if !errors.Is(err, ops.ErrDtype) {
		t.Fatalf("Combine of float64 rows with float32 routing: %v, want ErrDtype", err)
	}
	for _, want := range []string{`"expert_out"`, `"router_logits"`, "float32", "float64", "Route"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not mention %s", err, want)
		}
	}
	_, err = ops.GroupedMatMul(mat(g, tensor.Float32, "rows", 8, 5), mat(g, tensor.Float64, "w_up", 3, 5, 2), r)
	if !errors.Is(err, ops.ErrDtype) || !strings.Contains(err.Error(), `"w_up"`) || !strings.Contains(err.Error(), `"rows"`) {
		t.Errorf("GroupedMatMul dtype mismatch: %v", err)
	}
}

func TestMoEConfigValidation(t *testing.T) {
	base := moe.Config{Hidden: 4, FFN: 3, Experts: 4, TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true, Dtype: tensor.Float64}
	bad := map[string]func(c *moe.Config){
		"k>E":          func(c *moe.Config) { c.TopK = 5 },
		"k=0":          func(c *moe.Config) { c.TopK = 0 },
		"hidden=0":     func(c *moe.Config) { c.Hidden = 0 },
		"ffn=0":        func(c *moe.Config) { c.FFN = 0 },
		"experts=0":    func(c *moe.Config) { c.Experts = 0 },
		"int dtype":    func(c *moe.Config) { c.Dtype = tensor.Int32 },
		"NaN aux":      func(c *moe.Config) { c.AuxLossCoef = math.NaN() },
		"Inf z":        func(c *moe.Config) { c.ZLossCoef = math.Inf(1) },
		"negative aux": func(c *moe.Config) { c.AuxLossCoef = -1 },
		"negative z":   func(c *moe.Config) { c.ZLossCoef = -1 },
		"bad scoring":  func(c *moe.Config) { c.Scoring = 9 },
	}
	for name, mod := range bad {
		c := base
		mod(&c)
		err := noPanic(t, name, func() error { _, err := moe.NewLayer(G.NewGraph(), c); return err })
		if err == nil {
			t.Errorf("NewLayer accepted config with %s", name)
		} else if !errors.Is(err, ops.ErrConfig) && !errors.Is(err, ops.ErrDtype) {
			t.Errorf("config with %s: %v wraps neither ErrConfig nor ErrDtype", name, err)
		}
	}
	noDtype := base
	noDtype.Dtype = tensor.Dtype{}
	if l, err := moe.NewLayer(G.NewGraph(), noDtype); err != nil || l.Config.Dtype != tensor.Float32 {
		t.Errorf("config without dtype: %v, want a float32 layer", err)
	}
	g := G.NewGraph()
	l, err := moe.NewLayer(g, base)
	if err != nil {
		t.Fatal(err)
	}
	for name, x := range map[string]*G.Node{
		"wrong hidden": mat(g, tensor.Float64, "xh", 3, 5),
		"rank 1":       mat(g, tensor.Float64, "x1", 4),
		"float32":      mat(g, tensor.Float32, "x32", 3, 4),
		"nil":          nil,
	} {
		if err := noPanic(t, name, func() error { _, err := l.Forward(x); return err }); err == nil {
			t.Errorf("Forward accepted input with %s", name)
		}
	}
}

// runGraph compiles and runs g once, turning panics into errors.
func runGraph(t *testing.T, g *G.ExprGraph) (err error) {
	t.Helper()
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("RunAll panicked: %v", r)
			err = nil
		}
	}()
	return vm.RunAll()
}

// TestRuntimeErrors: data-dependent faults surface as RunAll errors, not panics, and wrap the ops
// sentinels (through Gorgonia's machine error with ops.MachineError / ops.RunAll): expert indices out of
// range are ErrExpertIndex; a logits row with a NaN or +Inf, or all -Inf, is ErrNaN (it used to give NaN
// weights and gradients silently for +Inf and all -Inf); single -Inf logits are fine.
func TestRuntimeErrors(t *testing.T) {
	const T, K, E, H = 3, 2, 4, 2
	for _, bad := range []int32{-1, E, 1000} {
		g := G.NewGraph()
		idx := G.NewMatrix(g, tensor.Int32, G.WithShape(T, K), G.WithName("idx"),
			G.WithValue(tensor.New(tensor.WithShape(T, K), tensor.WithBacking([]int32{0, 1, 2, bad, 3, 0}))))
		w := G.NewMatrix(g, tensor.Float64, G.WithShape(T, K), G.WithName("w"), G.WithValue(tensor.New(tensor.WithShape(T, K), tensor.WithBacking(make([]float64, T*K)))))
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(make([]float64, T*H)))))
		r, err := ops.NewRouting(idx, w, E)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ops.Dispatch(x, r); err != nil {
			t.Fatal(err)
		}
		err = runGraph(t, g)
		if err == nil {
			t.Errorf("expert index %d with E=%d: RunAll succeeded, want an error", bad, E)
		} else if errors.Is(err, ops.ErrExpertIndex) || !errors.Is(ops.MachineError(err), ops.ErrExpertIndex) {
			t.Errorf("expert index %d: errors.Is(MachineError(%v), ErrExpertIndex) should hold (and only through MachineError)", bad, err)
		}
	}
	inf, nan := math.Inf(1), math.NaN()
	for _, c := range []struct {
		name   string
		logits []float64
		ok     bool
	}{
		{"NaN", []float64{0, 1, 2, 3, 4, nan, 6, 7, 8, 9, 10, 11}, false},
		{"+Inf", []float64{0, 1, 2, 3, 4, 5, inf, 7, 8, 9, 10, 11}, false},
		{"all -Inf", []float64{0, 1, 2, 3, -inf, -inf, -inf, -inf, 8, 9, 10, 11}, false},
		{"some -Inf", []float64{0, 1, 2, 3, -inf, 5, -inf, -inf, 8, 9, 10, 11}, true},
	} {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			for _, cfg := range []ops.RouteConfig{{K: K, Scoring: ops.SoftmaxTopK, Renormalize: true}, {K: K, Scoring: ops.SoftmaxTopK}} {
				g := G.NewGraph()
				logits := G.NewMatrix(g, dt, G.WithShape(T, E), G.WithName("logits"), G.WithValue(floatTensor(dt, c.logits, T, E)))
				r, err := ops.Route(logits, cfg)
				if err != nil {
					t.Fatal(err)
				}
				cost, err := G.Sum(r.Weights)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := G.Grad(cost, logits); err != nil {
					t.Fatal(err)
				}
				err = runGraph(t, g)
				switch {
				case c.ok && err != nil:
					t.Errorf("%v %s logits (%v): %v", dt, c.name, cfg, err)
				case c.ok:
					for i, v := range floatsOf(t, r.Weights.Value()) {
						if math.IsNaN(v) {
							t.Errorf("%v %s logits: weight %d is NaN", dt, c.name, i)
						}
					}
				case err == nil:
					t.Errorf("%v %s logits (%v): RunAll succeeded, want an error", dt, c.name, cfg)
				case !errors.Is(ops.MachineError(err), ops.ErrNaN):
					t.Errorf("%v %s logits: %v does not wrap ErrNaN", dt, c.name, err)
				case !strings.Contains(err.Error(), "token 1") && !strings.Contains(err.Error(), "logits[1,"):
					t.Errorf("%v %s logits: %v does not name token 1", dt, c.name, err)
				}
			}
		}
	}
}

func floatTensor(dt tensor.Dtype, v []float64, shape ...int) *tensor.Dense {
	if dt == tensor.Float64 {
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), v...)))
	}
	f := make([]float32, len(v))
	for i, x := range v {
		f[i] = float32(x)
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
}

// TestNoCSEMerging: ops that differ only in a parameter must stay distinct nodes with their own results
// (Gorgonia merges nodes with equal hashes at build time).
func TestNoCSEMerging(t *testing.T) {
	const T, E, H = 4, 5, 3
	logitsV := []float64{
		0.1, 2.0, -1.0, 0.7, 1.3,
		1.5, -0.2, 0.4, 2.2, 0.0,
		-1.0, 0.3, 0.9, 0.1, 1.8,
		0.6, 0.5, 2.5, -0.4, 1.1,
	}
	g := G.NewGraph()
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(T, E), G.WithName("logits"),
		G.WithValue(tensor.New(tensor.WithShape(T, E), tensor.WithBacking(logitsV))))
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}))))
	must := func(r *ops.Routing, err error) *ops.Routing {
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r1 := must(ops.Route(logits, ops.RouteConfig{K: 1, Scoring: ops.SoftmaxTopK, Renormalize: false}))
	r2 := must(ops.Route(logits, ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true}))
	r2n := must(ops.Route(logits, ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: false}))
	r3 := must(ops.Route(logits, ops.RouteConfig{K: 3, Scoring: ops.SoftmaxTopK, Renormalize: true}))
	node := func(n *G.Node, err error) *G.Node {
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	d1, d2 := node(ops.Dispatch(x, r1)), node(ops.Dispatch(x, r2))
	c2, c2n := node(ops.Combine(d2, r2)), node(ops.Combine(d2, r2n))
	aux1, aux2 := node(ops.LoadBalancingLoss(r2, 0.1)), node(ops.LoadBalancingLoss(r2, 0.2))
	auxK1 := node(ops.LoadBalancingLoss(r1, 0.1))
	z1, z2 := node(ops.ZLoss(logits, 1)), node(ops.ZLoss(logits, 2))
	E2 := node(ops.PlanOf(r2.Indices, E)) // same indices, same E: may be merged with r2.Plan
	plan7 := node(ops.PlanOf(r2.Indices, E+2))

	distinct := []struct {
		name string
		a, b *G.Node
	}{
		{"weights k=1 vs k=2", r1.Weights, r2.Weights},
		{"indices k=1 vs k=2", r1.Indices, r2.Indices},
		{"weights k=2 vs k=3", r2.Weights, r3.Weights},
		{"weights renorm on vs off", r2.Weights, r2n.Weights},
		{"plans k=1 vs k=2", r1.Plan, r2.Plan},
		{"plans E=5 vs E=7", r2.Plan, plan7},
		{"dispatch k=1 vs k=2", d1, d2},
		{"combine renorm on vs off", c2, c2n},
		{"aux coef 0.1 vs 0.2", aux1, aux2},
		{"aux k=1 vs k=2", aux1, auxK1},
		{"z coef 1 vs 2", z1, z2},
	}
	for _, d := range distinct {
		if d.a == d.b {
			t.Errorf("%s: merged into one node", d.name)
		}
	}
	if err := runGraph(t, g); err != nil {
		t.Fatal(err)
	}
	vals := func(n *G.Node) []float64 { return floatsOf(t, n.Value()) }
	ints := func(n *G.Node) []int32 { return n.Value().Data().([]int32) }

	if got := ints(r1.Indices); len(got) != T || got[0] != 1 || got[1] != 3 || got[2] != 4 || got[3] != 2 {
		t.Errorf("k=1 indices = %v, want [1 3 4 2]", got)
	}
	if got := ints(r2.Indices); len(got) != 2*T || got[0] != 1 || got[1] != 4 {
		t.Errorf("k=2 indices = %v, want [1 4 ...]", got)
	}
	if n := len(vals(r3.Weights)); n != 3*T {
		t.Errorf("k=3 weights have %d elements, want %d", n, 3*T)
	}
	w2, w2n := vals(r2.Weights), vals(r2n.Weights)
	if math.Abs(w2[0]+w2[1]-1) > 1e-12 {
		t.Errorf("renormalised weights of token 0 sum to %v", w2[0]+w2[1])
	}
	if !(w2n[0]+w2n[1] < 0.99) {
		t.Errorf("unnormalised weights of token 0 sum to %v, want < 1 (merged with the renormalised node?)", w2n[0]+w2n[1])
	}
	if a, b := vals(aux1)[0], vals(aux2)[0]; math.Abs(b-2*a) > 1e-12*math.Abs(b) || a == 0 {
		t.Errorf("aux losses with coef 0.1 and 0.2: %v and %v, want a ratio of 2", a, b)
	}
	if a, b := vals(z1)[0], vals(z2)[0]; math.Abs(b-2*a) > 1e-12*math.Abs(b) || a == 0 {
		t.Errorf("z losses with coef 1 and 2: %v and %v, want a ratio of 2", a, b)
	}
	if len(ints(plan7)) != ops.PlanLen(T, 2, E+2) || len(ints(E2)) != ops.PlanLen(T, 2, E) {
		t.Errorf("plan lengths %d and %d, want %d and %d", len(ints(plan7)), len(ints(E2)), ops.PlanLen(T, 2, E+2), ops.PlanLen(T, 2, E))
	}
	// Combine(Dispatch(x)) with renormalised weights reproduces x.
	cv := vals(c2)
	for i, want := range []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12} {
		if math.Abs(cv[i]-want) > 1e-12*want {
			t.Errorf("Combine(Dispatch(x)) with renormalised weights: element %d = %v, want %v", i, cv[i], want)
			break
		}
	}
}
