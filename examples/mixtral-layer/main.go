// Command mixtral-layer trains a Mixtral-style MoE layer on the CPU inside a Gorgonia graph.
//
// The default mode learns a fixed random "teacher" MoE layer: each step draws a fresh batch x, the
// teacher gives the target y*, and the student (same shape, other seed) minimises mean((y - y*)^2)
// plus the load-balancing and z losses with Adam. Progress lines show step, task loss, aux loss and
// the share of routed slots per expert.
//
//	go run ./examples/mixtral-layer                     # train with defaults (< 1 min on 2 cores)
//	go run ./examples/mixtral-layer -steps 500 -json    # one JSON summary at the end
//	go run ./examples/mixtral-layer -expert-parallel 4  # experts split over 4 in-process ranks (ep.go)
//	go run ./examples/mixtral-layer forward -weights W.safetensors -input X.safetensors -out Y.safetensors
//	go run ./examples/mixtral-layer grad    -weights W.safetensors -input X.safetensors -out Y.safetensors
package main

import (
	"fmt"
	"os"
)

func main() {
	var err error
	args := os.Args[1:]
	switch {
	case len(args) > 0 && args[0] == "forward":
		err = runForward(args[1:])
	case len(args) > 0 && args[0] == "grad":
		err = runGrad(args[1:])
	case len(args) > 0 && args[0] == "train":
		err = runTrain(args[1:])
	case len(args) > 0 && args[0] == "ep":
		err = runEP(args[1:])
	case len(args) > 0 && args[0] == "ep-bench":
		err = runEPBench(args[1:])
	case epRequested(args):
		err = runEP(args)
	default:
		err = runTrain(args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mixtral-layer:", err)
		os.Exit(1)
	}
}
