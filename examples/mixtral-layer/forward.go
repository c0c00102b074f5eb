package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/expertrt/expertrt-go/internal/floats"
	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/hf"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// hfOptions are the flags shared by the forward and grad subcommands.
type hfOptions struct {
	weights, input, out, prefix string
	topK                        int
	dtype                       tensor.Dtype // compute dtype
	outDtype                    hf.DType     // stored dtype of the results
	backend                     ops.Backend  // where the layer runs (-device)
}

// parseHFFlags parses the flags of the forward and grad subcommands (name is the subcommand).
func parseHFFlags(name string, args []string, stderr io.Writer) (*hfOptions, error) {
	var o hfOptions
	var dtype, outDtype, device string
	fs := flag.NewFlagSet("mixtral-layer "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.weights, "weights", "", "weights: a .safetensors file, a sharded checkpoint's model.safetensors.index.json, or a folder holding either (Hugging Face Mixtral names; F32, F64, F16 or BF16)")
	fs.StringVar(&o.input, "input", "", "input .safetensors with hidden_states [T,H] (grad also needs grad_output [T,H])")
	fs.StringVar(&o.out, "out", "", "output .safetensors to write")
	fs.StringVar(&o.prefix, "prefix", "", "name prefix of the MoE layer in the weights, e.g. model.layers.0.")
	fs.IntVar(&o.topK, "top-k", 2, "experts per token (Mixtral: 2)")
	fs.StringVar(&dtype, "dtype", "float32", "compute dtype: float32, float64, or bfloat16 (weights and inputs loaded as bfloat16 without widening, experts on bfloat16, router logits and routing weights float32)")
	fs.StringVar(&outDtype, "out-dtype", "", "stored dtype of the results: float32, float64 or bfloat16 (default: the compute dtype)")
	fs.StringVar(&device, "device", "cpu", "where the layer runs: cpu, or cuda (a binary built with -tags "+cudaTag+")")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: mixtral-layer %s -weights W.safetensors -input X.safetensors -out Y.safetensors [-prefix P] [-top-k 2] [-dtype float32|float64|bfloat16]\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	for _, req := range []struct{ flag, val string }{{"weights", o.weights}, {"input", o.input}, {"out", o.out}} {
		if req.val == "" {
			return nil, fmt.Errorf("%s: -%s is required", name, req.flag)
		}
	}
	switch dtype {
	case "float32":
		o.dtype, o.outDtype = tensor.Float32, hf.F32
	case "float64":
		o.dtype, o.outDtype = tensor.Float64, hf.F64
	case "bfloat16", "bf16":
		o.dtype, o.outDtype = ops.BFloat16, hf.BF16
	default:
		return nil, fmt.Errorf("%s: unknown -dtype %q (want float32, float64 or bfloat16)", name, dtype)
	}
	if outDtype != "" {
		d, err := hf.ParseDType(outDtype)
		if err != nil || (d != hf.F32 && d != hf.F64 && d != hf.BF16) {
			return nil, fmt.Errorf("%s: unknown -out-dtype %q (want float32, float64 or bfloat16)", name, outDtype)
		}
		o.outDtype = d
	}
	if o.topK < 1 {
		return nil, fmt.Errorf("%s: -top-k must be >= 1, got %d", name, o.topK)
	}
	b, err := backendNamed(device)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	o.backend = b
	return &o, nil
}

// hfResult is what runHFLayer computes. Output has the leading shape of the input ([T,H] or
// [B,S,H]); Logits is [T,E] with T all tokens; GradX has the input's shape. Grads (gradients of
// sum(output * grad_output) w.r.t. the weights, in the layer's input-major layout) and GradX are nil
// for a forward-only run.
type hfResult struct {
	Output, Logits, GradX *tensor.Dense
	Grads                 *hf.LayerWeights
}

