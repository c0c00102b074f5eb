// Package conformance is a backend conformance suite for the ops.Backend kernel set, in the spirit of
// gonum's testblas: every backend (the CPU reference, the CUDA backend, future ones) runs the very same
// cases from its own test file:
//
//	func TestCPUConformance(t *testing.T) { conformance.Run(t, ops.CPU(), conformance.Options{}) }
//
// The suite touches backend memory only through Backend.New, Backend.FromHost and Backend.ToHost, so a
// device backend runs it with device-resident inputs and outputs. Every kernel result is compared with a
// naive reference written in this package (plain loops in float64, independent of package ops), with
// hand-computed answers for a small example, with structural invariants of the routing plan, and
// (float64) with central finite differences of the forward kernels for every gradient kernel.
//
// Output tensors are prefilled with a sentinel (NaN for floats, SentinelInt32 for int32) so a kernel that
// leaves part of its output unwritten, or accumulates into it, fails; inputs are read back after every
// call and must be bitwise unchanged; every kernel is run twice (and under different GOMAXPROCS) and must
// give bitwise identical results.
package conformance

import (
	"fmt"
	"github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"runtime"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// SentinelInt32 is the value int32 outputs are prefilled with before a kernel runs. Float outputs are
// prefilled with NaN.
const SentinelInt32 int32 = math.MinInt32 + 7

// GuardFunc allocates an output tensor of the given dtype and shape owned by the backend, surrounded by
// guard memory, with the output and the guards filled with the sentinel (NaN for float32/float64,
// SentinelInt32 for int32). intact reports an error when anything outside the output was written.
type GuardFunc func(dt tensor.Dtype, shape ...int) (out *tensor.Dense, intact func() error, err error)

// Options tune the suite for a backend.
type Options struct {
	// Tol32 and Tol64 are the relative tolerances for float32 and float64 results: an element passes when
	// |got-want| <= tol * max(1, |want|, s), where s is the sum of the magnitudes of the terms that
	// produced it (for dot products). Defaults: 2e-5 and 1e-12.
	Tol32, Tol64 float64
	// FDTol is the tolerance of gradient kernels against central finite differences of the forward
	// kernels (float64, h = 1e-6): |g - fd| <= FDTol * max(1, |g|). Default 1e-6.
	FDTol float64
	// Short skips the largest cases (E = 1024, H = 130, the scheduling-determinism sizes).
	Short bool
	// Dtypes are the float dtypes to test; default float64 and float32.
	Dtypes []tensor.Dtype
	// Guard, when set, allocates every kernel output inside guard memory (see GuardFunc); otherwise
	// outputs are sentinel-filled host tensors copied in with FromHost. HostGuard is a GuardFunc for
	// backends that own host memory.
	Guard GuardFunc
	// NoGOMAXPROCS disables the check that results do not change with GOMAXPROCS (1 and 7).
	NoGOMAXPROCS bool
}

func (o Options) withDefaults() Options {
	if o.Tol32 == 0 {
		o.Tol32 = 2e-5
	}
	if o.Tol64 == 0 {
		o.Tol64 = 1e-12
	}
	if o.FDTol == 0 {
		o.FDTol = 1e-6
	}
	if len(o.Dtypes) == 0 {
		o.Dtypes = []tensor.Dtype{tensor.Float64, tensor.Float32}
	}
	return o
}

func (o Options) tol(dt tensor.Dtype) float64 {
	if dt == tensor.Float32 {
		return o.Tol32
	}
	return o.Tol64
}

// Run runs every conformance case against b as subtests of t.
func Run(t *testing.T, b ops.Backend, opts Options) {
	opts = opts.withDefaults()
	e := &env{b: b, o: opts}
	t.Run("Basics", e.testBasics)
	t.Run("KnownAnswers", e.testKnown)
	t.Run("Ties", e.testTies)
	t.Run("Random", e.testRandom)
	t.Run("LargeLogits", e.testLargeLogits)
	t.Run("PlanPatterns", e.testPlanPatterns)
	t.Run("FiniteDifferences", e.testFiniteDifferences)
	t.Run("BadInputs", e.testBadInputs)
	t.Run("Views", e.testViews)
	t.Run("FusedRoute", e.testFusedRoute)
	t.Run("Training", e.testTraining)
	t.Run("Policies", e.testPolicies)
	t.Run("BF16", e.testBF16)
	if !opts.NoGOMAXPROCS && !opts.Short {
		t.Run("Scheduling", e.testScheduling)
	}
}

// env carries the backend and options through the cases.
type env struct {
	b ops.Backend
	o Options
}

// HostGuard is a GuardFunc for host-memory backends: the output's backing slice sits in the middle of a
// larger slice whose margins hold the sentinel.
func HostGuard(dt tensor.Dtype, shape ...int) (*tensor.Dense, func() error, error) {
	const margin = 67
	n := 1
	for _, s := range shape {
		n *= s
	}
	switch dt {
	case tensor.Float64:
		big := make([]float64, n+2*margin)
		for i := range big {
			big[i] = math.NaN()
		}
		out := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(big[margin:margin+n]))
		return out, func() error {
			for i, v := range big {
				if (i < margin || i >= margin+n) && !math.IsNaN(v) {
					return fmt.Errorf("guard element %d (output is [%d,%d)) was written: %v", i, margin, margin+n, v)
				}
			}
			return nil
		}, nil
	case tensor.Float32:
		big := make([]float32, n+2*margin)
		for i := range big {
			big[i] = float32(math.NaN())
		}
		out := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(big[margin:margin+n]))
		return out, func() error {
			for i, v := range big {
				if (i < margin || i >= margin+n) && v == v {
					return fmt.Errorf("guard element %d (output is [%d,%d)) was written: %v", i, margin, margin+n, v)
				}
			}
			return nil
		}, nil
	case ops.BFloat16:
		big := make([]ops.BF16, n+2*margin)
		for i := range big {
			big[i] = ops.BF16FromFloat64(math.NaN())
		}
		out := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(big[margin:margin+n]))
		return out, func() error {
			for i, v := range big {
				if (i < margin || i >= margin+n) && !v.IsNaN() {
					return fmt.Errorf("guard element %d (output is [%d,%d)) was written: %v", i, margin, margin+n, v)
				}
			}
			return nil
		}, nil
	case tensor.Int32:
		big := make([]int32, n+2*margin)
		for i := range big {
			big[i] = SentinelInt32
		}
		out := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(big[margin:margin+n]))
		return out, func() error {
			for i, v := range big {
				if (i < margin || i >= margin+n) && v != SentinelInt32 {
					return fmt.Errorf("guard element %d (output is [%d,%d)) was written: %d", i, margin, margin+n, v)
				}
			}
			return nil
		}, nil
	}
	return nil, nil, fmt.Errorf("HostGuard: unsupported dtype %v", dt)
}

