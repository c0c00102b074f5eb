package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/expertrt/expertrt-go/moe/hf"
)

// runGrad implements `mixtral-layer grad`: like forward, and X must also hold grad_output (the shape
// of hidden_states). The -out file gets output, router_logits, grad_hidden_states and grad.<name> for
// every weight name (prefix included): the gradients of sum(output * grad_output), no auxiliary loss,
// computed through the Gorgonia graph by back-propagating grad_output on a TapeMachine. Weight gradients are written in
// the Hugging Face layouts (gate [E,H], w1/w3 [F,H], w2 [H,F]).
func runGrad(args []string) error {
	o, err := parseHFFlags("grad", args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	w, in, err := loadHFInputs(o, "hidden_states", "grad_output")
	if err != nil {
		return err
	}
	res, err := runHFLayer(w, in[0], in[1], o.topK, o.backend)
	if err != nil {
		return err
	}
	ts, err := gradTensors(res, o.prefix, o.outDtype)
	if err != nil {
		return err
	}
	if err := hf.WriteFile(o.out, ts, resultMetadata("grad", o)); err != nil {
		return err
	}
	E, H, F, _ := w.Dims()
	fmt.Fprintf(os.Stderr, "grad: T=%d H=%d F=%d E=%d top-k=%d %v -> %s\n", res.Logits.Shape()[0], H, F, E, o.topK, o.dtype, o.out)
	return nil
}

// gradTensors lists what the grad subcommand writes.
func gradTensors(res *hfResult, prefix string, dt hf.DType) ([]hf.Tensor, error) {
	if res.Grads == nil || res.GradX == nil {
		return nil, fmt.Errorf("no gradients were computed")
	}
	ts := []hf.Tensor{
		denseTensor("output", res.Output, dt),
		denseTensor("router_logits", res.Logits, dt),
		denseTensor("grad_hidden_states", res.GradX, dt),
	}
	gw, err := hf.MixtralTensors(*res.Grads, "grad."+prefix, dt)
	if err != nil {
		return nil, err
	}
	return append(ts, gw...), nil
}
