package tests

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Mixed precision (bfloat16 activations, float32 master weights) at the graph level, on the CPU and
// the simulated device. Tolerances are derived: every bfloat16 rounding errs by at most 2^-8 relative
// (8 significant bits), and the layer's gradients pass through at most 16 roundings on any path
// (dispatch, two expert products, SwiGLU, the down product in the forward pass; their mirrors and the
// weighted dispatch in the backward pass), so each gradient tensor must be within 16·2^-8 = 1/16 of the
// exact one in relative norm. float32 accumulation adds nothing visible at these sizes.

const bf16NormTol = 16.0 / 256

// mixedTask is a small regression task for a mixed-precision MoE layer: float32 data and targets.
type mixedTask struct {
	cfg    moe.Config
	tokens int
	x, y   []float64
}

func newMixedTask(dt tensor.Dtype) mixedTask {
	cfg := moe.Config{Hidden: 16, FFN: 24, Experts: 4, TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true,
		AuxLossCoef: 0.01, ZLossCoef: 0.001, Seed: 21, Dtype: dt}
	rng := rand.New(rand.NewSource(3))
	const T = 40
	x, y := make([]float64, T*cfg.Hidden), make([]float64, T*cfg.Hidden)
	for i := range x {
		x[i] = rng.NormFloat64()
		y[i] = math.Tanh(rng.NormFloat64())
	}
	return mixedTask{cfg: cfg, tokens: T, x: x, y: y}
}

// mixedGraph is a layer, its cost and the gradient nodes of its parameters and input.
type mixedGraph struct {
	g     *G.ExprGraph
	layer *moe.Layer
	x, y  *G.Node
	cost  *G.Node
	yOut  G.Value
	wrt   G.Nodes
	grads G.Nodes
}

