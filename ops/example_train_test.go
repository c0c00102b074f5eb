package ops_test

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// A linear regression trained with the project's MatMul, MSELoss and Adam through a Trainer. The same
// code trains on a device: pass the device backend instead of ops.CPU() and create w's value with its
// FromHost.
func ExampleTrainer() {
	const n, in, out = 64, 3, 2
	rng := rand.New(rand.NewPCG(1, 2))
	trueW := []float64{1, -2, 0.5, 3, -1, 2}
	batch := func() (*tensor.Dense, *tensor.Dense) {
		x := make([]float64, n*in)
		for i := range x {
			x[i] = rng.NormFloat64()
		}
		y := make([]float64, n*out)
		for r := 0; r < n; r++ {
			for j := 0; j < out; j++ {
				for k := 0; k < in; k++ {
					y[r*out+j] += x[r*in+k] * trueW[k*out+j]
				}
			}
		}
		return tensor.New(tensor.WithShape(n, in), tensor.WithBacking(x)), tensor.New(tensor.WithShape(n, out), tensor.WithBacking(y))
	}

	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(n, in), G.WithName("x"))
	y := G.NewMatrix(g, tensor.Float64, G.WithShape(n, out), G.WithName("y"))
	w := G.NewMatrix(g, tensor.Float64, G.WithShape(in, out), G.WithName("w"),
		G.WithValue(tensor.New(tensor.WithShape(in, out), tensor.Of(tensor.Float64))))
	pred, _ := ops.MatMul(x, w, false, false)
	loss, _ := ops.MSELoss(pred, y)

	adam, _ := ops.NewAdam(ops.DefaultAdam(0.1))
	tr, err := ops.NewTrainer(loss, G.Nodes{w}, adam, ops.CPU())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.Close()
	for step := 1; step <= 300; step++ {
		xb, yb := batch()
		l, err := tr.StepLoss(ops.Feeds{x: xb, y: yb})
		if err != nil {
			fmt.Println(err)
			return
		}
		if step == 1 || step == 300 {
			fmt.Printf("step %d: loss %.4f\n", step, l)
		}
	}
	fmt.Printf("w = %.2f\n", w.Value().Data())
	// Output:
	// step 1: loss 7.1897
	// step 300: loss 0.0000
	// w = [1.00 -2.00 0.50 3.00 -1.00 2.00]
}

// CheckDeviceGraph refuses Gorgonia's matrix product (its output buffer would be host memory) and
// accepts the same model written with MatMul.
func ExampleCheckDeviceGraph() {
	build := func(useGorgonia bool) *G.ExprGraph {
		g := G.NewGraph()
		x := G.NewMatrix(g, tensor.Float32, G.WithShape(4, 3), G.WithName("x"))
		w := G.NewMatrix(g, tensor.Float32, G.WithShape(3, 2), G.WithName("w"))
		y := G.NewMatrix(g, tensor.Float32, G.WithShape(4, 2), G.WithName("y"))
		var p *G.Node
		if useGorgonia {
			p, _ = G.Mul(x, w)
		} else {
			p, _ = ops.MatMul(x, w, false, false)
		}
		loss, _ := ops.MSELoss(p, y)
		G.Grad(loss, w)
		return g
	}
	err := ops.CheckDeviceGraph(build(true))
	fmt.Println("G.Mul:", errors.Is(err, ops.ErrUnsupported))
	fmt.Println("ops.MatMul:", ops.CheckDeviceGraph(build(false)))
	// Output:
	// G.Mul: true
	// ops.MatMul: <nil>
}
