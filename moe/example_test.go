package moe_test

import (
	"fmt"
	"log"
	"math"
	"math/rand/v2"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Build a Mixtral-style layer in a Gorgonia graph, add the task loss and the router losses into one
// cost, and train it with Adam on a TapeMachine. (The README shows this code.)
func Example_train() {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(64, 8), G.WithName("x"))
	target := G.NewMatrix(g, tensor.Float32, G.WithShape(64, 8), G.WithName("target"))

	layer, err := moe.NewLayer(g, moe.MixtralConfig(8 /*H*/, 16 /*F*/, 4 /*E*/)) // top-2, softmax, renormalised
	if err != nil {
		log.Fatal(err)
	}
	out, err := layer.Forward(x) // out.Y [T,H]; out.AuxLoss; out.Routing.{Indices,Weights,Plan}
	if err != nil {
		log.Fatal(err)
	}
	mse, err := moe.MSE(out.Y, target)
	if err != nil {
		log.Fatal(err)
	}
	cost, err := out.Cost(mse) // mse + aux loss + z-loss: the terms whose coefficients are > 0
	if err != nil {
		log.Fatal(err)
	}
	var loss G.Value
	G.Read(mse, &loss) // read forward values before G.Grad: the backward pass reuses their buffers
	read := out.Read() // the layer output and the routing plan, as of the forward pass

	// G.Grad once per graph, with every loss in the one cost
	if _, err := G.Grad(cost, layer.Params()...); err != nil {
		log.Fatal(err)
	}

	vm := G.NewTapeMachine(g, G.BindDualValues(layer.Params()...))
	defer vm.Close()
	solver := G.NewAdamSolver(G.WithLearnRate(1e-2))
	var first, last float32
	for step := 0; step < 60; step++ {
		xs, ys := nextBatch(step)
		if err := G.Let(x, xs); err != nil {
			log.Fatal(err)
		}
		if err := G.Let(target, ys); err != nil {
			log.Fatal(err)
		}
		if err := ops.RunAll(vm); err != nil {
			log.Fatal(err)
		}
		if err := solver.Step(G.NodesToValueGrads(layer.Params())); err != nil {
			log.Fatal(err)
		}
		vm.Reset()
		last = float32(*loss.(*G.F32))
		if step == 0 {
			first = last
		}
	}
	load, err := read.ExpertLoad() // share of the last batch's routed slots per expert
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("loss fell by more than half:", last < first/2)
	fmt.Println("experts:", len(load), "output:", read.Y.Shape())
	// Output:
	// loss fell by more than half: true
	// experts: 4 output: (64, 8)
}

// Train the same layer through ops.Trainer, the loop that runs unchanged on a GPU: the parameters live
// on the backend given in Config.Backend, the losses are the project's (ops.MSELoss, the router losses
// added by Output.Cost with ops.AddLosses), the solver is ops.Adam, and the Trainer copies host batches
// to the device and releases each step's device memory. In the default build the only backend is the
// CPU. (The README shows this code.)
func Example_trainOnDevice() {
	dev := ops.CPU() // or a device: the backend "cuda" (GPU 0; "cuda:N" for GPU N) in a binary built with -tags expertrt_cuda
	if b, err := ops.LookupBackend("cuda"); err == nil {
		dev = b
	}
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(64, 8), G.WithName("x"))
	target := G.NewMatrix(g, tensor.Float32, G.WithShape(64, 8), G.WithName("target"))
	cfg := moe.MixtralConfig(8 /*H*/, 16 /*F*/, 4 /*E*/)
	cfg.Backend = dev // weights made on the host, copied to the device
	layer, err := moe.NewLayer(g, cfg)
	if err != nil {
		log.Fatal(err)
	}
	out, err := layer.Forward(x)
	if err != nil {
		log.Fatal(err)
	}
	mse, err := ops.MSELoss(out.Y, target) // or ops.SoftmaxCrossEntropy(logits, labels)
	if err != nil {
		log.Fatal(err)
	}
	cost, err := out.Cost(mse) // ops.AddLosses underneath: G.Add cannot add device scalars
	if err != nil {
		log.Fatal(err)
	}
	adam, err := ops.NewAdam(ops.DefaultAdam(1e-2)) // AdamW, clipping: ops.AdamConfig; or ops.NewSGD
	if err != nil {
		log.Fatal(err)
	}
	tr, err := ops.NewTrainer(cost, layer.Params(), adam, dev) // calls G.Grad; checks the graph for the device
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	var first, last float64
	for step := 0; step < 60; step++ {
		xs, ys := nextBatch(step)
		loss, err := tr.StepLoss(ops.Feeds{x: xs, target: ys}) // host batches; tr.Step reads nothing back
		if err != nil {
			log.Fatal(err)
		}
		if step == 0 {
			first = loss
		}
		last = loss
	}
	fmt.Println("cost fell by more than half:", last < first/2)
	// Output:
	// cost fell by more than half: true
}

