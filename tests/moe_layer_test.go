package tests

import (
	"fmt"
	"github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// layerLoss adds cost = mean((Y - target)^2) + aux + z of a layer's forward to the graph.
func layerLoss(l *moe.Layer, x, target *G.Node) (*G.Node, *moe.Output, error) {
	out, err := l.Forward(x)
	if err != nil {
		return nil, nil, err
	}
	mse, err := moe.MSE(out.Y, target)
	if err != nil {
		return nil, nil, err
	}
	cost, err := out.Cost(mse)
	return cost, out, err
}

func denseFloats(d *tensor.Dense) []float64 {
	v, _ := floats.Of(d)
	return v
}

// TestGradMoELayer checks the gradient of a whole MoE layer's loss (MSE + aux + z) w.r.t. the router, all
// expert weights and the input, against central differences.
func TestGradMoELayer(t *testing.T) {
	const T, H, F, E = 6, 4, 3, 4
	configs := []ops.RouteConfig{
		{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true},
		{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: false},
		{K: 2, Scoring: ops.TopKSoftmax},
		{K: 1, Scoring: ops.SoftmaxTopK, Renormalize: false},
	}
	for ci, rc := range configs {
		t.Run(rc.String(), func(t *testing.T) {
			cfg := moe.Config{Hidden: H, FFN: F, Experts: E, TopK: rc.K, Scoring: rc.Scoring, Renormalize: rc.Renormalize,
				AuxLossCoef: 0.1, ZLossCoef: 0.05, Seed: uint64(11 + ci), Dtype: tensor.Float64}
			l0, err := moe.NewLayer(G.NewGraph(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			w := l0.Weights()
			rng := rand.New(rand.NewSource(int64(ci)))
			x := randVals(rng, T*H)
			for i := range x {
				x[i] *= 2
			}
			// The router logits x . Router^T must have no near-ties at the top-k boundary.
			router := denseFloats(w.Router)
			logits := make([]float64, T*E)
			for tk := 0; tk < T; tk++ {
				for e := 0; e < E; e++ {
					for h := 0; h < H; h++ {
						logits[tk*E+e] += x[tk*H+h] * router[e*H+h]
					}
				}
			}
			if gap := minTopKGap(logits, T, E, rc.K); gap < 1e-3 {
				t.Fatalf("test inputs have a near-tie in routing (gap %g): pick another seed", gap)
			}
			inputs := []gradInput{
				{name: "x", shape: []int{T, H}, vals: x, wrt: true},
				{name: "target", shape: []int{T, H}, vals: randVals(rng, T*H)},
				{name: "router", shape: []int{E, H}, vals: router, wrt: true},
				{name: "w1", shape: []int{E, H, F}, vals: denseFloats(w.W1), wrt: true},
				{name: "w3", shape: []int{E, H, F}, vals: denseFloats(w.W3), wrt: true},
				{name: "w2", shape: []int{E, F, H}, vals: denseFloats(w.W2), wrt: true},
			}
			checkGraphGrad(t, inputs, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				l := &moe.Layer{Config: cfg, Router: in[2], W1: in[3], W3: in[4], W2: in[5]}
				cost, out, err := layerLoss(l, in[0], in[1])
				if err != nil {
					return nil, err
				}
				if out.AuxLoss == nil || out.ZLoss == nil {
					return nil, fmt.Errorf("layer output lacks aux (%v) or z loss (%v)", out.AuxLoss, out.ZLoss)
				}
				return cost, nil
			})
		})
	}
}

// TestGradMoELayerParams does the same through moe.NewLayer's own parameter nodes (Params), so the
// check covers the nodes a user actually trains.
func TestGradMoELayerParams(t *testing.T) {
	const T, H, F, E = 5, 3, 2, 3
	cfg := moe.Config{Hidden: H, FFN: F, Experts: E, TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true,
		AuxLossCoef: 0.2, ZLossCoef: 0.1, Seed: 5, Dtype: tensor.Float64}
	rng := rand.New(rand.NewSource(17))
	xv, tv := randVals(rng, T*H), randVals(rng, T*H)

	build := func() (*G.ExprGraph, *moe.Layer, *G.Node) {
		g := G.NewGraph()
		l, err := moe.NewLayer(g, cfg)
		if err != nil {
			t.Fatal(err)
		}
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"),
			G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(append([]float64(nil), xv...)))))
		target := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("target"),
			G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(append([]float64(nil), tv...)))))
		cost, _, err := layerLoss(l, x, target)
		if err != nil {
			t.Fatal(err)
		}
		return g, l, cost
	}

	g, l, cost := build()
	if _, err := G.Grad(cost, l.Params()...); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	var grads [][]float64
	for _, p := range l.Params() {
		gv, err := p.Grad()
		if err != nil {
			t.Fatal(err)
		}
		grads = append(grads, floatsOf(t, gv))
	}

	g2, l2, cost2 := build()
	vm2 := G.NewTapeMachine(g2)
	defer vm2.Close()
	eval := func() float64 {
		vm2.Reset()
		if err := vm2.RunAll(); err != nil {
			t.Fatal(err)
		}
		return scalarValue(t, cost2)
	}
	maxAbs := 0.0
	for _, gr := range grads {
		for _, v := range gr {
			maxAbs = math.Max(maxAbs, math.Abs(v))
		}
	}
	if maxAbs < 1e-3 {
		t.Fatalf("parameter gradients are all tiny (max %g): the check is vacuous", maxAbs)
	}
	for pi, p := range l2.Params() {
		// The layer binds its weight tensors as the nodes' values; perturb them in place.
		data := p.Value().(*tensor.Dense).Data().([]float64)
		for j := range data {
			orig := data[j]
			data[j] = orig + gradStep
			fp := eval()
			data[j] = orig - gradStep
			fm := eval()
			data[j] = orig
			fd := (fp - fm) / (2 * gradStep)
			gr := grads[pi][j]
			if d := math.Abs(gr - fd); !(d <= gradTol*math.Max(1, math.Abs(gr))) {
				t.Errorf("d cost / d %s[%d]: G.Grad %.12g, central difference %.12g", p.Name(), j, gr, fd)
			}
		}
	}
}

