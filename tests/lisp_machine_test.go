package tests

import (
	"errors"
	"fmt"
	"hash"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/chewxy/hm"
	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Gorgonia's LispMachine differentiates by calling DoDiff (G.ADOp) on every op and silently skips ops
// without it: before every op of package ops had DoDiff, a graph with expertrt ops ran without error and
// every parameter upstream of one got a gradient of exactly 0. These tests compare the LispMachine's
// gradients with G.Grad + TapeMachine's on the same graphs.

// lispGrads runs cost = sum(out ⊙ R) of build on a LispMachine (made by ops.NewLispMachine) and returns
// the gradients of the wrt inputs.
func lispGrads(t *testing.T, inputs []gradInput, build buildFunc) (float64, [][]float64) {
	t.Helper()
	g, nodes, cost := costGraph(t, inputs, build, 42)
	m, err := ops.NewLispMachine(g)
	if err != nil {
		t.Fatalf("NewLispMachine: %v", err)
	}
	defer m.Close()
	if err := ops.RunAll(m); err != nil {
		t.Fatalf("LispMachine RunAll: %v", err)
	}
	var grads [][]float64
	for i, in := range inputs {
		if !in.wrt {
			continue
		}
		gv, err := nodes[i].Grad()
		if err != nil {
			t.Fatalf("gradient of %s: %v", in.name, err)
		}
		grads = append(grads, floatsOf(t, gv))
	}
	return scalarValue(t, cost), grads
}

func compareLispTape(t *testing.T, inputs []gradInput, build buildFunc) {
	t.Helper()
	ct, tape := symbolicGrads(t, inputs, build)
	cl, lisp := lispGrads(t, inputs, build)
	if math.Abs(ct-cl) > 1e-12*math.Max(1, math.Abs(ct)) {
		t.Errorf("cost: TapeMachine %v, LispMachine %v", ct, cl)
	}
	gi := 0
	for _, in := range inputs {
		if !in.wrt {
			continue
		}
		nonzero := false
		for j := range tape[gi] {
			a, b := tape[gi][j], lisp[gi][j]
			nonzero = nonzero || a != 0
			if math.Abs(a-b) > 1e-12*math.Max(1, math.Abs(a)) {
				t.Errorf("d cost / d %s[%d]: TapeMachine %.15g, LispMachine %.15g", in.name, j, a, b)
				break
			}
		}
		if !nonzero && !in.zero {
			t.Errorf("d cost / d %s is zero everywhere: the comparison is vacuous", in.name)
		}
		gi++
	}
}

func TestLispMachineMatchesTape(t *testing.T) {
	const T, E, K, H, Out = 5, 4, 2, 3, 3
	rng := rand.New(rand.NewSource(8))
	logits := gappedLogits(rng, T, E)
	x := randVals(rng, T*H)
	ye := randVals(rng, T*K*H)
	w := randVals(rng, E*H*Out)
	wk := randVals(rng, T*K)
	idx := fixedIndices(rng, T, E, K)
	route := func(in []*G.Node, cfg ops.RouteConfig) (*ops.Routing, error) { return ops.Route(in[0], cfg) }
	for _, sc := range scorings {
		cfg := withK(sc, K)
		cases := []struct {
			name   string
			inputs []gradInput
			build  buildFunc
		}{
			{"pipeline and losses", []gradInput{
				{name: "logits", shape: []int{T, E}, vals: logits, wrt: true},
				{name: "x", shape: []int{T, H}, vals: x, wrt: true},
				{name: "w", shape: []int{E, H, Out}, vals: w, wrt: true},
			}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				r, err := route(in, cfg)
				if err != nil {
					return nil, err
				}
				y, err := expertBlock(in[1], in[2], r)
				if err != nil {
					return nil, err
				}
				mask := G.NewVector(g, tensor.Int32, G.WithShape(T), G.WithName("mask"),
					G.WithValue(tensor.New(tensor.WithShape(T), tensor.WithBacking([]int32{1, 0, 1, 1, 0}))))
				auxM, err := ops.LoadBalancingLossMasked(r, mask, 0.3)
				if err != nil {
					return nil, err
				}
				aux, err := ops.LoadBalancingLoss(r, 0.5)
				if err != nil {
					return nil, err
				}
				z, err := ops.ZLoss(in[0], 0.2)
				if err != nil {
					return nil, err
				}
				s := G.Must(G.Sum(y))
				return G.Add(G.Must(G.Add(G.Must(G.Add(s, aux)), z)), auxM)
			}},
		}
		for _, c := range cases {
			t.Run(cfg.String()+"/"+c.name, func(t *testing.T) { compareLispTape(t, c.inputs, c.build) })
		}
	}
	given := []gradInput{
		{name: "idx", shape: []int{T, K}, ivals: idx},
		{name: "w", shape: []int{T, K}, vals: wk, wrt: true},
		{name: "ye", shape: []int{T * K, H}, vals: ye, wrt: true},
		{name: "x", shape: []int{T, H}, vals: x, wrt: true},
	}
	for name, build := range map[string]buildFunc{
		"combine weighted": func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			r, err := ops.NewRouting(in[0], in[1], E)
			if err != nil {
				return nil, err
			}
			y, err := ops.Combine(in[2], r)
			if err != nil {
				return nil, err
			}
			return G.Add(y, in[3]) // x gets a gradient too
		},
		"combine unweighted and dispatch": func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			r, err := ops.NewRouting(in[0], in[1], E)
			if err != nil {
				return nil, err
			}
			d, err := ops.Dispatch(in[3], r)
			if err != nil {
				return nil, err
			}
			y, err := ops.CombineUnweighted(G.Must(G.HadamardProd(d, in[2])), r)
			if err != nil {
				return nil, err
			}
			yw, err := ops.Combine(in[2], r)
			if err != nil {
				return nil, err
			}
			return G.Add(y, yw)
		},
	} {
		t.Run(name, func(t *testing.T) { compareLispTape(t, given, build) })
	}
}

