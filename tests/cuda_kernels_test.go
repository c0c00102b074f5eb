//go:build expertrt_cuda

package tests

import (
	"encoding/json"
	"fmt"
	"github.com/expertrt/expertrt-go/internal/floats"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// pipeline holds the device inputs and outputs of one forward+backward pass of route, plan, dispatch,
// combine and their gradients.
type pipeline struct {
	T, E, K, H int
	dt         tensor.Dtype
	cfg        ops.RouteConfig
	in         map[string]*tensor.Dense // host inputs
}

func randHost(rng *rand.Rand, dt tensor.Dtype, scale float64, shape ...int) *tensor.Dense {
	v := make([]float64, tensor.Shape(shape).TotalSize())
	for i := range v {
		v[i] = scale * (2*rng.Float64() - 1)
	}
	return floats.Dense(dt, v, shape...)
}

func newPipeline(seed int64, T, E, K, H int, dt tensor.Dtype) *pipeline {
	rng := rand.New(rand.NewSource(seed))
	p := &pipeline{T: T, E: E, K: K, H: H, dt: dt, cfg: ops.RouteConfig{K: K, Scoring: ops.SoftmaxTopK, Renormalize: true}}
	p.in = map[string]*tensor.Dense{
		"logits": randHost(rng, dt, 3, T, E),
		"x":      randHost(rng, dt, 1, T, H),
		"ye":     randHost(rng, dt, 1, T*K, H),
		"dy":     randHost(rng, dt, 1, T, H),
		"dxe":    randHost(rng, dt, 1, T*K, H),
	}
	return p
}

// run executes the pass on backend b and returns every output copied to the host, by name.
func (p *pipeline) run(t testing.TB, b ops.Backend) map[string]*tensor.Dense {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s on %s: %v", what, b.Name(), err)
		}
	}
	dev := map[string]*tensor.Dense{}
	for k, v := range p.in {
		d, err := b.FromHost(v)
		must("FromHost "+k, err)
		dev[k] = d
	}
	newT := func(name string, dt tensor.Dtype, shape ...int) *tensor.Dense {
		d, err := b.New(dt, shape...)
		must("New "+name, err)
		dev[name] = d
		return d
	}
	T, E, K, H := p.T, p.E, p.K, p.H
	idx := newT("idx", tensor.Int32, T, K)
	w := newT("w", p.dt, T, K)
	plan := newT("plan", tensor.Int32, ops.PlanLen(T, K, E))
	xe := newT("xe", p.dt, T*K, H)
	y := newT("y", p.dt, T, H)
	dye := newT("dye", p.dt, T*K, H)
	dw := newT("dw", p.dt, T, K)
	dlogits := newT("dlogits", p.dt, T, E)
	dx := newT("dx", p.dt, T, H)
	must("RouteIndices", b.RouteIndices(dev["logits"], p.cfg, idx))
	must("RouteWeights", b.RouteWeights(dev["logits"], idx, p.cfg, w))
	must("Plan", b.Plan(idx, E, plan))
	must("Dispatch", b.Dispatch(dev["x"], nil, plan, xe))
	must("Combine", b.Combine(dev["ye"], w, plan, y))
	must("Dispatch (combine backward)", b.Dispatch(dev["dy"], w, plan, dye))
	must("CombineGradWeights", b.CombineGradWeights(dev["dy"], dev["ye"], plan, dw))
	must("RouteWeightsGrad", b.RouteWeightsGrad(dev["logits"], idx, dw, p.cfg, dlogits))
	must("Combine (dispatch backward)", b.Combine(dev["dxe"], nil, plan, dx))
	out := map[string]*tensor.Dense{}
	for _, k := range []string{"idx", "w", "plan", "xe", "y", "dye", "dw", "dlogits", "dx"} {
		h, err := b.ToHost(dev[k])
		must("ToHost "+k, err)
		out[k] = h
	}
	return out
}

func rawBytes(d *tensor.Dense) []byte { return append([]byte(nil), d.Raw...) }

