package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/expertrt/expertrt-go/internal/floats"
	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Whole-layer benchmarks (-op layer, layer-bwd, train-step): the Mixtral-style MoE layer of package moe
// (router MatMul, route, dispatch, SwiGLU grouped matmuls, combine; no auxiliary losses, as in
// transformers' MixtralSparseMoeBlock) built as one Gorgonia graph and run the way a user runs it: through
// ops.Runner / ops.Trainer, on a TapeMachine with the backend's tensor engine, one memory step per run.
// Every timed repetition is one whole step of the graph, inputs already on the device. See
// docs/benchmarks.md ("Whole-layer benchmarks") for the method and bench/compare_layer.py for the
// comparison with bench/pytorch_layer.py.

// layerOpSpecs are the whole-layer ops, in report order.
var layerOpSpecs = []struct{ name, help string }{
	{"layer", "whole MoE layer forward, y = layer(x) (ops.Runner)"},
	{"layer-bwd", "layer forward + backward of sum(y·dy): gradients of x and every parameter (G.Backpropagate, ops.Runner)"},
	{"train-step", "training step: forward, MSE(y, target), backward to every parameter, ops.Adam update (ops.Trainer)"},
}

// layerOpNames lists the whole-layer ops.
func layerOpNames() []string {
	names := make([]string, len(layerOpSpecs))
	for i, s := range layerOpSpecs {
		names[i] = s.name
	}
	return names
}

func isLayerOp(name string) bool {
	for _, s := range layerOpSpecs {
		if s.name == name {
			return true
		}
	}
	return false
}

// hasLayerOp reports whether any of names is a whole-layer op (run then goes to runLayerOps).
func hasLayerOp(names []string) bool {
	for _, n := range names {
		if isLayerOp(n) {
			return true
		}
	}
	return false
}

// layerFlags are the command-line options of the whole-layer ops.
type layerFlags struct {
	kernelReps int
}

func (f *layerFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.kernelReps, "kernel-reps", 5, "whole-layer ops: extra repetitions timed with events around every kernel launch, for the "+
		"per-kernel breakdown and the matmul share (devices with kernel timing only; 0: none)")
}

// runLayerOps runs the whole-layer ops of c (all of c.ops must be whole-layer ops) and writes the report.
func runLayerOps(c *config, stdout io.Writer) error {
	var names []string
	for _, n := range c.ops {
		if c.backward && n == "layer" {
			n = "layer-bwd"
		}
		if !isLayerOp(n) {
			return fmt.Errorf("op %q cannot run in one invocation with the whole-layer ops (%s)", n, strings.Join(layerOpNames(), ", "))
		}
		names = append(names, n)
	}
	if c.gemmVariants != "" || c.rowCopy || c.shape.Skew {
		return fmt.Errorf("-gemm-variants, -rowcopy and -skew do not apply to the whole-layer ops")
	}
	if c.threads > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(c.threads))
	}
	dev, err := openDevice(c.deviceName)
	if err != nil {
		return err
	}
	var results []layerResult
	for _, name := range names {
		r, err := runLayerOp(dev, name, c.shape, c.warmup, c.reps, c.layer.kernelReps, c.cpuProfile, len(names) > 1)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, *r)
		if !c.jsonOut {
			printLayerText(stdout, r)
		}
	}
	if c.jsonOut {
		return printLayerJSON(stdout, results)
	}
	return nil
}

// runLayerOp builds, measures and releases one whole-layer op.
func runLayerOp(dev device, name string, s shape, warmup, reps, kernelReps int, profile string, several bool) (*layerResult, error) {
	lb, err := newLayerBench(dev, name, s)
	if err != nil {
		return nil, err
	}
	defer lb.Close()
	runtime.GC()
	stop, err := startProfile(profile, name, several)
	if err != nil {
		return nil, err
	}
	defer stop()
	return lb.measure(warmup, reps, kernelReps)
}

// layerBench is one whole-layer op, built and ready to step.
type layerBench struct {
	op    string
	dev   device
	b     ops.Backend
	s     shape
	layer *moe.Layer
	out   *moe.Output
	grads G.Nodes // layer-bwd: gradients of x, Router, W1, W3, W2
	feeds ops.Feeds
	run   func(read func() error) error // one step; read (optional) sees the step's values
	close func() error
	owned []*tensor.Dense // device tensors made here (inputs, weights), freed by Close
}

// layerConfig is the benchmarked layer: the shape's sizes and routing, no auxiliary losses;
// EXPERTRT_FUSED_SWIGLU=1 sets moe.Config.FusedSwiGLU (the gate/up products and SwiGLU as one op).
func layerConfig(s shape, b ops.Backend) moe.Config {
	return moe.Config{Hidden: s.Hidden, FFN: s.ffn(), Experts: s.Experts, TopK: s.TopK, Scoring: s.Scoring,
		Renormalize: s.Renormalize, Seed: max(s.Seed, 1), Dtype: s.Dtype, Backend: b,
		FusedSwiGLU: os.Getenv("EXPERTRT_FUSED_SWIGLU") == "1"}
}

