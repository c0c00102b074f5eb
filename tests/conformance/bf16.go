package conformance

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/internal/bf16"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// The bfloat16 cases (ops.MixedPrecisionBackend). Where the contract fixes every bit (casts, unweighted
// and weighted dispatch: moves, or one product rounded once) results are compared bitwise with
// internal/dtBF16's conversions (tested over all 2^32 float32 inputs). Where it allows float32
// accumulation the tolerance is derived, per element, against the exact value of the same bfloat16
// inputs (computed in float64):
//
//	|got - exact| <= r·|exact| + (n+1)·2^-23·Σ|terms|
//
// r is the final rounding (the unit roundoff: 2^-8 into bfloat16, whose significands have 8 bits, 2^-24
// into float32), n
// the number of accumulated terms (a float32 sum of n terms errs by at most n·2^-24·Σ|terms|; twice that
// is allowed).

var (
	dtF32  = tensor.Float32
	dtF64  = tensor.Float64
	dtBF16 = ops.BFloat16
)

// unitRound is the unit roundoff of dt (half a unit in the last place, relative to the value: 8
// significant bits for bfloat16, 24 for float32).
func unitRound(dt tensor.Dtype) float64 {
	if dt == ops.BFloat16 {
		return 0x1p-8
	}
	return 0x1p-24
}