// TestCUDADeterminism runs the whole pass five times at a training-sized shape and requires bitwise
// identical outputs, then compares with the CPU backend (indices and plan exactly, floats within 2e-5
// relative to max(1, |ref|)).
func TestCUDADeterminism(t *testing.T) {
	b := cudaBackend(t)
	T, E, K, H := 4096, 64, 2, 1024
	if testing.Short() {
		T, H = 512, 256
	}
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		t.Run(dt.String(), func(t *testing.T) {
			p := newPipeline(11, T, E, K, H, dt)
			first := p.run(t, b)
			for rep := 1; rep < 5; rep++ {
				again := p.run(t, b)
				for k, v := range first {
					if string(rawBytes(v)) != string(rawBytes(again[k])) {
						t.Fatalf("run %d: %s differs bitwise from run 0", rep, k)
					}
				}
			}
			ref := p.run(t, ops.CPU())
			for _, k := range []string{"idx", "plan"} {
				if string(rawBytes(first[k])) != string(rawBytes(ref[k])) {
					t.Errorf("%s differs from the CPU backend", k)
				}
			}
			for _, k := range []string{"w", "xe", "y", "dye", "dw", "dlogits", "dx"} {
				if e := maxRel(first[k], ref[k]); e > 2e-5 {
					t.Errorf("%s: max error %.3g vs CPU (tolerance 2e-5)", k, e)
				} else {
					t.Logf("%s: max error vs CPU %.3g", k, e)
				}
			}
		})
	}
}

// TestCUDAAllocatorSteadyState: after the first pass, repeating it (with every tensor freed) makes no
// driver allocation.
func TestCUDAAllocatorSteadyState(t *testing.T) {
	b := cudaBackend(t)
	d, _ := b.Device()
	p := newPipeline(3, 1024, 16, 2, 256, tensor.Float32)
	step := func() {
		dev := []*tensor.Dense{}
		for _, k := range []string{"logits", "x", "ye", "dy"} {
			x, err := b.FromHost(p.in[k])
			if err != nil {
				t.Fatal(err)
			}
			dev = append(dev, x)
		}
		idx, _ := b.New(tensor.Int32, 1024, 2)
		w, _ := b.New(tensor.Float32, 1024, 2)
		plan, _ := b.New(tensor.Int32, ops.PlanLen(1024, 2, 16))
		xe, _ := b.New(tensor.Float32, 2048, 256)
		if err := b.Route(dev[0], p.cfg, idx, w); err != nil {
			t.Fatal(err)
		}
		if err := b.Plan(idx, 16, plan); err != nil {
			t.Fatal(err)
		}
		if err := b.Dispatch(dev[1], nil, plan, xe); err != nil {
			t.Fatal(err)
		}
		loss, _ := b.New(tensor.Float32, 1)
		if err := b.LoadBalancingLoss(dev[0], plan, nil, 1, loss); err != nil {
			t.Fatal(err)
		}
		for _, x := range append(dev, idx, w, plan, xe, loss) {
			if err := b.Free(x); err != nil {
				t.Fatal(err)
			}
		}
	}
	step()
	before := d.AllocStats()
	for i := 0; i < 5; i++ {
		step()
	}
	after := d.AllocStats()
	t.Logf("allocator: %+v -> %+v", before, after)
	if after.DriverAllocs != before.DriverAllocs {
		t.Errorf("steady state made %d driver allocations", after.DriverAllocs-before.DriverAllocs)
	}
}

