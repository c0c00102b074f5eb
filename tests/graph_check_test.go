package tests

import (
	"errors"
	"fmt"
	"hash"
	"strings"
	"testing"

	"github.com/chewxy/hm"
	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func matNode(g *G.ExprGraph, name string, r, c int) *G.Node { return matNodeOn(nil, g, name, r, c) }

// matNodeOn is an input [r,c] float64 holding small distinct values, in b's memory (nil: the host).
func matNodeOn(b ops.Backend, g *G.ExprGraph, name string, r, c int) *G.Node {
	v := make([]float64, r*c)
	for i := range v {
		v[i] = 0.25 * float64(i%7-3)
	}
	d := tensor.New(tensor.WithShape(r, c), tensor.WithBacking(v))
	if b != nil {
		var err error
		if d, err = b.FromHost(d); err != nil {
			panic(err)
		}
	}
	return G.NewMatrix(g, tensor.Float64, G.WithShape(r, c), G.WithName(name), G.WithValue(d))
}

// TestCheckDeviceGraph builds graphs around each built-in that cannot run on device memory and checks that
// CheckDeviceGraph names it (ErrUnsupported), and that device-ready graphs pass. Each graph is built
// twice: with host values, and with its values on the simulated device, where ops.NewRunner must give
// the same verdict before anything runs, and every accepted graph must then run (memory the host cannot
// read: a built-in that the check wrongly accepted and that touches device memory from the host
// crashes the test).
func TestCheckDeviceGraph(t *testing.T) {
	for _, place := range []string{"host", "sim"} {
		t.Run(place, func(t *testing.T) {
			var b ops.Backend
			if place == "sim" {
				b = simBackend(t)
			}
			checkDeviceGraphOn(t, b)
		})
	}
}

func checkDeviceGraphOn(t *testing.T, dev ops.Backend) {
	type build func(g *G.ExprGraph) error
	matNode := func(g *G.ExprGraph, name string, r, c int) *G.Node { return matNodeOn(dev, g, name, r, c) }
	must := func(n *G.Node, err error) *G.Node {
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	grad := func(cost *G.Node, wrt ...*G.Node) error { _, err := G.Grad(cost, wrt...); return err }
	cases := []struct {
		name string
		b    build
		want string // "" means accepted; else a substring of the error
	}{
		{"moe layer with project losses", func(g *G.ExprGraph) error {
			cfg := moe.MixtralConfig(8, 6, 4)
			cfg.Backend = dev
			l, err := moe.NewLayer(g, cfg)
			if err != nil {
				return err
			}
			x := G.NewMatrix(g, tensor.Float32, G.WithShape(5, 8), G.WithName("x"))
			y := G.NewMatrix(g, tensor.Float32, G.WithShape(5, 8), G.WithName("y"))
			out, err := l.Forward(x)
			if err != nil {
				return err
			}
			mse := must(ops.MSELoss(out.Y, y))
			rl := must(out.RouterLoss())
			cost := must(ops.AddLosses(mse, rl))
			return grad(cost, l.Params()...)
		}, ""},
		{"elementwise built-ins, transpose, reshape, forward-only sum", func(g *G.ExprGraph) error {
			a, b := matNode(g, "a", 3, 4), matNode(g, "b", 4, 3)
			bt := must(G.Transpose(b))
			h := must(G.HadamardProd(a, bt))
			s := must(G.Sigmoid(h))
			e := must(G.Exp(s))
			k := must(G.Mul(e, G.NewConstant(0.5)))
			r := must(G.Reshape(k, tensor.Shape{4, 3}))
			var metric G.Value
			G.Read(must(G.Sum(r)), &metric)
			y := matNode(g, "y", 4, 3)
			return grad(must(ops.MSELoss(r, y)), a, b)
		}, ""},
		{"Gorgonia matrix product", func(g *G.ExprGraph) error {
			p := must(G.Mul(matNode(g, "a", 2, 3), matNode(g, "b", 3, 4)))
			_ = p
			return nil
		}, "use ops.MatMul"},
		{"mean squared error from Gorgonia built-ins", func(g *G.ExprGraph) error {
			a, y := matNode(g, "a", 2, 3), matNode(g, "y", 2, 3)
			cost := must(G.Mean(must(G.Square(must(G.Sub(a, y))))))
			return grad(cost, a)
		}, "Repeat"},
		{"broadcast add", func(g *G.ExprGraph) error {
			a := matNode(g, "a", 2, 3)
			v := must(G.Reshape(matNode(g, "v", 1, 3), tensor.Shape{3}))
			_ = must(G.BroadcastAdd(a, v, nil, []byte{0}))
			return nil
		}, "Broadcast"},
		{"softmax", func(g *G.ExprGraph) error {
			_ = must(G.SoftMax(matNode(g, "a", 2, 3)))
			return nil
		}, "SoftmaxCrossEntropy"},
		{"slice along axis 1", func(g *G.ExprGraph) error {
			_ = must(G.Slice(matNode(g, "a", 2, 3), nil, G.S(1)))
			return nil
		}, "axis 1"},
		{"slice along axis 0, forward only", func(g *G.ExprGraph) error {
			_ = must(G.Slice(matNode(g, "a", 4, 3), G.S(1, 3)))
			return nil
		}, ""},
		{"gradient of a slice along axis 0", func(g *G.ExprGraph) error {
			a := matNode(g, "a", 4, 3)
			s := must(G.Slice(a, G.S(1, 3)))
			return grad(must(ops.MSELoss(s, matNode(g, "y", 2, 3))), a)
		}, "silently zero gradient"},
		{"concat along axis 1", func(g *G.ExprGraph) error {
			_ = must(G.Concat(1, matNode(g, "a", 2, 3), matNode(g, "b", 2, 2)))
			return nil
		}, "axis 1"},
		{"concat along axis 0 with its gradient", func(g *G.ExprGraph) error {
			a, b := matNode(g, "a", 2, 3), matNode(g, "b", 1, 3)
			c := must(G.Concat(0, a, b))
			return grad(must(ops.MSELoss(c, matNode(g, "y", 3, 3))), a, b)
		}, ""},
		{"max reduction", func(g *G.ExprGraph) error {
			_ = must(G.Max(matNode(g, "a", 2, 3), 1))
			return nil
		}, "not known to work"},
		{"G.Add of two project losses", func(g *G.ExprGraph) error {
			a, y := matNode(g, "a", 2, 3), matNode(g, "y", 2, 3)
			l1 := must(ops.MSELoss(a, y))
			l2 := must(ops.ZLoss(a, 0.1))
			return grad(must(G.Add(l1, l2)), a)
		}, "ops.AddLosses"},
		{"foreign op with a host output buffer", func(g *G.ExprGraph) error {
			_ = must(G.ApplyOp(hostBufferOp{}, matNode(g, "a", 2, 3)))
			return nil
		}, "CallsExtern"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := G.NewGraph()
			if err := c.b(g); err != nil {
				t.Fatalf("building: %v", err)
			}
			err := ops.CheckDeviceGraph(g)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("rejected a device-ready graph: %v", err)
			case c.want != "" && err == nil:
				t.Errorf("accepted a graph that cannot run on a device (want an error mentioning %q)", c.want)
			case c.want != "" && !errors.Is(err, ops.ErrUnsupported):
				t.Errorf("error does not wrap ErrUnsupported: %v", err)
			case c.want != "" && (!strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "node ")):
				t.Errorf("error does not name the node and mention %q: %v", c.want, err)
			}
			if dev == nil {
				return
			}
			r, rerr := ops.NewRunner(g, dev)
			if (rerr == nil) != (err == nil) || (err != nil && rerr.Error() != err.Error()) {
				t.Fatalf("NewRunner on %s: %v; CheckDeviceGraph: %v", dev.Name(), rerr, err)
			}
			if rerr != nil {
				return
			}
			defer r.Close()
			feeds := ops.Feeds{}
			for _, n := range g.Inputs() {
				if n.Value() == nil && n.Op() == nil {
					feeds[n] = tensor.New(tensor.Of(n.Dtype()), tensor.WithShape(n.Shape().Clone()...))
				}
			}
			if err := r.Run(feeds, nil); err != nil {
				t.Errorf("the accepted graph fails on %s: %v", dev.Name(), err)
			}
		})
	}
}

