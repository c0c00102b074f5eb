package moe

import (
	"errors"
	"github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func noPanic(t *testing.T, what string, f func() error) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s panicked: %v", what, r)
		}
	}()
	return f()
}

// TestConfigDtypeDefault: a hand-written Config without Dtype builds a float32 layer (it used to fail
// with a message holding "%!v(PANIC=Format method...)"), and a bad dtype gives a clean error.
func TestConfigDtypeDefault(t *testing.T) {
	cfg := Config{Hidden: 4, FFN: 3, Experts: 3, TopK: 2}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate of a config without Dtype: %v", err)
	}
	l, err := NewLayer(G.NewGraph(), cfg)
	if err != nil {
		t.Fatalf("NewLayer of a config without Dtype: %v", err)
	}
	if l.Config.Dtype != tensor.Float32 || l.Router.Dtype() != tensor.Float32 {
		t.Errorf("layer dtype %v, router %v; want float32", l.Config.Dtype, l.Router.Dtype())
	}
	cfg.Dtype = tensor.Int32
	err = noPanic(t, "Validate", cfg.Validate)
	if err == nil || strings.Contains(err.Error(), "PANIC") || !errors.Is(err, ops.ErrDtype) {
		t.Errorf("int32 dtype: error %v, want a clean ErrDtype", err)
	}
}

// TestNilGraph: NewLayer(nil, ...) is an error, not a panic.
func TestNilGraph(t *testing.T) {
	err := noPanic(t, "NewLayer(nil)", func() error { _, err := NewLayer(nil, MixtralConfig(4, 3, 2)); return err })
	if !errors.Is(err, ops.ErrConfig) {
		t.Errorf("NewLayer(nil): %v, want ErrConfig", err)
	}
	l, err := NewLayer(G.NewGraph(), MixtralConfig(4, 3, 2))
	if err != nil {
		t.Fatal(err)
	}
	err = noPanic(t, "NewLayerWithWeights(nil)", func() error { _, err := NewLayerWithWeights(nil, Config{}, l.Weights()); return err })
	if !errors.Is(err, ops.ErrConfig) {
		t.Errorf("NewLayerWithWeights(nil): %v, want ErrConfig", err)
	}
}

// TestCoefficientsMustBeFinite: NaN, infinite and negative loss coefficients are errors.
func TestCoefficientsMustBeFinite(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1), -1} {
		for _, c := range []Config{{AuxLossCoef: v}, {ZLossCoef: v}} {
			c.Hidden, c.FFN, c.Experts, c.TopK = 4, 3, 2, 1
			if _, err := NewLayer(G.NewGraph(), c); !errors.Is(err, ops.ErrConfig) {
				t.Errorf("coefficients aux=%v z=%v: %v, want ErrConfig", c.AuxLossCoef, c.ZLossCoef, err)
			}
		}
	}
}

func routerValues(l *Layer) []float32 { return l.Router.Value().Data().([]float32) }