// runHFLayer runs one Mixtral MoE layer with weights w on hidden states x ([T,H] or [B,S,H], the
// weights' dtype) through a Gorgonia graph and a TapeMachine on backend b (nil: the CPU; weights and
// inputs are copied there): router logits = x·Routerᵀ, softmax over all E experts, top-k (ties to the
// lower index), renormalised weights, SwiGLU experts. bfloat16 weights run the layer in mixed precision
// (moe.Config.Dtype ops.BFloat16): bfloat16 inputs, outputs and gradients, float32 router logits. When gradOut is non-nil (same shape as x) it also
// computes the gradients of sum(output * gradOut) — no auxiliary loss — w.r.t. x and every weight, by
// back-propagating gradOut from the output (G.Backpropagate, which needs no Sum node and so runs on a
// device). This is the code path of both subcommands and of the parity tests.
func runHFLayer(w hf.LayerWeights, x, gradOut *tensor.Dense, topK int, b ops.Backend) (*hfResult, error) {
	E, H, _, err := w.Dims()
	if err != nil {
		return nil, err
	}
	dt := w.Router.Dtype()
	xs := x.Shape().Clone()
	if (len(xs) != 2 && len(xs) != 3) || xs[len(xs)-1] != H || xs.TotalSize() == 0 {
		return nil, fmt.Errorf("hidden_states has shape %v, want [T,%d] or [B,S,%d] with T >= 1 (H=%d from the weights)", xs, H, H, H)
	}
	if topK > E {
		return nil, fmt.Errorf("-top-k %d exceeds the %d experts of the weights", topK, E)
	}
	T := xs.TotalSize() / H
	x2, err := asMatrix(x, dt, T, H)
	if err != nil {
		return nil, fmt.Errorf("hidden_states: %w", err)
	}
	var gout2 *tensor.Dense
	if gradOut != nil {
		if !gradOut.Shape().Eq(xs) {
			return nil, fmt.Errorf("grad_output has shape %v, want the shape of hidden_states %v", gradOut.Shape(), xs)
		}
		if gout2, err = asMatrix(gradOut, dt, T, H); err != nil {
			return nil, fmt.Errorf("grad_output: %w", err)
		}
	}

	g := G.NewGraph()
	cfg := moe.Config{TopK: topK, Scoring: ops.SoftmaxTopK, Renormalize: true, Dtype: dt, Backend: b}
	layer, err := moe.NewLayerWithWeights(g, cfg, moe.Weights{Router: w.Router, W1: w.W1, W3: w.W3, W2: w.W2})
	if err != nil {
		return nil, err
	}
	xn := G.NewMatrix(g, dt, G.WithShape(T, H), G.WithName("hidden_states"))
	feeds := ops.Feeds{xn: x2}
	out, err := layer.Forward(xn)
	if err != nil {
		return nil, err
	}
	var gradNodes G.Nodes
	if gout2 != nil {
		gn := G.NewMatrix(g, dt, G.WithShape(T, H), G.WithName("grad_output"))
		feeds[gn] = gout2
		wrt := G.Nodes{xn, layer.Router, layer.W1, layer.W3, layer.W2}
		if gradNodes, err = G.Backpropagate(G.Nodes{out.Y}, G.Nodes{gn}, wrt); err != nil {
			return nil, fmt.Errorf("building gradients: %w", err)
		}
	}
	runner, err := ops.NewRunner(g, b)
	if err != nil {
		return nil, err
	}
	defer runner.Close()
	res := &hfResult{}
	err = runner.Run(feeds, func() error {
		var err error
		if res.Output, err = cloneValue(out.Y, xs...); err != nil {
			return fmt.Errorf("output: %w", err)
		}
		if res.Logits, err = cloneValue(out.Logits, T, E); err != nil {
			return fmt.Errorf("router_logits: %w", err)
		}
		if gradNodes != nil {
			vals := make([]*tensor.Dense, len(gradNodes))
			for i, n := range gradNodes {
				shape := n.Shape().Clone()
				if i == 0 {
					shape = xs
				}
				if vals[i], err = cloneValue(n, shape...); err != nil {
					return fmt.Errorf("gradient %d: %w", i, err)
				}
			}
			res.GradX = vals[0]
			res.Grads = &hf.LayerWeights{Router: vals[1], W1: vals[2], W3: vals[3], W2: vals[4]}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("running the layer: %w", err)
	}
	return res, nil
}

// asMatrix returns x as a fresh contiguous [T,H] tensor of dtype dt (converting float32<->float64).
func asMatrix(x *tensor.Dense, dt tensor.Dtype, T, H int) (*tensor.Dense, error) {
	data, err := floats.Of(x)
	if err != nil {
		return nil, err
	}
	if len(data) != T*H {
		return nil, fmt.Errorf("%d values, want %d", len(data), T*H)
	}
	return floats.Dense(dt, data, T, H), nil
}

// cloneValue copies a node's value (host or device memory) into a new contiguous host tensor of the
// given shape.
func cloneValue(n *G.Node, shape ...int) (*tensor.Dense, error) {
	d, ok := n.Value().(*tensor.Dense)
	if !ok || d == nil {
		return nil, fmt.Errorf("node %s has no tensor value (%T)", n.Name(), n.Value())
	}
	if b, err := ops.BackendFor(d); err != nil {
		return nil, err
	} else if b.Name() != ops.CPU().Name() {
		if d, err = b.ToHost(d); err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name(), err)
		}
	}
	if d.RequiresIterator() {
		d = d.Materialize().(*tensor.Dense)
	}
	vals, err := floats.Of(d)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name(), err)
	}
	c := floats.Dense(d.Dtype(), vals, d.Shape().Clone()...)
	if c.Shape().TotalSize() != tensor.Shape(shape).TotalSize() {
		return nil, fmt.Errorf("node %s has shape %v, want %v", n.Name(), c.Shape(), shape)
	}
	if err := c.Reshape(shape...); err != nil {
		return nil, err
	}
	return c, nil
}

