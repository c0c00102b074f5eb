package tests

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestSecondOrderNamesTheOp: differentiating a gradient through Combine, GroupedMatMul's weight
// gradient, the route weights, the router losses, the MSE loss or SwiGLU fails with an error that names the op and says that
// second derivatives are not supported (it used to be Gorgonia's "Non Differentiable WRTs: map[ye ...]").
func TestSecondOrderNamesTheOp(t *testing.T) {
	const T, E, K, H = 4, 3, 2, 3
	rng := rand.New(rand.NewSource(1))
	val := func(shape ...int) *tensor.Dense {
		n := tensor.Shape(shape).TotalSize()
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(randVals(rng, n)))
	}
	cases := map[string]struct {
		build func(g *G.ExprGraph) (cost *G.Node, wrt *G.Node, err error)
		names string // the op the error must name
	}{
		"combine": {func(g *G.ExprGraph) (*G.Node, *G.Node, error) {
			idx := G.NewMatrix(g, tensor.Int32, G.WithShape(T, K), G.WithName("idx"),
				G.WithValue(tensor.New(tensor.WithShape(T, K), tensor.WithBacking(fixedIndices(rng, T, E, K)))))
			w := G.NewMatrix(g, tensor.Float64, G.WithShape(T, K), G.WithName("w"), G.WithValue(val(T, K)))
			ye := G.NewMatrix(g, tensor.Float64, G.WithShape(T*K, H), G.WithName("ye"), G.WithValue(val(T*K, H)))
			r, err := ops.NewRouting(idx, w, E)
			if err != nil {
				return nil, nil, err
			}
			y, err := ops.Combine(ye, r)
			if err != nil {
				return nil, nil, err
			}
			grads, err := G.Grad(G.Must(G.Sum(G.Must(G.Square(y)))), ye)
			if err != nil {
				return nil, nil, err
			}
			return G.Must(G.Sum(G.Must(G.Square(grads[0])))), w, nil
		}, "Combine"},
		"grouped matmul weight gradient": {func(g *G.ExprGraph) (*G.Node, *G.Node, error) {
			logits := G.NewMatrix(g, tensor.Float64, G.WithShape(T, E), G.WithName("logits"), G.WithValue(val(T, E)))
			x := G.NewMatrix(g, tensor.Float64, G.WithShape(T*K, H), G.WithName("x"), G.WithValue(val(T*K, H)))
			w := G.NewTensor(g, tensor.Float64, 3, G.WithShape(E, H, 2), G.WithName("w"), G.WithValue(val(E, H, 2)))
			r, err := ops.Route(logits, ops.RouteConfig{K: K})
			if err != nil {
				return nil, nil, err
			}
			y, err := ops.GroupedMatMul(x, w, r)
			if err != nil {
				return nil, nil, err
			}
			grads, err := G.Grad(G.Must(G.Sum(G.Must(G.Square(y)))), w)
			if err != nil {
				return nil, nil, err
			}
			return G.Must(G.Sum(G.Must(G.Square(grads[0])))), x, nil
		}, "GroupedMatMulGradW"},
		"route weights": {func(g *G.ExprGraph) (*G.Node, *G.Node, error) {
			logits := G.NewMatrix(g, tensor.Float64, G.WithShape(T, E), G.WithName("logits"), G.WithValue(val(T, E)))
			r, err := ops.Route(logits, ops.RouteConfig{K: K})
			if err != nil {
				return nil, nil, err
			}
			grads, err := G.Grad(G.Must(G.Sum(G.Must(G.Square(r.Weights)))), logits)
			if err != nil {
				return nil, nil, err
			}
			return G.Must(G.Sum(G.Must(G.Square(grads[0])))), logits, nil
		}, "RouteWeightsGrad"},
		"z-loss": {func(g *G.ExprGraph) (*G.Node, *G.Node, error) {
			logits := G.NewMatrix(g, tensor.Float64, G.WithShape(T, E), G.WithName("logits"), G.WithValue(val(T, E)))
			z, err := ops.ZLoss(logits, 0.1)
			if err != nil {
				return nil, nil, err
			}
			grads, err := G.Grad(z, logits)
			if err != nil {
				return nil, nil, err
			}
			return G.Must(G.Sum(G.Must(G.Square(grads[0])))), logits, nil
		}, "ZLossGrad"},
		"MSE loss": {func(g *G.ExprGraph) (*G.Node, *G.Node, error) {
			pred := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("pred"), G.WithValue(val(T, H)))
			target := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("target"), G.WithValue(val(T, H)))
			l, err := ops.MSELoss(pred, target)
			if err != nil {
				return nil, nil, err
			}
			grads, err := G.Grad(l, pred)
			if err != nil {
				return nil, nil, err
			}
			return G.Must(G.Sum(G.Must(G.Square(grads[0])))), pred, nil
		}, "MSELossGrad"},
		"SwiGLU": {func(g *G.ExprGraph) (*G.Node, *G.Node, error) {
			gate := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("gate"), G.WithValue(val(T, H)))
			up := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("up"), G.WithValue(val(T, H)))
			y, err := ops.SwiGLU(gate, up)
			if err != nil {
				return nil, nil, err
			}
			grads, err := G.Grad(G.Must(G.Sum(G.Must(G.Square(y)))), gate)
			if err != nil {
				return nil, nil, err
			}
			return G.Must(G.Sum(G.Must(G.Square(grads[0])))), up, nil
		}, "SwiGLU"},
	}
	for name, c := range cases {
		g := G.NewGraph()
		cost, wrt, err := c.build(g)
		if err != nil {
			t.Fatalf("%s: first-order gradient: %v", name, err)
		}
		_, err = G.Grad(cost, wrt)
		if err == nil {
			t.Errorf("%s: second derivative succeeded, want an error", name)
			continue
		}
		if !strings.Contains(err.Error(), c.names) || !strings.Contains(err.Error(), "second derivatives") {
			t.Errorf("%s: error %q should name %s and say that second derivatives are not supported", name, err, c.names)
		}
	}
}