// bf16Close compares got with the exact values: |got-want| <= r·|want| + (n+1)·2^-23·scale[i] + tiny
// (tiny: the smallest bfloat16 subnormal, for results that underflow).
func bf16Close(t testing.TB, what string, got, want []float64, out tensor.Dtype, n int, scale []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d elements, want %d", what, len(got), len(want))
		return
	}
	bad := 0
	for i := range got {
		tol := unitRound(out)*math.Abs(want[i]) + 0x1p-133
		if scale != nil {
			tol += float64(n+1) * 0x1p-23 * scale[i]
		}
		if d := math.Abs(got[i] - want[i]); !(d <= tol) {
			if bad < 5 {
				t.Errorf("%s: element %d = %.9g, want %.9g (|diff| %.3g > %.3g)", what, i, got[i], want[i], d, tol)
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d elements differ", what, bad, len(got))
	}
}

// bitsOfBF16 returns the bfloat16 bit patterns of exact values (which must be bfloat16 values).
func bitsOfBF16(v []float64) []uint64 {
	out := make([]uint64, len(v))
	for i, x := range v {
		out[i] = uint64(bf16.FromFloat64(x))
	}
	return out
}

// equalBits compares bit patterns.
func equalBits(t testing.TB, what string, got, want []uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d elements, want %d", what, len(got), len(want))
		return
	}
	bad := 0
	for i := range got {
		if got[i] != want[i] {
			if bad < 5 {
				t.Errorf("%s: element %d has bits %#x, want %#x", what, i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d elements differ", what, bad, len(got))
	}
}

// bf16Vals returns n random bfloat16 values (as float64) of magnitudes 2^-6..2^6, both signs.
func bf16Vals(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		x := (2*rng.Float64() - 1) * math.Ldexp(1, rng.Intn(13)-6)
		v[i] = bf16.FromFloat64(x).Float64()
	}
	return v
}

// doubleRoundingPairs returns n pairs (w float32, x bfloat16) whose exact product lies just off a
// bfloat16 tie that its float32 rounding lands on: rounding the product to float32 first and then to
// bfloat16 gives the wrong bfloat16 for about half of them.
func doubleRoundingPairs(rng *rand.Rand, n int) (ws, xs []float64) {
	for len(ws) < n {
		w := float32(1 + rng.Float64())
		x := bf16.FromFloat64(1 + rng.Float64())
		p := float64(w) * x.Float64() // exact
		p32 := float32(p)
		if math.Float32bits(p32)&0xffff == 0x8000 && float64(p32) != p {
			ws, xs = append(ws, float64(w)), append(xs, x.Float64())
		}
	}
	return ws, xs
}

// castCases are values that exercise every rounding path of the casts.
func castCases(rng *rand.Rand) []float64 {
	v := []float64{0, math.Copysign(0, -1), 1, -2, 0.1, 1e-40, -1e-45, math.MaxFloat32, -math.MaxFloat32,
		math.Inf(1), math.Inf(-1), math.NaN(), 3.3895313892515355e38, 3.4e38, 1e300, 1e-300,
		float64(math.Float32frombits(0x3f808000)), float64(math.Float32frombits(0x3f818000)), // float32 bfloat16 ties
		float64(math.Float32frombits(0x00008000)), float64(math.Float32frombits(0x7f7f8000))}
	for m := 1; m < 64; m += 2 { // float64 values one step either side of bfloat16 ties
		tie := 1 + float64(2*m+1)/256
		v = append(v, math.Nextafter(tie, 0), math.Nextafter(tie, 2), -math.Nextafter(tie, 0))
	}
	for i := 0; i < 300; i++ {
		v = append(v, rng.NormFloat64()*math.Ldexp(1, rng.Intn(60)-30))
	}
	return v
}

// refCast converts the value stored as from (already rounded to it) to to, as the contract says.
func refCast(v float64, from, to tensor.Dtype) uint64 {
	switch to {
	case dtBF16:
		if from == dtF32 {
			return uint64(bf16.FromFloat32(float32(v)))
		}
		return uint64(bf16.FromFloat64(v))
	case dtF32:
		return uint64(math.Float32bits(float32(v)))
	}
	return math.Float64bits(v)
}

// isNaNBits reports whether bits of dtype dt are a NaN.
func isNaNBits(b uint64, dt tensor.Dtype) bool {
	switch dt {
	case dtBF16:
		return bf16.BFloat16(b).IsNaN()
	case dtF32:
		return math.IsNaN(float64(math.Float32frombits(uint32(b))))
	}
	return math.IsNaN(math.Float64frombits(b))
}

func (e *env) testBF16(t *testing.T) {
	t.Run("Cast", e.testBF16Cast)
	t.Run("Permute", e.testBF16Permute)
	t.Run("SwiGLU", e.testBF16SwiGLU)
	t.Run("Add", e.testBF16Add)
	t.Run("BadInputs", e.testBF16BadInputs)
	t.Run("GEMM", e.testBF16GEMM)
}

func (e *env) testBF16Cast(t *testing.T) {
	rng := rand.New(rand.NewSource(71))
	vals := castCases(rng)
	dts := []tensor.Dtype{dtF32, dtF64, dtBF16}
	for _, from := range dts {
		src := make([]float64, len(vals))
		for i, v := range vals {
			src[i] = roundToDtype(from, v)
		}
		for _, to := range dts {
			for _, n := range []int{len(src), 1, 7, 8, 9} { // vector body and scalar tails
				in := e.devF(t, from, src[:n], n)
				what := fmt.Sprintf("Cast %v->%v (n=%d)", from, to, n)
				out := e.kernel(t, what, to, []int{n}, []input{e.snapshot(t, "src", in)},
					func(o *tensor.Dense) error { return e.b.Cast(in, o) })
				got := e.bits(t, out)
				for i := range got {
					want := refCast(src[i], from, to)
					if math.IsNaN(src[i]) && from != to && from != dtBF16 && to != dtBF16 {
						if !isNaNBits(got[i], to) { // NaN payloads of float64 <-> float32 are the platform's
							t.Errorf("%s: element %d: NaN became %#x", what, i, got[i])
						}
						continue
					}
					if got[i] != want {
						t.Errorf("%s: element %d (%v): bits %#x, want %#x", what, i, src[i], got[i], want)
						break
					}
				}
			}
		}
	}
}

// roundToDtype rounds v to dt once.
func roundToDtype(dt tensor.Dtype, v float64) float64 {
	switch dt {
	case dtBF16:
		return bf16.FromFloat64(v).Float64()
	case dtF32:
		return float64(float32(v))
	}
	return v
}

// bf16Routing returns a fixed routing of T tokens over E experts with K experts each (every expert
// used, some more than others) and its host plan.
func bf16Routing(rng *rand.Rand, T, E, K int) ([]int32, ops.PlanView) {
	return bf16RoutingCapacity(rng, T, E, K, 0)
}

// bf16RoutingCapacity is bf16Routing with a capacity plan (slots beyond C per expert dropped by
// position) when C > 0.
func bf16RoutingCapacity(rng *rand.Rand, T, E, K, C int) ([]int32, ops.PlanView) {
	idx := make([]int32, T*K)
	for t := 0; t < T; t++ {
		perm := rng.Perm(E)
		for j := 0; j < K; j++ {
			idx[t*K+j] = int32(perm[j])
		}
	}
	plan := refPlan(idx, T, K, E)
	if C > 0 {
		plan = refCapacityPlan(idx, make([]float64, T*K), T, K, E, C, ops.DropPosition)
	}
	pv, err := ops.NewPlanView(plan, T, K, E)
	if err != nil {
		panic(err)
	}
	return plan, pv
}

func (e *env) testBF16Permute(t *testing.T) {
	for ci, c := range []struct{ T, E, K, H, C int }{{9, 4, 2, 16, 0}, {7, 5, 3, 13, 0}, {33, 8, 2, 64, 0}, {5, 3, 1, 8, 0},
		{4, 4, 4, 24, 0}, {9, 4, 2, 16, 3}, {7, 5, 3, 13, 2}} { // C > 0: capacity plans (dropped slots)
		rng := rand.New(rand.NewSource(int64(500 + ci)))
		plan, pv := bf16RoutingCapacity(rng, c.T, c.E, c.K, c.C)
		if c.C > 0 && pv.DroppedSlots() == 0 {
			t.Fatalf("capacity %d drops no slot", c.C)
		}
		planD := e.devI(t, plan, len(plan))
		n := c.T * c.K
		w := roundToF32(randVals(rng, n))
		// Double-rounding traps: the first element of the last tokens' rows, weighted by their first slot.
		x := bf16Vals(rng, c.T*c.H)
		x32 := roundToF32(randVals(rng, c.T*c.H))
		pw, px := doubleRoundingPairs(rng, min(c.T, 4))
		for i := range pw {
			tok := c.T - 1 - i
			w[tok*c.K], x[tok*c.H] = pw[i], px[i]
		}
		xD, x32D, wD := e.devF(t, dtBF16, x, c.T, c.H), e.devF(t, dtF32, x32, c.T, c.H), e.devF(t, dtF32, w, c.T, c.K)
		ins := []input{e.snapshot(t, "x", xD), e.snapshot(t, "w", wD), e.snapshot(t, "plan", planD)}
		name := fmt.Sprintf("T=%d,E=%d,K=%d,H=%d,capacity=%d", c.T, c.E, c.K, c.H, c.C)

		// Dispatch: exact (moves bytes, or one product rounded once).
		for _, d := range []struct {
			what string
			src  *tensor.Dense
			vals []float64
			w    *tensor.Dense
			wv   []float64
		}{{"dtBF16 rows", xD, x, nil, nil}, {"dtBF16 rows, weighted", xD, x, wD, w}, {"float32 rows into dtBF16", x32D, x32, nil, nil},
			{"float32 rows into dtBF16, weighted", x32D, x32, wD, w}} {
			what := "Dispatch " + d.what + " " + name
			src, wt := d.src, d.w
			out := e.kernel(t, what, dtBF16, []int{n, c.H}, append(ins, e.snapshot(t, "x32", x32D)),
				func(o *tensor.Dense) error { return e.b.Dispatch(src, wt, planD, o) })
			equalBits(t, what, e.bits(t, out), bitsOfBF16(roundAll(dtBF16, refDispatch(d.vals, d.wv, pv, c.H))))
		}

		// Combine: rounded once from a float32-or-wider sum of K terms.
		ye := bf16Vals(rng, n*c.H)
		yeD := e.devF(t, dtBF16, ye, n, c.H)
		for _, outDt := range []tensor.Dtype{dtBF16, dtF32} {
			for _, weighted := range []bool{false, true} {
				var wt *tensor.Dense
				var wv []float64
				if weighted {
					wt, wv = wD, w
				}
				what := fmt.Sprintf("Combine dtBF16 rows into %v (weighted=%t) %s", outDt, weighted, name)
				out := e.kernel(t, what, outDt, []int{c.T, c.H}, []input{e.snapshot(t, "ye", yeD), e.snapshot(t, "w", wD)},
					func(o *tensor.Dense) error { return e.b.Combine(yeD, wt, planD, o) })
				want := refCombine(ye, wv, pv, c.H)
				scale := refCombine(absAll(ye), absAll(wv), pv, c.H)
				bf16Close(t, what, e.readF(t, out), want, outDt, c.K, scale)
			}
		}

		// Combine gradient w.r.t. the weights: float32 dot products of dy (dtBF16 or float32) and ye.
		for _, dyDt := range []tensor.Dtype{dtBF16, dtF32} {
			dy := roundAll(dyDt, randVals(rng, c.T*c.H))
			dyD := e.devF(t, dyDt, dy, c.T, c.H)
			what := fmt.Sprintf("CombineGradWeights dy %v, dtBF16 rows %s", dyDt, name)
			out := e.kernel(t, what, dtF32, []int{c.T, c.K}, []input{e.snapshot(t, "dy", dyD), e.snapshot(t, "ye", yeD)},
				func(o *tensor.Dense) error { return e.b.CombineGradWeights(dyD, yeD, planD, o) })
			want, scale := refCombineGradWeights(dy, ye, pv, c.H)
			bf16Close(t, what, e.readF(t, out), want, dtF32, c.H, scale)
		}
	}
}

func roundToF32(v []float64) []float64 { return roundAll(dtF32, v) }

func roundAll(dt tensor.Dtype, v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = roundToDtype(dt, x)
	}
	return out
}

func absAll(v []float64) []float64 {
	if v == nil {
		return nil
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Abs(x)
	}
	return out
}

func bf16Sigmoid(a float64) float64 { return 1 / (1 + math.Exp(-a)) }

func (e *env) testBF16SwiGLU(t *testing.T) {
	for _, n := range []int{1, 8, 37, 1024} {
		rng := rand.New(rand.NewSource(int64(600 + n)))
		g := bf16Vals(rng, n)
		u := bf16Vals(rng, n)
		d := bf16Vals(rng, n)
		if n >= 8 {
			g[0], g[1], g[2] = -1.2734375, 0, -20 // near silu's minimum (silu' = 0), zero, deep negative
		}
		gD, uD, dD := e.devF(t, dtBF16, g, n), e.devF(t, dtBF16, u, n), e.devF(t, dtBF16, d, n)
		ins := []input{e.snapshot(t, "gate", gD), e.snapshot(t, "up", uD), e.snapshot(t, "dout", dD)}
		what := fmt.Sprintf("SwiGLU dtBF16 n=%d", n)
		out := e.kernel(t, what, dtBF16, []int{n}, ins[:2], func(o *tensor.Dense) error { return e.b.SwiGLU(gD, uD, o) })
		want := make([]float64, n)
		scale := make([]float64, n)
		for i := range want {
			s := bf16Sigmoid(g[i])
			want[i] = g[i] * s * u[i]
			scale[i] = math.Abs(want[i])
		}
		// float32 arithmetic before the one rounding: a few float32 units (≲ 2^-20 relative) on top of r.
		bf16Close(t, what, e.readF(t, out), want, dtBF16, 7, scale)

		what = fmt.Sprintf("SwiGLUGrad dtBF16 n=%d", n)
		var dg, du *tensor.Dense
		e.kernel(t, what, dtBF16, []int{2 * n}, ins, func(o *tensor.Dense) error {
			var err error
			if dg, err = e.b.View(o, 0, n); err != nil {
				return err
			}
			if du, err = e.b.View(o, n, n); err != nil {
				return err
			}
			return e.b.SwiGLUGrad(gD, uD, dD, dg, du)
		})
		wg, wu := make([]float64, n), make([]float64, n)
		sg, su := make([]float64, n), make([]float64, n)
		for i := range wg {
			a := g[i]
			s := bf16Sigmoid(a)
			wg[i] = d[i] * u[i] * s * (1 + a*(1-s))
			wu[i] = d[i] * a * s
			sg[i] = math.Abs(d[i]*u[i]*s) * (1 + math.Abs(a)) // 1 + a(1-s) cancels near a = -1.28
			su[i] = math.Abs(wu[i])
		}
		bf16Close(t, what+" (dgate)", e.readF(t, dg), wg, dtBF16, 7, sg)
		bf16Close(t, what+" (dup)", e.readF(t, du), wu, dtBF16, 7, su)
	}
}

// bf16Adder returns the tensor engine that adds this backend's bfloat16 tensors.
func (e *env) bf16Adder(t testing.TB) tensor.Adder {
	t.Helper()
	eng := ops.HostEngine()
	if p, ok := e.b.(ops.TensorEngineProvider); ok {
		var err error
		if eng, err = p.TensorEngine(); err != nil {
			t.Fatalf("%s TensorEngine: %v", e.b.Name(), err)
		}
	}
	a, ok := eng.(tensor.Adder)
	if !ok {
		t.Fatalf("%s: the tensor engine %T does not add", e.b.Name(), eng)
	}
	return a
}

func (e *env) testBF16Add(t *testing.T) {
	adder := e.bf16Adder(t)
	for _, n := range []int{1, 9, 64, 1000} {
		rng := rand.New(rand.NewSource(int64(700 + n)))
		a, b, c := bf16Vals(rng, n), bf16Vals(rng, n), bf16Vals(rng, n)
		a[0], b[0] = 1, math.Ldexp(1, -8) // a tie of the exact sum: rounds to even (1)
		aD, bD := e.devF(t, dtBF16, a, n), e.devF(t, dtBF16, b, n)
		ins := []input{e.snapshot(t, "a", aD), e.snapshot(t, "b", bD)}
		want := make([]uint64, n)
		wantIncr := make([]uint64, n)
		for i := range want {
			s := bf16.FromFloat32(float32(a[i]) + float32(b[i]))
			want[i] = uint64(s)
			wantIncr[i] = uint64(bf16.FromFloat32(float32(c[i]) + s.Float32()))
		}
		what := fmt.Sprintf("tensor engine Add dtBF16 n=%d", n)
		var got tensor.Tensor
		mustCall(t, what, func() (err error) { got, err = adder.Add(aD, bD); return err })
		equalBits(t, what, e.bits(t, got.(*tensor.Dense)), want)
		e.unchanged(t, what, ins...)
		acc := e.devF(t, dtBF16, c, n)
		mustCall(t, what+" (incr)", func() error { _, err := adder.Add(aD, bD, tensor.WithIncr(acc)); return err })
		equalBits(t, what+" (incr)", e.bits(t, acc), wantIncr)
	}
}

// wantErr fails t unless err wraps sentinel.
func wantErr(t testing.TB, what string, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Errorf("%s: got %v, want an error wrapping %v", what, err, sentinel)
	}
}