// nextBatch returns one fixed batch of inputs and targets (target = sin of a fixed mix of x) for the
// examples.
func nextBatch(int) (*tensor.Dense, *tensor.Dense) {
	rng := rand.New(rand.NewPCG(1, 2))
	xs := make([]float32, 64*8)
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	ys := make([]float32, 64*8)
	for t := 0; t < 64; t++ {
		for h := 0; h < 8; h++ {
			ys[t*8+h] = float32(math.Sin(float64(xs[t*8+h] + 0.5*xs[t*8+(h+1)%8])))
		}
	}
	return tensor.New(tensor.WithShape(64, 8), tensor.WithBacking(xs)), tensor.New(tensor.WithShape(64, 8), tensor.WithBacking(ys))
}

// Mixed precision: float32 master weights, data and losses; the experts compute on bfloat16 (rows
// packed into bfloat16 by the dispatch, bfloat16 products with float32 accumulation, fused SwiGLU);
// router logits, routing weights and the output stay float32. (The README shows this code.)
func Example_mixedPrecision() {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(64, 8), G.WithName("x"))
	target := G.NewMatrix(g, tensor.Float32, G.WithShape(64, 8), G.WithName("target"))
	cfg := moe.MixtralConfig(8 /*H*/, 16 /*F*/, 4 /*E*/)
	cfg.Dtype = ops.BFloat16 // mixed precision; the parameters are float32 master weights
	layer, err := moe.NewLayer(g, cfg)
	if err != nil {
		log.Fatal(err)
	}
	out, err := layer.Forward(x) // float32 in, float32 out; bfloat16 inside the experts
	if err != nil {
		log.Fatal(err)
	}
	mse, err := ops.MSELoss(out.Y, target) // losses and the cost stay float32
	if err != nil {
		log.Fatal(err)
	}
	cost, err := out.Cost(mse)
	if err != nil {
		log.Fatal(err)
	}
	adam, err := ops.NewAdam(ops.DefaultAdam(1e-2))
	if err != nil {
		log.Fatal(err)
	}
	tr, err := ops.NewTrainer(cost, layer.Params(), adam, nil) // on the CPU it adds bfloat16 with ops.HostEngine
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	var first, last float64
	for step := 0; step < 60; step++ {
		xs, ys := nextBatch(step)
		if last, err = tr.StepLoss(ops.Feeds{x: xs, target: ys}); err != nil {
			log.Fatal(err)
		}
		if step == 0 {
			first = last
		}
	}
	fmt.Println("loss fell by more than half:", last < first/2)
	fmt.Println("master weights:", layer.W1.Dtype(), "logits:", out.Logits.Dtype())
	// Output:
	// loss fell by more than half: true
	// master weights: float32 logits: float32
}

// A [B,S,H] input with padding: the token mask leaves the padding tokens out of the load-balancing
// loss, as transformers' load_balancing_loss_func does with its attention mask.
func ExampleLayer_ForwardMasked() {
	g := G.NewGraph()
	layer, err := moe.NewLayer(g, moe.MixtralConfig(8, 16, 4))
	if err != nil {
		log.Fatal(err)
	}
	xs, _ := nextBatch(0) // 64 tokens as 2 sequences of 32
	if err := xs.Reshape(2, 32, 8); err != nil {
		log.Fatal(err)
	}
	x := G.NewTensor(g, tensor.Float32, 3, G.WithShape(2, 32, 8), G.WithName("x"), G.WithValue(xs))
	keep := make([]int32, 64)
	for i := range keep {
		if i%32 < 20 { // the last 12 positions of each sequence are padding
			keep[i] = 1
		}
	}
	mask := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 32), G.WithName("attention_mask"),
		G.WithValue(tensor.New(tensor.WithShape(2, 32), tensor.WithBacking(keep))))
	out, err := layer.ForwardMasked(x, mask)
	if err != nil {
		log.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := ops.RunAll(vm); err != nil {
		log.Fatal(err)
	}
	fmt.Println("output:", out.Y.Shape(), "logits:", out.Logits.Shape())
	aux := float64(*out.AuxLoss.Value().(*G.F32))
	fmt.Println("aux loss near coef*K = 0.04:", math.Abs(aux-0.04) < 0.02)
	// Output:
	// output: (2, 32, 8) logits: (64, 4)
	// aux loss near coef*K = 0.04: true
}
