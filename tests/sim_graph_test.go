package tests

import (
	"github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestSimMoEGraphGradient runs an MoE expert block as one Gorgonia graph on the simulated device: the
// project's ops (route, dispatch, grouped matmuls, combine) and Gorgonia built-ins through the device
// engine (sigmoid by Map, Hadamard products, scalar multiply, the gradient sums of Grad), forward and
// backward (G.Backpropagate from a given output gradient), inside a training step. Every value lives
// in memory the host cannot read; the results must equal the same graph on host tensors.
func TestSimMoEGraphGradient(t *testing.T) {
	b := simBackend(t)
	eng, err := b.TensorEngine()
	if err != nil {
		t.Fatal(err)
	}
	const T, E, K, H, F = 24, 4, 2, 8, 12
	cfg := ops.RouteConfig{K: K, Scoring: ops.SoftmaxTopK, Renormalize: true}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		rng := rand.New(rand.NewSource(3))
		rnd := func(shape ...int) *tensor.Dense {
			n := tensor.Shape(shape).TotalSize()
			if dt == tensor.Float32 {
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(rng.NormFloat64())
				}
				return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
			}
			v := make([]float64, n)
			for i := range v {
				v[i] = rng.NormFloat64()
			}
			return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
		}
		in := map[string]*tensor.Dense{
			"logits": rnd(T, E), "x": rnd(T, H), "w1": rnd(E, H, F), "w2": rnd(E, F, H), "R": rnd(T, H),
		}
		names := []string{"y", "dx", "dlogits", "dw1", "dw2"}
		run := func(vals map[string]*tensor.Dense, opts ...G.VMOpt) map[string]*tensor.Dense {
			g := G.NewGraph()
			node := func(name string, v *tensor.Dense) *G.Node {
				return G.NodeFromAny(g, v, G.WithName(name))
			}
			l, x, w1, w2, rn := node("logits", vals["logits"]), node("x", vals["x"]), node("w1", vals["w1"]), node("w2", vals["w2"]), node("R", vals["R"])
			must := func(n *G.Node, err error) *G.Node {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			r, err := ops.Route(l, cfg)
			if err != nil {
				t.Fatal(err)
			}
			xe := must(ops.Dispatch(x, r))
			h := must(ops.GroupedMatMul(xe, w1, r))
			a := must(G.HadamardProd(must(G.Sigmoid(h)), h))
			ye := must(ops.GroupedMatMul(a, w2, r))
			half := G.NewConstant(0.5)
			if dt == tensor.Float32 {
				half = G.NewConstant(float32(0.5))
			}
			y := must(G.Add(must(ops.Combine(ye, r)), must(G.Mul(x, half))))
			grads, err := G.Backpropagate(G.Nodes{y}, G.Nodes{rn}, G.Nodes{x, l, w1, w2})
			if err != nil {
				t.Fatalf("Backpropagate: %v", err)
			}
			m := G.NewTapeMachine(g, opts...)
			defer m.Close()
			if err := m.RunAll(); err != nil {
				t.Fatalf("RunAll: %v", err)
			}
			out := map[string]*tensor.Dense{}
			for i, n := range append(G.Nodes{y}, grads...) {
				out[names[i]] = n.Value().(*tensor.Dense)
			}
			return out
		}
		want := run(in)
		for k, v := range want {
			want[k] = v.Clone().(*tensor.Dense)
		}
		if err := b.BeginStep(); err != nil {
			t.Fatal(err)
		}
		dev := map[string]*tensor.Dense{}
		for k, v := range in {
			if dev[k], err = b.FromHost(v); err != nil {
				t.Fatal(err)
			}
		}
		got := run(dev, G.WithEngine(eng))
		tol := 1e-12
		if dt == tensor.Float32 {
			tol = 1e-5
		}
		for _, k := range names {
			if maxRel(want[k], want[k].Clone().(*tensor.Dense)) != 0 || allZero(want[k]) {
				t.Fatalf("%v %s: the host reference is degenerate", dt, k)
			}
			if !b.Owns(got[k]) {
				t.Errorf("%v %s is not a device tensor", dt, k)
				continue
			}
			h, err := b.ToHost(got[k])
			if err != nil {
				t.Fatal(err)
			}
			if e := maxRel(h, want[k]); !(e <= tol) {
				t.Errorf("%v %s differs from the host graph by %.3g (tolerance %g)", dt, k, e, tol)
			}
		}
		if err := b.EndStep(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ToHost(got["y"]); err == nil {
			t.Errorf("%v: a value of the finished step can still be read", dt)
		}
	}
}

// maxRel is the largest |a-b| / max(1,|b|) over two host float tensors of one shape and dtype (+Inf on a
// mismatch or a NaN).
func maxRel(a, b *tensor.Dense) float64 {
	if !a.Shape().Eq(b.Shape()) || a.Dtype() != b.Dtype() {
		return math.Inf(1)
	}
	av, aerr := floats.Of(a)
	bv, berr := floats.Of(b)
	if aerr != nil || berr != nil {
		return math.Inf(1)
	}
	m := 0.0
	for i := range av {
		e := math.Abs(av[i]-bv[i]) / math.Max(1, math.Abs(bv[i]))
		if e != e {
			return math.Inf(1)
		}
		m = math.Max(m, e)
	}
	return m
}

func allZero(t *tensor.Dense) bool {
	switch x := t.Data().(type) {
	case []float64:
		for _, v := range x {
			if v != 0 {
				return false
			}
		}
	case []float32:
		for _, v := range x {
			if v != 0 {
				return false
			}
		}
	}
	return true
}
