package main

import (
	"fmt"
	"github.com/expertrt/expertrt-go/internal/floats"
	"math/rand/v2"
	"testing"

	"github.com/expertrt/expertrt-go/moe"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BenchmarkMoELayer times one training step's graph work of a Mixtral-style layer in a TapeMachine:
// forward (router, route, dispatch, SwiGLU grouped matmuls, combine, aux loss), MSE against a
// target, and backward to every parameter. It is small enough to finish in seconds on two cores.
// The solver update is not included.
func BenchmarkMoELayer(b *testing.B) {
	for _, c := range []struct{ tokens, hidden, ffn, experts int }{
		{256, 128, 256, 8},
		{1024, 256, 512, 8},
	} {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			name := fmt.Sprintf("%v/T=%d,H=%d,F=%d,E=%d,k=2", dt, c.tokens, c.hidden, c.ffn, c.experts)
			b.Run(name, func(b *testing.B) {
				cfg := moe.MixtralConfig(c.hidden, c.ffn, c.experts)
				cfg.Dtype = dt
				cfg.ZLossCoef = 1e-3
				m, err := newLayerStep(cfg, c.tokens)
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				if err := m.step(); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := m.step(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(c.tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
}

// layerStep is a compiled forward+backward graph of one MoE layer with bound inputs.
type layerStep struct {
	m G.VM
}

func newLayerStep(cfg moe.Config, tokens int) (*layerStep, error) {
	g := G.NewGraph()
	rng := rand.New(rand.NewPCG(7, 11))
	x := G.NewMatrix(g, cfg.Dtype, G.WithShape(tokens, cfg.Hidden), G.WithName("x"),
		G.WithValue(randomDense(rng, cfg.Dtype, tokens, cfg.Hidden)))
	target := G.NewMatrix(g, cfg.Dtype, G.WithShape(tokens, cfg.Hidden), G.WithName("target"),
		G.WithValue(randomDense(rng, cfg.Dtype, tokens, cfg.Hidden)))
	layer, err := moe.NewLayer(g, cfg)
	if err != nil {
		return nil, err
	}
	out, err := layer.Forward(x)
	if err != nil {
		return nil, err
	}
	mse, err := moe.MSE(out.Y, target)
	if err != nil {
		return nil, err
	}
	cost, err := out.Cost(mse)
	if err != nil {
		return nil, err
	}
	if _, err := G.Grad(cost, layer.Params()...); err != nil {
		return nil, err
	}
	return &layerStep{m: G.NewTapeMachine(g, G.BindDualValues(layer.Params()...))}, nil
}

func (s *layerStep) step() error {
	s.m.Reset()
	return s.m.RunAll()
}

func (s *layerStep) Close() error { return s.m.Close() }

// randomDense is a host tensor of normal values scaled by 0.5.
func randomDense(rng *rand.Rand, dt tensor.Dtype, rows, cols int) *tensor.Dense {
	v := make([]float64, rows*cols)
	for i := range v {
		v[i] = 0.5 * rng.NormFloat64()
	}
	return floats.Dense(dt, v, rows, cols)
}
