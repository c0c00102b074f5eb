package main

import (
	"encoding/json"
	"io"
	"math"
	"path/filepath"
	"testing"

	"github.com/expertrt/expertrt-go/moe/hf"
	"github.com/expertrt/expertrt-go/tests/simdevice"
)

// TestTrainBF16 trains with -dtype bfloat16 (mixed precision) on the CPU and the simulated device: the
// loss falls, the runs agree bitwise (the device runs the CPU kernels through its boundary), and the
// saved weights are float32 masters.
func TestTrainBF16(t *testing.T) {
	if _, err := simdevice.Registered(); err != nil {
		t.Fatal(err)
	}
	run := func(device string) (trainSummary, string) {
		t.Helper()
		w := filepath.Join(t.TempDir(), "w.safetensors")
		args := []string{"-steps", "40", "-tokens", "32", "-hidden", "8", "-ffn", "12", "-experts", "4", "-dtype", "bfloat16",
			"-json", "-device", device, "-save", w}
		out, err := captureStdout(t, func() error { return runTrain(args, io.Discard) })
		if err != nil {
			t.Fatalf("-device %s: %v", device, err)
		}
		var s trainSummary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("summary %q: %v", out, err)
		}
		return s, w
	}
	cpu, w := run("cpu")
	sim, _ := run("sim")
	if !(cpu.FinalLoss < cpu.InitialLoss) {
		t.Errorf("loss %v -> %v, not learning", cpu.InitialLoss, cpu.FinalLoss)
	}
	if math.Float64bits(cpu.FinalLoss) != math.Float64bits(sim.FinalLoss) || math.Float64bits(cpu.InitialLoss) != math.Float64bits(sim.InitialLoss) {
		t.Errorf("CPU %v -> %v, sim %v -> %v", cpu.InitialLoss, cpu.FinalLoss, sim.InitialLoss, sim.FinalLoss)
	}
	f, err := hf.Open(w)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if info, _ := f.Info(hf.GateName("")); info.DType != hf.F32 {
		t.Errorf("saved master weights are %s, want F32", info.DType)
	}
}

// TestForwardGradBF16 runs forward and grad with -dtype bfloat16 on the BF16 fixture: bfloat16 outputs
// and gradients by default, within bfloat16 accuracy of the float64 run on the same (widened) weights,
// and the same on the simulated device as on the CPU.
func TestForwardGradBF16(t *testing.T) {
	if _, err := simdevice.Registered(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	weights := filepath.Join(fixtureDir, "weights_bf16.safetensors")
	input := filepath.Join(fixtureDir, "input.safetensors")
	out := func(name string, args ...string) map[string][]float64 {
		t.Helper()
		p := filepath.Join(dir, name+".safetensors")
		if err := runGrad(append([]string{"-weights", weights, "-input", input, "-out", p}, args...)); err != nil {
			t.Fatal(err)
		}
		f, err := hf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if info, _ := f.Info("output"); name == "bf16" && info.DType != hf.BF16 {
			t.Errorf("-dtype bfloat16 wrote %s outputs, want BF16 by default", info.DType)
		}
		m := map[string][]float64{}
		for _, n := range f.Names() {
			v, _, err := f.ReadFloat64(n)
			if err != nil {
				t.Fatal(err)
			}
			m[n] = v
		}
		return m
	}
	exact := out("f64", "-dtype", "float64")
	bf := out("bf16", "-dtype", "bfloat16")
	sim := out("bf16-sim", "-dtype", "bfloat16", "-device", "sim")
	for n, want := range exact {
		got := bf[n]
		var num, den float64
		for i := range want {
			num += (got[i] - want[i]) * (got[i] - want[i])
			den += want[i] * want[i]
			if got[i] != sim[n][i] {
				t.Fatalf("%s[%d]: CPU %v, sim %v", n, i, got[i], sim[n][i])
			}
		}
		if r := math.Sqrt(num / den); r > 16.0/256 {
			t.Errorf("%s: relative error %.3g vs float64", n, r)
		}
	}
}
