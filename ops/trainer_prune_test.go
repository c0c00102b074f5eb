package ops_test

import (
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestTrainerRunsOnlyNeededGradients: G.Grad also builds the gradient of the input x (x is not a
// parameter); the Trainer's machine must not compute it, while every parameter gets its gradient.
func TestTrainerRunsOnlyNeededGradients(t *testing.T) {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 3), G.WithName("x"))
	target := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 2), G.WithName("target"))
	w := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 2), G.WithName("w"),
		G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6}))))
	y, err := ops.MatMul(x, w, false, false)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := ops.MSELoss(y, target)
	if err != nil {
		t.Fatal(err)
	}
	sgd, err := ops.NewSGD(ops.SGDConfig{LR: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ops.NewTrainer(loss, G.Nodes{w}, sgd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	xv := tensor.New(tensor.WithShape(4, 3), tensor.WithBacking([]float64{1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1}))
	yv := tensor.New(tensor.WithShape(4, 2), tensor.WithBacking(make([]float64, 8)))
	var dxNode *G.Node
	for _, n := range g.AllNodes() {
		if n.Op() != nil && n != loss && len(n.Shape()) == 2 && n.Shape()[0] == 4 && n.Shape()[1] == 3 {
			dxNode = n // the only [4,3] op node is x's gradient, x·... has shape [4,2]
		}
	}
	if dxNode == nil {
		t.Fatal("G.Grad built no gradient for x: the test no longer checks the pruning")
	}
	if _, err := tr.StepLoss(ops.Feeds{x: xv, target: yv}); err != nil {
		t.Fatal(err)
	}
	if dxNode.Value() != nil {
		t.Errorf("the gradient of the input x (%v) was computed: the Trainer ran nodes no parameter needs", dxNode)
	}
	if gw, err := w.Grad(); err != nil || gw == nil {
		t.Errorf("w has no gradient after the step: %v", err)
	}
}