// newLayerBench builds op's graph on dev's backend: the layer's weights from moe.NewLayer (seeded), and
// inputs x, dy, target of standard normal values (as torch.randn), placed on the device once. With
// -dtype bfloat16 the layer runs in mixed precision (float32 master weights and data, bfloat16 experts:
// moe.Config.Dtype ops.BFloat16), as torch.autocast runs transformers' block (pytorch_layer.py
// --autocast).
func newLayerBench(dev device, op string, s shape) (*layerBench, error) {
	if !isLayerOp(op) {
		return nil, fmt.Errorf("unknown whole-layer op %q", op)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	b := dev.Backend()
	lb := &layerBench{op: op, dev: dev, b: b, s: s, feeds: ops.Feeds{}}
	ok := false
	defer func() {
		if !ok {
			lb.Close()
		}
	}()
	g := G.NewGraph()
	var err error
	if lb.layer, err = moe.NewLayer(g, layerConfig(s, b)); err != nil {
		return nil, err
	}
	if b.Name() != ops.CPU().Name() {
		w := lb.layer.Weights()
		lb.owned = append(lb.owned, w.Router, w.W1, w.W3, w.W2)
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x1a7e5))
	dataDt := s.Dtype
	if dataDt == ops.BFloat16 {
		dataDt = tensor.Float32 // mixed precision: float32 data, losses and outputs
	}
	input := func(name string) (*G.Node, error) {
		n := G.NewMatrix(g, dataDt, G.WithShape(s.Tokens, s.Hidden), G.WithName(name))
		v := make([]float64, s.Tokens*s.Hidden)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		t := floats.Dense(dataDt, v, s.Tokens, s.Hidden)
		if b.Name() != ops.CPU().Name() {
			if t, err = b.FromHost(t); err != nil {
				return nil, fmt.Errorf("input %s: %w", name, err)
			}
			lb.owned = append(lb.owned, t)
		}
		lb.feeds[n] = t
		return n, nil
	}
	x, err := input("x")
	if err != nil {
		return nil, err
	}
	if lb.out, err = lb.layer.Forward(x); err != nil {
		return nil, err
	}
	switch op {
	case "layer", "layer-bwd":
		if op == "layer-bwd" {
			dy, err := input("dy")
			if err != nil {
				return nil, err
			}
			wrt := append(G.Nodes{x}, lb.layer.Params()...)
			if lb.grads, err = G.Backpropagate(G.Nodes{lb.out.Y}, G.Nodes{dy}, wrt); err != nil {
				return nil, fmt.Errorf("backpropagating dy: %w", err)
			}
		}
		r, err := ops.NewRunner(g, b)
		if err != nil {
			return nil, err
		}
		lb.close = r.Close
		lb.run = func(read func() error) error { return r.Run(lb.feeds, read) }
	case "train-step":
		target, err := input("target")
		if err != nil {
			return nil, err
		}
		mse, err := ops.MSELoss(lb.out.Y, target)
		if err != nil {
			return nil, err
		}
		adam, err := ops.NewAdam(ops.DefaultAdam(1e-3))
		if err != nil {
			return nil, err
		}
		tr, err := ops.NewTrainer(mse, lb.layer.Params(), adam, b)
		if err != nil {
			return nil, err
		}
		lb.close = tr.Close
		lb.run = func(read func() error) error { return tr.StepThen(lb.feeds, read) }
	}
	ok = true
	return lb, nil
}

// step runs one whole step of the op's graph.
func (lb *layerBench) step() error { return lb.run(nil) }

// Close releases the machine and the device tensors made for the op.
func (lb *layerBench) Close() error {
	var first error
	if lb.close != nil {
		first = lb.close()
		lb.close = nil
	}
	if f, ok := lb.b.(freer); ok {
		for _, t := range lb.owned {
			if err := f.Free(t); err != nil && first == nil {
				first = err
			}
		}
	}
	lb.owned = nil
	return first
}

// modelFlops is the floating-point work of the matrix products the op needs (2 per multiply-add):
// with R = 2·T·E·H (router) and X = 2·T·K·H·F (one expert projection over the T·K routed rows),
// forward R + 3X; layer-bwd adds the gradients of x and of every weight, 2R + 6X; train-step adds the
// weight gradients only (dWg, the three dW, and the down projection's input gradient), R + 4X.
func modelFlops(op string, s shape) int64 {
	t, h, e, k, f := int64(s.Tokens), int64(s.Hidden), int64(s.Experts), int64(s.TopK), int64(s.ffn())
	r, x := 2*t*e*h, 2*t*k*h*f
	switch op {
	case "layer":
		return r + 3*x
	case "layer-bwd":
		return 3*r + 9*x
	case "train-step":
		return 2*r + 7*x
	}
	return 0
}

// stepTimer is implemented by devices that time a whole step on the device (CUDA: events recorded on
// the stream right before the step's first launch is issued and after its last, no spin kernel, so
// that gaps in which the GPU waits for the host are part of the step). Other devices use TimeOnce.
type stepTimer interface {
	TimeStep(fn func() error) (time.Duration, error)
}

// hostWaiter is implemented by devices that count host synchronisations (waits for the device) and
// reads of device memory into host memory since they were opened.
type hostWaiter interface {
	HostWaits() (syncs, reads int64)
}