// TestLispMachineTrainingOps: MatMul (every transpose combination), SwiGLU, the task losses, AddLosses
// and ScaleLoss give the TapeMachine's gradients on the LispMachine.
func TestLispMachineTrainingOps(t *testing.T) {
	const M, K, N = 3, 4, 2
	rng := rand.New(rand.NewSource(31))
	for _, f := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
		as, bs := []int{M, K}, []int{K, N}
		if f[0] {
			as = []int{K, M}
		}
		if f[1] {
			bs = []int{N, K}
		}
		inputs := []gradInput{
			{name: "a", shape: as, vals: randVals(rng, M*K), wrt: true},
			{name: "b", shape: bs, vals: randVals(rng, K*N), wrt: true},
			{name: "up", shape: []int{M, N}, vals: randVals(rng, M*N), wrt: true},
		}
		t.Run(fmt.Sprintf("MatMul transA=%t transB=%t then SwiGLU", f[0], f[1]), func(t *testing.T) {
			compareLispTape(t, inputs, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				p, err := ops.MatMul(in[0], in[1], f[0], f[1])
				if err != nil {
					return nil, err
				}
				return ops.SwiGLU(p, in[2])
			})
		})
	}
	lg := randVals(rng, 5*4)
	for i := range lg {
		lg[i] *= 3
	}
	t.Run("losses", func(t *testing.T) {
		compareLispTape(t, []gradInput{
			{name: "pred", shape: []int{5, 4}, vals: randVals(rng, 20), wrt: true},
			{name: "target", shape: []int{5, 4}, vals: randVals(rng, 20), wrt: true},
			{name: "logits", shape: []int{5, 4}, vals: lg, wrt: true},
			{name: "labels", shape: []int{5}, ivals: []int32{3, -1, 0, 0, 2}},
		}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return taskLosses(in, 0.5)
		})
	})
}

// TestLispMachineMoELayer: a whole MoE layer with MSE, load-balancing and z losses, on the LispMachine
// and on the TapeMachine, gives the same gradient for every parameter and the input.
func TestLispMachineMoELayer(t *testing.T) {
	cfg := moe.Config{Hidden: 4, FFN: 5, Experts: 4, TopK: 2, Renormalize: true, AuxLossCoef: 0.1, ZLossCoef: 0.01, Seed: 3, Dtype: tensor.Float64}
	rng := rand.New(rand.NewSource(5))
	xv, tv := randVals(rng, 6*4), randVals(rng, 6*4)
	build := func() (*G.ExprGraph, *moe.Layer, *G.Node, *G.Node) {
		g := G.NewGraph()
		l, err := moe.NewLayer(g, cfg)
		if err != nil {
			t.Fatal(err)
		}
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(6, 4), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(6, 4), tensor.WithBacking(append([]float64(nil), xv...)))))
		target := G.NewMatrix(g, tensor.Float64, G.WithShape(6, 4), G.WithName("target"), G.WithValue(tensor.New(tensor.WithShape(6, 4), tensor.WithBacking(append([]float64(nil), tv...)))))
		cost, _, err := layerLoss(l, x, target)
		if err != nil {
			t.Fatal(err)
		}
		return g, l, x, cost
	}
	gradsOf := func(nodes G.Nodes) [][]float64 {
		var out [][]float64
		for _, n := range nodes {
			gv, err := n.Grad()
			if err != nil {
				t.Fatalf("gradient of %v: %v", n, err)
			}
			out = append(out, floatsOf(t, gv))
		}
		return out
	}
	g1, l1, x1, cost1 := build()
	wrt1 := append(l1.Params(), x1)
	if _, err := G.Grad(cost1, wrt1...); err != nil {
		t.Fatal(err)
	}
	tm := G.NewTapeMachine(g1, G.BindDualValues(l1.Params()...))
	if err := ops.RunAll(tm); err != nil {
		t.Fatal(err)
	}
	tape := gradsOf(wrt1)
	tm.Close()

	g2, l2, x2, _ := build()
	lm, err := ops.NewLispMachine(g2)
	if err != nil {
		t.Fatal(err)
	}
	if err := ops.RunAll(lm); err != nil {
		t.Fatal(err)
	}
	lisp := gradsOf(append(l2.Params(), x2))
	lm.Close()
	for i, name := range []string{"Router", "W1", "W3", "W2", "x"} {
		nonzero := false
		for j := range tape[i] {
			nonzero = nonzero || lisp[i][j] != 0
			if math.Abs(tape[i][j]-lisp[i][j]) > 1e-12*math.Max(1, math.Abs(tape[i][j])) {
				t.Errorf("d cost / d %s[%d]: TapeMachine %v, LispMachine %v", name, j, tape[i][j], lisp[i][j])
				break
			}
		}
		if !nonzero {
			t.Errorf("LispMachine gradient of %s is all zero", name)
		}
	}
}

