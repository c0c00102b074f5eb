package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/expertrt/expertrt-go/moe/hf"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The route subcommand: routing checked from files.
//
//	mixtral-layer route -in IN.safetensors -out OUT.safetensors -top-k K -scoring softmax-topk|topk-softmax|sigmoid
//	    [-renormalize=true|false] [-groups G -topk-groups g] [-group-mask exclude|zero] [-scale s]
//	    [-capacity C | -capacity-factor f] [-drop-policy position|probs] [-index-dtype I64|I32] [-device cpu|cuda]
//
// IN holds logits [T,E] (F32, F64 or BF16; F64 routes in float64, the others in float32) and, for the
// sigmoid scoring's selection bias, bias [E]. OUT gets indices [T,K] (I64 by default, as transformers
// returns them, or I32), weights [T,K] (the compute dtype; 0 for a dropped slot) and dropped [T,K]
// (I32, 1 for a slot a capacity dropped). The diagnostics go to stdout (-json: one JSON object).

// routeOptions are the parsed flags of the route subcommand.
type routeOptions struct {
	in, out    string
	cfg        ops.RouteConfig
	indexDtype hf.DType
	backend    ops.Backend
	jsonOut    bool
}

func parseRouteFlags(args []string, stderr io.Writer) (*routeOptions, error) {
	o := &routeOptions{}
	var scoring, policy, mask, indexDtype, device string
	fs := flag.NewFlagSet("mixtral-layer route", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.in, "in", "", "input .safetensors with logits [T,E] (F32, F64 or BF16) and, optionally, bias [E] (sigmoid scoring)")
	fs.StringVar(&o.out, "out", "", "output .safetensors: indices [T,K], weights [T,K], dropped [T,K]")
	fs.IntVar(&o.cfg.K, "top-k", 2, "experts per token")
	fs.StringVar(&scoring, "scoring", "softmax-topk", "softmax-topk, topk-softmax or sigmoid")
	fs.BoolVar(&o.cfg.Renormalize, "renormalize", true, "divide the k weights by their sum (softmax-topk, sigmoid: norm_topk_prob; topk-softmax always sums to 1)")
	fs.IntVar(&o.cfg.Groups, "groups", 0, "sigmoid: split the experts into this many groups (n_group; 0 or 1: none)")
	fs.IntVar(&o.cfg.TopKGroups, "topk-groups", 0, "sigmoid: groups kept per token (topk_group)")
	fs.StringVar(&mask, "group-mask", "exclude", "sigmoid: dropped groups' experts are never chosen (exclude: transformers 5.17, DeepSeek) or score 0 (zero: earlier transformers releases)")
	fs.Float64Var(&o.cfg.Scale, "scale", 1, "weights are multiplied by this (routed_scaling_factor)")
	fs.IntVar(&o.cfg.Capacity, "capacity", 0, "slots per expert (0: dropless)")
	fs.Float64Var(&o.cfg.CapacityFactor, "capacity-factor", 0, "capacity = ceil(f * T*K / E) (0: dropless)")
	fs.StringVar(&policy, "drop-policy", "position", "which slots keep their place: position (token order) or probs (largest weights)")
	fs.StringVar(&indexDtype, "index-dtype", "I64", "stored dtype of indices: I64 or I32")
	fs.StringVar(&device, "device", "cpu", "where routing runs: cpu, or cuda (a binary built with -tags "+cudaTag+")")
	fs.BoolVar(&o.jsonOut, "json", false, "print the diagnostics as one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mixtral-layer route -in IN.safetensors -out OUT.safetensors -top-k K -scoring softmax-topk|topk-softmax|sigmoid [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("route: unexpected argument %q", fs.Arg(0))
	}
	if o.in == "" || o.out == "" {
		return nil, fmt.Errorf("route: -in and -out are required")
	}
	var err error
	if o.cfg.Scoring, err = ops.ParseScoring(scoring); err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	if o.cfg.DropPolicy, err = ops.ParseDropPolicy(policy); err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	if o.cfg.GroupMask, err = ops.ParseGroupMask(mask); err != nil {
		return nil, fmt.Errorf("route: -group-mask: %w", err)
	}
	switch hf.DType(indexDtype) {
	case hf.I64, hf.I32:
		o.indexDtype = hf.DType(indexDtype)
	default:
		return nil, fmt.Errorf("route: unknown -index-dtype %q (want I64 or I32): %w", indexDtype, ops.ErrConfig)
	}
	if o.cfg.Scale == 1 {
		o.cfg.Scale = 0 // the same weights; keeps the configuration's default form
	}
	if o.backend, err = backendNamed(device); err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	return o, nil
}