// TestCheckDeviceMachines: dual values bound by a machine option and the LispMachine are refused.
func TestCheckDeviceMachines(t *testing.T) {
	g := G.NewGraph()
	a, y := matNode(g, "a", 2, 3), matNode(g, "y", 2, 3)
	cost, err := ops.MSELoss(a, y)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(cost, a); err != nil {
		t.Fatal(err)
	}
	tm := G.NewTapeMachine(g)
	if err := ops.CheckDeviceVM(tm); err != nil {
		t.Errorf("CheckDeviceVM(TapeMachine): %v", err)
	}
	tm.Close()
	if err := ops.CheckDeviceGraph(g); err != nil {
		t.Fatalf("before BindDualValues: %v", err)
	}
	lm := G.NewLispMachine(g)
	if err := ops.CheckDeviceVM(lm); !errors.Is(err, ops.ErrUnsupported) {
		t.Errorf("CheckDeviceVM(LispMachine) = %v, want ErrUnsupported", err)
	}
	lm.Close()
	for _, c := range []struct {
		opt  G.VMOpt
		name string
	}{{G.BindDualValues(a), "BindDualValues"}, {G.WithNaNWatch(), "NaNWatch"}, {G.TraceExec(), "TraceExec"}} {
		m := G.NewTapeMachine(g, c.opt)
		if err := ops.CheckDeviceVM(m); !errors.Is(err, ops.ErrUnsupported) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("CheckDeviceVM(TapeMachine with %s) = %v, want ErrUnsupported naming it", c.name, err)
		}
		m.Close()
	}
	// Once a machine with BindDualValues has run, the graph's inputs hold dual values.
	dm := G.NewTapeMachine(g, G.BindDualValues(a))
	defer dm.Close()
	if err := dm.RunAll(); err != nil {
		t.Fatal(err)
	}
	if err := ops.CheckDeviceGraph(g); !errors.Is(err, ops.ErrUnsupported) || !strings.Contains(err.Error(), "BindDualValues") {
		t.Errorf("after a run with BindDualValues: %v, want an error naming BindDualValues", err)
	}
}

// hostBufferOp is a foreign op that makes Gorgonia's compiler allocate a host output (CallsExtern and
// ReturnsPtr both true).
type hostBufferOp struct{}

func (hostBufferOp) Arity() int { return 1 }
func (hostBufferOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 2, Of: a})
}
func (hostBufferOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return ds[0].(tensor.Shape).Clone(), nil
}
func (hostBufferOp) Do(vs ...G.Value) (G.Value, error) { return vs[0], nil }
func (hostBufferOp) ReturnsPtr() bool                  { return true }
func (hostBufferOp) CallsExtern() bool                 { return true }
func (hostBufferOp) OverwritesInput() int              { return -1 }
func (hostBufferOp) WriteHash(h hash.Hash)             { fmt.Fprint(h, "hostBufferOp") }
func (hostBufferOp) Hashcode() uint32                  { return 7 }
func (hostBufferOp) String() string                    { return "hostBufferOp" }
