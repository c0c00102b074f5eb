//go:build expertrt_cuda

package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// TestCUDATrainStepHostSyncs: a training step of the MoE layer through ops.Trainer on the GPU (the task
// of train_layer_test.go: router MatMul, routing, grouped SwiGLU experts, MSE plus aux and z losses,
// Adam with clipping) never makes the host wait for the device once its inputs are on the device: the
// device's counters (cudaops.HostWaits) do not move over several Step calls, from the first step on.
// StepLoss waits exactly once per step (the loss read: one synchronisation, two reads, the value and the
// fault word); each host feed is one synchronising upload.
func TestCUDATrainStepHostSyncs(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		t.Run(dt.String(), func(t *testing.T) {
			cfg := ops.DefaultAdam(0.02)
			cfg.MaxGradNorm, cfg.WeightDecay, cfg.Decoupled = 1, 0.01, true
			adam, err := ops.NewAdam(cfg)
			if err != nil {
				t.Fatal(err)
			}
			lt := newLayerTask(dt)
			lt.tokens = 256
			run := lt.build(t, b, adam)
			data := lt.batches(4)
			onDev := make([]ops.Feeds, len(data))
			for i, h := range data {
				onDev[i] = ops.Feeds{run.x: mustFromHost(t, b, h[0]), run.y: mustFromHost(t, b, h[1])}
			}
			count := func(what string, steps int, step func(i int) error) cudaops.HostWaits {
				t.Helper()
				w0 := d.HostWaits()
				for i := 0; i < steps; i++ {
					if err := step(i); err != nil {
						t.Fatalf("%s, step %d: %v", what, i, err)
					}
				}
				w1 := d.HostWaits()
				got := cudaops.HostWaits{Syncs: w1.Syncs - w0.Syncs, Reads: w1.Reads - w0.Reads}
				t.Logf("%s: %d steps, %d host synchronisations, %d reads", what, steps, got.Syncs, got.Reads)
				return got
			}
			if w := count("Step, device feeds", 8, func(i int) error { return run.tr.Step(onDev[i%len(onDev)]) }); w.Syncs != 0 || w.Reads != 0 {
				t.Errorf("Step with device feeds made the host wait: %+v; want none", w)
			}
			if err := b.Synchronize(); err != nil { // the steps' faults, if any
				t.Fatalf("after 8 steps: %v", err)
			}
			if w := count("StepLoss, device feeds", 3, func(i int) error {
				_, err := run.tr.StepLoss(onDev[i%len(onDev)])
				return err
			}); w.Syncs != 3 || w.Reads != 6 {
				t.Errorf("3 StepLoss: %+v; want 3 synchronisations and 6 reads (each loss and the fault word)", w)
			}
			if w := count("Step, host feeds", 2, func(i int) error {
				return run.tr.Step(ops.Feeds{run.x: data[i][0], run.y: data[i][1]})
			}); w.Syncs != 4 || w.Reads != 0 {
				t.Errorf("2 Steps with two host feeds: %+v; want 4 synchronisations (the uploads) and no read", w)
			}
		})
	}
}

// TestCUDAKernelTiming: a kernel-timing session groups the launches by family (the matrix products by
// product, marked MatMul), counts them, and gives each a positive device time; sessions can be repeated;
// Stop without Start and a second Start fail; no session is left on.
func TestCUDAKernelTiming(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.StopKernelTiming(); err == nil {
		t.Error("StopKernelTiming without a session succeeded")
	}
	const M, K, N = 512, 384, 256
	a := mustFromHost(t, b, tensor.New(tensor.WithShape(M, K), tensor.WithBacking(make([]float32, M*K))))
	w := mustFromHost(t, b, tensor.New(tensor.WithShape(K, N), tensor.WithBacking(make([]float32, K*N))))
	for session := 0; session < 2; session++ {
		out, err := b.New(tensor.Float32, M, N) // a memset before the session
		if err != nil {
			t.Fatal(err)
		}
		if err := d.StartKernelTiming(); err != nil {
			t.Fatal(err)
		}
		if err := d.StartKernelTiming(); err == nil {
			t.Error("a second StartKernelTiming succeeded")
		}
		for i := 0; i < 3; i++ {
			if err := b.MatMul(a, w, false, false, out); err != nil {
				t.Fatal(err)
			}
		}
		g, err := b.New(tensor.Float32, M, N) // memset
		if err != nil {
			t.Fatal(err)
		}
		if err := b.SwiGLU(out, out, g); err != nil {
			t.Fatal(err)
		}
		times, err := d.StopKernelTiming()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("session %d: %+v", session, times)
		byFamily := map[string]cudaops.KernelTime{}
		for _, kt := range times {
			byFamily[kt.Family] = kt
			if kt.Time <= 0 || kt.Time > time.Second {
				t.Errorf("%s: implausible time %v", kt.Family, kt.Time)
			}
			if kt.MatMul != cudaops.IsMatMulFamily(kt.Family) {
				t.Errorf("%s: MatMul flag %t", kt.Family, kt.MatMul)
			}
		}
		if mm := byFamily[cudaops.FamilyMatMul]; !mm.MatMul || mm.Launches < 3 {
			t.Errorf("matmul: %+v, want at least 3 launches marked MatMul", mm)
		}
		if sw := byFamily["swiglu"]; sw.Launches != 1 {
			t.Errorf("swiglu: %+v, want 1 launch", sw)
		}
		if ms := byFamily[cudaops.FamilyMemset]; ms.Launches < 1 {
			t.Errorf("memset: %+v, want the fill of the new tensor", ms)
		}
		for f := range byFamily {
			if strings.HasSuffix(f, "_f32") {
				t.Errorf("family %q keeps its type suffix", f)
			}
		}
	}
	if d.KernelTimingOn() {
		t.Error("a session is still on")
	}
}

// TestCUDAHostWaitCounts: the counters move exactly at the documented points.
func TestCUDAHostWaitCounts(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	x := mustFromHost(t, b, tensor.New(tensor.WithShape(4), tensor.WithBacking([]float32{1, 2, 3, 4})))
	w0 := d.HostWaits()
	if err := b.Synchronize(); err != nil {
		t.Fatal(err)
	}
	w1 := d.HostWaits()
	if _, err := b.ToHost(x); err != nil {
		t.Fatal(err)
	}
	w2 := d.HostWaits()
	if s, r := w1.Syncs-w0.Syncs, w1.Reads-w0.Reads; s != 1 || r != 1 {
		t.Errorf("Synchronize: %d syncs, %d reads; want 1 and 1 (the fault word)", s, r)
	}
	if s, r := w2.Syncs-w1.Syncs, w2.Reads-w1.Reads; s != 1 || r != 2 {
		t.Errorf("ToHost: %d syncs, %d reads; want 1 and 2", s, r)
	}
}
