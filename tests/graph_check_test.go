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

func matNode(g *G.ExprGraph, name string, r, c int) *G.Node {
	return G.NewMatrix(g, tensor.Float64, G.WithShape(r, c), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(r, c), tensor.Of(tensor.Float64))))
}

// TestCheckDeviceGraph builds graphs around each built-in that cannot run on device memory and checks that
// CheckDeviceGraph names it (ErrUnsupported), and that device-ready graphs pass.
func TestCheckDeviceGraph(t *testing.T) {
	type build func(g *G.ExprGraph) error
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
			l, err := moe.NewLayer(g, moe.MixtralConfig(8, 6, 4))
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
			v := G.NewVector(g, tensor.Float64, G.WithShape(3), G.WithName("v"), G.WithValue(tensor.New(tensor.WithShape(3), tensor.Of(tensor.Float64))))
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