// denseTensor converts a result tensor to an hf.Tensor named name, stored as dt.
func denseTensor(name string, d *tensor.Dense, dt hf.DType) hf.Tensor {
	return hf.Tensor{Name: name, Shape: append([]int(nil), d.Shape()...), Values: d.Data(), DType: dt}
}

// loadHFInputs opens the weights and the input file named by o and reads the weights (in o.dtype)
// and the named input tensors (in o.dtype, shapes as stored). Missing input tensors are errors that
// name the file and the tensor.
func loadHFInputs(o *hfOptions, names ...string) (hf.LayerWeights, []*tensor.Dense, error) {
	ck, err := hf.OpenCheckpoint(o.weights)
	if err != nil {
		return hf.LayerWeights{}, nil, fmt.Errorf("weights: %w", err)
	}
	defer ck.Close()
	w, err := hf.LoadMixtral(ck, o.prefix, o.dtype)
	if err != nil {
		return hf.LayerWeights{}, nil, fmt.Errorf("weights: %w", err)
	}
	in, err := hf.Open(o.input)
	if err != nil {
		return hf.LayerWeights{}, nil, fmt.Errorf("input: %w", err)
	}
	defer in.Close()
	vals := make([]*tensor.Dense, len(names))
	for i, n := range names {
		if _, ok := in.Info(n); !ok {
			have := in.Names()
			if len(have) > 6 {
				have = append(have[:6], fmt.Sprintf("... (%d in all)", len(have)))
			}
			return hf.LayerWeights{}, nil, fmt.Errorf("input: %s has no tensor %q (it has %s)", o.input, n, strings.Join(have, ", "))
		}
		var shape []int
		var backing any
		if o.dtype == ops.BFloat16 {
			v, s, err := in.ReadBF16(n)
			if err != nil {
				return hf.LayerWeights{}, nil, fmt.Errorf("input: %w", err)
			}
			backing, shape = v, s
		} else if o.dtype == tensor.Float64 {
			v, s, err := in.ReadFloat64(n)
			if err != nil {
				return hf.LayerWeights{}, nil, fmt.Errorf("input: %w", err)
			}
			backing, shape = v, s
		} else {
			v, s, err := in.ReadFloat32(n)
			if err != nil {
				return hf.LayerWeights{}, nil, fmt.Errorf("input: %w", err)
			}
			backing, shape = v, s
		}
		if len(shape) == 0 {
			return hf.LayerWeights{}, nil, fmt.Errorf("input: %q is a scalar, want [T,H]", n)
		}
		vals[i] = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(backing))
	}
	return w, vals, nil
}

// runForward implements `mixtral-layer forward`: reads W (HF Mixtral names) and X (hidden_states),
// writes output and router_logits to the -out file.
func runForward(args []string) error {
	o, err := parseHFFlags("forward", args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	w, in, err := loadHFInputs(o, "hidden_states")
	if err != nil {
		return err
	}
	res, err := runHFLayer(w, in[0], nil, o.topK, o.backend)
	if err != nil {
		return err
	}
	ts := []hf.Tensor{denseTensor("output", res.Output, o.outDtype), denseTensor("router_logits", res.Logits, o.outDtype)}
	if err := hf.WriteFile(o.out, ts, resultMetadata("forward", o)); err != nil {
		return err
	}
	E, H, F, _ := w.Dims()
	fmt.Fprintf(os.Stderr, "forward: T=%d H=%d F=%d E=%d top-k=%d %v -> %s\n", res.Logits.Shape()[0], H, F, E, o.topK, o.dtype, o.out)
	return nil
}

func resultMetadata(cmd string, o *hfOptions) map[string]string {
	return map[string]string{
		"format":   "pt",
		"producer": "expertrt-go mixtral-layer " + cmd,
		"top_k":    strconv.Itoa(o.topK),
		"dtype":    o.dtype.String(),
		"prefix":   o.prefix,
	}
}