// routeResult is what routeFile computes (host tensors).
type routeResult struct {
	Indices *tensor.Dense // [T,K] int32
	Weights *tensor.Dense // [T,K] float, 0 for dropped slots
	Dropped []int32       // [T*K] 0/1
	Stats   ops.RoutingStats
}

// routeLogits routes logits [T,E] (with an optional bias [E]) under cfg on backend b through a Gorgonia
// graph (ops.RouteBiased, ops.RoutingStatsOf) and returns the results on the host.
func routeLogits(logits, bias *tensor.Dense, cfg ops.RouteConfig, b ops.Backend) (*routeResult, error) {
	T, E := logits.Shape()[0], logits.Shape()[1]
	dt := logits.Dtype()
	g := G.NewGraph()
	ln := G.NewMatrix(g, dt, G.WithShape(T, E), G.WithName("logits"))
	feeds := ops.Feeds{ln: logits}
	var bn *G.Node
	if bias != nil {
		bn = G.NewVector(g, dt, G.WithShape(E), G.WithName("bias"))
		feeds[bn] = bias
	}
	r, err := ops.RouteBiased(ln, bn, cfg)
	if err != nil {
		return nil, err
	}
	stats, err := ops.RoutingStatsOf(r)
	if err != nil {
		return nil, err
	}
	runner, err := ops.NewRunner(g, b)
	if err != nil {
		return nil, err
	}
	defer runner.Close()
	res := &routeResult{}
	err = runner.Run(feeds, func() error {
		host := func(n *G.Node) (*tensor.Dense, error) {
			d, ok := n.Value().(*tensor.Dense)
			if !ok {
				return nil, fmt.Errorf("node %s has no tensor value", n.Name())
			}
			bk, err := ops.BackendFor(d)
			if err != nil {
				return nil, err
			}
			return bk.ToHost(d)
		}
		var plan *tensor.Dense
		if res.Indices, err = host(r.Indices); err != nil {
			return err
		}
		if res.Weights, err = host(r.Weights); err != nil {
			return err
		}
		if plan, err = host(r.Plan); err != nil {
			return err
		}
		pv, err := ops.NewPlanView(plan.Data().([]int32), T, cfg.K, E)
		if err != nil {
			return err
		}
		res.Dropped = make([]int32, T*cfg.K)
		for s := range res.Dropped {
			if pv.Dropped(s) {
				res.Dropped[s] = 1
				switch w := res.Weights.Data().(type) {
				case []float32:
					w[s] = 0
				case []float64:
					w[s] = 0
				}
			}
		}
		res.Stats, err = ops.ReadRoutingStats(stats.Value(), T, cfg.K)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	return res, nil
}

// readRouteInput reads logits [T,E] and the optional bias [E] of IN: F64 as float64, F32 and BF16 as
// float32.
func readRouteInput(path string) (logits, bias *tensor.Dense, err error) {
	f, err := hf.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	info, ok := f.Info("logits")
	if !ok {
		return nil, nil, fmt.Errorf("%s holds no tensor \"logits\" (want logits [T,E])", path)
	}
	if len(info.Shape) != 2 || info.Shape[0] < 1 || info.Shape[1] < 1 {
		return nil, nil, fmt.Errorf("%s: logits have shape %v, want [T,E]: %w", path, info.Shape, ops.ErrShape)
	}
	read := func(name string, shape ...int) (*tensor.Dense, error) {
		switch info.DType {
		case hf.F64:
			v, _, err := f.ReadFloat64(name)
			if err != nil {
				return nil, err
			}
			return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v)), nil
		case hf.F32, hf.BF16:
			v, _, err := f.ReadFloat32(name)
			if err != nil {
				return nil, err
			}
			return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v)), nil
		}
		return nil, fmt.Errorf("%s: %s has dtype %s, want F32, F64 or BF16: %w", path, name, info.DType, ops.ErrDtype)
	}
	if logits, err = read("logits", info.Shape...); err != nil {
		return nil, nil, err
	}
	if bi, ok := f.Info("bias"); ok {
		if len(bi.Shape) != 1 || bi.Shape[0] != info.Shape[1] {
			return nil, nil, fmt.Errorf("%s: bias has shape %v, want [%d]: %w", path, bi.Shape, info.Shape[1], ops.ErrShape)
		}
		if bias, err = read("bias", bi.Shape...); err != nil {
			return nil, nil, err
		}
	}
	return logits, bias, nil
}

