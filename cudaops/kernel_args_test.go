package cudaops

import (
	"errors"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// TestRowVariant: row kernels take 16-byte vectors only when every row of every operand starts aligned,
// and every name they form is a declared kernel.
func TestRowVariant(t *testing.T) {
	sigs, err := parseKernelSigs(kernelSigs)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dt    tensor.Dtype
		h     int
		addrs []uintptr
		name  string
		n     int
	}{
		{tensor.Float32, 8, []uintptr{0x1000, 0x2000}, "dispatch_f32_v4", 2},
		{tensor.Float32, 6, []uintptr{0x1000}, "dispatch_f32", 6},
		{tensor.Float32, 8, []uintptr{0x1000, 0x2004}, "dispatch_f32", 8},
		{tensor.Float32, 8, []uintptr{0x1000, 0}, "dispatch_f32_v4", 2}, // absent operand
		{tensor.Float64, 4, []uintptr{0x1010}, "dispatch_f64_v2", 2},
		{tensor.Float64, 3, []uintptr{0x1010}, "dispatch_f64", 3},
		{tensor.Float64, 4, []uintptr{0x1008}, "dispatch_f64", 4},
	} {
		name, n, err := rowVariant("dispatch", c.dt, c.h, c.addrs...)
		if err != nil || name != c.name || n != c.n {
			t.Errorf("rowVariant(%v, h=%d, %#x) = %s, %d, %v; want %s, %d", c.dt, c.h, c.addrs, name, n, err, c.name, c.n)
		}
	}
	for _, base := range []string{"dispatch", "combine", "combine_bwd"} {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			for _, h := range []int{3, 4} {
				name, _, _ := rowVariant(base, dt, h, 0x100)
				if _, ok := sigs[name]; !ok {
					t.Errorf("rowVariant forms %s, which is not a declared kernel", name)
				}
			}
		}
	}
	if _, _, err := rowVariant("dispatch", tensor.Int32, 4); !errors.Is(err, ops.ErrDtype) {
		t.Errorf("int32 rows: %v, want ErrDtype", err)
	}
}

// TestKernelArgs: dtype suffixes, dimension checks and the route_weights modes of every scoring.
func TestKernelArgs(t *testing.T) {
	if s, err := suffix(tensor.Float64); s != "f64" || err != nil {
		t.Errorf("suffix(float64) = %q, %v", s, err)
	}
	if _, err := suffix(tensor.Int32); !errors.Is(err, ops.ErrDtype) {
		t.Errorf("suffix(int32): %v", err)
	}
	if err := checkDims("x", 1, 1<<31-1); err != nil {
		t.Error(err)
	}
	for _, d := range []int{0, -1, 1 << 31} {
		if err := checkDims("x", 5, d); !errors.Is(err, ops.ErrShape) {
			t.Errorf("checkDims(%d): %v", d, err)
		}
	}
	for _, c := range []struct {
		cfg  ops.RouteConfig
		mode int
	}{
		{ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK}, modeFullSoftmax},
		{ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true}, modeKSoftmax},
		{ops.RouteConfig{K: 2, Scoring: ops.TopKSoftmax}, modeKSoftmax},
		{ops.RouteConfig{K: 2, Scoring: ops.Sigmoid}, modeSigmoid},
		{ops.RouteConfig{K: 2, Scoring: ops.Sigmoid, Renormalize: true}, modeSigmoidNorm},
	} {
		if got := weightMode(c.cfg); got != c.mode {
			t.Errorf("weightMode(%v) = %d, want %d", c.cfg, got, c.mode)
		}
	}
	if b2i(true) != 1 || b2i(false) != 0 {
		t.Error("b2i")
	}
}

// TestPlanExperts: the expert count a plan's length implies for T tokens and K slots each
// (2E+1+2TK), and the lengths that are no plan.
func TestPlanExperts(t *testing.T) {
	plan := func(n int) *tensor.Dense { return tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(n)) }
	if E, err := planExperts("p", plan(ops.PlanLen(3, 2, 5)), 3, 2); E != 5 || err != nil {
		t.Errorf("planExperts = %d, %v, want 5", E, err)
	}
	for _, n := range []int{2*3*2 + 1, 2*3*2 + 2, 2*3*2 + 4} {
		if _, err := planExperts("p", plan(n), 3, 2); !errors.Is(err, ops.ErrShape) {
			t.Errorf("plan of %d elements: %v, want ErrShape", n, err)
		}
	}
	if _, err := planExperts("p", tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(3, 7)), 3, 2); !errors.Is(err, ops.ErrShape) {
		t.Errorf("a matrix plan: %v", err)
	}
	if _, err := floatDtype("x", tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(2))); !errors.Is(err, ops.ErrDtype) {
		t.Errorf("floatDtype(int32): %v", err)
	}
	if r, c, err := dims2("x", "m", tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(2, 3))); r != 2 || c != 3 || err != nil {
		t.Errorf("dims2 = %d, %d, %v", r, c, err)
	}
}