// TestLispMachineChecks: a graph extended by G.Grad, or holding an op without DoDiff, is refused by
// ops.NewLispMachine with a message that says what to do (G.NewLispMachine's own message after G.Grad
// is "Expected cost to be a scalar. Got GroupedMatMulGradW...").
func TestLispMachineChecks(t *testing.T) {
	g := G.NewGraph()
	l, err := moe.NewLayer(g, moe.Config{Hidden: 3, FFN: 2, Experts: 2, TopK: 1, AuxLossCoef: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(4, 3), G.WithName("x"))
	out, err := l.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := out.Cost(G.Must(G.Sum(out.Y)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(cost, l.Params()...); err != nil {
		t.Fatal(err)
	}
	_, err = ops.NewLispMachine(g)
	if !errors.Is(err, ops.ErrUnsupported) {
		t.Fatalf("NewLispMachine after G.Grad: %v, want ErrUnsupported", err)
	}
	for _, want := range []string{"G.Grad", "without G.Grad", "Node.Grad()", "TapeMachine"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}

	g = G.NewGraph()
	a := G.NewVector(g, tensor.Float64, G.WithShape(3), G.WithName("a"), G.WithValue(tensor.New(tensor.WithShape(3), tensor.WithBacking([]float64{1, 2, 3}))))
	b, err := G.ApplyOp(noDoDiffOp{}, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Sum(b); err != nil {
		t.Fatal(err)
	}
	if err := ops.CheckLispGraph(g); !errors.Is(err, ops.ErrUnsupported) || !strings.Contains(err.Error(), "noDoDiff") {
		t.Errorf("CheckLispGraph with an op without DoDiff: %v", err)
	}

	g = G.NewGraph()
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 4), G.WithName("logits"))
	r, err := ops.Route(logits, ops.RouteConfig{K: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Sum(r.Weights); err != nil {
		t.Fatal(err)
	}
	if err := ops.CheckLispGraph(g); !errors.Is(err, ops.ErrUnsupported) || !strings.Contains(err.Error(), "RoutingPlan") || !strings.Contains(err.Error(), "part of the cost") {
		t.Errorf("CheckLispGraph with an unused plan: %v", err)
	}
}

// noDoDiffOp is an identity op with symbolic gradients but no DoDiff.
type noDoDiffOp struct{}

func (noDoDiffOp) DiffWRT(n int) []bool                              { return []bool{true} }
func (noDoDiffOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) { return G.Nodes{g}, nil }

func (noDoDiffOp) Arity() int    { return 1 }
func (noDoDiffOp) Type() hm.Type { return hm.NewFnType(hm.TypeVariable('a'), hm.TypeVariable('a')) }
func (noDoDiffOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return ds[0].(tensor.Shape).Clone(), nil
}
func (noDoDiffOp) Do(vs ...G.Value) (G.Value, error) { return vs[0], nil }
func (noDoDiffOp) ReturnsPtr() bool                  { return false }
func (noDoDiffOp) CallsExtern() bool                 { return false }
func (noDoDiffOp) OverwritesInput() int              { return -1 }
func (noDoDiffOp) WriteHash(h hash.Hash)             { fmt.Fprint(h, "noDoDiff") }
func (noDoDiffOp) Hashcode() uint32                  { return 7 }
func (noDoDiffOp) String() string                    { return "noDoDiff" }
