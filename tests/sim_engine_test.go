package tests

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unsafe"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/tests/enginetest"
	"github.com/expertrt/expertrt-go/tests/simdevice"
	"gorgonia.org/tensor"
)

// TestSimEngine runs the device-engine suite (every tensor interface and option against StdEng,
// operand rejection by address, steps, the Gorgonia elementwise graph) on the simulated device. Its
// kernels are the host reference kernels, so results match StdEng bitwise (TolF32/TolF64 zero) except
// where the suite documents otherwise.
func TestSimEngine(t *testing.T) {
	b := simBackend(t)
	other, err := simdevice.Open("sim-other", 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	enginetest.Run(t, b, b.Device().Engine(), enginetest.Options{
		TolF32: 1e-6, // math32 vs float64-rounded forms of a few functions in Map/Gorgonia
		TolF64: 1e-15,
		Other:  simdevice.NewBackend(other),
		Stats:  b.Device().Stats,
	})
}

// TestSimHostReadCrashes proves the simulated device's point: a host read of device memory crashes
// the process with a stack trace, through the tensor's (tagged) address and through the real address
// of its memory. Each read runs in a subprocess (this test binary, re-run with an environment
// variable).
func TestSimHostReadCrashes(t *testing.T) {
	if mode := os.Getenv("EXPERTRT_SIM_HOST_READ"); mode != "" {
		simHostRead(t, mode)
		return
	}
	if testing.Short() {
		t.Skip("short: subprocesses")
	}
	for _, mode := range []string{"data", "real", "control"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSimHostReadCrashes$", "-test.count=1")
		cmd.Env = append(os.Environ(), "EXPERTRT_SIM_HOST_READ="+mode)
		out, err := cmd.CombinedOutput()
		text := string(out)
		if mode == "control" {
			if err != nil {
				t.Errorf("control run (reads through the device's kernels) failed: %v\n%s", err, text)
			}
			continue
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Success() {
			t.Errorf("%s: a host read of device memory did not crash (err %v)\n%s", mode, err, text)
			continue
		}
		if !strings.Contains(text, "fault") || !strings.Contains(text, "simHostRead") {
			t.Errorf("%s: the crash has no fault message or no stack trace naming the reader:\n%s", mode, text)
		}
	}
}

// simHostRead reads device memory from the host (in the subprocess).
func simHostRead(t *testing.T, mode string) {
	b := simBackend(t)
	d, err := b.FromHost(tensor.New(tensor.WithShape(4), tensor.WithBacking([]float32{1, 2, 3, 4})))
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "control":
		h, err := b.ToHost(d)
		if err != nil || h.Data().([]float32)[2] != 3 {
			t.Fatalf("ToHost: %v %v", h, err)
		}
	case "data":
		v := d.Data().([]float32) // a slice over the tagged device address
		t.Logf("read %v", v[1])
	case "real":
		p := devengine.Untag(d.Uintptr()) // the region itself, kept PROT_NONE
		v := *(*float32)(*(*unsafe.Pointer)(unsafe.Pointer(&p)))
		t.Logf("read %v", v)
	}
}

// TestSimReclaimsCollectedTensors: on a small device, tensors that nobody references any more are taken
// back when the device is full, instead of an out-of-memory error; tensors still referenced are not.
func TestSimReclaimsCollectedTensors(t *testing.T) {
	d, err := simdevice.Open("sim-small", 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := simdevice.NewBackend(d)
	for i := 0; i < 64; i++ {
		x, err := b.New(tensor.Float32, 512, 1024) // 2 MiB: four fill the device
		if err != nil {
			t.Fatalf("tensor %d: %v (stats %+v)", i, err, d.Stats())
		}
		_ = x
	}
	var held []*tensor.Dense
	for i := 0; i < 8; i++ {
		x, err := b.New(tensor.Float32, 512, 1024)
		if err != nil {
			if !errors.Is(err, devengine.ErrOutOfMemory) {
				t.Errorf("out of memory with every tensor held: %v, want ErrOutOfMemory", err)
			}
			break
		}
		held = append(held, x)
	}
	if len(held) > 4 {
		t.Errorf("%d tensors of 2 MiB on an 8 MiB device", len(held))
	}
	t.Logf("stats %+v", d.Stats())
}

// TestSimZeroElementTensors: tensors with a zero dimension are valid operands (the tensor package
// reports them as needing an iterator; the device must not refuse them as non-contiguous views):
// New, FromHost, ToHost and a kernel with an empty operand (MatMul with K = 0 writes zeros).
func TestSimZeroElementTensors(t *testing.T) {
	b := simBackend(t)
	a, err := b.New(tensor.Float64, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	bm, err := b.FromHost(tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(0, 3)))
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.FromHost(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6})))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.MatMul(a, bm, false, false, out); err != nil {
		t.Fatalf("MatMul with K = 0: %v", err)
	}
	h, err := b.ToHost(out)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range h.Data().([]float64) {
		if v != 0 {
			t.Fatalf("MatMul with K = 0: element %d is %v, want 0", i, v)
		}
	}
	e, err := b.ToHost(a)
	if err != nil || !e.Shape().Eq(tensor.Shape{2, 0}) {
		t.Errorf("ToHost of a [2,0] tensor: %v %v", e, err)
	}
}
