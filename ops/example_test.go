package ops_test

import (
	"errors"
	"fmt"
	"log"
	"math"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Route three tokens over four experts (top-2, Mixtral scoring), pack the token rows expert-major,
// and combine them back with the routing weights. The weights of a token sum to 1, so combining the
// unchanged packed rows gives x back.
func Example() {
	g := G.NewGraph()
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 4), G.WithName("logits"),
		G.WithValue(tensor.New(tensor.WithShape(3, 4), tensor.WithBacking([]float64{
			1, 3, 2, 0, // token 0: experts 1, 2
			2, 0, 2, 1, // token 1: experts 0, 2 (a tie goes to the lower index)
			0, 1, -1, 4, // token 2: experts 3, 1
		}))))
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 2), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6}))))

	r, err := ops.Route(logits, ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true})
	if err != nil {
		log.Fatal(err)
	}
	packed, err := ops.Dispatch(x, r) // [T*K, H], expert-major
	if err != nil {
		log.Fatal(err)
	}
	y, err := ops.Combine(packed, r) // [T, H]
	if err != nil {
		log.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := ops.RunAll(m); err != nil {
		log.Fatal(err)
	}
	fmt.Println("experts:", r.Indices.Value().Data())
	fmt.Printf("weights: %.4f\n", r.Weights.Value().Data())
	plan, err := ops.NewPlanView(r.Plan.Value().Data().([]int32), 3, 2, 4)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("rows per expert:", plan.Counts)
	fmt.Println("packed:", packed.Value().Data())
	fmt.Printf("y: %.4f\n", y.Value().Data())
	// Output:
	// experts: [1 2 0 2 3 1]
	// weights: [0.7311 0.2689 0.5000 0.5000 0.9526 0.0474]
	// rows per expert: [1 2 2 1]
	// packed: [3 4 1 2 5 6 1 2 3 4 5 6]
	// y: [1.0000 2.0000 3.0000 4.0000 5.0000 6.0000]
}

// Errors wrap the sentinel errors of this package. Gorgonia's machines report an op's error inside their
// own error type, which errors.Is cannot see through; RunAll (or MachineError) makes it visible.
func ExampleRunAll() {
	g := G.NewGraph()
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("logits"),
		G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{0, 1, 2, 3, math.NaN(), 5}))))
	if _, err := ops.Route(logits, ops.RouteConfig{K: 2}); err != nil {
		log.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	err := ops.RunAll(m)
	fmt.Println("NaN logits:", errors.Is(err, ops.ErrNaN))

	_, err = ops.Route(G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3)), ops.RouteConfig{K: 4})
	fmt.Println("k > E:", errors.Is(err, ops.ErrConfig))
	// Output:
	// NaN logits: true
	// k > E: true
}