// ---- memory helpers (all traffic goes through New / FromHost / ToHost) ----

// roundTo returns vals rounded to the precision of dt (a copy).
func roundTo(dt tensor.Dtype, vals []float64) []float64 {
	out := make([]float64, len(vals))
	for i, v := range vals {
		if dt == tensor.Float32 {
			out[i] = float64(float32(v))
		} else if dt == ops.BFloat16 {
			out[i] = ops.BF16FromFloat64(v).Float64()
		} else {
			out[i] = v
		}
	}
	return out
}

func hostFloat(dt tensor.Dtype, vals []float64, shape ...int) *tensor.Dense {
	if dt != tensor.Float32 && dt != tensor.Float64 && dt != ops.BFloat16 {
		panic(fmt.Sprintf("conformance: unsupported dtype %v", dt))
	}
	return floats.Dense(dt, vals, shape...)
}

func hostInt32(vals []int32, shape ...int) *tensor.Dense {
	b := append([]int32(nil), vals...)
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
}

// input is a backend tensor together with its original host bits, for the unchanged-input check.
type input struct {
	name string
	d    *tensor.Dense
	bits []uint64
}

// devF copies float values (rounded to dt) into backend memory.
func (e *env) devF(t testing.TB, dt tensor.Dtype, vals []float64, shape ...int) *tensor.Dense {
	t.Helper()
	d, err := e.b.FromHost(hostFloat(dt, vals, shape...))
	if err != nil {
		t.Fatalf("%s FromHost(%v %v): %v", e.b.Name(), dt, shape, err)
	}
	return d
}

// devI copies int32 values into backend memory.
func (e *env) devI(t testing.TB, vals []int32, shape ...int) *tensor.Dense {
	t.Helper()
	d, err := e.b.FromHost(hostInt32(vals, shape...))
	if err != nil {
		t.Fatalf("%s FromHost(int32 %v): %v", e.b.Name(), shape, err)
	}
	return d
}

// output is a sentinel-filled output tensor in backend memory and the guard check (if any).
type output struct {
	d      *tensor.Dense
	intact func() error
}

func (e *env) out(t testing.TB, dt tensor.Dtype, shape ...int) output {
	t.Helper()
	if e.o.Guard != nil {
		d, intact, err := e.o.Guard(dt, shape...)
		if err != nil {
			t.Fatalf("Guard(%v %v): %v", dt, shape, err)
		}
		return output{d: d, intact: intact}
	}
	n := 1
	for _, s := range shape {
		n *= s
	}
	var h *tensor.Dense
	if dt == tensor.Int32 {
		v := make([]int32, n)
		for i := range v {
			v[i] = SentinelInt32
		}
		h = hostInt32(v, shape...)
	} else {
		v := make([]float64, n)
		for i := range v {
			v[i] = math.NaN()
		}
		h = hostFloat(dt, v, shape...)
	}
	d, err := e.b.FromHost(h)
	if err != nil {
		t.Fatalf("%s FromHost(sentinel %v %v): %v", e.b.Name(), dt, shape, err)
	}
	return output{d: d}
}

