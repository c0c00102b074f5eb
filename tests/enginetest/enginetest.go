// Package enginetest is a conformance suite for device tensor engines (gorgonia.org/tensor's arithmetic
// interfaces over device memory, package devengine): every interface and every option is run on device
// tensors and compared with tensor's StdEng on host copies of the same data; operands that are not live
// device memory (host buffers labelled with the device engine, freed tensors, tensors of another device,
// non-contiguous views) must be refused with the documented sentinel errors; results must be
// deterministic. The simulated device runs it in CI, the CUDA backend on the GPU:
//
//	enginetest.Run(t, backend, engine, enginetest.Options{...})
package enginetest

import (
	"errors"
	"fmt"
	hostfloats "github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Options tune the suite for a device.
type Options struct {
	// TolF32 and TolF64 bound the relative error (|got-want| <= tol*max(1,|want|)) of transcendental
	// functions (exp, log, tanh, sigmoid, ...) against StdEng / Go's math. Arithmetic, comparisons,
	// copies, sqrt and the exactly rounded functions must match bitwise. 0 means bitwise everywhere.
	TolF32, TolF64 float64
	// Other is a second device's backend (optional): its tensors must be refused.
	Other ops.Backend
	// Stats reads the device's pool counters (optional; enables the step-memory test).
	Stats func() devengine.Stats
}

// Freer is implemented by backends that free a tensor's memory on request.
type Freer interface {
	Free(t *tensor.Dense) error
}

type env struct {
	b   ops.Backend
	e   tensor.Engine
	o   Options
	rng *rand.Rand
}

// Run runs the suite against backend b and its tensor engine e.
func Run(t *testing.T, b ops.Backend, e tensor.Engine, o Options) {
	v := &env{b: b, e: e, o: o, rng: rand.New(rand.NewSource(7))}
	t.Run("Binary", v.testBinary)
	t.Run("Scalar", v.testScalar)
	t.Run("Unary", v.testUnary)
	t.Run("Map", v.testMap)
	t.Run("Compare", v.testCompare)
	t.Run("Sum", v.testSum)
	t.Run("Transpose", v.testTranspose)
	t.Run("Concat", v.testConcat)
	t.Run("Memory", v.testMemory)
	t.Run("Rejects", v.testRejects)
	t.Run("Determinism", v.testDeterminism)
	t.Run("Graph", v.testGraph)
	if o.Stats != nil {
		t.Run("StepMemory", v.testStepMemory)
	}
}

// ---- host data and transfers ----

var dtypes = []tensor.Dtype{tensor.Float64, tensor.Float32}

// shapes covers scalar-free shapes with vector bodies and tails (odd sizes) for the kernels.
var shapes = []tensor.Shape{{7}, {3, 5}, {2, 3, 4}, {1031}}

func (v *env) randHost(dt tensor.Dtype, shape tensor.Shape, lo, hi float64) *tensor.Dense {
	n := shape.TotalSize()
	vals := make([]float64, n)
	for i := range vals {
		vals[i] = lo + (hi-lo)*v.rng.Float64()
	}
	return hostOf(dt, vals, shape...)
}

func hostOf(dt tensor.Dtype, vals []float64, shape ...int) *tensor.Dense {
	if dt == tensor.Float32 {
		b := make([]float32, len(vals))
		for i, x := range vals {
			b[i] = float32(x)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), vals...)))
}

func clone(h *tensor.Dense) *tensor.Dense { return h.Clone().(*tensor.Dense) }

func (v *env) dev(t testing.TB, h *tensor.Dense) *tensor.Dense {
	t.Helper()
	d, err := v.b.FromHost(h)
	if err != nil {
		t.Fatalf("FromHost: %v", err)
	}
	if !h.Shape().Eq(d.Shape()) && !h.Shape().IsScalar() {
		if err := d.Reshape(h.Shape().Clone()...); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (v *env) host(t testing.TB, d tensor.Tensor) *tensor.Dense {
	t.Helper()
	dd, ok := d.(*tensor.Dense)
	if !ok {
		t.Fatalf("result is %T, not a *tensor.Dense", d)
	}
	h, err := v.b.ToHost(dd)
	if err != nil {
		t.Fatalf("ToHost: %v", err)
	}
	return h
}

// floatsNoT returns a float tensor's elements as float64 (host tensors only; panics otherwise).
func floatsNoT(h *tensor.Dense) []float64 {
	v, err := hostfloats.Of(h)
	if err != nil {
		panic(err)
	}
	return v
}

// floats returns a tensor's elements as float64 (bools as 0/1).
func floats(t testing.TB, h *tensor.Dense) []float64 {
	t.Helper()
	switch d := h.Data().(type) {
	case []float64:
		return append([]float64(nil), d...)
	case []float32:
		out := make([]float64, len(d))
		for i, x := range d {
			out[i] = float64(x)
		}
		return out
	case []bool:
		out := make([]float64, len(d))
		for i, x := range d {
			if x {
				out[i] = 1
			}
		}
		return out
	case []int32:
		out := make([]float64, len(d))
		for i, x := range d {
			out[i] = float64(x)
		}
		return out
	case float64:
		return []float64{d}
	case float32:
		return []float64{float64(d)}
	}
	t.Fatalf("unexpected data %T", h.Data())
	return nil
}

// sameResult compares a device result with StdEng's host result: dtype, shape and values (bitwise when
// tol == 0, NaN equal to NaN).
func sameResult(t testing.TB, what string, got, want *tensor.Dense, tol float64) {
	t.Helper()
	if got.Dtype() != want.Dtype() {
		t.Errorf("%s: dtype %v, want %v", what, got.Dtype(), want.Dtype())
		return
	}
	if !got.Shape().Eq(want.Shape()) {
		t.Errorf("%s: shape %v, want %v", what, got.Shape(), want.Shape())
		return
	}
	g, w := floats(t, got), floats(t, want)
	bad := 0
	for i := range g {
		ok := g[i] == w[i] || math.IsNaN(g[i]) && math.IsNaN(w[i])
		if !ok && tol > 0 {
			ok = math.Abs(g[i]-w[i]) <= tol*math.Max(1, math.Abs(w[i])) || math.IsInf(w[i], 0) && g[i] == w[i]
		}
		if ok && tol == 0 && g[i] == 0 && math.Signbit(g[i]) != math.Signbit(w[i]) && got.Dtype() != tensor.Bool {
			ok = false
		}
		if !ok {
			if bad < 4 {
				t.Errorf("%s: element %d = %.17g, want %.17g", what, i, g[i], w[i])
			}
			bad++
		}
	}
	if bad > 4 {
		t.Errorf("%s: %d of %d elements differ", what, bad, len(g))
	}
}

func (v *env) tol(dt tensor.Dtype) float64 {
	if dt == tensor.Float32 {
		return v.o.TolF32
	}
	return v.o.TolF64
}

// wantErr checks that err wraps target.
func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one wrapping %q", what, target)
		return
	}
	if !errors.Is(err, target) {
		t.Errorf("%s: error %q does not wrap %q", what, err, target)
	}
}

// call runs f and turns a panic into a test failure (an engine must return errors, not panic).
func call(t testing.TB, what string, f func() (tensor.Tensor, error)) (r tensor.Tensor, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("%s panicked: %v", what, p)
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

// option variants of one call: how the output is chosen.
type variant int

const (
	safe variant = iota
	unsafeV
	reuseV
	incrV
)

func (m variant) String() string { return [...]string{"safe", "unsafe", "reuse", "incr"}[m] }

var variants = []variant{safe, unsafeV, reuseV, incrV}
