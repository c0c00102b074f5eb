package tests

import (
	"github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Graph-level gradient checking.
//
// For an op output `out` built from some inputs, cost = sum(out ⊙ R) with a fixed random R (or
// cost = out for a scalar), G.Grad is called once and a TapeMachine computes every gradient. Each
// gradient element g is then compared with the central difference
//
//	fd = (cost(v + h) - cost(v - h)) / 2h,   h = 1e-6,
//
// evaluated by a second, forward-only graph of the same build, and must satisfy
//
//	|g - fd| <= 1e-6 * max(1, |g|).

const (
	gradStep = 1e-6
	gradTol  = 1e-6
)

// gradInput is one input node of a gradient check: float64 values (or int32 constants).
type gradInput struct {
	name  string
	shape []int
	vals  []float64 // float64 input
	ivals []int32   // int32 input (never differentiated)
	wrt   bool      // check the gradient w.r.t. this input
	zero  bool      // the gradient is identically zero (e.g. renormalised K=1 weights are always 1)
}

// buildFunc builds the output node from the input nodes (in gradInput order).
type buildFunc func(g *G.ExprGraph, in []*G.Node) (*G.Node, error)

func (gi gradInput) tensor() *tensor.Dense {
	if gi.ivals != nil {
		return tensor.New(tensor.WithShape(gi.shape...), tensor.WithBacking(append([]int32(nil), gi.ivals...)))
	}
	return tensor.New(tensor.WithShape(gi.shape...), tensor.WithBacking(append([]float64(nil), gi.vals...)))
}

// costGraph builds the inputs, the output and cost = sum(out ⊙ R) in a new graph.
func costGraph(t *testing.T, inputs []gradInput, build buildFunc, rSeed int64) (*G.ExprGraph, []*G.Node, *G.Node) {
	t.Helper()
	g := G.NewGraph()
	nodes := make([]*G.Node, len(inputs))
	for i, in := range inputs {
		dt := tensor.Float64
		if in.ivals != nil {
			dt = tensor.Int32
		}
		nodes[i] = G.NewTensor(g, dt, len(in.shape), G.WithShape(in.shape...), G.WithName(in.name), G.WithValue(in.tensor()))
	}
	out, err := build(g, nodes)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	if out.Shape().IsScalar() || out.Shape().TotalSize() == 1 && out.Dims() == 0 {
		return g, nodes, out
	}
	rng := rand.New(rand.NewSource(rSeed))
	r := make([]float64, out.Shape().TotalSize())
	for i := range r {
		r[i] = 2*rng.Float64() - 1
	}
	rn := G.NewTensor(g, tensor.Float64, out.Dims(), G.WithShape(out.Shape()...), G.WithName("R"),
		G.WithValue(tensor.New(tensor.WithShape(out.Shape()...), tensor.WithBacking(r))))
	prod, err := G.HadamardProd(out, rn)
	if err != nil {
		t.Fatalf("cost: %v", err)
	}
	cost, err := G.Sum(prod)
	if err != nil {
		t.Fatalf("cost: %v", err)
	}
	return g, nodes, cost
}

func scalarValue(t *testing.T, n *G.Node) float64 {
	t.Helper()
	v, err := floats.Scalar(n.Value())
	if err != nil {
		t.Fatalf("node %v: %v", n, err)
	}
	return v
}

func floatsOf(t *testing.T, v G.Value) []float64 {
	t.Helper()
	f, err := floats.Of(v)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// symbolicGrads returns the cost and the gradients of the wrt inputs computed by G.Grad + TapeMachine.
func symbolicGrads(t *testing.T, inputs []gradInput, build buildFunc) (float64, [][]float64) {
	t.Helper()
	g, nodes, cost := costGraph(t, inputs, build, 42)
	var wrt G.Nodes
	for i, in := range inputs {
		if in.wrt {
			wrt = append(wrt, nodes[i])
		}
	}
	if _, err := G.Grad(cost, wrt...); err != nil {
		t.Fatalf("Grad: %v", err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatalf("RunAll (forward+backward): %v", err)
	}
	c := scalarValue(t, cost)
	grads := make([][]float64, len(wrt))
	for i, n := range wrt {
		gv, err := n.Grad()
		if err != nil {
			t.Fatalf("gradient of %v: %v", n, err)
		}
		grads[i] = floatsOf(t, gv)
		if len(grads[i]) != n.Shape().TotalSize() {
			t.Fatalf("gradient of %v has %d elements, want %d", n, len(grads[i]), n.Shape().TotalSize())
		}
	}
	return c, grads
}

// checkGraphGrad compares G.Grad's gradients with central differences for every wrt input element.
func checkGraphGrad(t *testing.T, inputs []gradInput, build buildFunc) {
	t.Helper()
	c0, grads := symbolicGrads(t, inputs, build)

	g, nodes, cost := costGraph(t, inputs, build, 42)
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	eval := func() float64 {
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			t.Fatalf("RunAll (forward): %v", err)
		}
		return scalarValue(t, cost)
	}
	if c := eval(); math.Abs(c-c0) > 1e-12*math.Max(1, math.Abs(c0)) {
		t.Fatalf("forward-only graph gives cost %v, gradient graph %v", c, c0)
	}
	gi := 0
	for i, in := range inputs {
		if !in.wrt {
			continue
		}
		v := append([]float64(nil), in.vals...)
		set := func() {
			if err := G.Let(nodes[i], tensor.New(tensor.WithShape(in.shape...), tensor.WithBacking(append([]float64(nil), v...)))); err != nil {
				t.Fatalf("Let: %v", err)
			}
		}
		bad, nonzero := 0, false
		for j := range v {
			orig := v[j]
			v[j] = orig + gradStep
			set()
			fp := eval()
			v[j] = orig - gradStep
			set()
			fm := eval()
			v[j] = orig
			fd := (fp - fm) / (2 * gradStep)
			gr := grads[gi][j]
			nonzero = nonzero || math.Abs(gr) > 1e-9
			if d := math.Abs(gr - fd); !(d <= gradTol*math.Max(1, math.Abs(gr))) {
				if bad < 5 {
					t.Errorf("d cost / d %s[%d]: G.Grad %.12g, central difference %.12g (|diff| %.3g)", in.name, j, gr, fd, d)
				}
				bad++
			}
		}
		set()
		if nonzero && in.zero {
			t.Errorf("d cost / d %s should be identically zero", in.name)
		}
		if !nonzero && !in.zero {
			t.Errorf("d cost / d %s is zero everywhere: the check is vacuous", in.name)
		}
		if bad > 5 {
			t.Errorf("d cost / d %s: %d of %d elements differ", in.name, bad, len(v))
		}
		gi++
	}
}

// ---- input generators ----

func randVals(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = 2*rng.Float64() - 1
	}
	return v
}

// gappedLogits returns [T,E] logits whose values inside a row are at least 2/E apart (no near-ties, so
// top-k does not change under a 1e-6 perturbation).
func gappedLogits(rng *rand.Rand, T, E int) []float64 {
	l := make([]float64, T*E)
	for t := 0; t < T; t++ {
		perm := rng.Perm(E)
		for e := 0; e < E; e++ {
			l[t*E+e] = 6*(float64(perm[e])+0.5*rng.Float64())/float64(E) - 3
		}
	}
	return l
}

// minTopKGap returns the smallest gap, over tokens, between the K-th and (K+1)-th largest logit.
func minTopKGap(logits []float64, T, E, K int) float64 {
	gap := math.Inf(1)
	if K >= E {
		return gap
	}
	for t := 0; t < T; t++ {
		row := append([]float64(nil), logits[t*E:(t+1)*E]...)
		// partial selection sort: the K+1 largest
		for i := 0; i <= K; i++ {
			m := i
			for j := i + 1; j < E; j++ {
				if row[j] > row[m] {
					m = j
				}
			}
			row[i], row[m] = row[m], row[i]
		}
		gap = math.Min(gap, row[K-1]-row[K])
	}
	return gap
}
