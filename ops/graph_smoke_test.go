package ops

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestGraphForwardBackward builds route -> dispatch -> grouped matmul -> combine + aux losses, takes
// the gradient once and checks a hand-computed routing and the gradient's shape on a TapeMachine.
func TestGraphForwardBackward(t *testing.T) {
	g := G.NewGraph()
	logitsT := tensor.New(tensor.WithShape(3, 4), tensor.WithBacking([]float64{
		1, 3, 2, 0, // experts 1, 2
		5, 1, 1, 4, // experts 0, 3
		0, 0, 0, 0, // tie: experts 0, 1
	}))
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 4), G.WithName("logits"), G.WithValue(logitsT))
	xT := tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6}))
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 2), G.WithName("x"), G.WithValue(xT))
	wT := tensor.New(tensor.WithShape(4, 2, 2), tensor.WithBacking([]float64{
		1, 0, 0, 1, 2, 0, 0, 2, 3, 0, 0, 3, 4, 0, 0, 4}))
	w := G.NewTensor(g, tensor.Float64, 3, G.WithShape(4, 2, 2), G.WithName("w"), G.WithValue(wT))

	r, err := Route(logits, RouteConfig{K: 2, Scoring: SoftmaxTopK, Renormalize: true})
	if err != nil {
		t.Fatal(err)
	}
	packed, err := Dispatch(x, r)
	if err != nil {
		t.Fatal(err)
	}
	h, err := GroupedMatMul(packed, w, r)
	if err != nil {
		t.Fatal(err)
	}
	y, err := Combine(h, r)
	if err != nil {
		t.Fatal(err)
	}
	aux, err := LoadBalancingLoss(r, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	z, err := ZLoss(logits, 0.001)
	if err != nil {
		t.Fatal(err)
	}
	cost := G.Must(G.Add(G.Must(G.Add(G.Must(G.Sum(y)), aux)), z))
	if _, err := G.Grad(cost, logits, x, w); err != nil {
		t.Fatal(err)
	}
	var idxV, yV G.Value
	G.Read(r.Indices, &idxV)
	G.Read(y, &yV)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	wantIdx := []int32{1, 2, 0, 3, 0, 1}
	for i, v := range idxV.Data().([]int32) {
		if v != wantIdx[i] {
			t.Fatalf("indices = %v, want %v", idxV.Data(), wantIdx)
		}
	}
	// token 2 ties: weights 1/2 each, experts 0 and 1 scale x by 1 and 2 -> y = 1.5 * x
	yd := yV.Data().([]float64)
	if math.Abs(yd[4]-7.5) > 1e-12 || math.Abs(yd[5]-9) > 1e-12 {
		t.Fatalf("y[2] = %v, want [7.5 9]", yd[4:6])
	}
	for _, n := range []*G.Node{logits, x, w} {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		if !gv.Shape().Eq(n.Shape()) {
			t.Fatalf("grad of %v has shape %v", n.Name(), gv.Shape())
		}
	}
}