// trainSteps trains a layer on a fixed regression batch and returns the losses of every step.
func trainSteps(t *testing.T, cfg moe.Config, steps int, solver G.Solver) []float64 {
	t.Helper()
	const T = 32
	g := G.NewGraph()
	l, err := moe.NewLayer(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	mk := func(name string) *G.Node {
		v := randVals(rng, T*cfg.Hidden)
		var val *tensor.Dense
		if cfg.Dtype == tensor.Float32 {
			f := make([]float32, len(v))
			for i := range v {
				f[i] = float32(v[i])
			}
			val = tensor.New(tensor.WithShape(T, cfg.Hidden), tensor.WithBacking(f))
		} else {
			val = tensor.New(tensor.WithShape(T, cfg.Hidden), tensor.WithBacking(v))
		}
		return G.NewMatrix(g, cfg.Dtype, G.WithShape(T, cfg.Hidden), G.WithName(name), G.WithValue(val))
	}
	x, target := mk("x"), mk("target")
	cost, _, err := layerLoss(l, x, target)
	if err != nil {
		t.Fatal(err)
	}
	var lossVal G.Value
	G.Read(cost, &lossVal)
	if _, err := G.Grad(cost, l.Params()...); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	var losses []float64
	for i := 0; i < steps; i++ {
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		losses = append(losses, floatsOf(t, lossVal)[0])
		if err := solver.Step(G.NodesToValueGrads(l.Params())); err != nil {
			t.Fatalf("step %d: solver: %v", i, err)
		}
	}
	return losses
}

// TestTrainingSmoke: a few Gorgonia solver steps on a MoE layer reduce the loss (float64 and float32).
func TestTrainingSmoke(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		t.Run(dt.String(), func(t *testing.T) {
			cfg := moe.Config{Hidden: 8, FFN: 16, Experts: 4, TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true,
				AuxLossCoef: 0.01, ZLossCoef: 0.001, Seed: 3, Dtype: dt}
			losses := trainSteps(t, cfg, 30, G.NewAdamSolver(G.WithLearnRate(0.01)))
			first, last := losses[0], losses[len(losses)-1]
			t.Logf("%v: loss %.4f -> %.4f over %d Adam steps", dt, first, last, len(losses))
			for _, l := range losses {
				if math.IsNaN(l) || math.IsInf(l, 0) {
					t.Fatalf("non-finite loss: %v", losses)
				}
			}
			if !(last < 0.8*first) {
				t.Errorf("loss did not drop by 20%%: %v", losses)
			}
		})
	}
	t.Run("sgd", func(t *testing.T) {
		cfg := moe.Config{Hidden: 6, FFN: 8, Experts: 3, TopK: 1, Scoring: ops.SoftmaxTopK,
			AuxLossCoef: 0.01, Seed: 4, Dtype: tensor.Float64}
		losses := trainSteps(t, cfg, 20, G.NewVanillaSolver(G.WithLearnRate(0.1)))
		if !(losses[len(losses)-1] < losses[0]) {
			t.Errorf("plain SGD did not reduce the loss: %v", losses)
		}
	})
}
