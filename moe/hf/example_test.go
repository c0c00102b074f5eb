package hf_test

import (
	"fmt"
	"log"
	"math"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/hf"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Load one MoE layer of a Hugging Face Mixtral checkpoint (here a small test fixture written by
// transformers) and run its forward pass in a Gorgonia graph.
func ExampleLoadMixtral() {
	const dir = "../../tests/fixtures/mixtral_e4k2/"
	ck, err := hf.OpenCheckpoint(dir + "weights.safetensors") // a file, a shard index or a folder
	if err != nil {
		log.Fatal(err)
	}
	defer ck.Close()
	w, err := hf.LoadMixtral(ck, "" /* e.g. "model.layers.0." */, tensor.Float64)
	if err != nil {
		log.Fatal(err)
	}
	E, H, F, err := w.Dims()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("E=%d H=%d F=%d\n", E, H, F)

	in, err := hf.Open(dir + "input.safetensors")
	if err != nil {
		log.Fatal(err)
	}
	defer in.Close()
	xs, shape, err := in.ReadFloat64("hidden_states")
	if err != nil {
		log.Fatal(err)
	}

	g := G.NewGraph()
	cfg := moe.Config{TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true} // Mixtral routing; sizes from the weights
	layer, err := moe.NewLayerWithWeights(g, cfg, moe.Weights{Router: w.Router, W1: w.W1, W3: w.W3, W2: w.W2})
	if err != nil {
		log.Fatal(err)
	}
	x := G.NewTensor(g, tensor.Float64, len(shape), G.WithShape(shape...), G.WithName("hidden_states"),
		G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(xs))))
	out, err := layer.Forward(x)
	if err != nil {
		log.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := ops.RunAll(vm); err != nil {
		log.Fatal(err)
	}
	fmt.Println("output:", out.Y.Shape())

	// transformers' own output for the same input (float64 reference).
	ref, err := hf.Open(dir + "expected_exact.safetensors")
	if err != nil {
		log.Fatal(err)
	}
	defer ref.Close()
	want, _, err := ref.ReadFloat64("output")
	if err != nil {
		log.Fatal(err)
	}
	maxDiff := 0.0
	for i, v := range out.Y.Value().Data().([]float64) {
		maxDiff = math.Max(maxDiff, math.Abs(v-want[i]))
	}
	fmt.Println("matches the reference within 1e-10:", maxDiff < 1e-10)
	// Output:
	// E=4 H=12 F=20
	// output: (7, 12)
	// matches the reference within 1e-10: true
}
