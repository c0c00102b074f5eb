//go:build expertrt_cuda

package tests

import (
	"errors"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/enginetest"
	"github.com/expertrt/expertrt-go/tests/simdevice"
	"github.com/expertrt/expertrt-go/tests/trainingtest"
	"gorgonia.org/tensor"
)

// TestCUDAEngine runs the device-engine suite on the GPU: every tensor interface and option against
// StdEng on the same data (arithmetic, comparisons, copies, sqrt bitwise; transcendental functions
// within 2e-6 (float32) and 1e-14 (float64) relative), operand rejection by address (host buffers,
// freed tensors, tensors of a finished step, tensors of the simulated device), the Gorgonia elementwise
// graph against the CPU, and device memory after 10 and 200 steps.
func TestCUDAEngine(t *testing.T) {
	b := cudaBackend(t)
	eng, err := b.Engine()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := b.Device()
	other, err := simdevice.Open("sim-other", 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	enginetest.Run(t, b, eng, enginetest.Options{
		TolF32: 2e-6,
		TolF64: 1e-14,
		Other:  simdevice.NewBackend(other),
		Stats:  d.AllocStats,
	})
}

// TestCUDATraining runs the training-kernel suite on the GPU against float64 references (float32 within
// 1e-5, float64 within 1e-12, relative to max(1,|want|)), including the label and NaN faults (reported
// at the next synchronisation, wrapping ops.ErrLabel and ops.ErrNaN) and device memory after 10 and
// 200 training-like steps.
func TestCUDATraining(t *testing.T) {
	b := cudaBackend(t)
	d, _ := b.Device()
	trainingtest.Run(t, b, trainingtest.Options{Stats: d.AllocStats, ChecksArgs: true})
}

// TestCUDAFaultSentinels: an out-of-range expert index reaching the plan kernel is reported at the next
// synchronisation as an error wrapping ops.ErrExpertIndex, and only once.
func TestCUDAPlanFaultSentinel(t *testing.T) {
	b := cudaBackend(t)
	idx, err := b.FromHost(tensor.New(tensor.WithShape(4, 2), tensor.WithBacking([]int32{0, 1, 2, 9, 1, 0, 3, 2})))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := b.New(tensor.Int32, ops.PlanLen(4, 2, 4))
	if err != nil {
		t.Fatal(err)
	}
	err = b.Plan(idx, 4, plan)
	if err == nil {
		err = b.Synchronize()
	}
	if !errors.Is(err, ops.ErrExpertIndex) {
		t.Errorf("plan with expert index 9 of 4: %v, want an error wrapping ErrExpertIndex", err)
	}
	if err := b.Synchronize(); err != nil {
		t.Errorf("the fault was reported twice: %v", err)
	}
}

// TestCUDATrainingMatchesCPU compares every training kernel of the CUDA backend with the CPU backend's
// on the same inputs (float32 within 1e-5, float64 within 1e-12); kernels the CPU backend does not
// implement yet are skipped.
func TestCUDATrainingMatchesCPU(t *testing.T) {
	trainingtest.Compare(t, ops.CPU(), cudaBackend(t), trainingtest.Options{})
}
