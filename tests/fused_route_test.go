package tests

import (
	"math/rand"
	"sync/atomic"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/simdevice"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// fusedSim is a simulated device with a fused router (ops.FusedRouter), counting how a graph routes:
// fused calls, and separate RouteIndices / RouteIndicesBias / RouteWeights calls from outside it.
type fusedSim struct {
	*simdevice.Backend
	fused, separate *atomic.Int32
}

func (b fusedSim) RouteBiased(logits, bias *tensor.Dense, cfg ops.RouteConfig, idx, w *tensor.Dense) error {
	b.fused.Add(1)
	if err := b.Backend.RouteIndicesBias(logits, bias, cfg, idx); err != nil {
		return err
	}
	if w == nil {
		return nil
	}
	return b.Backend.RouteWeights(logits, idx, cfg, w)
}

func (b fusedSim) RouteIndices(logits *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	b.separate.Add(1)
	return b.Backend.RouteIndices(logits, cfg, idx)
}

func (b fusedSim) RouteIndicesBias(logits, bias *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	b.separate.Add(1)
	return b.Backend.RouteIndicesBias(logits, bias, cfg, idx)
}

func (b fusedSim) RouteWeights(logits, idx *tensor.Dense, cfg ops.RouteConfig, w *tensor.Dense) error {
	b.separate.Add(1)
	return b.Backend.RouteWeights(logits, idx, cfg, w)
}

// TestGraphRouteRunsFusedRouter: on a backend with a fused router a graph's routing runs it exactly
// once per run and never the separate kernels (the path the benchmarks time, ops.RouteInto), with
// indices, weights, the combined output and the logits' gradient equal to the host graph's (indices
// and weights bitwise), including a capacity plan that ranks by the weights and a biased sigmoid router.
func TestGraphRouteRunsFusedRouter(t *testing.T) {
	counts := struct{ fused, separate atomic.Int32 }{}
	b := registeredSim(t, "sim-fused-route", 16<<20, func(s *simdevice.Backend) ops.Backend {
		return fusedSim{Backend: s, fused: &counts.fused, separate: &counts.separate}
	}).(fusedSim)
	eng, err := b.TensorEngine()
	if err != nil {
		t.Fatal(err)
	}
	const T, E, H = 19, 8, 5
	for _, c := range []struct {
		name   string
		cfg    ops.RouteConfig
		biased bool
	}{
		{"softmax", ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true}, false},
		{"sigmoid-capacity-probs", ops.RouteConfig{K: 2, Scoring: ops.Sigmoid, Renormalize: true, Groups: 4, TopKGroups: 2,
			Capacity: 4, DropPolicy: ops.DropProbs}, true},
	} {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			rng := rand.New(rand.NewSource(7))
			in := map[string]*tensor.Dense{"logits": randT(rng, dt, T, E), "x": randT(rng, dt, T, H), "dy": randT(rng, dt, T, H)}
			if c.biased {
				in["bias"] = randT(rng, dt, E)
			}
			run := func(vals map[string]*tensor.Dense, opts ...G.VMOpt) map[string]*tensor.Dense {
				g := G.NewGraph()
				node := func(name string) *G.Node { return G.NodeFromAny(g, vals[name], G.WithName(name)) }
				l, x, dy := node("logits"), node("x"), node("dy")
				var bias *G.Node
				if c.biased {
					bias = node("bias")
				}
				r, err := ops.RouteBiased(l, bias, c.cfg)
				if err != nil {
					t.Fatal(err)
				}
				xe, err := ops.Dispatch(x, r)
				if err != nil {
					t.Fatal(err)
				}
				y, err := ops.Combine(xe, r)
				if err != nil {
					t.Fatal(err)
				}
				grads, err := G.Backpropagate(G.Nodes{y}, G.Nodes{dy}, G.Nodes{l})
				if err != nil {
					t.Fatal(err)
				}
				m := G.NewTapeMachine(g, opts...)
				defer m.Close()
				if err := m.RunAll(); err != nil {
					t.Fatal(err)
				}
				out := map[string]*tensor.Dense{}
				for name, n := range map[string]*G.Node{"idx": r.Indices, "w": r.Weights, "y": y, "dlogits": grads[0]} {
					v := n.Value().(*tensor.Dense)
					if len(opts) == 0 {
						out[name] = v.Clone().(*tensor.Dense)
					} else if out[name], err = b.ToHost(v); err != nil {
						t.Fatal(err)
					}
				}
				return out
			}
			want := run(in)
			if err := b.BeginStep(); err != nil {
				t.Fatal(err)
			}
			dev := map[string]*tensor.Dense{}
			for k, v := range in {
				if dev[k], err = b.FromHost(v); err != nil {
					t.Fatal(err)
				}
			}
			counts.fused.Store(0)
			counts.separate.Store(0)
			got := run(dev, G.WithEngine(eng))
			if err := b.EndStep(); err != nil {
				t.Fatal(err)
			}
			if f, s := counts.fused.Load(), counts.separate.Load(); f != 1 || s != 0 {
				t.Errorf("%s %v: %d fused router calls and %d separate route kernels, want 1 and 0", c.name, dt, f, s)
			}
			for _, k := range []string{"idx", "w"} {
				if string(got[k].Raw) != string(want[k].Raw) {
					t.Errorf("%s %v %s: %v, host graph %v", c.name, dt, k, got[k].Data(), want[k].Data())
				}
			}
			tol := 1e-12
			if dt == tensor.Float32 {
				tol = 1e-5
			}
			for _, k := range []string{"y", "dlogits"} {
				if e := maxRel(got[k], want[k]); !(e <= tol) || allZero(want[k]) {
					t.Errorf("%s %v %s differs from the host graph by %.3g", c.name, dt, k, e)
				}
			}
		}
	}
}

func randT(rng *rand.Rand, dt tensor.Dtype, shape ...int) *tensor.Dense {
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