// statsJSON is the diagnostics object -json prints.
type statsJSON struct {
	T            int       `json:"tokens"`
	E            int       `json:"experts"`
	K            int       `json:"top_k"`
	Config       string    `json:"config"`
	Capacity     int       `json:"capacity"`
	Counts       []int     `json:"expert_counts"`
	Fractions    []float64 `json:"expert_fractions"`
	MaxOverMean  float64   `json:"max_over_mean_load"`
	CV           float64   `json:"load_cv"`
	DroppedSlots int       `json:"dropped_slots"`
	Entropy      float64   `json:"mean_router_entropy"`
}

func runRoute(args []string, stdout, stderr io.Writer) error {
	o, err := parseRouteFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logits, bias, err := readRouteInput(o.in)
	if err != nil {
		return fmt.Errorf("route: %w", err)
	}
	if bias != nil && o.cfg.Scoring != ops.Sigmoid {
		return fmt.Errorf("route: %s holds a bias, which only the sigmoid scoring uses (got -scoring %v): %w", o.in, o.cfg.Scoring, ops.ErrConfig)
	}
	T, E := logits.Shape()[0], logits.Shape()[1]
	if err := o.cfg.Validate(E); err != nil {
		return fmt.Errorf("route: %w", err)
	}
	capacity, err := o.cfg.CapacityFor(T, E)
	if err != nil {
		return fmt.Errorf("route: %w", err)
	}
	res, err := routeLogits(logits, bias, o.cfg, o.backend)
	if err != nil {
		return fmt.Errorf("route: %w", err)
	}
	idx := res.Indices.Data().([]int32)
	var indices hf.Tensor
	if o.indexDtype == hf.I64 {
		v := make([]int64, len(idx))
		for i, e := range idx {
			v[i] = int64(e)
		}
		indices = hf.Tensor{Name: "indices", Shape: []int{T, o.cfg.K}, Values: v, DType: hf.I64}
	} else {
		indices = hf.Tensor{Name: "indices", Shape: []int{T, o.cfg.K}, Values: idx, DType: hf.I32}
	}
	wdt := hf.F32
	if res.Weights.Dtype() == tensor.Float64 {
		wdt = hf.F64
	}
	ts := []hf.Tensor{
		indices,
		{Name: "weights", Shape: []int{T, o.cfg.K}, Values: res.Weights.Data(), DType: wdt},
		{Name: "dropped", Shape: []int{T, o.cfg.K}, Values: res.Dropped, DType: hf.I32},
	}
	md := map[string]string{"format": "pt", "producer": "expertrt-go mixtral-layer route", "config": o.cfg.String(), "capacity": strconv.Itoa(capacity)}
	if err := hf.WriteFile(o.out, ts, md); err != nil {
		return fmt.Errorf("route: %w", err)
	}
	s := res.Stats
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		return enc.Encode(statsJSON{T: T, E: E, K: o.cfg.K, Config: o.cfg.String(), Capacity: capacity, Counts: s.Counts,
			Fractions: s.Fractions, MaxOverMean: s.MaxOverMean, CV: s.CV, DroppedSlots: s.Dropped, Entropy: s.Entropy})
	}
	fmt.Fprintf(stdout, "route: T=%d E=%d %v capacity=%d -> %s\n  %v\n", T, E, o.cfg, capacity, o.out, s)
	return nil
}
