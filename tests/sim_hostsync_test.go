package tests

import (
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/simdevice"
	"gorgonia.org/tensor"
)

// TestTrainStepHostTransfersSim: a training step of the MoE layer through ops.Trainer (router MatMul,
// routing, grouped SwiGLU experts, MSE plus aux and z losses, Gorgonia's gradient sums through the
// device engine, Adam with gradient clipping) moves nothing between host and device memory once its
// inputs are on the device: no download (on a GPU each is a synchronisation: it waits for every kernel
// before it) and no upload (a copy from pageable host memory waits too). Reading the loss
// (StepLoss) costs exactly one download per step; host feeds cost one upload each. The simulated
// device counts its transfers (the only way its protected memory reaches the host), from the first step
// on, over several steps.
func TestTrainStepHostTransfersSim(t *testing.T) {
	dev := registeredSim(t, "sim-hostsync", 64<<20, nil)
	sd := dev.(*simdevice.Backend).Device()
	cfg := ops.DefaultAdam(0.02)
	cfg.MaxGradNorm, cfg.WeightDecay, cfg.Decoupled = 1, 0.01, true
	adam, err := ops.NewAdam(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lt := newLayerTask(tensor.Float32)
	run := lt.build(t, dev, adam)
	data := lt.batches(4)
	onDev := make([]ops.Feeds, len(data))
	for i, d := range data {
		onDev[i] = ops.Feeds{run.x: mustFromHost(t, dev, d[0]), run.y: mustFromHost(t, dev, d[1])}
	}
	count := func(what string, steps int, step func(i int) error) (up, down int64) {
		t.Helper()
		u0, d0 := sd.Transfers()
		for i := 0; i < steps; i++ {
			if err := step(i); err != nil {
				t.Fatalf("%s, step %d: %v", what, i, err)
			}
		}
		u1, d1 := sd.Transfers()
		t.Logf("%s: %d steps, %d uploads, %d downloads", what, steps, u1-u0, d1-d0)
		return u1 - u0, d1 - d0
	}
	if up, down := count("Step, device feeds", 6, func(i int) error { return run.tr.Step(onDev[i%len(onDev)]) }); up != 0 || down != 0 {
		t.Errorf("Step with device feeds moved data between host and device: %d uploads, %d downloads; want none", up, down)
	}
	if up, down := count("StepLoss, device feeds", 3, func(i int) error {
		_, err := run.tr.StepLoss(onDev[i%len(onDev)])
		return err
	}); up != 0 || down != 3 {
		t.Errorf("3 StepLoss with device feeds: %d uploads, %d downloads; want 0 and 3 (the losses)", up, down)
	}
	if up, down := count("Step, host feeds", 2, func(i int) error {
		return run.tr.Step(ops.Feeds{run.x: data[i][0], run.y: data[i][1]})
	}); up != 4 || down != 0 {
		t.Errorf("2 Steps with two host feeds: %d uploads, %d downloads; want 4 and 0", up, down)
	}
}
