package tests

import (
	"fmt"
	"math"
	"sort"
	"testing"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// layerGrads are the values of one forward and backward pass of the layer task's training graph.
type layerGrads struct {
	cost   float64
	y      []float64   // layer output [T,H]
	logits []float64   // router logits [T,E]
	grads  [][]float64 // d cost / d x, Router, W1, W3, W2
}

var layerGradNames = []string{"x", "Router", "W1", "W3", "W2"}

// gradients builds the layer task's training graph on b (cost = MSE(y, target) + aux + z loss, the
// layer's weights from its seed), takes G.Grad of the cost w.r.t. the input and every parameter, runs
// it once through ops.Runner with the host batch (copied to b) and returns host copies of the values.
func (lt layerTask) gradients(t *testing.T, b ops.Backend, batch [2]*tensor.Dense) layerGrads {
	t.Helper()
	cfg := lt.cfg
	cfg.Backend = b
	g := G.NewGraph()
	layer, err := moe.NewLayer(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	x, y, out, cost, grads := layerTrainingGraph(t, g, layer, cfg.Dtype, lt.tokens, cfg.Hidden)
	// The backward pass may reuse the registers of forward values: read them through G.Read.
	var costV, yV, logitsV G.Value
	G.Read(cost, &costV)
	G.Read(out.Y, &yV)
	G.Read(out.Logits, &logitsV)
	r, err := ops.NewRunner(g, b)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var res layerGrads
	err = r.Run(ops.Feeds{x: batch[0], y: batch[1]}, func() error {
		if res.cost, err = ops.Float(costV); err != nil {
			return err
		}
		res.y, res.logits = valueFloats(t, yV), valueFloats(t, logitsV)
		for _, n := range grads {
			res.grads = append(res.grads, valueFloats(t, n.Value()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// valueFloats reads a tensor value of any registered backend as float64s.
func valueFloats(t *testing.T, v G.Value) []float64 {
	t.Helper()
	d, ok := v.(*tensor.Dense)
	if !ok || d == nil {
		t.Fatalf("value %T is not a tensor", v)
	}
	return denseFloats(plainCopy(t, d))
}

// normRel is max|a-b| / max|b|: the difference relative to the reference tensor's largest element (an
// elementwise relative measure is meaningless for gradient elements near 0).
func normRel(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	diff, scale := 0.0, 0.0
	for i := range a {
		d := math.Abs(a[i] - b[i])
		if d != d {
			return math.Inf(1)
		}
		diff, scale = math.Max(diff, d), math.Max(scale, math.Abs(b[i]))
	}
	if scale == 0 {
		return diff
	}
	return diff / scale
}

// topKMargin is the smallest gap, over the tokens, between the k-th and the (k+1)-th largest router logit:
// the routing of two backends can differ only where rounding exceeds it.
func topKMargin(logits []float64, experts, k int) float64 {
	margin := math.Inf(1)
	row := make([]float64, experts)
	for t := 0; t+experts <= len(logits); t += experts {
		copy(row, logits[t:t+experts])
		sort.Sort(sort.Reverse(sort.Float64Slice(row)))
		if k < experts {
			margin = math.Min(margin, row[k-1]-row[k])
		}
	}
	return margin
}

// gradCase is one layer size of checkLayerGradients, with the seed of its data (0: the task's).
type gradCase struct {
	tokens, hidden, ffn, experts int
	dataSeed                     int64
}

// checkLayerGradients compares the layer task's forward values and every gradient (input, router, three
// expert tensors) on dev with the CPU's, from the same weights and data: normwise relative differences
// (normRel) within tol32 for float32 and tol64 for float64, the cost within the same relative tolerance.
// The data must route with a top-k margin of at least 1e-4 in the CPU's float64 logits, so that rounding
// cannot change a routing decision (the test refuses data without it rather than pass or fail by chance).
func checkLayerGradients(t *testing.T, dev ops.Backend, tol32, tol64 float64, cases []gradCase) {
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for _, c := range cases {
			sz := [4]int{c.tokens, c.hidden, c.ffn, c.experts}
			t.Run(fmt.Sprintf("%v/T=%d,H=%d,F=%d,E=%d", dt, sz[0], sz[1], sz[2], sz[3]), func(t *testing.T) {
				tol := tol64
				if dt == tensor.Float32 {
					tol = tol32
				}
				lt := newLayerTask(dt)
				lt.tokens, lt.cfg.Hidden, lt.cfg.FFN, lt.cfg.Experts = sz[0], sz[1], sz[2], sz[3]
				lt.m = make([]float64, sz[1]*sz[1])
				for i := range lt.m {
					lt.m[i] = math.Sin(float64(i)) / math.Sqrt(float64(sz[1]))
				}
				if c.dataSeed != 0 {
					lt.rngSeed = c.dataSeed
				}
				batch := lt.batches(1)[0]
				if dt == tensor.Float32 {
					lt64 := lt
					lt64.cfg.Dtype = tensor.Float64
					ref := lt64.gradients(t, ops.CPU(), lt64.batches(1)[0])
					if m := topKMargin(ref.logits, sz[3], lt.cfg.TopK); !(m >= 1e-4) {
						t.Fatalf("the test data has a near tie in the routing (top-k margin %.3g): choose other data", m)
					}
				}
				cpu := lt.gradients(t, ops.CPU(), batch)
				got := lt.gradients(t, dev, batch)
				if d := math.Abs(got.cost-cpu.cost) / math.Max(1e-30, math.Abs(cpu.cost)); !(d <= tol) {
					t.Errorf("cost %v on %s, %v on the CPU (relative difference %.3g)", got.cost, dev.Name(), cpu.cost, d)
				}
				for _, v := range []struct {
					name      string
					got, want []float64
				}{{"output", got.y, cpu.y}, {"logits", got.logits, cpu.logits}} {
					if d := normRel(v.got, v.want); !(d <= tol) {
						t.Errorf("%s differs by %.3g (normwise relative; tolerance %g)", v.name, d, tol)
					}
				}
				if len(got.grads) != len(layerGradNames) || len(cpu.grads) != len(layerGradNames) {
					t.Fatalf("%d and %d gradients, want %d", len(got.grads), len(cpu.grads), len(layerGradNames))
				}
				for i, name := range layerGradNames {
					d := normRel(got.grads[i], cpu.grads[i])
					t.Logf("d cost / d %s: normwise relative difference %.3g", name, d)
					if !(d <= tol) {
						t.Errorf("d cost / d %s differs from the CPU's by %.3g (normwise relative; tolerance %g)", name, d, tol)
					}
				}
			})
		}
	}
}

// TestLayerGradientsSim: every gradient of the layer task's training graph on the simulated device
// equals the CPU's (the same kernels through the device boundary: within 1e-12).
func TestLayerGradientsSim(t *testing.T) {
	checkLayerGradients(t, simBackend(t), 1e-12, 1e-12, []gradCase{{48, 8, 12, 4, 0}, {96, 16, 24, 8, 0}})
}

// layerTrainingGraph adds the layer task's training graph to g: inputs x and targets y [tokens,hidden]
// of dtype dt, cost = MSE(layer(x), y) + the layer's auxiliary losses, and the gradients of the cost
// with respect to x and then every parameter (layer.Params order).
func layerTrainingGraph(t *testing.T, g *G.ExprGraph, layer *moe.Layer, dt tensor.Dtype, tokens, hidden int) (x, y *G.Node, out *moe.Output, cost *G.Node, grads G.Nodes) {
	t.Helper()
	x = G.NewMatrix(g, dt, G.WithShape(tokens, hidden), G.WithName("x"))
	y = G.NewMatrix(g, dt, G.WithShape(tokens, hidden), G.WithName("y"))
	out, err := layer.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	mse, err := ops.MSELoss(out.Y, y)
	if err != nil {
		t.Fatal(err)
	}
	if cost, err = out.Cost(mse); err != nil {
		t.Fatal(err)
	}
	if grads, err = G.Grad(cost, append(G.Nodes{x}, layer.Params()...)...); err != nil {
		t.Fatal(err)
	}
	return x, y, out, cost, grads
}