func (e *env) testBF16BadInputs(t *testing.T) {
	const T, E, K, H = 4, 3, 2, 8
	rng := rand.New(rand.NewSource(800))
	plan, _ := bf16Routing(rng, T, E, K)
	planD := e.devI(t, plan, len(plan))
	x := e.devF(t, dtBF16, bf16Vals(rng, T*H), T, H)
	wbf := e.devF(t, dtBF16, bf16Vals(rng, T*K), T, K)
	w64 := e.devF(t, dtF64, randVals(rng, T*K), T, K)
	ye := e.devF(t, dtBF16, bf16Vals(rng, T*K*H), T*K, H)
	for _, c := range []struct {
		what     string
		sentinel error
		f        func() error
	}{
		{"Dispatch dtBF16 rows with dtBF16 weights", ops.ErrDtype, func() error { return e.b.Dispatch(x, wbf, planD, e.out(t, dtBF16, T*K, H).d) }},
		{"Dispatch dtBF16 rows into float64", ops.ErrDtype, func() error { return e.b.Dispatch(x, nil, planD, e.out(t, dtF64, T*K, H).d) }},
		{"Dispatch dtBF16 rows with float64 weights", ops.ErrDtype, func() error { return e.b.Dispatch(x, w64, planD, e.out(t, dtBF16, T*K, H).d) }},
		{"Combine dtBF16 rows into float64", ops.ErrDtype, func() error { return e.b.Combine(ye, nil, planD, e.out(t, dtF64, T, H).d) }},
		{"CombineGradWeights into dtBF16", ops.ErrDtype, func() error { return e.b.CombineGradWeights(x, ye, planD, e.out(t, dtBF16, T, K).d) }},
		{"Cast of int32", ops.ErrDtype, func() error { return e.b.Cast(planD, e.out(t, dtBF16, len(plan)).d) }},
		{"Cast of different sizes", ops.ErrShape, func() error { return e.b.Cast(x, e.out(t, dtF32, T*H+1).d) }},
		{"RouteIndices on dtBF16 logits", ops.ErrDtype, func() error {
			return e.b.RouteIndices(x, ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true}, e.out(t, tensor.Int32, T, 2).d)
		}},
		{"ZLoss on dtBF16 logits", ops.ErrDtype, func() error { return e.b.ZLoss(x, 1, e.out(t, dtBF16, 1).d) }},
		{"SwiGLU mixing dtBF16 and float32", ops.ErrDtype, func() error {
			return e.b.SwiGLU(x, e.devF(t, dtF32, randVals(rng, T*H), T, H), e.out(t, dtBF16, T, H).d)
		}},
		{"MSELoss on dtBF16", ops.ErrDtype, func() error { return e.b.MSELoss(x, x, e.out(t, dtBF16, 1).d) }},
	} {
		err := call(t, c.what, c.f)
		wantErr(t, c.what, err, c.sentinel)
	}
}