// TestLayersGetTheirOwnWeights: two layers made from one MixtralConfig in one graph differ (they used to
// be identical); the same program gives the same weights again; an explicit seed gives exactly its weights.
func TestLayersGetTheirOwnWeights(t *testing.T) {
	build := func(cfg Config) (*Layer, *Layer) {
		g := G.NewGraph()
		a, err := NewLayer(g, cfg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewLayer(g, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	cfg := MixtralConfig(8, 4, 3)
	a, b := build(cfg)
	if equal32(routerValues(a), routerValues(b)) || equal32(a.W1.Value().Data().([]float32), b.W1.Value().Data().([]float32)) {
		t.Error("two layers of one graph from one config have identical weights")
	}
	a2, b2 := build(cfg)
	if !equal32(routerValues(a), routerValues(a2)) || !equal32(routerValues(b), routerValues(b2)) {
		t.Error("the same program gave different weights")
	}
	cfg.Seed = 42
	s1, s2 := build(cfg)
	if !equal32(routerValues(s1), routerValues(s2)) {
		t.Error("an explicit seed must give the same weights to every layer that uses it")
	}
	if equal32(routerValues(s1), routerValues(a)) {
		t.Error("seed 42 gave the weights of the default stream")
	}
}

func equal32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func randMatrix(rng *rand.Rand, dt tensor.Dtype, shape ...int) *tensor.Dense {
	v := make([]float64, tensor.Shape(shape).TotalSize())
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	return floats.Dense(dt, v, shape...)
}

func scalarOf(t *testing.T, v G.Value) float64 {
	t.Helper()
	s, err := floats.Scalar(v)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRouterLossEveryConfig: the documented pattern cost = task + RouterLoss works with every pair of
// coefficients, including both 0 (RouterLoss used to return nil there, and G.Add(mse, out.AuxLoss)
// panicked); Cost gives the same value without the constant.
func TestRouterLossEveryConfig(t *testing.T) {
	for _, coefs := range [][2]float64{{0, 0}, {0.1, 0}, {0, 0.1}, {0.1, 0.1}} {
		g := G.NewGraph()
		cfg := Config{Hidden: 4, FFN: 3, Experts: 3, TopK: 2, Renormalize: true, AuxLossCoef: coefs[0], ZLossCoef: coefs[1], Seed: 5, Dtype: tensor.Float64}
		l, err := NewLayer(g, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 1))
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(6, 4), G.WithName("x"), G.WithValue(randMatrix(rng, tensor.Float64, 6, 4)))
		target := G.NewMatrix(g, tensor.Float64, G.WithShape(6, 4), G.WithName("target"), G.WithValue(randMatrix(rng, tensor.Float64, 6, 4)))
		out, err := l.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		mse, err := MSE(out.Y, target)
		if err != nil {
			t.Fatal(err)
		}
		rl, err := out.RouterLoss()
		if err != nil || rl == nil {
			t.Fatalf("%v: RouterLoss = %v, %v", coefs, rl, err)
		}
		documented, err := G.Add(mse, rl)
		if err != nil {
			t.Fatal(err)
		}
		cost, err := out.Cost(mse)
		if err != nil {
			t.Fatal(err)
		}
		if (coefs == [2]float64{}) != (cost == mse) {
			t.Errorf("%v: Cost returned a new node %t, want one only when a router loss exists", coefs, cost != mse)
		}
		var docV, costV, mseV, auxV, zV G.Value
		G.Read(documented, &docV)
		G.Read(cost, &costV)
		G.Read(mse, &mseV)
		if out.AuxLoss != nil {
			G.Read(out.AuxLoss, &auxV)
		}
		if out.ZLoss != nil {
			G.Read(out.ZLoss, &zV)
		}
		if _, err := G.Grad(documented, l.Params()...); err != nil {
			t.Fatalf("%v: G.Grad: %v", coefs, err)
		}
		m := G.NewTapeMachine(g, G.BindDualValues(l.Params()...))
		if err := ops.RunAll(m); err != nil {
			t.Fatal(err)
		}
		m.Close()
		want := scalarOf(t, mseV)
		if auxV != nil {
			want += scalarOf(t, auxV)
		}
		if zV != nil {
			want += scalarOf(t, zV)
		}
		if d, c := scalarOf(t, docV), scalarOf(t, costV); math.Abs(d-want) > 1e-12 || math.Abs(c-want) > 1e-12 {
			t.Errorf("%v: task+RouterLoss = %v, Cost = %v, want %v", coefs, d, c, want)
		}
	}
}

// TestForwardBatchedInput: Forward takes [B,S,H] (as the CLI does) and gives the [T,H] results in the
// input's shape, with the same gradients.
func TestForwardBatchedInput(t *testing.T) {
	const B, S, H = 2, 3, 4
	rng := rand.New(rand.NewPCG(3, 3))
	xv := randMatrix(rng, tensor.Float64, B*S, H)
	run := func(shape ...int) (y, dx []float64, out *Output) {
		g := G.NewGraph()
		l, err := NewLayer(g, Config{Hidden: H, FFN: 5, Experts: 3, TopK: 2, Renormalize: true, AuxLossCoef: 0.01, Seed: 9, Dtype: tensor.Float64})
		if err != nil {
			t.Fatal(err)
		}
		xs := xv.Clone().(*tensor.Dense)
		if err := xs.Reshape(shape...); err != nil {
			t.Fatal(err)
		}
		x := G.NewTensor(g, tensor.Float64, len(shape), G.WithShape(shape...), G.WithName("x"), G.WithValue(xs))
		if out, err = l.Forward(x); err != nil {
			t.Fatal(err)
		}
		if !out.Y.Shape().Eq(tensor.Shape(shape)) {
			t.Fatalf("Y has shape %v, want %v", out.Y.Shape(), shape)
		}
		read := out.Read()
		sq := G.Must(G.Square(out.Y))
		cost, err := out.Cost(G.Must(G.Sum(sq)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := G.Grad(cost, x); err != nil {
			t.Fatal(err)
		}
		m := G.NewTapeMachine(g)
		defer m.Close()
		if err := ops.RunAll(m); err != nil {
			t.Fatal(err)
		}
		gx, _ := x.Grad()
		return append([]float64(nil), read.Y.Data().([]float64)...), append([]float64(nil), gx.Data().([]float64)...), out
	}
	y2, dx2, _ := run(B*S, H)
	y3, dx3, out3 := run(B, S, H)
	if out3.Logits.Shape()[0] != B*S {
		t.Errorf("logits of a [B,S,H] input: %v, want [%d,E]", out3.Logits.Shape(), B*S)
	}
	for i := range y2 {
		if y2[i] != y3[i] || dx2[i] != dx3[i] {
			t.Fatalf("element %d: [T,H] gives y %v dx %v, [B,S,H] gives %v %v", i, y2[i], dx2[i], y3[i], dx3[i])
		}
	}
	g := G.NewGraph()
	l, _ := NewLayer(g, Config{Hidden: H, FFN: 5, Experts: 3, TopK: 2, Dtype: tensor.Float64})
	for _, shape := range [][]int{{H}, {1, 2, 3, H}, {B, S, H + 1}} {
		x := G.NewTensor(g, tensor.Float64, len(shape), G.WithShape(shape...))
		if _, err := l.Forward(x); !errors.Is(err, ops.ErrShape) {
			t.Errorf("Forward(%v): %v, want ErrShape", shape, err)
		}
	}
}

// TestMaskedLoadBalancingLoss: with a token mask the load-balancing loss equals the loss of a batch
// holding only the counted tokens (routing is per token), and padding rows get no gradient.
func TestMaskedLoadBalancingLoss(t *testing.T) {
	const B, S, H = 2, 4, 5
	keep := []int32{1, 1, 0, 1, 0, 1, 1, 0} // [B,S]
	rng := rand.New(rand.NewPCG(4, 4))
	xv := randMatrix(rng, tensor.Float64, B, S, H)
	cfg := Config{Hidden: H, FFN: 3, Experts: 4, TopK: 2, Renormalize: true, AuxLossCoef: 0.3, Seed: 11, Dtype: tensor.Float64}

	aux := func(x *tensor.Dense, mask *tensor.Dense) (float64, []float64) {
		g := G.NewGraph()
		l, err := NewLayer(g, cfg)
		if err != nil {
			t.Fatal(err)
		}
		xn := G.NewTensor(g, tensor.Float64, x.Dims(), G.WithShape(x.Shape()...), G.WithName("x"), G.WithValue(x))
		var mn *G.Node
		if mask != nil {
			mn = G.NewTensor(g, tensor.Int32, mask.Dims(), G.WithShape(mask.Shape()...), G.WithName("mask"), G.WithValue(mask))
		}
		out, err := l.ForwardMasked(xn, mn)
		if err != nil {
			t.Fatal(err)
		}
		var v G.Value
		G.Read(out.AuxLoss, &v)
		if _, err := G.Grad(out.AuxLoss, xn); err != nil {
			t.Fatal(err)
		}
		m := G.NewTapeMachine(g)
		defer m.Close()
		if err := ops.RunAll(m); err != nil {
			t.Fatal(err)
		}
		gx, _ := xn.Grad()
		return scalarOf(t, v), gx.Data().([]float64)
	}
	all := xv.Data().([]float64)
	var kept []float64
	for tok, k := range keep {
		if k != 0 {
			kept = append(kept, all[tok*H:(tok+1)*H]...)
		}
	}
	n := len(kept) / H
	want, _ := aux(tensor.New(tensor.WithShape(n, H), tensor.WithBacking(kept)), nil)
	got, dx := aux(xv.Clone().(*tensor.Dense), tensor.New(tensor.WithShape(B, S), tensor.WithBacking(append([]int32(nil), keep...))))
	if math.Abs(got-want) > 1e-12*math.Abs(want) {
		t.Errorf("masked aux loss %v, aux loss of the counted tokens alone %v", got, want)
	}
	unmasked, _ := aux(xv.Clone().(*tensor.Dense), nil)
	if unmasked == got {
		t.Errorf("the mask changed nothing (%v)", got)
	}
	for tok, k := range keep {
		for h := 0; h < H; h++ {
			if g := dx[tok*H+h]; k == 0 && g != 0 {
				t.Errorf("padding token %d has gradient %v", tok, g)
			}
		}
	}
	g := G.NewGraph()
	l, _ := NewLayer(g, cfg)
	x := G.NewTensor(g, tensor.Float64, 3, G.WithShape(B, S, H))
	for name, m := range map[string]*G.Node{
		"float mask":      G.NewMatrix(g, tensor.Float64, G.WithShape(B, S)),
		"wrong size mask": G.NewVector(g, tensor.Int32, G.WithShape(B*S+1)),
	} {
		if _, err := l.ForwardMasked(x, m); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// TestReadoutAfterBackward: after a run with a backward pass, out.Y.Value() holds dCost/dY, not the
// output (the README's trap); Readout gives the forward output and the expert loads.
func TestReadoutAfterBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	xv := randMatrix(rng, tensor.Float64, 7, 4)
	cfg := Config{Hidden: 4, FFN: 3, Experts: 3, TopK: 2, Renormalize: true, Seed: 2, Dtype: tensor.Float64}
	forward := func(backward bool) ([]float64, []float64, *Readout) {
		g := G.NewGraph()
		l, err := NewLayer(g, cfg)
		if err != nil {
			t.Fatal(err)
		}
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(7, 4), G.WithName("x"), G.WithValue(xv.Clone()))
		out, err := l.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		read := out.Read()
		if backward {
			if _, err := G.Grad(G.Must(G.Mean(G.Must(G.Square(out.Y)))), l.Params()...); err != nil {
				t.Fatal(err)
			}
		}
		m := G.NewTapeMachine(g)
		defer m.Close()
		if err := ops.RunAll(m); err != nil {
			t.Fatal(err)
		}
		return append([]float64(nil), out.Y.Value().Data().([]float64)...), read.Y.Data().([]float64), read
	}
	want, _, _ := forward(false)
	node, read, r := forward(true)
	same := true
	for i := range want {
		same = same && node[i] == want[i]
		if read[i] != want[i] {
			t.Fatalf("Readout.Y[%d] = %v, forward output %v", i, read[i], want[i])
		}
	}
	if same {
		t.Log("out.Y.Value() after backward still equals the output (Gorgonia did not reuse the buffer)")
	}
	load, err := r.ExpertLoad()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, v := range load {
		sum += v
	}
	if len(load) != 3 || math.Abs(sum-1) > 1e-12 {
		t.Errorf("expert load %v, want 3 shares summing to 1", load)
	}
	if _, err := (&Readout{experts: 3, slots: 1}).ExpertLoad(); err == nil {
		t.Error("ExpertLoad before any run succeeded")
	}
}
