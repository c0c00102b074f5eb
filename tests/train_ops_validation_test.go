package tests

import (
	"errors"
	"math"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestTrainingOpBuilders: every builder of the training ops rejects bad nodes with the right sentinel.
func TestTrainingOpBuilders(t *testing.T) {
	g := G.NewGraph()
	m := func(name string, dt tensor.Dtype, shape ...int) *G.Node {
		return G.NewTensor(g, dt, len(shape), G.WithShape(shape...), G.WithName(name))
	}
	f64, f32, i32 := tensor.Float64, tensor.Float32, tensor.Int32
	a, b := m("a", f64, 3, 4), m("b", f64, 4, 2)
	a32 := m("a32", f32, 3, 4)
	v := m("v", f64, 4)
	lab := m("lab", i32, 3)
	s, _ := ops.MSELoss(a, a)
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"MatMul inner dimensions", errOf(ops.MatMul(a, a, false, false)), ops.ErrShape},
		{"MatMul vector", errOf(ops.MatMul(a, v, false, false)), ops.ErrShape},
		{"MatMul mixed dtypes", errOf(ops.MatMul(a32, b, false, false)), ops.ErrDtype},
		{"MatMul int32", errOf(ops.MatMul(lab, lab, false, true)), ops.ErrShape},
		{"MatMul nil", errOf(ops.MatMul(nil, b, false, false)), ops.ErrShape},
		{"MSELoss shapes", errOf(ops.MSELoss(a, b)), ops.ErrShape},
		{"MSELoss dtypes", errOf(ops.MSELoss(a, a32)), ops.ErrDtype},
		{"MSELoss scalar", errOf(ops.MSELoss(s, s)), ops.ErrShape},
		{"MSELoss int", errOf(ops.MSELoss(lab, lab)), ops.ErrDtype},
		{"cross-entropy label dtype", errOf(ops.SoftmaxCrossEntropy(a, m("fl", f64, 3))), ops.ErrDtype},
		{"cross-entropy label count", errOf(ops.SoftmaxCrossEntropy(a, m("l4", i32, 4))), ops.ErrShape},
		{"cross-entropy logits rank", errOf(ops.SoftmaxCrossEntropy(v, lab)), ops.ErrShape},
		{"SwiGLU shapes", errOf(ops.SwiGLU(a, b)), ops.ErrShape},
		{"SwiGLU dtypes", errOf(ops.SwiGLU(a, a32)), ops.ErrDtype},
		{"AddLosses nothing", errOf(ops.AddLosses(nil, nil)), ops.ErrConfig},
		{"AddLosses tensor", errOf(ops.AddLosses(s, a)), ops.ErrShape},
		{"ScaleLoss tensor", errOf(ops.ScaleLoss(a, 2)), ops.ErrShape},
		{"ScaleLoss nil", errOf(ops.ScaleLoss(nil, 2)), ops.ErrShape},
		{"ScaleLoss NaN", errOf(ops.ScaleLoss(s, math.NaN())), ops.ErrConfig},
		{"ScaleLoss Inf", errOf(ops.ScaleLoss(s, math.Inf(-1))), ops.ErrConfig},
	}
	s32, _ := ops.MSELoss(a32, a32)
	cases = append(cases, struct {
		name string
		err  error
		want error
	}{"AddLosses dtypes", errOf(ops.AddLosses(s, s32)), ops.ErrDtype})
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
}

func errOf(_ *G.Node, err error) error { return err }

// TestCrossEntropyBadLabelInGraph: a label outside [0,C) fails the run with ErrLabel naming the row.
func TestCrossEntropyBadLabelInGraph(t *testing.T) {
	g := G.NewGraph()
	l := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("l"), G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.Of(tensor.Float64))))
	y := G.NewVector(g, tensor.Int32, G.WithShape(2), G.WithName("y"), G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]int32{0, 3}))))
	ce, err := ops.SoftmaxCrossEntropy(l, y)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(ce, l); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := ops.MachineError(vm.RunAll()); !errors.Is(err, ops.ErrLabel) {
		t.Errorf("RunAll with label 3 of 3 classes: %v, want ErrLabel", err)
	}
}

// TestTrainingOpsNoCSEMerging: ops that differ only in a flag stay distinct.
func TestTrainingOpsNoCSEMerging(t *testing.T) {
	g := G.NewGraph()
	a := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("a"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{1, 2, 3, 4}))))
	aat, err := ops.MatMul(a, a, false, true)
	if err != nil {
		t.Fatal(err)
	}
	ata, err := ops.MatMul(a, a, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if aat == ata {
		t.Fatal("a·aᵀ and aᵀ·a merged into one node")
	}
	if err := runGraph(t, g); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		n    *G.Node
		want []float64
	}{{aat, []float64{5, 11, 11, 25}}, {ata, []float64{10, 14, 14, 20}}} {
		got := floatsOf(t, c.n.Value())
		for i := range got {
			if math.Abs(got[i]-c.want[i]) > 0 {
				t.Errorf("%v = %v, want %v", c.n.Op(), got, c.want)
				break
			}
		}
	}
}

// TestFloat reads losses on the CPU (host scalars) and on the simulated device (one-element device
// tensors, through ToHost), and refuses what is not a scalar.
func TestFloat(t *testing.T) {
	if v, err := ops.Float(G.NewF32(2.5)); err != nil || v != 2.5 {
		t.Errorf("Float(F32 2.5) = %v, %v", v, err)
	}
	if v, err := ops.Float(G.NewF64(-1)); err != nil || v != -1 {
		t.Errorf("Float(F64 -1) = %v, %v", v, err)
	}
	dev := simBackend(t)
	d := mustFromHost(t, dev, tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{0.75})))
	if v, err := ops.Float(d); err != nil || v != 0.75 {
		t.Errorf("Float(device [0.75]) = %v, %v", v, err)
	}
	for _, bad := range []G.Value{nil, tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 2})),
		tensor.New(tensor.WithShape(1), tensor.WithBacking([]int32{1}))} {
		if _, err := ops.Float(bad); err == nil {
			t.Errorf("Float(%v) succeeded", bad)
		}
	}
}
