package main

import (
	"encoding/json"
	"io"
	"math"
	"path/filepath"
	"testing"

	"github.com/expertrt/expertrt-go/tests/simdevice"
	"gorgonia.org/tensor"
)

// TestTrainOnSimDevice runs the example's training loop on the simulated device (registered under the
// name "sim", so -device sim finds it in this test binary only): the layer's parameters, every step's
// forward, backward and Adam update, the losses and expert loads read in every step (-plot) and the
// final evaluation all run on memory the host cannot read. The summary must equal the CPU run's.
func TestTrainOnSimDevice(t *testing.T) {
	if _, err := simdevice.Registered(); err != nil {
		t.Fatal(err)
	}
	summary := func(device string) trainSummary {
		t.Helper()
		args := []string{"-steps", "30", "-tokens", "32", "-hidden", "8", "-ffn", "12", "-experts", "4", "-dtype", "float64",
			"-json", "-plot", filepath.Join(t.TempDir(), device+".png"), "-device", device}
		out, err := captureStdout(t, func() error { return runTrain(args, io.Discard) })
		if err != nil {
			t.Fatalf("-device %s: %v", device, err)
		}
		var s trainSummary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("-device %s: summary %q: %v", device, out, err)
		}
		return s
	}
	cpu, sim := summary("cpu"), summary("sim")
	if !(cpu.FinalLoss < cpu.InitialLoss) {
		t.Errorf("CPU run: loss %v -> %v, not learning", cpu.InitialLoss, cpu.FinalLoss)
	}
	same := func(what string, a, b float64) {
		if d := math.Abs(a - b); !(d <= 1e-12*math.Max(1, math.Abs(a))) {
			t.Errorf("%s: CPU %v, sim %v", what, a, b)
		}
	}
	same("initial_loss", cpu.InitialLoss, sim.InitialLoss)
	same("final_loss", cpu.FinalLoss, sim.FinalLoss)
	same("final_aux_loss", cpu.FinalAux, sim.FinalAux)
	same("final_z_loss", cpu.FinalZ, sim.FinalZ)
	if len(cpu.ExpertLoad) != len(sim.ExpertLoad) {
		t.Fatalf("expert load: CPU %v, sim %v", cpu.ExpertLoad, sim.ExpertLoad)
	}
	for e := range cpu.ExpertLoad {
		same("expert_load", cpu.ExpertLoad[e], sim.ExpertLoad[e])
	}
}

// TestHFLayerOnSimDevice: the forward and grad subcommands' graph (runHFLayer, a Hugging Face fixture
// layer with G.Backpropagate from grad_output) on the simulated device gives the CPU's output, router
// logits and every gradient.
func TestHFLayerOnSimDevice(t *testing.T) {
	sim, err := simdevice.Registered()
	if err != nil {
		t.Fatal(err)
	}
	o := &hfOptions{weights: filepath.Join(fixtureDir, "weights.safetensors"), input: filepath.Join(fixtureDir, "input.safetensors"),
		dtype: tensor.Float64}
	w, in, err := loadHFInputs(o, "hidden_states", "grad_output")
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := runHFLayer(w, in[0], in[1], 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := runHFLayer(w, in[0], in[1], 2, sim)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		cpu, dev *tensor.Dense
	}{{"output", cpu.Output, dev.Output}, {"router_logits", cpu.Logits, dev.Logits}, {"grad_hidden_states", cpu.GradX, dev.GradX},
		{"grad router", cpu.Grads.Router, dev.Grads.Router}, {"grad w1", cpu.Grads.W1, dev.Grads.W1},
		{"grad w3", cpu.Grads.W3, dev.Grads.W3}, {"grad w2", cpu.Grads.W2, dev.Grads.W2}} {
		a, b := c.cpu.Data().([]float64), c.dev.Data().([]float64)
		if len(a) != len(b) || !c.cpu.Shape().Eq(c.dev.Shape()) {
			t.Fatalf("%s: CPU %v, sim %v", c.name, c.cpu.Shape(), c.dev.Shape())
		}
		for i := range a {
			if d := math.Abs(a[i] - b[i]); !(d <= 1e-12*math.Max(1, math.Abs(a[i]))) {
				t.Errorf("%s[%d]: CPU %v, sim %v", c.name, i, a[i], b[i])
				break
			}
		}
	}
}

// TestEPTrainingOnSimDevice: expert-parallel training with 2 in-process ranks sharing the simulated
// device (the exchanges move device rows, the router gradient is all-reduced on the device, Adam runs
// there) matches the single-rank layer (-check, float64) and gives the CPU run's loss curve.
func TestEPTrainingOnSimDevice(t *testing.T) {
	if _, err := simdevice.Registered(); err != nil {
		t.Fatal(err)
	}
	summary := func(device string) epSummary {
		t.Helper()
		out, err := captureStdout(t, func() error {
			return runEP([]string{"-expert-parallel", "2", "-steps", "6", "-tokens", "12", "-hidden", "8", "-ffn", "6",
				"-experts", "4", "-dtype", "float64", "-check", "-json", "-device", device})
		})
		if err != nil {
			t.Fatalf("-device %s: %v", device, err)
		}
		var s epSummary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("-device %s: summary %q: %v", device, out, err)
		}
		return s
	}
	cpu, sim := summary("cpu"), summary("sim")
	if len(cpu.Losses) != 6 || len(sim.Losses) != 6 {
		t.Fatalf("losses: CPU %v, sim %v", cpu.Losses, sim.Losses)
	}
	for i := range cpu.Losses {
		if d := math.Abs(cpu.Losses[i] - sim.Losses[i]); !(d <= 1e-12*math.Max(1, cpu.Losses[i])) {
			t.Errorf("step %d: CPU loss %v, sim %v", i+1, cpu.Losses[i], sim.Losses[i])
		}
	}
	if d := math.Abs(cpu.FinalLoss - sim.FinalLoss); !(d <= 1e-12*math.Max(1, cpu.FinalLoss)) {
		t.Errorf("final loss: CPU %v, sim %v", cpu.FinalLoss, sim.FinalLoss)
	}
}