// kernelTimer is implemented by devices that can time every kernel launch of fn (events around each,
// grouped by kernel family): it returns the step's device time in the same run and the families.
type kernelTimer interface {
	TimeKernels(fn func() error) (time.Duration, []familyTime, error)
}

// familyTime is the device time of one kernel family in one step.
type familyTime struct {
	Family   string
	MatMul   bool
	Launches int
	Time     time.Duration
}

// waitProbeSteps is the number of untimed steps after the warm-up over which host waits are counted.
const waitProbeSteps = 2

// measure warms up, counts host waits over waitProbeSteps steps, times reps steps (the median is the
// headline), then times kernelReps steps with per-kernel events when the device supports it.
func (lb *layerBench) measure(warmup, reps, kernelReps int) (*layerResult, error) {
	if reps < 1 || warmup < 0 || kernelReps < 0 {
		return nil, fmt.Errorf("need reps >= 1, warmup >= 0, kernel reps >= 0")
	}
	for i := 0; i < warmup; i++ {
		if err := lb.step(); err != nil {
			return nil, fmt.Errorf("warm-up step %d: %w", i, err)
		}
	}
	r := newLayerResult(lb, reps, warmup)
	if hw, ok := lb.dev.(hostWaiter); ok {
		s0, r0 := hw.HostWaits()
		for i := 0; i < waitProbeSteps; i++ {
			if err := lb.step(); err != nil {
				return nil, err
			}
		}
		s1, r1 := hw.HostWaits()
		syncs, reads := float64(s1-s0)/waitProbeSteps, float64(r1-r0)/waitProbeSteps
		r.HostSyncsPerStep, r.HostReadsPerStep = &syncs, &reads
	}
	timeStep := lb.dev.TimeOnce
	if st, ok := lb.dev.(stepTimer); ok {
		timeStep = st.TimeStep
	}
	dev, wall := make([]time.Duration, 0, reps), make([]time.Duration, 0, reps)
	for i := 0; i < reps; i++ {
		start := time.Now()
		d, err := timeStep(lb.step)
		w := time.Since(start)
		if err != nil {
			return nil, fmt.Errorf("timed step %d: %w", i, err)
		}
		dev, wall = append(dev, d), append(wall, w)
	}
	st, ws := summarize(dev), summarize(wall)
	r.MedianMs, r.MinMs, r.P90Ms, r.WallMedianMs = ms(st.Median), ms(st.Min), ms(st.P90), ms(ws.Median)
	if st.Median > 0 {
		r.TokensPerS = float64(lb.s.Tokens) / st.Median.Seconds()
		r.TFlops = float64(r.ModelFlops) / st.Median.Seconds() / 1e12
		r.PctFP32Peak = 100 * r.TFlops * 1e12 / peakFP32
	}
	if kt, ok := lb.dev.(kernelTimer); ok && kernelReps > 0 {
		if err := lb.kernelBreakdown(kt, kernelReps, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// kernelBreakdown times reps steps with events around every launch and fills r's per-family report
// (averages per step).
func (lb *layerBench) kernelBreakdown(kt kernelTimer, reps int, r *layerResult) error {
	var stepTotal time.Duration
	type acc struct {
		matmul   bool
		launches int
		time     time.Duration
		first    int
	}
	fams := map[string]*acc{}
	for i := 0; i < reps; i++ {
		total, times, err := kt.TimeKernels(lb.step)
		if err != nil {
			return fmt.Errorf("kernel-timed step %d: %w", i, err)
		}
		stepTotal += total
		for _, f := range times {
			a := fams[f.Family]
			if a == nil {
				a = &acc{matmul: f.MatMul, first: len(fams)}
				fams[f.Family] = a
			}
			a.launches += f.Launches
			a.time += f.Time
		}
	}
	n := float64(reps)
	r.KernelReps = reps
	r.KernelStepMs = ms(stepTotal) / n
	for name, a := range fams {
		k := layerKernel{Family: name, MatMul: a.matmul, LaunchesPerStep: float64(a.launches) / n, MsPerStep: ms(a.time) / n}
		if r.KernelStepMs > 0 {
			k.PctOfStep = 100 * k.MsPerStep / r.KernelStepMs
		}
		r.Kernels = append(r.Kernels, k)
		r.KernelSumMs += k.MsPerStep
		r.LaunchesPerStep += k.LaunchesPerStep
		if a.matmul {
			r.MatMulMs += k.MsPerStep
		}
	}
	sort.Slice(r.Kernels, func(i, j int) bool {
		if r.Kernels[i].MsPerStep != r.Kernels[j].MsPerStep {
			return r.Kernels[i].MsPerStep > r.Kernels[j].MsPerStep
		}
		return r.Kernels[i].Family < r.Kernels[j].Family
	})
	if r.KernelStepMs > 0 {
		r.MatMulPctOfStep = 100 * r.MatMulMs / r.KernelStepMs
	}
	if r.KernelSumMs > 0 {
		r.MatMulPctOfKernels = 100 * r.MatMulMs / r.KernelSumMs
	}
	return nil
}
