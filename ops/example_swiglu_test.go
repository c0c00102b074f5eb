package ops_test

import (
	"fmt"
	"log"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The hidden activation of SwiGLU experts as one op: GroupedSwiGLU gives what SwiGLU of the two grouped
// products gives (on cudaops in one GEMM launch), here for two tokens routed to one of two experts each: silu(1+2)·2 and silu(3-4)·6.
func ExampleGroupedSwiGLU() {
	g := G.NewGraph()
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("logits"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{2, 0, 0, 2}))))
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{1, 2, 3, 4}))))
	// [E=2, H=2, F=1]: expert 0's gate sums the inputs, expert 1's takes their difference; up doubles.
	w1 := G.NewTensor(g, tensor.Float64, 3, G.WithShape(2, 2, 1), G.WithName("w1"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2, 1), tensor.WithBacking([]float64{1, 1, 1, -1}))))
	w3 := G.NewTensor(g, tensor.Float64, 3, G.WithShape(2, 2, 1), G.WithName("w3"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2, 1), tensor.WithBacking([]float64{2, 0, 2, 0}))))

	r, err := ops.Route(logits, ops.RouteConfig{K: 1, Scoring: ops.SoftmaxTopK})
	if err != nil {
		log.Fatal(err)
	}
	packed, err := ops.Dispatch(x, r)
	if err != nil {
		log.Fatal(err)
	}
	fused, err := ops.GroupedSwiGLU(packed, w1, w3, r)
	if err != nil {
		log.Fatal(err)
	}
	gate, err := ops.GroupedMatMul(packed, w1, r)
	if err != nil {
		log.Fatal(err)
	}
	up, err := ops.GroupedMatMul(packed, w3, r)
	if err != nil {
		log.Fatal(err)
	}
	unfused, err := ops.SwiGLU(gate, up)
	if err != nil {
		log.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := ops.RunAll(m); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("fused:   %.4f\n", fused.Value().Data())
	fmt.Printf("unfused: %.4f\n", unfused.Value().Data())
	// Output:
	// fused:   [5.7154 -1.6136]
	// unfused: [5.7154 -1.6136]
}