// TestCUDAFusedMatchesSeparate: the fused route equals RouteIndices+RouteWeights, and the fused combine
// backward equals Dispatch(dy, w) + CombineGradWeights, bitwise.
func TestCUDAFusedMatchesSeparate(t *testing.T) {
	b := cudaBackend(t)
	p := newPipeline(5, 2048, 32, 4, 520, tensor.Float32) // H % 4 == 0 but also try the scalar path below
	sep := p.run(t, b)
	lg, _ := b.FromHost(p.in["logits"])
	idx, _ := b.New(tensor.Int32, p.T, p.K)
	w, _ := b.New(tensor.Float32, p.T, p.K)
	if err := b.Route(lg, p.cfg, idx, w); err != nil {
		t.Fatal(err)
	}
	hi, _ := b.ToHost(idx)
	hw, _ := b.ToHost(w)
	if string(hi.Raw) != string(sep["idx"].Raw) || string(hw.Raw) != string(sep["w"].Raw) {
		t.Errorf("fused route differs from RouteIndices + RouteWeights")
	}
	plan, _ := b.FromHost(sep["plan"])
	dy, _ := b.FromHost(p.in["dy"])
	ye, _ := b.FromHost(p.in["ye"])
	dye, _ := b.New(tensor.Float32, p.T*p.K, p.H)
	dw, _ := b.New(tensor.Float32, p.T, p.K)
	if err := b.CombineBackward(dy, ye, w, plan, dye, dw); err != nil {
		t.Fatal(err)
	}
	hdye, _ := b.ToHost(dye)
	hdw, _ := b.ToHost(dw)
	if string(hdye.Raw) != string(sep["dye"].Raw) || string(hdw.Raw) != string(sep["dw"].Raw) {
		t.Errorf("fused combine backward differs from Dispatch(dy,w) + CombineGradWeights")
	}
	// Odd H exercises the scalar kernels; compare with the CPU.
	q := newPipeline(6, 300, 8, 3, 37, tensor.Float32)
	got, ref := q.run(t, b), q.run(t, ops.CPU())
	for _, k := range []string{"xe", "y", "dye", "dw", "dlogits", "dx"} {
		if e := maxRel(got[k], ref[k]); e > 2e-5 {
			t.Errorf("scalar path %s: max error %.3g vs CPU", k, e)
		}
	}
}

// TestCUDAGraph runs route -> dispatch -> combine as a Gorgonia graph whose inputs are device tensors
// (the op types pick the CUDA backend by ownership) and compares with the same graph on host tensors.
func TestCUDAGraph(t *testing.T) {
	b := cudaBackend(t)
	p := newPipeline(9, 256, 8, 2, 64, tensor.Float64)
	eng, err := b.Engine()
	if err != nil {
		t.Fatal(err)
	}
	run := func(logits, x *tensor.Dense, opts ...G.VMOpt) *tensor.Dense {
		g := G.NewGraph()
		l := G.NewMatrix(g, tensor.Float64, G.WithShape(p.T, p.E), G.WithName("logits"), G.WithValue(logits))
		xn := G.NewMatrix(g, tensor.Float64, G.WithShape(p.T, p.H), G.WithName("x"), G.WithValue(x))
		r, err := ops.Route(l, p.cfg)
		if err != nil {
			t.Fatal(err)
		}
		xe, err := ops.Dispatch(xn, r)
		if err != nil {
			t.Fatal(err)
		}
		y, err := ops.Combine(xe, r)
		if err != nil {
			t.Fatal(err)
		}
		// G.Read would clone the value through the machine's engine (a host memmove for the default
		// engine); the output node's value is read directly instead.
		m := G.NewTapeMachine(g, opts...)
		defer m.Close()
		if err := m.RunAll(); err != nil {
			t.Fatalf("RunAll: %v", err)
		}
		return y.Value().(*tensor.Dense)
	}
	want := run(p.in["logits"], p.in["x"])
	lD, err := b.FromHost(p.in["logits"])
	if err != nil {
		t.Fatal(err)
	}
	xD, err := b.FromHost(p.in["x"])
	if err != nil {
		t.Fatal(err)
	}
	gotD := run(lD, xD, G.WithEngine(eng))
	if !b.Owns(gotD) {
		t.Fatalf("graph output is not a device tensor")
	}
	got, err := b.ToHost(gotD)
	if err != nil {
		t.Fatal(err)
	}
	if e := maxRel(got, want); e > 1e-12 {
		t.Errorf("device graph differs from host graph: %.3g", e)
	}
	// With the default engine the VM relabels device values as host-engine values; ownership goes by
	// address, so the ops still run on the GPU.
	got2D := run(lD, xD)
	if !b.Owns(got2D) {
		t.Fatalf("graph output (default engine) is not a device tensor")
	}
	got2, err := b.ToHost(got2D)
	if err != nil {
		t.Fatal(err)
	}
	if e := maxRel(got2, want); e > 1e-12 {
		t.Errorf("device graph (default engine) differs from host graph: %.3g", e)
	}
}

