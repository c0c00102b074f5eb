package tests

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// fusedCase is one layer configuration of the fused-SwiGLU comparisons.
type fusedCase struct {
	dt                        tensor.Dtype // the layer's Dtype (ops.BFloat16: mixed precision, float32 x)
	tokens, hidden, ffn, exps int
	capacity                  int // per expert; 0: dropless
	seed                      int64
}

func (c fusedCase) String() string {
	return fmt.Sprintf("%v/T=%d,H=%d,F=%d,E=%d,cap=%d", c.dt, c.tokens, c.hidden, c.ffn, c.exps, c.capacity)
}

// fusedLayerValues runs one forward and backward pass of the layer task's training graph (MSE + aux +
// z loss, G.Grad w.r.t. x and every parameter, ops.Runner) with Config.FusedSwiGLU = fused on b and
// returns the cost, the output and the gradients, as float64s.
func fusedLayerValues(t *testing.T, b ops.Backend, c fusedCase, fused bool) (float64, [][]float64) {
	t.Helper()
	lt := newLayerTask(c.dt)
	lt.tokens, lt.cfg.Hidden, lt.cfg.FFN, lt.cfg.Experts = c.tokens, c.hidden, c.ffn, c.exps
	lt.cfg.Capacity = c.capacity
	lt.m = make([]float64, c.hidden*c.hidden)
	for i := range lt.m {
		lt.m[i] = math.Sin(float64(i)) / math.Sqrt(float64(c.hidden))
	}
	if c.seed != 0 {
		lt.rngSeed = c.seed
	}
	xdt := c.dt
	if c.dt == ops.BFloat16 {
		xdt = tensor.Float32
		lt.cfg.Dtype = tensor.Float32 // the batches' dtype
	}
	batch := lt.batches(1)[0]
	cfg := lt.cfg
	cfg.Dtype = c.dt
	cfg.Backend = b
	cfg.FusedSwiGLU = fused
	g := G.NewGraph()
	layer, err := moe.NewLayer(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	x, y, out, cost, grads := layerTrainingGraph(t, g, layer, xdt, c.tokens, c.hidden)
	nFused := 0
	for _, n := range g.AllNodes() {
		if n.Op() != nil && strings.HasPrefix(n.Op().String(), "GroupedSwiGLU{") {
			nFused++
		}
	}
	if want := map[bool]int{false: 0, true: 1}[fused]; nFused != want {
		t.Fatalf("FusedSwiGLU=%t: %d GroupedSwiGLU nodes in the graph, want %d", fused, nFused, want)
	}
	var costV, yV G.Value
	G.Read(cost, &costV)
	G.Read(out.Y, &yV)
	r, err := ops.NewRunner(g, b)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var cv float64
	var vals [][]float64
	err = r.Run(ops.Feeds{x: batch[0], y: batch[1]}, func() error {
		if cv, err = ops.Float(costV); err != nil {
			return err
		}
		vals = append(vals, valueFloats(t, yV))
		for _, n := range grads {
			vals = append(vals, valueFloats(t, n.Value()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cv, vals
}

var fusedValueNames = []string{"output", "d/dx", "d/dRouter", "d/dW1", "d/dW3", "d/dW2"}

// checkFusedSwiGLULayer: the layer with Config.FusedSwiGLU gives the unfused layer's cost, output and
// every gradient on b; bitwise (tol 0) or within a normwise relative tol(dtype).
func checkFusedSwiGLULayer(t *testing.T, b ops.Backend, tolOf func(tensor.Dtype) float64, cases []fusedCase) {
	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			tol := tolOf(c.dt)
			c0, v0 := fusedLayerValues(t, b, c, false)
			c1, v1 := fusedLayerValues(t, b, c, true)
			if len(v0) != len(fusedValueNames) || len(v1) != len(v0) {
				t.Fatalf("%d and %d values, want %d", len(v0), len(v1), len(fusedValueNames))
			}
			if d := math.Abs(c1-c0) / math.Max(1e-30, math.Abs(c0)); !(d <= tol) {
				t.Errorf("cost %v fused, %v unfused", c1, c0)
			}
			for i, name := range fusedValueNames {
				diff := 0
				for j := range v0[i] {
					if math.Float64bits(v0[i][j]) != math.Float64bits(v1[i][j]) {
						diff++
					}
				}
				d := normRel(v1[i], v0[i])
				t.Logf("%s: %d of %d elements differ in some bit, normwise relative difference %.3g", name, diff, len(v0[i]), d)
				if tol == 0 && diff > 0 || !(d <= tol) {
					t.Errorf("%s: fused differs from unfused (%d elements, normwise %.3g; tolerance %g)", name, diff, d, tol)
				}
				if maxAbs(v0[i]) == 0 {
					t.Errorf("%s is all zero: the comparison shows nothing", name)
				}
			}
		})
	}
}

func maxAbs(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

var fusedCPUCases = []fusedCase{
	{dt: tensor.Float64, tokens: 48, hidden: 8, ffn: 12, exps: 4},
	{dt: tensor.Float32, tokens: 40, hidden: 10, ffn: 7, exps: 5},
	{dt: tensor.Float32, tokens: 48, hidden: 8, ffn: 12, exps: 4, capacity: 14},
	{dt: ops.BFloat16, tokens: 48, hidden: 16, ffn: 24, exps: 4},
}

// TestFusedSwiGLULayerCPU: on the CPU (whose GroupedSwiGLU is the two products and SwiGLU) the fused
// layer's values and gradients are the unfused layer's bit for bit: the op's graph plumbing (the kept
// products, the gradient built from the unfused ops, dropped rows, bfloat16 weight casts) is exact.
func TestFusedSwiGLULayerCPU(t *testing.T) {
	checkFusedSwiGLULayer(t, ops.CPU(), bitwise, fusedCPUCases)
}

// TestFusedSwiGLULayerSim: the same on the simulated device, which has no fused kernel (the op's
// fallback: GroupedMatMul twice and SwiGLU through the device boundary).
func TestFusedSwiGLULayerSim(t *testing.T) {
	checkFusedSwiGLULayer(t, simBackend(t), bitwise, fusedCPUCases[:3])
}

func bitwise(tensor.Dtype) float64 { return 0 }

// TestGroupedSwiGLUBuilderValidation: the builder's errors wrap the sentinels and never panic.
func TestGroupedSwiGLUBuilderValidation(t *testing.T) {
	const T, E, K, H, F = 4, 5, 2, 3, 6
	g := G.NewGraph()
	f64, f32 := tensor.Float64, tensor.Float32
	r, err := ops.Route(mat(g, f64, "logits", T, E), ops.RouteConfig{K: K, Scoring: ops.SoftmaxTopK})
	if err != nil {
		t.Fatal(err)
	}
	x := mat(g, f64, "x", T*K, H)
	w := mat(g, f64, "w1", E, H, F)
	for _, c := range []struct {
		name      string
		x, w1, w3 *G.Node
		r         *ops.Routing
		want      error
	}{
		{"no routing", x, w, w, nil, ops.ErrConfig},
		{"nil x", nil, w, w, r, ops.ErrShape},
		{"x rank", mat(g, f64, "x1", T*K), w, w, r, ops.ErrShape},
		{"x rows", mat(g, f64, "x2", T, H), w, w, r, ops.ErrShape},
		{"w1 experts", x, mat(g, f64, "w1b", E+1, H, F), mat(g, f64, "w3b", E+1, H, F), r, ops.ErrShape},
		{"w1 in", x, mat(g, f64, "w1c", E, H+1, F), mat(g, f64, "w3c", E, H+1, F), r, ops.ErrShape},
		{"w3 shape", x, w, mat(g, f64, "w3d", E, H, F+1), r, ops.ErrShape},
		{"w3 dtype", x, w, mat(g, f32, "w3e", E, H, F), r, ops.ErrDtype},
		{"int x", mat(g, tensor.Int32, "x3", T*K, H), w, w, r, ops.ErrDtype},
	} {
		err := noPanic(t, c.name, func() error {
			_, err := ops.GroupedSwiGLU(c.x, c.w1, c.w3, c.r)
			return err
		})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := ops.GroupedSwiGLU(x, w, mat(g, f64, "w3", E, H, F), r); err != nil {
		t.Errorf("valid operands: %v", err)
	}
}
