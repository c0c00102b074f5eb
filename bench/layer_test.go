package main

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/internal/floats"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// tinyLayerArgs is a whole-layer shape small enough for CI (milliseconds per step on two cores).
var tinyLayerArgs = []string{"-tokens", "24", "-hidden", "8", "-ffn", "12", "-experts", "4", "-top-k", "2",
	"-reps", "2", "-warmup", "1"}

func runLayerCLI(t *testing.T, args ...string) []layerResult {
	t.Helper()
	c, err := parseFlags(append(append([]string{}, tinyLayerArgs...), args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(c, &out); err != nil {
		t.Fatal(err)
	}
	var many struct{ Results []layerResult }
	if err := json.Unmarshal(out.Bytes(), &many); err != nil || len(many.Results) == 0 {
		var one layerResult
		if err := json.Unmarshal(out.Bytes(), &one); err != nil {
			t.Fatalf("%v in %s", err, out.String())
		}
		return []layerResult{one}
	}
	return many.Results
}

// TestLayerCLI runs the three whole-layer ops through the CLI on the CPU and on the simulated device:
// plausible times, the model FLOPs of modelFlops, and, on the device, no host synchronisation in a
// step (inputs are placed on the device once; ops.Runner and ops.Trainer issue no transfer).
func TestLayerCLI(t *testing.T) {
	for _, dev := range []string{"cpu", "sim"} {
		for _, dt := range []string{"float64", "float32"} {
			rs := runLayerCLI(t, "-op", "layer,layer-bwd,train-step", "-device", dev, "-dtype", dt, "-json")
			if len(rs) != 3 {
				t.Fatalf("%s: %d results, want 3", dev, len(rs))
			}
			s := shape{Tokens: 24, Hidden: 8, FFN: 12, Experts: 4, TopK: 2}
			for i, r := range rs {
				want := layerOpNames()[i]
				if r.Op != want || r.Device != dev || r.Dtype != dt || r.FFN != 12 || r.Reps != 2 {
					t.Errorf("%s: result %d is %+v, want op %s", dev, i, r, want)
				}
				if !(r.MedianMs > 0 && r.MinMs <= r.MedianMs && r.MedianMs <= r.P90Ms && r.WallMedianMs > 0 && r.TokensPerS > 0) {
					t.Errorf("%s %s: implausible times %+v", dev, r.Op, r)
				}
				if r.ModelFlops != modelFlops(r.Op, s) || r.TFlops <= 0 {
					t.Errorf("%s %s: model flops %d (%.3g TFLOP/s), want %d", dev, r.Op, r.ModelFlops, r.TFlops, modelFlops(r.Op, s))
				}
				switch dev {
				case "cpu":
					if r.HostSyncsPerStep != nil {
						t.Errorf("cpu %s: host waits reported", r.Op)
					}
				case "sim":
					if r.HostSyncsPerStep == nil || *r.HostSyncsPerStep != 0 || *r.HostReadsPerStep != 0 {
						t.Errorf("sim %s: host waits per step %v, %v; want 0 and 0", r.Op, r.HostSyncsPerStep, r.HostReadsPerStep)
					}
				}
			}
		}
	}
	// Text output names every op and its host waits on the device.
	c, err := parseFlags(append(append([]string{}, tinyLayerArgs...), "-op", "layer", "-backward", "-device", "sim"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(c, &out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "layer-bwd") || !strings.Contains(s, "0.0 synchronisations") {
		t.Errorf("text output: %q", s)
	}
}

// TestLayerCLIErrors: whole-layer ops do not mix with kernel ops or kernel-only flags.
func TestLayerCLIErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-op", "layer,dispatch"},
		{"-op", "train-step", "-skew"},
		{"-op", "layer", "-rowcopy"},
		{"-op", "layer", "-kernel-reps", "-1"},
	} {
		c, err := parseFlags(append(append([]string{}, tinyLayerArgs...), args...), io.Discard)
		if err == nil {
			err = run(c, io.Discard)
		}
		if err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestModelFlops pins the FLOP counts at the shape (T=4096, H=1024, F=3584, E=8, k=2).
func TestModelFlops(t *testing.T) {
	s := shape{Tokens: 4096, Hidden: 1024, FFN: 3584, Experts: 8, TopK: 2}
	const r, x = 2 * 4096 * 8 * 1024, 2 * 4096 * 2 * 1024 * 3584
	for op, want := range map[string]int64{"layer": r + 3*x, "layer-bwd": 3*r + 9*x, "train-step": 2*r + 7*x, "nope": 0} {
		if got := modelFlops(op, s); got != want {
			t.Errorf("%s: %d flops, want %d", op, got, want)
		}
	}
	if got := modelFlops("layer", s); got != 180455735296 {
		t.Errorf("layer forward: %d flops", got)
	}
}

// layerValues runs one step of lb and returns host copies of the given tensors' values, read inside
// the step (device values are released when it ends).
func layerValues(t *testing.T, lb *layerBench, get func() []*tensor.Dense) [][]float64 {
	t.Helper()
	var out [][]float64
	err := lb.run(func() error {
		for _, d := range get() {
			b, err := ops.BackendFor(d)
			if err != nil {
				return err
			}
			h, err := b.ToHost(d)
			if err != nil {
				return err
			}
			v, err := floats.Of(h)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func nodeValues(lb *layerBench) func() []*tensor.Dense {
	return func() []*tensor.Dense {
		var ds []*tensor.Dense
		for _, n := range lb.grads {
			ds = append(ds, n.Value().(*tensor.Dense))
		}
		return ds
	}
}

// TestLayerBwdGradients: the layer-bwd graph computes the gradients of sum(y·dy): on the CPU they agree
// with central differences of the forward op (same seed, so the same weights and inputs) along random
// directions of x and of every parameter, and the simulated device gives the CPU's values.
func TestLayerBwdGradients(t *testing.T) {
	s := shape{Tokens: 20, Hidden: 6, FFN: 10, Experts: 4, TopK: 2, Dtype: tensor.Float64,
		Scoring: ops.SoftmaxTopK, Renormalize: true, Seed: 3}
	cpu, err := openDevice("cpu")
	if err != nil {
		t.Fatal(err)
	}
	bwd, err := newLayerBench(cpu, "layer-bwd", s)
	if err != nil {
		t.Fatal(err)
	}
	defer bwd.Close()
	grads := layerValues(t, bwd, nodeValues(bwd))
	if len(grads) != 5 {
		t.Fatalf("%d gradients, want 5 (x, Router, W1, W3, W2)", len(grads))
	}
	fwd, err := newLayerBench(cpu, "layer", s)
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	var x, dy *tensor.Dense
	for n, v := range bwd.feeds {
		switch n.Name() {
		case "dy":
			dy = v
		}
	}
	for n, v := range fwd.feeds {
		if n.Name() == "x" {
			x = v
		}
	}
	w := fwd.layer.Weights()
	targets := []*tensor.Dense{x, w.Router, w.W1, w.W3, w.W2}
	dyv, _ := floats.Of(dy)
	objective := func() float64 {
		y := layerValues(t, fwd, func() []*tensor.Dense { return []*tensor.Dense{fwd.out.Y.Value().(*tensor.Dense)} })[0]
		sum := 0.0
		for i := range y {
			sum += y[i] * dyv[i]
		}
		return sum
	}
	const eps = 1e-6
	for i, tgt := range targets {
		data := tgt.Data().([]float64)
		dir := make([]float64, len(data))
		dot := 0.0
		for j := range dir {
			dir[j] = math.Sin(float64(7*j + 3*i + 1))
			dot += dir[j] * grads[i][j]
		}
		orig := append([]float64(nil), data...)
		for j := range data {
			data[j] = orig[j] + eps*dir[j]
		}
		fp := objective()
		for j := range data {
			data[j] = orig[j] - eps*dir[j]
		}
		fm := objective()
		copy(data, orig)
		fd := (fp - fm) / (2 * eps)
		if math.Abs(fd-dot) > 1e-6*math.Max(1, math.Abs(dot)) {
			t.Errorf("gradient %d: directional derivative %.10g, central difference %.10g", i, dot, fd)
		}
	}
	sim, err := openDevice("sim")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := newLayerBench(sim, "layer-bwd", s)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	simGrads := layerValues(t, sb, nodeValues(sb))
	for i := range grads {
		for j := range grads[i] {
			if d := math.Abs(simGrads[i][j] - grads[i][j]); !(d <= 1e-12*math.Max(1, math.Abs(grads[i][j]))) {
				t.Fatalf("gradient %d element %d: sim %v, CPU %v", i, j, simGrads[i][j], grads[i][j])
			}
		}
	}
}

// TestTrainStepBench: three train-step repetitions on the simulated device leave the weights the CPU's
// three steps leave, and the weights change.
func TestTrainStepBench(t *testing.T) {
	s := shape{Tokens: 24, Hidden: 8, FFN: 12, Experts: 4, TopK: 2, Dtype: tensor.Float64,
		Scoring: ops.SoftmaxTopK, Renormalize: true, Seed: 5}
	weights := func(dev string) [][]float64 {
		d, err := openDevice(dev)
		if err != nil {
			t.Fatal(err)
		}
		lb, err := newLayerBench(d, "train-step", s)
		if err != nil {
			t.Fatal(err)
		}
		defer lb.Close()
		for i := 0; i < 3; i++ {
			if err := lb.step(); err != nil {
				t.Fatal(err)
			}
		}
		hw, err := lb.layer.HostWeights()
		if err != nil {
			t.Fatal(err)
		}
		var out [][]float64
		for _, d := range []*tensor.Dense{hw.Router, hw.W1, hw.W3, hw.W2} {
			v, _ := floats.Of(d)
			out = append(out, v)
		}
		return out
	}
	c, sm := weights("cpu"), weights("sim")
	d0, err := openDevice("cpu")
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := newLayerBench(d0, "layer", s)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	init, _ := floats.Of(fresh.layer.Weights().W1)
	moved := false
	for i := range init {
		moved = moved || init[i] != c[1][i]
	}
	if !moved {
		t.Error("three train steps left W1 unchanged")
	}
	for p := range c {
		for i := range c[p] {
			if math.Abs(c[p][i]-sm[p][i]) > 1e-12*math.Max(1, math.Abs(c[p][i])) {
				t.Fatalf("parameter %d element %d: sim %v, CPU %v", p, i, sm[p][i], c[p][i])
			}
		}
	}
}

// fakeKernelDevice is the CPU device with a kernel timer that reports fixed families, for the
// breakdown's arithmetic.
type fakeKernelDevice struct{ device }

func (fakeKernelDevice) TimeKernels(fn func() error) (time.Duration, []familyTime, error) {
	if err := fn(); err != nil {
		return 0, nil, err
	}
	return 10 * time.Millisecond, []familyTime{
		{Family: "swiglu", Launches: 1, Time: time.Millisecond},
		{Family: "grouped matmul", MatMul: true, Launches: 6, Time: 6 * time.Millisecond},
		{Family: "matmul", MatMul: true, Launches: 3, Time: time.Millisecond},
	}, nil
}

func TestLayerKernelBreakdown(t *testing.T) {
	cpu, err := openDevice("cpu")
	if err != nil {
		t.Fatal(err)
	}
	s := shape{Tokens: 8, Hidden: 4, FFN: 6, Experts: 2, TopK: 1, Dtype: tensor.Float32, Scoring: ops.SoftmaxTopK, Seed: 1}
	lb, err := newLayerBench(fakeKernelDevice{cpu}, "layer", s)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	r, err := lb.measure(0, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	if r.KernelReps != 4 || r.KernelStepMs != 10 || r.KernelSumMs != 8 || r.LaunchesPerStep != 10 || r.MatMulMs != 7 ||
		r.MatMulPctOfStep != 70 || r.MatMulPctOfKernels != 87.5 || len(r.Kernels) != 3 {
		t.Fatalf("breakdown %+v", r)
	}
	if k := r.Kernels[0]; k.Family != "grouped matmul" || k.LaunchesPerStep != 6 || k.MsPerStep != 6 || k.PctOfStep != 60 || !k.MatMul {
		t.Errorf("first family %+v", k)
	}
	var out bytes.Buffer
	printLayerText(&out, r)
	if !strings.Contains(out.String(), "70.0% of the step") {
		t.Errorf("text: %s", out.String())
	}
}