// checkGuard fails t when o's guard memory was written.
func (o output) checkGuard(t testing.TB, what string) {
	t.Helper()
	if o.intact == nil {
		return
	}
	if err := o.intact(); err != nil {
		t.Errorf("%s: wrote outside its output: %v", what, err)
	}
}

func (e *env) host(t testing.TB, d *tensor.Dense) *tensor.Dense {
	t.Helper()
	h, err := e.b.ToHost(d)
	if err != nil {
		t.Fatalf("%s ToHost: %v", e.b.Name(), err)
	}
	return h
}

// readF reads a float tensor from backend memory as float64 values.
func (e *env) readF(t testing.TB, d *tensor.Dense) []float64 {
	t.Helper()
	v, err := floats.Of(e.host(t, d))
	if err != nil {
		t.Fatalf("readF: %v", err)
	}
	return v
}

// readI reads an int32 tensor from backend memory.
func (e *env) readI(t testing.TB, d *tensor.Dense) []int32 {
	t.Helper()
	h := e.host(t, d)
	v, ok := h.Data().([]int32)
	if !ok {
		t.Fatalf("readI: want []int32 data, got %T (dtype %v)", h.Data(), h.Dtype())
	}
	return append([]int32(nil), v...)
}

// bits reads any tensor's elements as raw bit patterns (for bitwise comparisons).
func (e *env) bits(t testing.TB, d *tensor.Dense) []uint64 {
	t.Helper()
	h := e.host(t, d)
	switch v := h.Data().(type) {
	case []float64:
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = math.Float64bits(x)
		}
		return out
	case []float32:
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = uint64(math.Float32bits(x))
		}
		return out
	case []int32:
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = uint64(uint32(x))
		}
		return out
	case []ops.BF16:
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = uint64(x)
		}
		return out
	}
	t.Fatalf("bits: unexpected data %T", h.Data())
	return nil
}

func (e *env) snapshot(t testing.TB, name string, d *tensor.Dense) input {
	t.Helper()
	if d == nil || d.Shape().TotalSize() == 0 { // nothing to compare (and no data to read back)
		return input{name: name}
	}
	return input{name: name, d: d, bits: e.bits(t, d)}
}

// unchanged fails t when any input's contents differ from its snapshot.
func (e *env) unchanged(t testing.TB, what string, ins ...input) {
	t.Helper()
	for _, in := range ins {
		if in.d == nil {
			continue
		}
		now := e.bits(t, in.d)
		for i := range now {
			if now[i] != in.bits[i] {
				t.Errorf("%s modified its input %s at element %d", what, in.name, i)
				break
			}
		}
	}
}

// call runs a kernel, turning a panic into a test failure.
func call(t testing.TB, what string, f func() error) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			buf := make([]byte, 4096)
			buf = buf[:runtime.Stack(buf, false)]
			t.Fatalf("%s panicked: %v\n%s", what, r, buf)
		}
	}()
	return f()
}

// mustCall runs a kernel that must succeed.
func mustCall(t testing.TB, what string, f func() error) {
	t.Helper()
	if err := call(t, what, f); err != nil {
		t.Fatalf("%s: unexpected error: %v", what, err)
	}
}

// ---- comparisons ----

// closeTo compares got with want elementwise: |got-want| <= tol*max(1,|want|,scale[i]). scale may be nil.
func closeTo(t testing.TB, what string, got, want []float64, tol float64, scale []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d elements, want %d", what, len(got), len(want))
		return
	}
	bad := 0
	for i := range got {
		m := math.Max(1, math.Abs(want[i]))
		if scale != nil {
			m = math.Max(m, scale[i])
		}
		d := math.Abs(got[i] - want[i])
		if !(d <= tol*m) { // NaN-safe: an unwritten sentinel fails here
			if bad < 5 {
				t.Errorf("%s: element %d = %.17g, want %.17g (|diff| %.3g > %.3g)", what, i, got[i], want[i], d, tol*m)
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d elements differ", what, bad, len(got))
	}
}

func equalI(t testing.TB, what string, got, want []int32) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d elements, want %d", what, len(got), len(want))
		return
	}
	bad := 0
	for i := range got {
		if got[i] != want[i] {
			if bad < 5 {
				t.Errorf("%s: element %d = %d, want %d", what, i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d elements differ (got %v, want %v)", what, bad, len(got), short(got), short(want))
	}
}

func short(v []int32) []int32 {
	if len(v) > 32 {
		return v[:32]
	}
	return v
}

func sameBits(t testing.TB, what string, a, b []uint64) {
	t.Helper()
	if len(a) != len(b) {
		t.Errorf("%s: runs produced %d and %d elements", what, len(a), len(b))
		return
	}
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("%s: not deterministic: element %d differs between runs (bits %#x vs %#x)", what, i, a[i], b[i])
			return
		}
	}
}
