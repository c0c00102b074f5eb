// Command bench times the MoE routing kernels of one ops.Backend and compares their bandwidth with a
// plain copy measured in the same run:
//
//	go run ./bench -op dispatch -tokens 4096 -hidden 4096 -experts 16 -top-k 2 [-json]
//
// See bench/README.md for the ops, the byte counts and the copy baseline.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// config is the parsed command line.
type config struct {
	ops            []string
	backward       bool
	shape          shape
	deviceName     string
	reps, warmup   int
	threads        int
	jsonOut        bool
	rowCopy        bool
	cpuProfile     string
	gemmVariants   string
	dtype, scoring string
	groupMask      string
	dropPolicy     string
	layer          layerFlags // whole-layer ops (layer.go)
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{}
	var opList string
	fs.StringVar(&opList, "op", "dispatch", "op(s) to time, comma-separated: "+strings.Join(append(opNames(), layerOpNames()...), ", "))
	fs.BoolVar(&c.backward, "backward", false, "time the backward variant (-bwd) of each op")
	fs.IntVar(&c.shape.Tokens, "tokens", 4096, "tokens T")
	fs.IntVar(&c.shape.Hidden, "hidden", 4096, "hidden size H")
	fs.IntVar(&c.shape.Experts, "experts", 16, "experts E")
	fs.IntVar(&c.shape.TopK, "top-k", 2, "experts per token k")
	fs.IntVar(&c.shape.FFN, "ffn", 0, "grouped matmul output width F (0: same as -hidden)")
	fs.BoolVar(&c.shape.Skew, "skew", false, "routing: half the tokens go to expert 0 (a skewed load)")
	fs.StringVar(&c.dtype, "dtype", "float32", "float32, float64, or bfloat16 (rows bfloat16; logits, routing weights and expert-weight gradients float32)")
	fs.StringVar(&c.scoring, "scoring", "softmax-topk", "routing: softmax-topk, topk-softmax or sigmoid (with a random selection bias)")
	fs.BoolVar(&c.shape.Renormalize, "renormalize", true, "softmax-topk, sigmoid: renormalise the k weights")
	fs.IntVar(&c.shape.Groups, "groups", 0, "sigmoid: experts in this many groups (n_group; 0: none)")
	fs.IntVar(&c.shape.TopKGroups, "topk-groups", 0, "sigmoid: groups kept per token (topk_group)")
	fs.StringVar(&c.groupMask, "group-mask", "exclude", "sigmoid: dropped groups' experts are never chosen (exclude, transformers 5.17) or score 0 (zero, earlier transformers)")
	fs.Float64Var(&c.shape.Scale, "scale", 0, "routing weights times this (0: 1)")
	fs.IntVar(&c.shape.Capacity, "capacity", 0, "slots per expert of every plan (0: dropless)")
	fs.Float64Var(&c.shape.CapacityFactor, "capacity-factor", 0, "capacity = ceil(f * T*k / E) (0: dropless)")
	fs.StringVar(&c.dropPolicy, "drop-policy", "position", "over capacity keep the first slots (position) or the largest weights (probs)")
	fs.Uint64Var(&c.shape.Seed, "seed", 1, "seed of the random inputs")
	fs.StringVar(&c.deviceName, "device", "cpu", "device: "+strings.Join(deviceNames(), ", "))
	fs.IntVar(&c.reps, "reps", 20, "timed repetitions (the median is reported)")
	fs.IntVar(&c.warmup, "warmup", 3, "untimed repetitions first")
	fs.IntVar(&c.threads, "threads", 0, "GOMAXPROCS for the CPU kernels and the copy (0: leave as is)")
	fs.BoolVar(&c.jsonOut, "json", false, "print one JSON object")
	fs.BoolVar(&c.rowCopy, "rowcopy", false, "also time a row-by-row copy (diagnostic, CPU)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the timed repetitions to this file")
	c.layer.register(fs)
	fs.StringVar(&c.gemmVariants, "gemm-variants", "", "time every op once per GEMM tile configuration: a comma-separated list, or all (the device's configurations of the dtype's class)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, name := range strings.Split(opList, ",") {
		if name = strings.TrimSpace(name); name != "" {
			c.ops = append(c.ops, name)
		}
	}
	if len(c.ops) == 0 {
		return nil, fmt.Errorf("-op is empty")
	}
	switch c.dtype {
	case "float32":
		c.shape.Dtype = tensor.Float32
	case "float64":
		c.shape.Dtype = tensor.Float64
	case "bfloat16", "bf16":
		c.shape.Dtype = ops.BFloat16
	default:
		return nil, fmt.Errorf("-dtype must be float32, float64 or bfloat16, got %q", c.dtype)
	}
	var err error
	if c.shape.Scoring, err = ops.ParseScoring(c.scoring); err != nil {
		return nil, err
	}
	if c.shape.DropPolicy, err = ops.ParseDropPolicy(c.dropPolicy); err != nil {
		return nil, err
	}
	if c.shape.GroupMask, err = ops.ParseGroupMask(c.groupMask); err != nil {
		return nil, err
	}
	if c.reps < 1 || c.warmup < 0 || c.threads < 0 {
		return nil, fmt.Errorf("need -reps >= 1, -warmup >= 0, -threads >= 0")
	}
	return c, c.shape.validate()
}

