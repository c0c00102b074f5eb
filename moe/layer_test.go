package moe

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestForwardMatchesNaive checks the graph layer against a per-token loop written from the Mixtral
// definition: softmax over E, top-k, renormalise, y = sum_k w_k * W2^T(silu(W1^T x) * W3^T x).
func TestForwardMatchesNaive(t *testing.T) {
	for _, c := range []struct{ tokens, h, f, e, k int }{{9, 6, 5, 4, 2}, {1, 3, 7, 1, 1}, {5, 4, 3, 3, 3}} {
		cfg := Config{Hidden: c.h, FFN: c.f, Experts: c.e, TopK: c.k, Scoring: ops.SoftmaxTopK, Renormalize: true,
			Seed: 3, Dtype: tensor.Float64}
		g := G.NewGraph()
		l, err := NewLayer(g, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		xs := make([]float64, c.tokens*c.h)
		for i := range xs {
			xs[i] = rng.NormFloat64()
		}
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(c.tokens, c.h), G.WithName("x"),
			G.WithValue(tensor.New(tensor.WithShape(c.tokens, c.h), tensor.WithBacking(append([]float64(nil), xs...)))))
		out, err := l.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		m := G.NewTapeMachine(g)
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		m.Close()
		got := out.Y.Value().Data().([]float64)
		w := l.Weights()
		want := naiveForward(xs, w, c.tokens, c.h, c.f, c.e, c.k)
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-12*(1+math.Abs(want[i])) {
				t.Fatalf("%+v: y[%d] = %v, want %v", c, i, got[i], want[i])
			}
		}
	}
}

func naiveForward(x []float64, w Weights, nT, h, f, e, k int) []float64 {
	router := w.Router.Data().([]float64)
	w1, w3, w2 := w.W1.Data().([]float64), w.W3.Data().([]float64), w.W2.Data().([]float64)
	y := make([]float64, nT*h)
	for t := 0; t < nT; t++ {
		xt := x[t*h : (t+1)*h]
		logits := make([]float64, e)
		for ex := range logits {
			for i := 0; i < h; i++ {
				logits[ex] += xt[i] * router[ex*h+i]
			}
		}
		order := make([]int, e)
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return logits[order[a]] > logits[order[b]] })
		sum := 0.0
		for _, ex := range order[:k] {
			sum += math.Exp(logits[ex])
		}
		for _, ex := range order[:k] {
			wt := math.Exp(logits[ex]) / sum
			hid := make([]float64, f)
			for j := 0; j < f; j++ {
				var a, b float64
				for i := 0; i < h; i++ {
					a += xt[i] * w1[(ex*h+i)*f+j]
					b += xt[i] * w3[(ex*h+i)*f+j]
				}
				hid[j] = a / (1 + math.Exp(-a)) * b
			}
			for o := 0; o < h; o++ {
				var s float64
				for j := 0; j < f; j++ {
					s += hid[j] * w2[(ex*f+j)*h+o]
				}
				y[t*h+o] += wt * s
			}
		}
	}
	return y
}

func TestConfigErrors(t *testing.T) {
	g := G.NewGraph()
	bad := []Config{
		{Hidden: 0, FFN: 2, Experts: 2, TopK: 1, Dtype: tensor.Float32},
		{Hidden: 2, FFN: 2, Experts: 2, TopK: 3, Dtype: tensor.Float32},
		{Hidden: 2, FFN: 2, Experts: 2, TopK: 0, Dtype: tensor.Float32},
		{Hidden: 2, FFN: 2, Experts: 2, TopK: 1, Dtype: tensor.Int},
		{Hidden: 2, FFN: 2, Experts: 2, TopK: 1, Dtype: tensor.Float32, AuxLossCoef: -1},
	}
	for _, c := range bad {
		if _, err := NewLayer(g, c); err == nil {
			t.Errorf("NewLayer(%+v) succeeded, want an error", c)
		}
	}
	l, err := NewLayer(g, MixtralConfig(4, 3, 2))
	if err != nil {
		t.Fatal(err)
	}
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 5), G.WithName("x5"))
	if _, err := l.Forward(x); err == nil {
		t.Error("Forward accepted an input of the wrong width")
	}
	w := l.Weights()
	w.W2 = tensor.New(tensor.WithShape(2, 4, 3), tensor.Of(tensor.Float32))
	if _, err := NewLayerWithWeights(G.NewGraph(), Config{TopK: 1}, w); err == nil {
		t.Error("NewLayerWithWeights accepted a W2 of the wrong shape")
	}
}
