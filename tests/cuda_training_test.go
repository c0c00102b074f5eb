//go:build expertrt_cuda

package tests

import (
	"fmt"
	"math"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// TestCUDATrainLayerMatchesCPU trains the MoE layer task of train_layer_test.go with ops.Trainer and
// ops.Adam on the CUDA backend and on the CPU from the same weights and data:
//   - after one step every parameter agrees (float64: 1e-10 relative, float32: 1e-4 relative);
//   - over 100 steps the losses agree (float64: 1e-8 relative; float32: 2e-2 relative, since float32
//     rounding can flip a near-tied top-k choice and the runs then drift apart slowly).
func TestCUDATrainLayerMatchesCPU(t *testing.T) {
	b := cudaBackend(t)
	for _, c := range []struct {
		dt              tensor.Dtype
		stepTol, curveT float64
		tokens, h, f, e int
	}{
		{tensor.Float64, 1e-10, 1e-8, 48, 8, 12, 4},
		{tensor.Float32, 1e-4, 2e-2, 48, 8, 12, 4},
		{tensor.Float32, 1e-4, 2e-2, 512, 64, 160, 8},
	} {
		t.Run(fmt.Sprintf("%v/T=%d,H=%d,F=%d,E=%d", c.dt, c.tokens, c.h, c.f, c.e), func(t *testing.T) {
			lt := newLayerTask(c.dt)
			lt.tokens, lt.cfg.Hidden, lt.cfg.FFN, lt.cfg.Experts = c.tokens, c.h, c.f, c.e
			lt.m = make([]float64, c.h*c.h)
			for i := range lt.m {
				lt.m[i] = math.Sin(float64(i)) / math.Sqrt(float64(c.h))
			}
			data := lt.batches(100)
			newAdam := func() *ops.Adam {
				cfg := ops.DefaultAdam(0.01)
				cfg.MaxGradNorm = 5
				a, err := ops.NewAdam(cfg)
				if err != nil {
					t.Fatal(err)
				}
				return a
			}
			// one step
			_, cpuW := lt.build(t, ops.CPU(), newAdam()).run(t, data[:1])
			_, gpuW := lt.build(t, b, newAdam()).run(t, data[:1])
			for _, p := range []struct {
				name string
				a, b *tensor.Dense
			}{{"Router", cpuW.Router, gpuW.Router}, {"W1", cpuW.W1, gpuW.W1}, {"W3", cpuW.W3, gpuW.W3}, {"W2", cpuW.W2, gpuW.W2}} {
				worst := maxRelDiff(denseFloats(p.a), denseFloats(p.b))
				t.Logf("after one step: %s max relative difference %.3g", p.name, worst)
				if !(worst <= c.stepTol) {
					t.Errorf("after one step %s differs by %.3g relative (tolerance %g)", p.name, worst, c.stepTol)
				}
			}
			// 100 steps
			cpuL, _ := lt.build(t, ops.CPU(), newAdam()).run(t, data)
			gpuL, _ := lt.build(t, b, newAdam()).run(t, data)
			worst, at := 0.0, 0
			for i := range cpuL {
				if d := math.Abs(gpuL[i]-cpuL[i]) / math.Max(1e-12, math.Abs(cpuL[i])); d > worst || math.IsNaN(d) {
					worst, at = d, i
				}
			}
			t.Logf("100 steps: cost %.5f -> %.5f (CPU) and %.5f -> %.5f (GPU); worst relative difference %.3g at step %d",
				cpuL[0], cpuL[99], gpuL[0], gpuL[99], worst, at+1)
			if !(worst <= c.curveT) {
				t.Errorf("loss curves differ by %.3g relative at step %d (tolerance %g)", worst, at+1, c.curveT)
			}
		})
	}
}

// TestCUDATrainLayerMemory: 200 training steps of the layer task through ops.Trainer leave no device
// memory behind (no step memory after a step; memory in use and driver allocations equal after step
// 10 and step 200).
func TestCUDATrainLayerMemory(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	checkTrainingMemory(t, b, d.Pool())
}

// TestCUDAZeroElementOperands: tensors with a zero dimension are valid kernel operands (the tensor
// package reports them as needing an iterator; the backend must not refuse them as views): New,
// FromHost and ToHost of empty tensors, and SwiGLU and its gradient over zero elements.
func TestCUDAZeroElementOperands(t *testing.T) {
	b := cudaBackend(t)
	empty := func(shape ...int) *tensor.Dense {
		d, err := b.FromHost(tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(shape...)))
		if err != nil {
			t.Fatalf("FromHost %v: %v", shape, err)
		}
		return d
	}
	g, u, o, dg, du := empty(3, 0), empty(3, 0), empty(3, 0), empty(3, 0), empty(3, 0)
	if err := b.SwiGLU(g, u, o); err != nil {
		t.Errorf("SwiGLU of [3,0]: %v", err)
	}
	if err := b.SwiGLUGrad(g, u, o, dg, du); err != nil {
		t.Errorf("SwiGLUGrad of [3,0]: %v", err)
	}
	n, err := b.New(tensor.Float64, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := b.ToHost(n); err != nil || !h.Shape().Eq(tensor.Shape{0, 5}) {
		t.Errorf("ToHost of a [0,5] tensor: %v %v", h, err)
	}
}

func maxRelDiff(a, b []float64) float64 {
	worst := 0.0
	for i := range a {
		d := math.Abs(a[i]-b[i]) / math.Max(1, math.Abs(a[i]))
		if d > worst || math.IsNaN(d) {
			worst = d
		}
	}
	return worst
}
