package ep_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BenchmarkLayerStep: one forward+backward step of the expert-parallel layer with W in-process ranks
// (each T tokens) against the single-rank layer on the same W*T tokens, float32 on the CPU. It measures
// the exchange machinery's overhead on one machine (the ranks share its cores), not a multi-GPU speed.
func BenchmarkLayerStep(b *testing.B) {
	const T, H, F, E = 256, 64, 128, 8
	cfg := moe.Config{Hidden: H, FFN: F, Experts: E, TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true,
		AuxLossCoef: 0.01, Seed: 3, Dtype: tensor.Float32}
	for _, world := range []int{1, 2, 4} {
		rng := rand.New(rand.NewPCG(1, 2))
		x := randDense(rng, cfg.Dtype, 1, world*T, H)
		b.Run(fmt.Sprintf("single-rank/T=%d", world*T), func(b *testing.B) {
			m := stepMachine(b, cfg, nil, x)
			defer m.Close()
			for b.Loop() {
				m.Reset()
				if err := m.RunAll(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("ranks=%d/T=%d-each", world, T), func(b *testing.B) {
			grp, _ := ep.NewGroup(world, time.Minute)
			ms := make([]G.VM, world)
			for r := range ms {
				tr, _ := grp.Rank(r)
				ms[r] = stepMachine(b, cfg, tr, rows(x, r*T, (r+1)*T))
				defer ms[r].Close()
			}
			for b.Loop() {
				var wg sync.WaitGroup
				errs := make([]error, world)
				for r, m := range ms {
					wg.Add(1)
					go func() {
						defer wg.Done()
						m.Reset()
						errs[r] = m.RunAll()
					}()
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// stepMachine builds cost = sum(Y) + aux with gradients for the single-rank layer (tr nil) or one rank.
func stepMachine(b *testing.B, cfg moe.Config, tr ep.Transport, x *tensor.Dense) G.VM {
	b.Helper()
	g := G.NewGraph()
	xn := G.NewMatrix(g, cfg.Dtype, G.WithShape(x.Shape()...), G.WithName("x"), G.WithValue(x))
	var y, aux *G.Node
	var params G.Nodes
	if tr == nil {
		l, err := moe.NewLayer(g, cfg)
		if err != nil {
			b.Fatal(err)
		}
		out, err := l.Forward(xn)
		if err != nil {
			b.Fatal(err)
		}
		y, aux, params = out.Y, out.AuxLoss, l.Params()
	} else {
		l, err := ep.NewLayer(g, cfg, tr, ep.Options{})
		if err != nil {
			b.Fatal(err)
		}
		out, err := l.Forward(xn)
		if err != nil {
			b.Fatal(err)
		}
		y, aux, params = out.Y, out.AuxLoss, l.Params()
	}
	cost, err := G.Sum(y)
	if err == nil {
		cost, err = G.Add(cost, aux)
	}
	if err == nil {
		_, err = G.Grad(cost, params...)
	}
	if err != nil {
		b.Fatal(err)
	}
	return G.NewTapeMachine(g)
}