// run executes the benchmarks of c and writes their report to stdout.
func run(c *config, stdout io.Writer) error {
	if hasLayerOp(c.ops) {
		return runLayerOps(c, stdout)
	}
	if c.threads > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(c.threads))
	}
	specs := make([]opSpec, 0, len(c.ops))
	for _, name := range c.ops {
		spec, err := lookupOp(name, c.backward)
		if err != nil {
			return err
		}
		specs = append(specs, spec)
	}
	dev, err := openDevice(c.deviceName)
	if err != nil {
		return err
	}
	e, err := newEnv(dev, c.shape)
	if err != nil {
		return err
	}
	defer e.Close()
	variants := []string{""}
	gd, _ := dev.(gemmVariantDevice)
	if c.gemmVariants != "" {
		if gd == nil {
			return fmt.Errorf("-gemm-variants: device %s has no GEMM tile configurations", dev.Name())
		}
		if variants, err = gemmVariantList(gd, c.gemmVariants, c.shape.Dtype); err != nil {
			return err
		}
	}
	var results []result
	for _, v := range variants {
		vdev := dev
		if v != "" {
			if vdev, err = gd.WithGemmVariant(v); err != nil {
				return err
			}
		}
		e.useDevice(vdev)
		for _, spec := range specs {
			wl, err := spec.prepare(e)
			if err != nil {
				return fmt.Errorf("%s: prepare: %w", spec.name, err)
			}
			runtime.GC()
			stop, err := startProfile(c.cpuProfile, spec.name, len(specs) > 1)
			if err != nil {
				return err
			}
			t, err := measure(vdev, wl, c.warmup, c.reps, c.rowCopy)
			stop()
			if err != nil {
				return fmt.Errorf("%s (gemm variant %q): %w", spec.name, v, err)
			}
			r := newResult(spec.name, dev, c.shape, wl, t, c.warmup)
			r.GemmVariant = v
			if wl.diag {
				st, err := e.diagnostics()
				if err != nil {
					return fmt.Errorf("%s: diagnostics: %w", spec.name, err)
				}
				r.setDiagnostics(c.shape, st)
			}
			results = append(results, r)
			if !c.jsonOut {
				printText(stdout, r)
			}
		}
	}
	if c.jsonOut {
		return printJSON(stdout, results)
	}
	return nil
}

// gemmVariantDevice is implemented by devices whose matrix products have selectable tile
// configurations (the CUDA device).
type gemmVariantDevice interface {
	// GemmVariantNames lists the configurations that run products of dtype dt in the device's
	// precision mode (e.g. TF32).
	GemmVariantNames(dt tensor.Dtype) ([]string, error)
	// WithGemmVariant returns the device with its products forced onto a configuration (the same
	// memory: the env's tensors stay valid).
	WithGemmVariant(name string) (device, error)
}

// gemmVariantList resolves -gemm-variants: "all", or the listed names that run dt in the device's
// current mode (a list may name configurations of several classes, e.g. one fp32 and one TF32 list for
// the sweeps of gpu-check.sh; the others are skipped, since forcing them would time the planner's
// choice under their name). Unknown names are an error.
func gemmVariantList(gd gemmVariantDevice, list string, dt tensor.Dtype) ([]string, error) {
	class, err := gd.GemmVariantNames(dt)
	if err != nil || list == "all" {
		return class, err
	}
	var vs []string
	for _, v := range strings.Split(list, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		if _, err := gd.WithGemmVariant(v); err != nil { // unknown name
			return nil, err
		}
		if slices.Contains(class, v) {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("-gemm-variants %q: none of these configurations runs %v in this mode (have %v)", list, dt, class)
	}
	return vs, nil
}

// startProfile starts a CPU profile into path (path.<op> when several ops run) and returns its stop.
func startProfile(path, op string, several bool) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	if several {
		path += "." + op
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func main() {
	c, err := parseFlags(os.Args[1:], os.Stderr)
	if err == flag.ErrHelp {
		os.Exit(0)
	}
	if err == nil {
		err = run(c, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
