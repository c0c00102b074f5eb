package enginetest

import (
	"fmt"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// elementwiseGraph builds y = T( Rectify(exp(-tanh(sigmoid(x⊙a) + 2x)^2) - 0.5) / (x^2 + 1) ) + T(softplus(a)⊙sin(x)) +
// T(log1p(x^2)⊙expm1(a/4)) (T: transpose), with rows [r,c], and the gradients of <y, R> w.r.t. x and a by
// G.Backpropagate. Every op is a Gorgonia built-in that runs through the tensor engine: HadamardProd,
// Add, Sub, HadamardDiv, scalar Mul/Add/Sub/Div, Sigmoid/Softplus/Sin/Log1p/Expm1 (Map), Tanh, Exp,
// Neg, Square, Rectify (Gte), Transpose, and the gradient sums Grad inserts (Add).
type elementwiseGraph struct {
	g          *G.ExprGraph
	x, a, r    *G.Node
	y          *G.Node
	dx, da     *G.Node
	dt         tensor.Dtype
	rows, cols int
}

func newElementwiseGraph(t testing.TB, dt tensor.Dtype, rows, cols int) *elementwiseGraph {
	t.Helper()
	g := G.NewGraph()
	c := &elementwiseGraph{g: g, dt: dt, rows: rows, cols: cols}
	c.x = G.NewMatrix(g, dt, G.WithShape(rows, cols), G.WithName("x"))
	c.a = G.NewMatrix(g, dt, G.WithShape(rows, cols), G.WithName("a"))
	c.r = G.NewMatrix(g, dt, G.WithShape(cols, rows), G.WithName("R"))
	k := func(v float64) *G.Node {
		if dt == tensor.Float32 {
			return G.NewConstant(float32(v))
		}
		return G.NewConstant(v)
	}
	must := func(n *G.Node, err error) *G.Node {
		t.Helper()
		if err != nil {
			t.Fatalf("building the graph: %v", err)
		}
		return n
	}
	h := must(G.HadamardProd(c.x, c.a))
	h = must(G.Sigmoid(h))
	h = must(G.Add(h, must(G.Mul(c.x, k(2)))))
	h = must(G.Tanh(h))
	h = must(G.Exp(must(G.Neg(must(G.Square(h))))))
	h = must(G.Rectify(must(G.Sub(h, k(0.5)))))
	h = must(G.HadamardDiv(h, must(G.Add(must(G.Square(c.x)), k(1)))))
	y1 := must(G.Transpose(h))
	s := must(G.HadamardProd(must(G.Softplus(c.a)), must(G.Sin(c.x))))
	y2 := must(G.Transpose(s))
	l := must(G.HadamardProd(must(G.Log1p(must(G.Square(c.x)))), must(G.Expm1(must(G.Div(c.a, k(4)))))))
	y3 := must(G.Transpose(l))
	c.y = must(G.Add(must(G.Add(y1, y2)), y3))
	grads, err := G.Backpropagate(G.Nodes{c.y}, G.Nodes{c.r}, G.Nodes{c.x, c.a})
	if err != nil {
		t.Fatalf("Backpropagate: %v", err)
	}
	c.dx, c.da = grads[0], grads[1]
	return c
}

// run binds the inputs, runs the graph once on machine m and returns y, dx, da (values as the machine
// left them).
func (c *elementwiseGraph) run(t testing.TB, m G.VM, x, a, r *tensor.Dense) (y, dx, da *tensor.Dense) {
	t.Helper()
	for _, b := range []struct {
		n *G.Node
		v *tensor.Dense
	}{{c.x, x}, {c.a, a}, {c.r, r}} {
		if err := G.Let(b.n, b.v); err != nil {
			t.Fatalf("Let %s: %v", b.n.Name(), err)
		}
	}
	m.Reset()
	if err := m.RunAll(); err != nil {
		t.Fatalf("RunAll: %v", err)
	}
	return c.y.Value().(*tensor.Dense), c.dx.Value().(*tensor.Dense), c.da.Value().(*tensor.Dense)
}

func (v *env) graphInputs(dt tensor.Dtype, rows, cols int) (x, a, r *tensor.Dense) {
	return v.randHost(dt, tensor.Shape{rows, cols}, -2, 2), v.randHost(dt, tensor.Shape{rows, cols}, -2, 2),
		v.randHost(dt, tensor.Shape{cols, rows}, -1, 1)
}

func (v *env) testGraph(t *testing.T) {
	for _, dt := range dtypes {
		rows, cols := 6, 37
		hx, ha, hr := v.graphInputs(dt, rows, cols)
		cpu := newElementwiseGraph(t, dt, rows, cols)
		mc := G.NewTapeMachine(cpu.g)
		wy, wdx, wda := cpu.run(t, mc, hx, ha, hr)
		wy, wdx, wda = clone(wy), clone(wdx), clone(wda)
		mc.Close()

		dev := newElementwiseGraph(t, dt, rows, cols)
		md := G.NewTapeMachine(dev.g, G.WithEngine(v.e))
		gy, gdx, gda := dev.run(t, md, v.dev(t, hx), v.dev(t, ha), v.dev(t, hr))
		tol := 1e-12
		if dt == tensor.Float32 {
			tol = 1e-5
		}
		if v.o.TolF64 > tol && dt == tensor.Float64 {
			tol = v.o.TolF64 * 100
		}
		for _, c := range []struct {
			name      string
			got, want *tensor.Dense
		}{{"y", gy, wy}, {"dx", gdx, wdx}, {"da", gda, wda}} {
			if !v.b.Owns(c.got) {
				t.Errorf("%v graph: %s is not a device tensor", dt, c.name)
				continue
			}
			sameResult(t, fmt.Sprintf("%v graph %s", dt, c.name), v.host(t, c.got), c.want, tol)
		}
		md.Close()
	}
}

// testStepMemory runs the same training-like step (host inputs copied in, the elementwise graph
// forward and backward on a TapeMachine, engine reductions and copies) between BeginStep and EndStep
// 200 times: device memory in use must be the same after step 10 and after step 200, and no device
// allocation may happen after the first steps.
func (v *env) testStepMemory(t *testing.T) {
	s, ok := v.b.(ops.StepScoper)
	if !ok {
		t.Skip("the backend has no training-step scopes")
	}
	if testing.Short() {
		t.Skip("short: 200 steps")
	}
	dt := tensor.Float32
	rows, cols := 8, 64
	c := newElementwiseGraph(t, dt, rows, cols)
	m := G.NewTapeMachine(c.g, G.WithEngine(v.e))
	defer m.Close()
	hx, ha, hr := v.graphInputs(dt, rows, cols)
	step := func() {
		if err := s.BeginStep(); err != nil {
			t.Fatal(err)
		}
		_, dx, _ := c.run(t, m, v.dev(t, hx), v.dev(t, ha), v.dev(t, hr))
		sum, err := v.e.(tensor.Sumer).Sum(dx, 1)
		if err != nil {
			t.Fatal(err)
		}
		cat, err := v.e.(tensor.Concater).Concat(dx, 0, dx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.e.(tensor.Sumer).Sum(cat); err != nil {
			t.Fatal(err)
		}
		if _, err := v.b.ToHost(sum.(*tensor.Dense)); err != nil {
			t.Fatal(err)
		}
		if err := s.EndStep(); err != nil {
			t.Fatal(err)
		}
	}
	var at10 = v.o.Stats()
	for i := 1; i <= 200; i++ {
		step()
		if i == 10 {
			at10 = v.o.Stats()
		}
	}
	at200 := v.o.Stats()
	t.Logf("pool after step 10: %+v; after step 200: %+v", at10, at200)
	if at10.LiveBytes+at10.CachedBytes != at200.LiveBytes+at200.CachedBytes {
		t.Errorf("device memory in use grew from %d bytes (step 10) to %d bytes (step 200)", at10.LiveBytes+at10.CachedBytes, at200.LiveBytes+at200.CachedBytes)
	}
	if at10.DriverAllocs != at200.DriverAllocs {
		t.Errorf("%d device allocations between step 10 and step 200", at200.DriverAllocs-at10.DriverAllocs)
	}
	if at200.StepBytes != 0 {
		t.Errorf("%d bytes still belong to a step after EndStep", at200.StepBytes)
	}
}