// build makes the graph on backend b with float32 inputs (a float64 layer gets float64 data).
func (mt mixedTask) build(t *testing.T, b ops.Backend, withGrad bool) *mixedGraph {
	t.Helper()
	cfg := mt.cfg
	cfg.Backend = b
	dataDt := tensor.Float32
	if cfg.Dtype == tensor.Float64 {
		dataDt = tensor.Float64
	}
	m := &mixedGraph{g: G.NewGraph()}
	var err error
	if m.layer, err = moe.NewLayer(m.g, cfg); err != nil {
		t.Fatal(err)
	}
	m.x = G.NewMatrix(m.g, dataDt, G.WithShape(mt.tokens, cfg.Hidden), G.WithName("x"))
	m.y = G.NewMatrix(m.g, dataDt, G.WithShape(mt.tokens, cfg.Hidden), G.WithName("y"))
	out, err := m.layer.Forward(m.x)
	if err != nil {
		t.Fatal(err)
	}
	mse, err := ops.MSELoss(out.Y, m.y)
	if err != nil {
		t.Fatal(err)
	}
	if m.cost, err = out.Cost(mse); err != nil {
		t.Fatal(err)
	}
	G.Read(out.Y, &m.yOut)
	m.wrt = append(m.layer.Params(), m.x)
	if withGrad {
		if m.grads, err = ops.Grad(m.cost, m.wrt...); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func (mt mixedTask) feeds(m *mixedGraph) ops.Feeds {
	dt := m.x.Dtype()
	return ops.Feeds{m.x: fromF64(dt, mt.x, tensor.Shape{mt.tokens, mt.cfg.Hidden}), m.y: fromF64(dt, mt.y, tensor.Shape{mt.tokens, mt.cfg.Hidden})}
}

// evaluate runs the graph once on b and returns the cost, the output and the gradients (host float64).
func (mt mixedTask) evaluate(t *testing.T, b ops.Backend) (float64, []float64, [][]float64) {
	t.Helper()
	m := mt.build(t, b, true)
	var cost float64
	var y []float64
	var grads [][]float64
	var costV G.Value
	G.Read(m.cost, &costV)
	r, err := ops.NewRunner(m.g, b)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Run(mt.feeds(m), func() error {
		var err error
		if cost, err = ops.Float(costV); err != nil {
			return err
		}
		if y, err = hostValues(b, m.yOut); err != nil {
			return err
		}
		for _, gn := range m.grads {
			v, err := hostValues(b, gn.Value())
			if err != nil {
				return err
			}
			grads = append(grads, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cost, y, grads
}

// hostValues reads a float tensor of any backend as float64 values.
func hostValues(b ops.Backend, v G.Value) ([]float64, error) {
	d, ok := v.(*tensor.Dense)
	if !ok || d == nil {
		return nil, fmt.Errorf("not a tensor: %T", v)
	}
	if !d.IsNativelyAccessible() {
		var err error
		if d, err = b.ToHost(d); err != nil {
			return nil, err
		}
	}
	return denseFloats(d), nil
}

// TestBF16LayerGradients compares the mixed-precision layer with the same layer in float64 (the exact
// function of the same float32 master weights and data): cost, output and the gradients of every
// parameter and of the input, within bf16NormTol in relative norm. This is the gradient check through
// the casts: float64's gradients are the ones TestGradMoELayer checks against finite differences. The
// float32 layer must agree with float64 to 1e-5, showing that the difference is bfloat16's.
func TestBF16LayerGradients(t *testing.T) {
	for _, dev := range []struct {
		name string
		b    func(t *testing.T) ops.Backend
	}{{"cpu", func(*testing.T) ops.Backend { return ops.CPU() }}, {"sim", func(t *testing.T) ops.Backend { return simBackend(t) }}} {
		t.Run(dev.name, func(t *testing.T) {
			b := dev.b(t)
			c64, y64, g64 := newMixedTask(tensor.Float64).evaluate(t, b)
			c32, y32, g32 := newMixedTask(tensor.Float32).evaluate(t, b)
			cbf, ybf, gbf := newMixedTask(ops.BFloat16).evaluate(t, b)
			names := []string{"router", "w1", "w3", "w2", "x"}
			if d := math.Abs(cbf-c64) / c64; d > bf16NormTol {
				t.Errorf("cost %v, float64 %v (relative %.3g)", cbf, c64, d)
			}
			if d := normRelErr(ybf, y64); d > bf16NormTol {
				t.Errorf("output: relative error %.3g", d)
			}
			for i := range g64 {
				d32, dbf := normRelErr(g32[i], g64[i]), normRelErr(gbf[i], g64[i])
				t.Logf("%s gradient: float32 %.2g, bfloat16 %.2g relative to float64", names[i], d32, dbf)
				if d32 > 1e-5 {
					t.Errorf("%s gradient: float32 differs from float64 by %.3g", names[i], d32)
				}
				if dbf > bf16NormTol {
					t.Errorf("%s gradient: bfloat16 differs from float64 by %.3g > %.3g", names[i], dbf, bf16NormTol)
				}
			}
			if d := math.Abs(c32-c64) / c64; d > 1e-6 {
				t.Errorf("float32 cost %v, float64 %v", c32, c64)
			}
			_ = y32
		})
	}
}

// TestBF16CastGradient: Cast rounds forward values once and passes gradients straight through (the
// reverse cast): for loss = MSE(Cast(Cast(x, bf16), float32), target) the gradient w.r.t. x is exactly
// 2(c - target)/n with c the bfloat16-rounded x, rounded to bfloat16 on its way back (the reverse cast
// of a float32 gradient into the bfloat16 node, then exact widening).
func TestBF16CastGradient(t *testing.T) {
	const n = 37
	rng := rand.New(rand.NewSource(5))
	xv, tv := make([]float64, n), make([]float64, n)
	for i := range xv {
		xv[i], tv[i] = rng.NormFloat64(), rng.NormFloat64()
	}
	g := G.NewGraph()
	x := G.NewVector(g, tensor.Float32, G.WithShape(n), G.WithName("x"), G.WithValue(fromF64(tensor.Float32, xv, tensor.Shape{n})))
	target := G.NewVector(g, tensor.Float32, G.WithShape(n), G.WithName("t"), G.WithValue(fromF64(tensor.Float32, tv, tensor.Shape{n})))
	xb, err := ops.Cast(x, ops.BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	if same, _ := ops.Cast(xb, ops.BFloat16); same != xb {
		t.Errorf("Cast to the node's own dtype made a new node")
	}
	c, err := ops.Cast(xb, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := ops.MSELoss(c, target)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ops.Grad(loss, x); err != nil {
		t.Fatal(err)
	}
	var cv G.Value
	G.Read(c, &cv)
	r, err := ops.NewRunner(g, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Run(nil, nil); err != nil {
		t.Fatal(err)
	}
	got := cv.(*tensor.Dense).Data().([]float32)
	gx, _ := x.Grad()
	gd := gx.(*tensor.Dense).Data().([]float32)
	for i := range xv {
		ci := ops.BF16FromFloat32(float32(xv[i])).Float32()
		if got[i] != ci {
			t.Fatalf("cast %v: %v, want %v", xv[i], got[i], ci)
		}
		want := ops.BF16FromFloat32(float32(2 * (float64(ci) - float64(float32(tv[i]))) / n)).Float32()
		if d := math.Abs(float64(gd[i] - want)); d > 1e-6*math.Abs(float64(want)) {
			t.Fatalf("gradient %d: %v, want %v", i, gd[i], want)
		}
	}
}

// trainMixed trains the mixed-precision task on b with Adam for steps steps and returns the costs.
func trainMixed(t *testing.T, b ops.Backend, steps int) ([]float64, moe.Weights) {
	t.Helper()
	mt := newMixedTask(ops.BFloat16)
	m := mt.build(t, b, false)
	cfg := ops.DefaultAdam(0.02)
	cfg.MaxGradNorm = 1
	adam, err := ops.NewAdam(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ops.NewTrainer(m.cost, m.layer.Params(), adam, b)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	losses := make([]float64, steps)
	for i := range losses {
		if losses[i], err = tr.StepLoss(mt.feeds(m)); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	w, err := m.layer.HostWeights()
	if err != nil {
		t.Fatal(err)
	}
	return losses, w
}

// TestBF16Training trains the mixed-precision layer with Adam (float32 master weights, bfloat16
// experts) on the CPU and on the simulated device: the cost must fall well below its start, a second
// CPU run must be bitwise identical, and the device run (the same CPU kernels through the device
// boundary, the device engine's bfloat16 gradient sums) must equal the CPU run bitwise.
func TestBF16Training(t *testing.T) {
	const steps = 40
	cpu1, w1 := trainMixed(t, ops.CPU(), steps)
	cpu2, w2 := trainMixed(t, ops.CPU(), steps)
	sim, ws := trainMixed(t, registeredSim(t, "sim-bf16", 64<<20, nil), steps)
	t.Logf("cost %.5f -> %.5f", cpu1[0], cpu1[steps-1])
	if !(cpu1[steps-1] < 0.7*cpu1[0]) {
		t.Errorf("mixed-precision training did not reduce the cost: %.5f -> %.5f", cpu1[0], cpu1[steps-1])
	}
	for i := range cpu1 {
		if math.Float64bits(cpu1[i]) != math.Float64bits(cpu2[i]) || math.Float64bits(cpu1[i]) != math.Float64bits(sim[i]) {
			t.Fatalf("step %d: costs %v, %v (second CPU run), %v (simulated device)", i, cpu1[i], cpu2[i], sim[i])
		}
	}
	for _, w := range []moe.Weights{w2, ws} {
		a, b := weightBits(w1), weightBits(w)
		for p := range a {
			if w.Router.Dtype() != tensor.Float32 {
				t.Fatalf("master weights are %v", w.Router.Dtype())
			}
			for i := range a[p] {
				if a[p][i] != b[p][i] {
					t.Fatalf("parameter %d element %d differs between runs", p, i)
				}
			}
		}
	}
}

// TestBF16Guards: every way to misuse bfloat16 gets an error that says what to do.
func TestBF16Guards(t *testing.T) {
	check := func(what string, err, sentinel error, words ...string) {
		t.Helper()
		if !errors.Is(err, sentinel) {
			t.Errorf("%s: got %v, want an error wrapping %v", what, err, sentinel)
			return
		}
		for _, w := range words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", what, err, w)
			}
		}
	}
	g := G.NewGraph()
	xb := G.NewMatrix(g, ops.BFloat16, G.WithShape(4, 8), G.WithName("xb"), G.WithInit(G.Zeroes()))
	x32 := G.NewMatrix(g, tensor.Float32, G.WithShape(4, 8), G.WithName("x32"), G.WithInit(G.Zeroes()))
	x64 := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 8), G.WithName("x64"), G.WithInit(G.Zeroes()))
	wb := G.NewMatrix(g, ops.BFloat16, G.WithShape(8, 8), G.WithName("wb"), G.WithInit(G.Zeroes()))

	// A bfloat16 cost: G.Grad returns no gradients and no error; ops.Grad and NewTrainer refuse it.
	sq, err := ops.MatMul(xb, wb, false, false)
	if err != nil {
		t.Fatal(err)
	}
	costB := G.NewScalar(g, ops.BFloat16, G.WithName("costb"))
	_, err = ops.Grad(costB, wb)
	check("ops.Grad of a bfloat16 cost", err, ops.ErrDtype, "bfloat16", "float32")
	adam, _ := ops.NewAdam(ops.DefaultAdam(1e-3))
	_, err = ops.NewTrainer(costB, G.Nodes{wb}, adam, nil)
	check("NewTrainer with a bfloat16 cost", err, ops.ErrDtype, "bfloat16")
	cost32 := G.NewScalar(g, tensor.Float32, G.WithName("cost32"))
	_, err = ops.NewTrainer(cost32, G.Nodes{wb}, adam, nil)
	check("NewTrainer with a bfloat16 parameter", err, ops.ErrDtype, "master", "Cast")

	// Solvers refuse bfloat16 parameters.
	p := tensor.New(tensor.WithShape(2), tensor.WithBacking([]ops.BF16{1, 2}))
	gr := tensor.New(tensor.WithShape(2), tensor.WithBacking([]ops.BF16{1, 2}))
	err = adam.Step([]G.ValueGrad{valueGrad{p, gr}})
	check("Adam on a bfloat16 parameter", err, ops.ErrDtype, "master")

	// Ops that run in float32 only.
	_, err = ops.Route(sq, ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true})
	check("Route on bfloat16 logits", err, ops.ErrDtype, "bfloat16", "Cast")
	_, err = ops.MSELoss(xb, xb)
	check("MSELoss on bfloat16", err, ops.ErrDtype, "bfloat16")
	_, err = ops.MatMul(xb, G.NewMatrix(g, tensor.Float64, G.WithShape(8, 8), G.WithName("w64")), false, false)
	check("MatMul of bfloat16 and float64", err, ops.ErrDtype, "float64")
	_, err = ops.Cast(xb, tensor.Int32)
	check("Cast to int32", err, ops.ErrDtype)

	// Dtype rules of the permutations.
	logits := G.NewMatrix(g, tensor.Float32, G.WithShape(4, 3), G.WithName("logits"), G.WithInit(G.Zeroes()))
	r, err := ops.Route(logits, ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ops.DispatchTo(x64, r, ops.BFloat16)
	check("DispatchTo float64 -> bfloat16", err, ops.ErrDtype)
	packed, err := ops.Dispatch(xb, r)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ops.CombineTo(packed, r, tensor.Float64)
	check("CombineTo bfloat16 -> float64", err, ops.ErrDtype)
	_, err = ops.CombineWeighted(packed, G.NewMatrix(g, ops.BFloat16, G.WithShape(4, 2), G.WithName("wbf")), r)
	check("combine with bfloat16 weights", err, ops.ErrDtype, "float32")

	// Gorgonia built-ins that would compute on the raw bits.
	h := G.Must(G.Mul(xb, wb))
	_ = h
	err = ops.CheckBF16Graph(g)
	check("CheckBF16Graph", err, ops.ErrDtype, "Cast")
	_, err = ops.NewRunner(g, nil)
	check("NewRunner of a graph with a bfloat16 built-in", err, ops.ErrDtype)

	// The LispMachine does not run bfloat16 graphs.
	g2 := G.NewGraph()
	G.NewMatrix(g2, ops.BFloat16, G.WithShape(2, 2), G.WithName("b"))
	_, err = ops.NewLispMachine(g2)
	check("LispMachine", err, ops.ErrUnsupported, "TapeMachine")

	// Expert parallelism is float32/float64.
	cfg := moe.MixtralConfig(8, 16, 4)
	cfg.Dtype = ops.BFloat16
	grp, err := ep.NewGroup(1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := grp.Rank(0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ep.NewLayer(G.NewGraph(), cfg, tr, ep.Options{})
	check("ep layer in bfloat16", err, ops.ErrUnsupported)
	_ = x32
}

type valueGrad struct{ v, g *tensor.Dense }

func (v valueGrad) Value() G.Value         { return v.v }
func (v valueGrad) Grad() (G.Value, error) { return v.g, nil }

// TestBF16Printable: Printable prints a bfloat16 tensor's numbers (host and simulated device), not the
// raw bit patterns fmt shows.
func TestBF16Printable(t *testing.T) {
	h := tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]ops.BF16{
		ops.BF16FromFloat32(1.5), ops.BF16FromFloat32(-2), ops.BF16FromFloat32(0.25), ops.BF16FromFloat32(3)}))
	raw := fmt.Sprint(h)
	if !strings.Contains(raw, "16320") { // 1.5 is 0x3fc0
		t.Logf("fmt of a bfloat16 tensor: %q (expected raw bits)", raw)
	}
	d := mustFromHost(t, simBackend(t), h)
	for _, v := range []G.Value{h, d} {
		s := fmt.Sprint(ops.Printable(v))
		for _, want := range []string{"1.5", "-2", "0.25", "3"} {
			if !strings.Contains(s, want) {
				t.Errorf("Printable(%T) = %q, missing %s", v, s, want)
			}
		}
	}
	if s := fmt.Sprintf("%v", ops.Printable(G.NewF32(2.5))); s != "2.5" {
		t.Errorf("Printable of a float32 scalar: %q", s)
	}
}

// TestHostEngineAddBF16: HostEngine adds bfloat16 tensors (new result, WithReuse, UseUnsafe) and leaves
// other dtypes to StdEng.
func TestHostEngineAddBF16(t *testing.T) {
	eng := ops.HostEngine().(tensor.Adder)
	mk := func(v ...float32) *tensor.Dense {
		b := make([]ops.BF16, len(v))
		for i, x := range v {
			b[i] = ops.BF16FromFloat32(x)
		}
		return tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(b))
	}
	a, b := mk(1, 2, 3, 1), mk(0.5, -2, 1, 1.0/256)
	want := []float32{1.5, 0, 4, 1} // 1 + 2^-8 ties to even
	got := func(r tensor.Tensor) []float32 {
		var out []float32
		for _, x := range r.(*tensor.Dense).Data().([]ops.BF16) {
			out = append(out, x.Float32())
		}
		return out
	}
	r, err := eng.Add(a, b)
	if err != nil || fmt.Sprint(got(r)) != fmt.Sprint(want) {
		t.Fatalf("Add: %v %v", got(r), err)
	}
	reuse := mk(9, 9, 9, 9)
	if _, err := eng.Add(a, b, tensor.WithReuse(reuse)); err != nil || fmt.Sprint(got(reuse)) != fmt.Sprint(want) {
		t.Fatalf("Add WithReuse: %v %v", got(reuse), err)
	}
	if _, err := eng.Add(a, b, tensor.UseUnsafe()); err != nil || fmt.Sprint(got(a)) != fmt.Sprint(want) {
		t.Fatalf("Add UseUnsafe: %v %v", got(a), err)
	}
	f := tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 2}))
	if r, err := eng.Add(f, f); err != nil || fmt.Sprint(r.Data()) != "[2 4]" {
		t.Fatalf("float32 Add through StdEng: %v %v", r, err)
	}
	if _, err := eng.Add(a, f); !errors.Is(err, ops.ErrDtype) {
		t.Fatalf("Add of bfloat16 and float32: %v", err)
	}
}
