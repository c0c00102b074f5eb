// Command mixtral-layer trains a Mixtral-style MoE layer on the CPU inside a Gorgonia graph.
//
// The default mode learns a fixed random "teacher" MoE layer: each step draws a fresh batch x, the
// teacher gives the target y*, and the student (same shape, other seed) minimises mean((y - y*)^2)
// plus the load-balancing and z losses with Adam. Progress lines show step, task loss, load-balancing
// loss, z-loss and the share of routed slots per expert.
//
//	go run ./examples/mixtral-layer                     # train with defaults (< 1 min on 2 cores)
//	go run ./examples/mixtral-layer -steps 500 -json    # one JSON summary at the end
//	go run ./examples/mixtral-layer -expert-parallel 4  # experts split over 4 in-process ranks (ep.go)
//	go run ./examples/mixtral-layer forward -weights W.safetensors -input X.safetensors -out Y.safetensors
//	go run ./examples/mixtral-layer grad    -weights W.safetensors -input X.safetensors -out Y.safetensors
//	go run ./examples/mixtral-layer route   -in LOGITS.safetensors -out ROUTING.safetensors -top-k 8 -scoring sigmoid -groups 8 -topk-groups 4
//	go run ./examples/mixtral-layer -h                  # subcommands and flags
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// subcommands lists what run accepts as the first argument (train is the default).
const subcommands = `usage: mixtral-layer [train] [flags]                             train a layer to match a teacher layer (default)
       mixtral-layer forward -weights W -input X -out Y [flags]   run one MoE layer of a Hugging Face Mixtral checkpoint
       mixtral-layer grad    -weights W -input X -out Y [flags]   ... and its gradients
       mixtral-layer route   -in IN -out OUT [flags]              route router logits from a file
       mixtral-layer help                                         this text
Run "mixtral-layer <subcommand> -h" for the flags of a subcommand.
`

// run executes the command line args and returns the exit status: 0 on success and for -h, 2 for an
// unknown subcommand, 1 for any other error (printed to stderr).
func run(args []string, stdout, stderr io.Writer) int {
	cmd, rest := "train", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, rest = args[0], args[1:]
	}
	var err error
	if cmd == "train" && epRequested(rest) {
		cmd = "ep"
	}
	switch cmd {
	case "train":
		err = runTrain(rest, stderr)
	case "forward":
		err = runForward(rest)
	case "grad":
		err = runGrad(rest)
	case "route":
		err = runRoute(rest, stdout, stderr)
	case "ep":
		err = runEP(rest)
	case "ep-bench":
		err = runEPBench(rest)
	case "help":
		fmt.Fprint(stdout, subcommands)
		return 0
	default:
		fmt.Fprintf(stderr, "mixtral-layer: unknown subcommand %q\n%s", cmd, subcommands)
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintln(stderr, "mixtral-layer:", err)
		return 1
	}
	return 0
}