// TestCUDAWriteOracle writes inputs and GPU outputs of the pass for the PyTorch oracle
// (tests/pytorch/oracle.py) into $EXPERTRT_ORACLE_DIR; skipped when the variable is unset.
func TestCUDAWriteOracle(t *testing.T) {
	dir := os.Getenv("EXPERTRT_ORACLE_DIR")
	if dir == "" {
		t.Skip("EXPERTRT_ORACLE_DIR not set")
	}
	b := cudaBackend(t)
	type meta struct {
		Name           string
		T, E, K, H     int
		Dtype, Scoring string
		Renormalize    bool
		Files          map[string][]int
	}
	var metas []meta
	cases := []struct {
		name       string
		T, E, K, H int
		dt         tensor.Dtype
		scoring    ops.Scoring
		renorm     bool
	}{
		{"f32_mixtral", 512, 8, 2, 256, tensor.Float32, ops.SoftmaxTopK, true},
		{"f32_norenorm", 384, 64, 4, 128, tensor.Float32, ops.SoftmaxTopK, false},
		{"f32_topksoftmax", 256, 32, 2, 96, tensor.Float32, ops.TopKSoftmax, false},
		{"f64_mixtral", 256, 16, 2, 64, tensor.Float64, ops.SoftmaxTopK, true},
		{"f64_norenorm", 200, 1024, 8, 40, tensor.Float64, ops.SoftmaxTopK, false},
	}
	for i, c := range cases {
		p := newPipeline(int64(100+i), c.T, c.E, c.K, c.H, c.dt)
		p.cfg = ops.RouteConfig{K: c.K, Scoring: c.scoring, Renormalize: c.renorm}
		out := p.run(t, b)
		m := meta{Name: c.name, T: c.T, E: c.E, K: c.K, H: c.H, Dtype: c.dt.String(), Scoring: c.scoring.String(), Renormalize: c.renorm, Files: map[string][]int{}}
		write := func(k string, d *tensor.Dense) {
			f := filepath.Join(dir, c.name+"."+k+".bin")
			if err := os.WriteFile(f, d.Raw, 0o644); err != nil {
				t.Fatal(err)
			}
			m.Files[k] = d.Shape().Clone()
		}
		for k, v := range p.in {
			write("in_"+k, v)
		}
		for k, v := range out {
			write("out_"+k, v)
		}
		metas = append(metas, m)
	}
	js, _ := json.MarshalIndent(metas, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "cases.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "oracle cases written to %s\n", dir)
}

// TestCUDAPlanPaths compares the plan with the CPU backend on both device paths, the one-launch plan
// (plan_onepass, where its grid fits) and the three-launch plan (forced with PlanMultiLaunch, and what
// the automatic mode takes for large problems), with skewed, single-expert and sparse expert loads.
func TestCUDAPlanPaths(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	// One-pass (default tiles), one-pass (4 blocks), three-launch: backends over handles of the device.
	var modes []*cudaops.Backend
	for _, o := range [][]cudaops.Option{nil, {cudaops.WithPlanBlocks(4)}, {cudaops.WithPlanMode(cudaops.PlanMultiLaunch)}} {
		h, err := d.With(o...)
		if err != nil {
			t.Fatal(err)
		}
		modes = append(modes, cudaops.NewBackend(h))
	}
	cases := []struct {
		T, K, E int
		pattern string
	}{
		{4096, 2, 16, "skew"}, {8192, 2, 32, "skew"}, {1, 1, 1, "skew"}, {7, 2, 3, "skew"}, {100, 3, 256, "skew"},
		{3000, 4, 300, "skew"}, {2048, 2, 1024, "skew"}, {16384, 2, 64, "skew"}, {33000, 2, 16, "skew"},
		{50000, 2, 64, "skew"}, {40000, 8, 1024, "skew"}, {4096, 2, 16, "one"}, {5000, 2, 2000, "sparse"},
		{8192, 2, 32, "one"}, {300000, 2, 8, "skew"},
	}
	reps := 3 // repeated launches reuse the grid barrier state
	if testing.Short() {
		reps = 1 // (sanitizer runs)
	}
	for _, c := range cases {
		if testing.Short() && c.T*c.K > 100000 {
			continue
		}
		rng := rand.New(rand.NewSource(int64(c.T + c.E)))
		v := make([]int32, c.T*c.K)
		for i := range v {
			e := rng.Intn(c.E)
			switch c.pattern {
			case "skew":
				if rng.Intn(3) == 0 {
					e = rng.Intn(min(4, c.E)) // a few hot experts
				}
			case "one":
				e = c.E - 1
			case "sparse":
				e = (e % 7) * (c.E / 7) // most experts empty
			}
			v[i] = int32(e)
		}
		host := tensor.New(tensor.WithShape(c.T, c.K), tensor.WithBacking(v))
		want := tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(ops.PlanLen(c.T, c.K, c.E)))
		if err := ops.CPU().Plan(host, c.E, want); err != nil {
			t.Fatal(err)
		}
		idx, err := b.FromHost(host)
		if err != nil {
			t.Fatal(err)
		}
		for mode, b := range modes {
			for rep := 0; rep < reps; rep++ {
				plan, err := b.New(tensor.Int32, ops.PlanLen(c.T, c.K, c.E))
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Plan(idx, c.E, plan); err != nil {
					t.Fatal(err)
				}
				got, err := b.ToHost(plan)
				if err != nil {
					t.Fatalf("T=%d K=%d E=%d %s mode %d: %v", c.T, c.K, c.E, c.pattern, mode, err)
				}
				if string(got.Raw) != string(want.Raw) {
					t.Errorf("T=%d K=%d E=%d %s mode %d rep %d: plan differs from the CPU backend", c.T, c.K, c.E, c.pattern, mode, rep)
				}
				if err := b.Free(plan); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestCUDAPlanTiming logs device times (CUDA events, median of 50) of both plan paths and of route at
// the benchmark shapes; a diagnostic (skipped with -short), it fails only on errors.
func TestCUDAPlanTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("timing diagnostic")
	}
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	withOpts := func(o ...cudaops.Option) *cudaops.Backend {
		h, err := d.With(o...)
		if err != nil {
			t.Fatal(err)
		}
		return cudaops.NewBackend(h)
	}
	multiB := withOpts(cudaops.WithPlanMode(cudaops.PlanMultiLaunch))
	for _, c := range []struct{ T, K, E int }{{4096, 2, 16}, {4096, 2, 64}, {8192, 2, 32}, {16384, 2, 16}, {16384, 2, 64}, {65536, 2, 64}} {
		p := newPipeline(1, c.T, c.E, c.K, 8, tensor.Float32)
		p.cfg = ops.RouteConfig{K: c.K, Scoring: ops.SoftmaxTopK, Renormalize: true}
		logits, err := b.FromHost(p.in["logits"])
		if err != nil {
			t.Fatal(err)
		}
		idx, _ := b.New(tensor.Int32, c.T, c.K)
		w, _ := b.New(tensor.Float32, c.T, c.K)
		plan, _ := b.New(tensor.Int32, ops.PlanLen(c.T, c.K, c.E))
		median := func(fn func() error) time.Duration {
			var ds []time.Duration
			for i := 0; i < 55; i++ {
				dt, err := d.Time(200*time.Microsecond, fn)
				if err != nil {
					t.Fatal(err)
				}
				if i >= 5 {
					ds = append(ds, dt)
				}
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			return ds[len(ds)/2]
		}
		route := median(func() error { return b.Route(logits, p.cfg, idx, w) })
		var byBlocks string
		for _, nb := range []int{4, 8, 32} {
			bb := withOpts(cudaops.WithPlanBlocks(nb))
			byBlocks += fmt.Sprintf(" %d:%.1f", nb, us(median(func() error { return bb.Plan(idx, c.E, plan) })))
		}
		auto := median(func() error { return b.Plan(idx, c.E, plan) })
		both := median(func() error {
			if err := b.Route(logits, p.cfg, idx, w); err != nil {
				return err
			}
			return b.Plan(idx, c.E, plan)
		})
		multi := median(func() error { return multiB.Plan(idx, c.E, plan) })
		t.Logf("plan-timing T=%d K=%d E=%d: route %.1f us, plan auto %.1f us, multi-launch %.1f us, route+plan %.1f us, one-pass by preferred blocks%s us",
			c.T, c.K, c.E, us(route), us(auto), us(multi), us(both), byBlocks)
		for _, x := range []*tensor.Dense{logits, idx, w, plan} {
			_ = b.Free(x)
		}
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// TestCUDAGraphGradient builds route -> dispatch -> combine on device tensors, backpropagates a given
// output gradient R (a device tensor node) to x and the logits with G.Backpropagate, runs the graph
// on a TapeMachine with the CUDA engine and with the default engine, and compares dx and dlogits with
// the same graph on host tensors. This runs the fused combine backward and its two view nodes on the
// GPU. Values are read from the nodes directly.
func TestCUDAGraphGradient(t *testing.T) {
	b := cudaBackend(t)
	eng, err := b.Engine()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		T, E, K, H int
		dt         tensor.Dtype
		tol        float64
	}{
		{256, 8, 2, 64, tensor.Float64, 1e-12},
		{300, 16, 4, 36, tensor.Float32, 2e-5},
	} {
		p := newPipeline(21, c.T, c.E, c.K, c.H, c.dt)
		run := func(logits, x, r *tensor.Dense, opts ...G.VMOpt) (dx, dl *tensor.Dense) {
			g := G.NewGraph()
			l := G.NewMatrix(g, c.dt, G.WithShape(c.T, c.E), G.WithName("logits"), G.WithValue(logits))
			xn := G.NewMatrix(g, c.dt, G.WithShape(c.T, c.H), G.WithName("x"), G.WithValue(x))
			rn := G.NewMatrix(g, c.dt, G.WithShape(c.T, c.H), G.WithName("R"), G.WithValue(r))
			rt, err := ops.Route(l, p.cfg)
			if err != nil {
				t.Fatal(err)
			}
			xe, err := ops.Dispatch(xn, rt)
			if err != nil {
				t.Fatal(err)
			}
			y, err := ops.Combine(xe, rt)
			if err != nil {
				t.Fatal(err)
			}
			grads, err := G.Backpropagate(G.Nodes{y}, G.Nodes{rn}, G.Nodes{xn, l})
			if err != nil {
				t.Fatalf("Backpropagate: %v", err)
			}
			m := G.NewTapeMachine(g, opts...)
			defer m.Close()
			if err := m.RunAll(); err != nil {
				t.Fatalf("RunAll: %v", err)
			}
			return grads[0].Value().(*tensor.Dense), grads[1].Value().(*tensor.Dense)
		}
		rHost := p.in["dy"]
		wantDx, wantDl := run(p.in["logits"], p.in["x"], rHost)
		toDev := func(h *tensor.Dense) *tensor.Dense {
			d, err := b.FromHost(h)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		lD, xD, rD := toDev(p.in["logits"]), toDev(p.in["x"]), toDev(rHost)
		for _, eng := range []struct {
			name string
			opts []G.VMOpt
		}{{"cuda engine", []G.VMOpt{G.WithEngine(eng)}}, {"default engine", nil}} {
			dxD, dlD := run(lD, xD, rD, eng.opts...)
			for _, v := range []struct {
				name      string
				got, want *tensor.Dense
			}{{"dx", dxD, wantDx}, {"dlogits", dlD, wantDl}} {
				if !b.Owns(v.got) {
					t.Fatalf("%v %s: %s is not a device tensor", c.dt, eng.name, v.name)
				}
				h, err := b.ToHost(v.got)
				if err != nil {
					t.Fatal(err)
				}
				if e := maxRel(h, v.want); e > c.tol {
					t.Errorf("%v %s: %s differs from the host graph by %.3g (tolerance %g)", c.dt, eng.name, v.name, e, c.tol)
				}
			}
		}
	}
}