// testBF16GEMM: the matrix products on bfloat16 operands (float32 accumulation), into bfloat16 and
// float32. On a backend without the bfloat16 GEMM kernels these fail with its ErrUnsupported message.
func (e *env) testBF16GEMM(t *testing.T) {
	for ci, c := range []struct{ T, E, K, In, Out int }{{9, 4, 2, 16, 24}, {7, 5, 3, 13, 9}, {64, 8, 2, 72, 40}, {3, 6, 1, 8, 8}} {
		rng := rand.New(rand.NewSource(int64(900 + ci)))
		plan, pv := bf16Routing(rng, c.T, c.E, c.K)
		planD := e.devI(t, plan, len(plan))
		n := c.T * c.K
		offsets := plan[c.E : 2*c.E+1]
		_ = pv
		x := bf16Vals(rng, n*c.In)
		w := bf16Vals(rng, c.E*c.In*c.Out)
		xD, wD := e.devF(t, dtBF16, x, n, c.In), e.devF(t, dtBF16, w, c.E, c.In, c.Out)
		name := fmt.Sprintf("T=%d,E=%d,K=%d,In=%d,Out=%d", c.T, c.E, c.K, c.In, c.Out)
		for _, outDt := range []tensor.Dtype{dtBF16, dtF32} {
			for _, tw := range []bool{false, true} {
				wv, wDev := w, wD
				if tw {
					wv = transposeExperts(w, c.E, c.In, c.Out)
					wDev = e.devF(t, dtBF16, wv, c.E, c.Out, c.In)
				}
				what := fmt.Sprintf("GroupedMatMul dtBF16 into %v (transposeW=%t) %s", outDt, tw, name)
				out := e.kernel(t, what, outDt, []int{n, c.Out}, []input{e.snapshot(t, "x", xD), e.snapshot(t, "w", wDev)},
					func(o *tensor.Dense) error { return e.b.GroupedMatMul(xD, wDev, planD, tw, o) })
				want, scale := refGroupedMatMul(x, wv, offsets, c.E, c.In, c.Out, tw)
				bf16Close(t, what, e.readF(t, out), want, outDt, c.In, scale)
			}
			dy := bf16Vals(rng, n*c.Out)
			dyD := e.devF(t, dtBF16, dy, n, c.Out)
			what := fmt.Sprintf("GroupedMatMulGradW dtBF16 into %v %s", outDt, name)
			out := e.kernel(t, what, outDt, []int{c.E, c.In, c.Out}, []input{e.snapshot(t, "x", xD), e.snapshot(t, "dy", dyD)},
				func(o *tensor.Dense) error { return e.b.GroupedMatMulGradW(xD, dyD, planD, o) })
			want, scale := refGroupedMatMulGradW(x, dy, offsets, c.E, c.In, c.Out)
			bf16Close(t, what, e.readF(t, out), want, outDt, n, scale)
		}
	}
	for si, s := range []mmShape{{1, 1, 1}, {3, 5, 2}, {17, 33, 9}, {64, 130, 72}, {2, 0, 3}} {
		rng := rand.New(rand.NewSource(int64(950 + si)))
		a, b := bf16Vals(rng, s.M*s.K), bf16Vals(rng, s.K*s.N)
		ref, scale := refMatMul(a, b, s.M, s.K, s.N, false, false)
		for _, outDt := range []tensor.Dtype{dtBF16, dtF32} {
			for _, f := range allFlags {
				as, bs, ash, bsh := matmulOperands(a, b, s, f[0], f[1])
				aD, bD := e.devF(t, dtBF16, as, ash...), e.devF(t, dtBF16, bs, bsh...)
				what := fmt.Sprintf("MatMul dtBF16 into %v (M=%d,K=%d,N=%d,transA=%t,transB=%t)", outDt, s.M, s.K, s.N, f[0], f[1])
				out := e.kernel(t, what, outDt, []int{s.M, s.N}, []input{e.snapshot(t, "a", aD), e.snapshot(t, "b", bD)},
					func(o *tensor.Dense) error { return e.b.MatMul(aD, bD, f[0], f[1], o) })
				bf16Close(t, what, e.readF(t, out), ref, outDt, s.K, scale)
			}
		}
	}
	// Dtype rules of the products.
	rng := rand.New(rand.NewSource(990))
	const T, E, K, In, Out = 4, 3, 2, 8, 8
	plan, _ := bf16Routing(rng, T, E, K)
	planD := e.devI(t, plan, len(plan))
	xb := e.devF(t, dtBF16, bf16Vals(rng, T*K*In), T*K, In)
	wf := e.devF(t, dtF32, randVals(rng, E*In*Out), E, In, Out)
	wb := e.devF(t, dtBF16, bf16Vals(rng, E*In*Out), E, In, Out)
	for _, c := range []struct {
		what string
		f    func() error
	}{
		{"GroupedMatMul dtBF16 rows with float32 weights", func() error { return e.b.GroupedMatMul(xb, wf, planD, false, e.out(t, dtBF16, T*K, Out).d) }},
		{"GroupedMatMul dtBF16 into float64", func() error { return e.b.GroupedMatMul(xb, wb, planD, false, e.out(t, dtF64, T*K, Out).d) }},
		{"GroupedMatMulGradW dtBF16 into float64", func() error { return e.b.GroupedMatMulGradW(xb, xb, planD, e.out(t, dtF64, E, In, In).d) }},
		{"MatMul dtBF16 into float64", func() error { return e.b.MatMul(xb, xb, true, false, e.out(t, dtF64, In, In).d) }},
	} {
		err := call(t, c.what, c.f)
		if errors.Is(err, ops.ErrUnsupported) {
			t.Errorf("%s: %v (the bfloat16 GEMM kernels are missing)", c.what, err)
			continue
		}
		wantErr(t, c.what, err, ops.ErrDtype)
	}
}

// transposeExperts returns w [E,In,Out] stored as [E,Out,In].
func transposeExperts(w []float64, E, In, Out int) []float64 {
	out := make([]float64, len(w))
	for e := 0; e < E; e++ {
		for i := 0; i < In; i++ {
			for o := 0; o < Out; o++ {
				out[e*Out*In+o*In+i] = w[e*In*Out+i*Out+o]
			}
		}
	}
	return out
}
