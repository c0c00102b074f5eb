//go:build expertrt_cuda

package tests

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestCUDAFaultSentinels: device faults raised inside a graph on device tensors wrap the same ops
// sentinels as the CPU backend's errors: a logits row with a NaN or +Inf, or all -Inf, is ErrNaN (the
// route kernels used to rank NaN as -Inf and give NaN weights for +Inf silently); an expert index
// outside [0,E) is ErrExpertIndex. Without sync checks the fault surfaces at the next synchronisation;
// with them, from RunAll itself (through ops.MachineError).
func TestCUDAFaultSentinels(t *testing.T) {
	const T, E, K, H = 64, 8, 2, 16
	inf := math.Inf(1)
	for _, sync := range []bool{false, true} {
		b := cudaBackend(t)
		if sync {
			b = cudaSyncRegistered(t)
		}
		dev := func(h *tensor.Dense) *tensor.Dense {
			d, err := b.FromHost(h)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		xD := dev(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(make([]float64, T*H))))
		for _, c := range []struct {
			name string
			row  []float64
		}{
			{"NaN", []float64{0, 1, math.NaN(), 3, 4, 5, 6, 7}},
			{"+Inf", []float64{0, 1, 2, inf, 4, 5, 6, 7}},
			{"all -Inf", []float64{-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf}},
		} {
			l := make([]float64, T*E)
			for i := range l {
				l[i] = float64(i%E) * 0.1
			}
			copy(l[37*E:], c.row)
			g := G.NewGraph()
			logits := G.NewMatrix(g, tensor.Float64, G.WithShape(T, E), G.WithName("logits"),
				G.WithValue(dev(tensor.New(tensor.WithShape(T, E), tensor.WithBacking(l)))))
			x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"), G.WithValue(xD))
			r, err := ops.Route(logits, ops.RouteConfig{K: K, Scoring: ops.SoftmaxTopK, Renormalize: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ops.Dispatch(x, r); err != nil {
				t.Fatal(err)
			}
			m := G.NewTapeMachine(g)
			err = ops.RunAll(m)
			m.Close()
			if err == nil {
				err = b.Synchronize()
			}
			if !errors.Is(err, ops.ErrNaN) {
				t.Errorf("sync checks %t, %s logits: %v, want an error wrapping ErrNaN", sync, c.name, err)
			}
			faultKernelsHave(t, err, "route")
			if err := b.Synchronize(); err != nil {
				t.Errorf("the fault was reported twice: %v", err)
			}
		}

		g := G.NewGraph()
		idx := make([]int32, T*K)
		for i := range idx {
			idx[i] = int32(i % E)
		}
		idx[41] = E
		in := G.NewMatrix(g, tensor.Int32, G.WithShape(T, K), G.WithName("idx"),
			G.WithValue(dev(tensor.New(tensor.WithShape(T, K), tensor.WithBacking(idx)))))
		w := G.NewMatrix(g, tensor.Float64, G.WithShape(T, K), G.WithName("w"),
			G.WithValue(dev(tensor.New(tensor.WithShape(T, K), tensor.WithBacking(make([]float64, T*K))))))
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"), G.WithValue(xD))
		r, err := ops.NewRouting(in, w, E)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ops.Dispatch(x, r); err != nil {
			t.Fatal(err)
		}
		m := G.NewTapeMachine(g)
		err = ops.RunAll(m)
		m.Close()
		if err == nil {
			err = b.Synchronize()
		}
		if !errors.Is(err, ops.ErrExpertIndex) || errors.Is(err, ops.ErrNaN) {
			t.Errorf("sync checks %t, expert index %d: %v, want an error wrapping ErrExpertIndex only", sync, E, err)
		}
		faultKernelsHave(t, err, "plan_")
	}
}

// syncDevice is a device of its own on GPU 0 with the option SyncChecks, registered with ops (as
// "cuda:0{sync checks}") once per test binary, so that graphs on its tensors run with sync checks.
var syncDevice struct {
	sync.Mutex
	b *cudaops.Backend
}

// cudaSyncRegistered returns the registered sync-checking device's backend.
func cudaSyncRegistered(t testing.TB) *cudaops.Backend {
	t.Helper()
	cudaBackend(t)
	syncDevice.Lock()
	defer syncDevice.Unlock()
	if syncDevice.b == nil {
		d, err := cudaops.Open(0, cudaops.WithSyncChecks(true))
		if err != nil {
			t.Fatal(err)
		}
		b := cudaops.NewBackend(d)
		if err := ops.Register(b); err != nil {
			t.Fatal(err)
		}
		syncDevice.b = b
	}
	return syncDevice.b
}

// faultKernelsHave checks that err is a device fault naming the kernels that raised it, every one of
// them starting with prefix.
func faultKernelsHave(t *testing.T, err error, prefix string) {
	t.Helper()
	var fe *cudaops.FaultError
	if !errors.As(err, &fe) || len(fe.Faults()) == 0 {
		t.Errorf("%v: not a device fault naming its kernel", err)
		return
	}
	for _, f := range fe.Faults() {
		if !strings.HasPrefix(f.Kernel, prefix) || !strings.Contains(err.Error(), "in "+f.Kernel+": ") {
			t.Errorf("fault raised by %q (want a kernel named %s...): %v", f.Kernel, prefix, err)
		}
	}
}
