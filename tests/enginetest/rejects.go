package enginetest

import (
	"fmt"
	"math"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// operandCalls are one call of every engine method, with the operands given: a and b are the tensor
// operands, r the reuse/incr tensor. Each must refuse an operand that is not live device memory.
func (v *env) operandCalls(a, b, r tensor.Tensor) map[string]func() (tensor.Tensor, error) {
	e := v.e
	calls := map[string]func() (tensor.Tensor, error){}
	for _, c := range binaryCases {
		c := c
		calls[c.name] = func() (tensor.Tensor, error) { return c.dev(e, a, b) }
		calls[c.name+" reuse"] = func() (tensor.Tensor, error) { return c.dev(e, b, b, tensor.WithReuse(r)) }
		calls[c.name+" incr"] = func() (tensor.Tensor, error) { return c.dev(e, b, b, tensor.WithIncr(r)) }
	}
	for _, c := range scalarCases {
		c := c
		calls[c.name] = func() (tensor.Tensor, error) { return c.dev(e, a, 2.0, true) }
		calls[c.name+" reuse"] = func() (tensor.Tensor, error) { return c.dev(e, b, 2.0, false, tensor.WithReuse(r)) }
	}
	for _, c := range unaryCases {
		c := c
		calls[c.name] = func() (tensor.Tensor, error) { return c.dev(e, a) }
		calls[c.name+" incr"] = func() (tensor.Tensor, error) { return c.dev(e, b, tensor.WithIncr(r)) }
	}
	for _, c := range cmpCases {
		c := c
		calls[c.name] = func() (tensor.Tensor, error) { return c.dev(e, a, b) }
		calls[c.name+"Scalar"] = func() (tensor.Tensor, error) { return c.devS(e, a, 0.0, true) }
		calls[c.name+" reuse"] = func() (tensor.Tensor, error) {
			return c.dev(e, b, b, tensor.WithReuse(r), tensor.AsSameType())
		}
	}
	calls["Map"] = func() (tensor.Tensor, error) { return e.(tensor.Mapper).Map(math.Exp, a) }
	calls["Sum"] = func() (tensor.Tensor, error) { return e.(tensor.Sumer).Sum(a) }
	calls["Sum axis"] = func() (tensor.Tensor, error) { return e.(tensor.Sumer).Sum(a, 0) }
	calls["Concat"] = func() (tensor.Tensor, error) { return e.(tensor.Concater).Concat(b, 0, a) }
	calls["Transposer"] = func() (tensor.Tensor, error) {
		return nil, e.(tensor.Transposer).Transpose(a, []int{1, 2})
	}
	return calls
}

func (v *env) testRejects(t *testing.T) {
	good := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 3}, 1, 2))
	good2 := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 3}, 1, 2))
	reuse := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 3}, 1, 2))

	// A host buffer labelled with the device engine (what Gorgonia's VMs do to host values).
	hostVals := []float64{1, 2, 3, 4, 5, 6}
	hostDev := tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(hostVals), tensor.WithEngine(v.e))
	v.rejectAll(t, "host buffer labelled with the device engine", hostDev, "operand", reuse, good2, ops.ErrMixedBackends)
	v.rejectAll(t, "host reuse/incr tensor", hostDev, "target", good, good2, ops.ErrMixedBackends)
	for i, x := range hostVals {
		if x != float64(i+1) {
			t.Fatalf("a host buffer was written through the device engine")
		}
	}

	// A freed tensor.
	if f, ok := v.b.(Freer); ok {
		freed := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 3}, 1, 2))
		if err := f.Free(freed); err != nil {
			t.Fatal(err)
		}
		v.rejectAll(t, "freed tensor", freed, "operand", good, good2, devengine.ErrReleased)
		v.rejectAll(t, "freed reuse/incr tensor", freed, "target", good, good2, devengine.ErrReleased)
		if !v.b.Owns(freed) {
			t.Errorf("a freed tensor must still belong to the backend (so ops report it, not the CPU)")
		}
		if _, err := v.b.ToHost(freed); err == nil {
			t.Errorf("ToHost of a freed tensor: no error")
		}
		// Reuse the memory: the stale tensor must still be refused.
		for i := 0; i < 4; i++ {
			v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 3}, 1, 2))
		}
		v.rejectAll(t, "freed tensor after its memory was handed out again", freed, "operand", good, good2, devengine.ErrReleased)
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Memclr of freed memory did not panic")
				}
			}()
			v.e.Memclr(memOf(freed))
		}()
	}

	// A tensor of a finished training step.
	if s, ok := v.b.(ops.StepScoper); ok {
		if err := s.BeginStep(); err != nil {
			t.Fatal(err)
		}
		stale := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 3}, 1, 2))
		kept := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 3}, 1, 2))
		if err := s.Persist(kept); err != nil {
			t.Fatal(err)
		}
		if err := s.EndStep(); err != nil {
			t.Fatal(err)
		}
		// The step's memory is handed out again.
		if err := s.BeginStep(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 3}, 1, 2))
		}
		v.rejectAll(t, "tensor of a finished step", stale, "operand", good, good2, devengine.ErrReleased)
		v.rejectAll(t, "reuse/incr tensor of a finished step", stale, "target", good, good2, devengine.ErrReleased)
		if _, err := v.b.ToHost(stale); err == nil {
			t.Errorf("ToHost of a tensor of a finished step: no error")
		}
		if _, err := v.e.(tensor.Adder).Add(kept, good2); err != nil {
			t.Errorf("a persisted tensor is refused after its step: %v", err)
		}
		if err := s.EndStep(); err != nil {
			t.Fatal(err)
		}
		if err := s.EndStep(); err == nil {
			t.Errorf("EndStep without BeginStep: no error")
		}
		if err := s.BeginStep(); err != nil {
			t.Fatal(err)
		}
		if err := s.BeginStep(); err == nil {
			t.Errorf("nested BeginStep: no error")
		}
		if err := s.EndStep(); err != nil {
			t.Fatal(err)
		}
	}

	// A tensor of another device.
	if v.o.Other != nil {
		other, err := v.o.Other.FromHost(v.randHost(tensor.Float64, tensor.Shape{2, 3}, 1, 2))
		if err != nil {
			t.Fatal(err)
		}
		v.rejectAll(t, "tensor of another device", other, "operand", good, good2, ops.ErrMixedBackends)
		v.rejectAll(t, "reuse/incr tensor of another device", other, "target", good, good2, ops.ErrMixedBackends)
	}

	// A non-contiguous view (transposed access pattern, not materialised).
	view := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{3, 2}, 1, 2))
	if err := view.T(); err != nil {
		t.Fatal(err)
	}
	_, err := call(t, "Add of a transposed view", func() (tensor.Tensor, error) { return v.e.(tensor.Adder).Add(view, good2) })
	wantErr(t, "Add of a transposed view", err, ops.ErrUnsupported)
	view.UT()

	// Operands that differ in shape or dtype.
	f32 := v.dev(t, v.randHost(tensor.Float32, tensor.Shape{2, 3}, 1, 2))
	_, err = call(t, "Add float64+float32", func() (tensor.Tensor, error) { return v.e.(tensor.Adder).Add(good, f32) })
	wantErr(t, "Add of float64 and float32", err, ops.ErrDtype)
	other := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{3, 2}, 1, 2))
	_, err = call(t, "Add shapes", func() (tensor.Tensor, error) { return v.e.(tensor.Adder).Add(good, other) })
	wantErr(t, "Add of [2,3] and [3,2]", err, ops.ErrShape)
	small := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{5}, 1, 2))
	_, err = call(t, "Add reuse size", func() (tensor.Tensor, error) {
		return v.e.(tensor.Adder).Add(good, good2, tensor.WithReuse(small))
	})
	wantErr(t, "Add with a reuse tensor of 5 elements for 6", err, ops.ErrShape)
	i32, err := v.b.FromHost(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]int32{1, 2, 3, 4, 5, 6})))
	if err != nil {
		t.Fatal(err)
	}
	_, err = call(t, "Exp int32", func() (tensor.Tensor, error) { return v.e.(tensor.Exper).Exp(i32) })
	wantErr(t, "Exp of an int32 tensor", err, ops.ErrDtype)
}

// rejectAll runs every engine method with bad in the given role ("operand": the first tensor operand;
// "target": the reuse/incr tensor) and checks the error.
func (v *env) rejectAll(t *testing.T, what string, bad tensor.Tensor, role string, good, good2 tensor.Tensor, target error) {
	t.Helper()
	a, r := good, bad
	if role == "operand" {
		a, r = bad, good
	}
	for name, f := range v.operandCalls(a, good2, r) {
		isTarget := hasSuffix(name, " reuse") || hasSuffix(name, " incr")
		if isTarget != (role == "target") {
			continue
		}
		_, err := call(t, name, f)
		wantErr(t, fmt.Sprintf("%s: %s", what, name), err, target)
	}
}

func hasSuffix(s, suf string) bool { return len(s) >= len(suf) && s[len(s)-len(suf):] == suf }
