package tests

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Parity of a device backend's bfloat16 kernels, products and mixed-precision training with the CPU
// reference at layer sizes: run on the GPU by cuda_bf16_test.go (TestCUDABF16*), and at small sizes on
// the simulated device here (which checks the checks). The conformance suite (BF16 cases) covers every
// rule at small sizes on every backend.

// bf16Host makes a host tensor of dtype dt from float64 values (rounded once).
func bf16Host(dt tensor.Dtype, v []float64, shape ...int) *tensor.Dense { return fromF64(dt, v, shape) }

// randRows returns n values ~ N(0, 1) with a sprinkle of large and tiny magnitudes.
func randRows(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
		switch i % 97 {
		case 3:
			v[i] *= 1e4
		case 5:
			v[i] *= 1e-4
		}
	}
	return v
}

// bothBackends runs f on the CPU with host inputs and on the GPU with copies of them, each into a fresh
// output of dtype dt and shape, and returns both outputs as host tensors.
func bothBackends(t *testing.T, b ops.Backend, dt tensor.Dtype, shape []int, ins []*tensor.Dense, f func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error) (cpu, gpu *tensor.Dense) {
	t.Helper()
	run := func(be ops.Backend) *tensor.Dense {
		in := make([]*tensor.Dense, len(ins))
		for i, h := range ins {
			if h == nil {
				continue
			}
			if be == ops.CPU() {
				in[i] = h
			} else {
				in[i] = mustFromHost(t, be, h)
			}
		}
		out, err := be.New(dt, shape...)
		if err != nil {
			t.Fatal(err)
		}
		if err := f(be, in, out); err != nil {
			t.Fatalf("%s: %v", be.Name(), err)
		}
		h, err := be.ToHost(out)
		if err != nil {
			t.Fatalf("%s: %v", be.Name(), err)
		}
		return h
	}
	return run(ops.CPU()), run(b)
}

// rawBits returns the bit patterns of a host float/bfloat16 tensor.
func rawBits(d *tensor.Dense) []uint64 {
	switch v := d.Data().(type) {
	case []ops.BF16:
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = uint64(x)
		}
		return out
	case []float32:
		out := make([]uint64, len(v))
		for i, x := range v {
			out[i] = uint64(math.Float32bits(x))
		}
		return out
	}
	return hostBits(d)
}

func sameRaw(t *testing.T, what string, a, b *tensor.Dense) {
	t.Helper()
	x, y := rawBits(a), rawBits(b)
	bad := 0
	for i := range x {
		if x[i] != y[i] {
			if bad < 3 {
				t.Errorf("%s: element %d: CPU bits %#x, GPU %#x", what, i, x[i], y[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements differ from the CPU reference", what, bad, len(x))
	}
}

// permShape is a routing shape of the kernel parity checks.
type permShape struct{ T, E, K, H int }

// checkBF16Kernels: every bfloat16 kernel of b (casts, dispatch, combine, combine weight gradient,
// engine Add, SwiGLU) against the CPU reference. Casts, dispatch, combine (double sums in the
// reference's order) and Add must give the CPU's bits; the weight-gradient dot products (double,
// another order) at most one float32 unit apart; SwiGLU (float32 arithmetic on the GPU, float64 on the
// CPU) at most one bfloat16 unit apart, in under 1% of elements. n elements for casts and Add, m for
// SwiGLU.
func checkBF16Kernels(t *testing.T, b ops.Backend, shapes []permShape, n, m int) {
	bf := ops.BFloat16
	for _, c := range shapes {
		name := fmt.Sprintf("T=%d,E=%d,K=%d,H=%d", c.T, c.E, c.K, c.H)
		rng := rand.New(rand.NewSource(int64(c.T + c.H)))
		idx := make([]int32, c.T*c.K)
		for tk := 0; tk < c.T; tk++ {
			for j, e := range rng.Perm(c.E)[:c.K] {
				idx[tk*c.K+j] = int32(e)
			}
		}
		planH, err := ops.CPU().New(tensor.Int32, ops.PlanLen(c.T, c.K, c.E))
		if err != nil {
			t.Fatal(err)
		}
		if err := ops.CPU().Plan(tensor.New(tensor.WithShape(c.T, c.K), tensor.WithBacking(idx)), c.E, planH); err != nil {
			t.Fatal(err)
		}
		n := c.T * c.K
		x16 := bf16Host(bf, randRows(rng, c.T*c.H), c.T, c.H)
		x32 := bf16Host(tensor.Float32, randRows(rng, c.T*c.H), c.T, c.H)
		w := bf16Host(tensor.Float32, randRows(rng, n), c.T, c.K)
		ye := bf16Host(bf, randRows(rng, n*c.H), n, c.H)

		for _, d := range []struct {
			what string
			x, w *tensor.Dense
		}{{"bf16", x16, nil}, {"bf16 weighted", x16, w}, {"f32", x32, nil}, {"f32 weighted", x32, w}} {
			cpu, gpu := bothBackends(t, b, bf, []int{n, c.H}, []*tensor.Dense{d.x, d.w, planH}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
				return be.Dispatch(in[0], in[1], in[2], out)
			})
			sameRaw(t, "Dispatch "+d.what+" "+name, cpu, gpu)
		}
		for _, outDt := range []tensor.Dtype{bf, tensor.Float32} {
			for _, wt := range []*tensor.Dense{nil, w} {
				cpu, gpu := bothBackends(t, b, outDt, []int{c.T, c.H}, []*tensor.Dense{ye, wt, planH}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
					return be.Combine(in[0], in[1], in[2], out)
				})
				sameRaw(t, fmt.Sprintf("Combine into %v (weighted=%t) %s", outDt, wt != nil, name), cpu, gpu)
			}
		}
		for _, dy := range []*tensor.Dense{x16, x32} {
			cpu, gpu := bothBackends(t, b, tensor.Float32, []int{c.T, c.K}, []*tensor.Dense{dy, ye, planH}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
				return be.CombineGradWeights(in[0], in[1], in[2], out)
			})
			cv, gv := cpu.Data().([]float32), gpu.Data().([]float32)
			for i := range cv {
				if d := math.Abs(float64(cv[i] - gv[i])); d > 0x1p-23*math.Abs(float64(cv[i]))+1e-30 {
					t.Errorf("CombineGradWeights dy %v %s: element %d: CPU %v, GPU %v", dy.Dtype(), name, i, cv[i], gv[i])
					break
				}
			}
		}
	}

	// Casts and Add over n elements (the special values first), vector body and scalar tail.
	rng := rand.New(rand.NewSource(17))
	vals := randRows(rng, n)
	copy(vals, []float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN(), math.MaxFloat32, 1e-40, 3.4e38, 1e300, 1e-300})
	for _, from := range []tensor.Dtype{tensor.Float32, tensor.Float64, bf} {
		src := bf16Host(from, vals, len(vals))
		for _, to := range []tensor.Dtype{tensor.Float32, tensor.Float64, bf} {
			cpu, gpu := bothBackends(t, b, to, []int{len(vals)}, []*tensor.Dense{src}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
				return be.Cast(in[0], out)
			})
			if from == bf || to == bf || from == to {
				sameRaw(t, fmt.Sprintf("Cast %v->%v", from, to), cpu, gpu)
			}
		}
	}
	tp, ok := b.(ops.TensorEngineProvider)
	if !ok {
		t.Fatalf("%s has no tensor engine", b.Name())
	}
	eng, err := tp.TensorEngine()
	if err != nil {
		t.Fatal(err)
	}
	a16 := bf16Host(bf, vals, len(vals))
	b16 := bf16Host(bf, randRows(rng, len(vals)), len(vals))
	want, err := ops.HostEngine().(tensor.Adder).Add(a16, b16)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eng.(tensor.Adder).Add(mustFromHost(t, b, a16), mustFromHost(t, b, b16))
	if err != nil {
		t.Fatal(err)
	}
	gotH, err := b.ToHost(got.(*tensor.Dense))
	if err != nil {
		t.Fatal(err)
	}
	// NaN results must be NaN, not the CPU's payload: x86 propagates an operand's payload where the
	// GPU's adder returns its canonical NaN (0x7fff), and the contract (docs/mixed-precision.md) is "NaN
	// stays NaN". Where both are NaN, the GPU's bits are replaced by the CPU's before the bitwise check.
	wd, gd := want.(*tensor.Dense).Data().([]ops.BF16), gotH.Data().([]ops.BF16)
	for i := range wd {
		if math.IsNaN(float64(wd[i].Float32())) && math.IsNaN(float64(gd[i].Float32())) {
			gd[i] = wd[i]
		}
	}
	sameRaw(t, "engine Add bf16", want.(*tensor.Dense), gotH)

	// SwiGLU and its gradient.
	gate, up, dout := bf16Host(bf, randRows(rng, m), m), bf16Host(bf, randRows(rng, m), m), bf16Host(bf, randRows(rng, m), m)
	// cmpULP: at most one bfloat16 unit apart, or (where the formula cancels: silu' vanishes near
	// gate = -1.28) within 2^-20 of the element's scale, the size of the terms a float32 evaluation
	// rounds (a few float32 units); and different in under 1% of the elements.
	g16, u16, d16 := gate.Data().([]ops.BF16), up.Data().([]ops.BF16), dout.Data().([]ops.BF16)
	cmpULP := func(what string, cpu, gpu *tensor.Dense, scale func(i int) float64) {
		t.Helper()
		cv, gv := cpu.Data().([]ops.BF16), gpu.Data().([]ops.BF16)
		off := 0
		for i := range cv {
			if cv[i] == gv[i] {
				continue
			}
			off++
			if d := math.Abs(cv[i].Float64() - gv[i].Float64()); d > 0x1p-7*math.Abs(cv[i].Float64())+0x1p-20*scale(i)+0x1p-133 {
				t.Errorf("%s: element %d: CPU %v, GPU %v (more than one unit apart)", what, i, cv[i], gv[i])
				return
			}
		}
		t.Logf("%s: %d of %d elements one bfloat16 unit from the CPU's", what, off, len(cv))
		if off > len(cv)/100 {
			t.Errorf("%s: %d elements differ from the CPU's (more than 1%%)", what, off)
		}
	}
	fwdScale := func(i int) float64 { return math.Abs(g16[i].Float64() * u16[i].Float64()) }
	gradScale := func(i int) float64 {
		j := i % m // dgate then dup
		g, u, d := math.Abs(g16[j].Float64()), math.Abs(u16[j].Float64()), math.Abs(d16[j].Float64())
		if i < m {
			return d * u * (1 + g)
		}
		return d * g
	}
	cpu, gpu := bothBackends(t, b, bf, []int{m}, []*tensor.Dense{gate, up}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
		return be.SwiGLU(in[0], in[1], out)
	})
	cmpULP("SwiGLU", cpu, gpu, fwdScale)
	cpu, gpu = bothBackends(t, b, bf, []int{2 * m}, []*tensor.Dense{gate, up, dout}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
		dg, err := be.View(out, 0, m)
		if err != nil {
			return err
		}
		du, err := be.View(out, m, m)
		if err != nil {
			return err
		}
		return be.SwiGLUGrad(in[0], in[1], in[2], dg, du)
	})
	cmpULP("SwiGLUGrad", cpu, gpu, gradScale)
}

// gemmShape is a layer shape of the GEMM parity checks.
type gemmShape struct{ T, H, F, E, K int }

// checkBF16GEMM: the bfloat16 grouped and dense products of b against the CPU's float32-accumulated
// reference. Both are float32 sums of the same exact products in different orders,
// so they agree within 2(n+1)·2^-24·Σ|terms| (n the summed length; Σ|terms| bounded by the product of
// the row and column norms, Cauchy–Schwarz) plus one unit of the final rounding (2^-8 relative into
// bfloat16, 2^-23 into float32).
func checkBF16GEMM(t *testing.T, b ops.Backend, shapes []gemmShape) {
	bf := ops.BFloat16
	for _, c := range shapes {
		rng := rand.New(rand.NewSource(int64(c.E)))
		n := c.T * c.K
		idx := make([]int32, n)
		for tk := 0; tk < c.T; tk++ {
			for j, e := range rng.Perm(c.E)[:c.K] {
				idx[tk*c.K+j] = int32(e)
			}
		}
		planH, _ := ops.CPU().New(tensor.Int32, ops.PlanLen(c.T, c.K, c.E))
		if err := ops.CPU().Plan(tensor.New(tensor.WithShape(c.T, c.K), tensor.WithBacking(idx)), c.E, planH); err != nil {
			t.Fatal(err)
		}
		scale := 1 / math.Sqrt(float64(c.H))
		xv := randRows(rng, n*c.H)
		wv := randRows(rng, c.E*c.H*c.F)
		for i := range wv {
			wv[i] *= scale
		}
		dyv := randRows(rng, n*c.F)
		x, w, dy := bf16Host(bf, xv, n, c.H), bf16Host(bf, wv, c.E, c.H, c.F), bf16Host(bf, dyv, n, c.F)
		xv, wv, dyv = denseFloats(x), denseFloats(w), denseFloats(dy) // the bfloat16 values
		name := fmt.Sprintf("T=%d,H=%d,F=%d,E=%d,K=%d", c.T, c.H, c.F, c.E, c.K)
		// Norms for the bounds: rows of x and dy, columns of x and dy, and of W over every expert.
		xRows, dyRows := norms(xv, n, c.H, true), norms(dyv, n, c.F, true)
		xCols, dyCols := norms(xv, n, c.H, false), norms(dyv, n, c.F, false)
		wCols, wRows := make([]float64, c.F), make([]float64, c.H) // max over experts of W[e][:,f] and W[e][h,:]
		for e := 0; e < c.E; e++ {
			we := wv[e*c.H*c.F : (e+1)*c.H*c.F]
			for f, v := range norms(we, c.H, c.F, false) {
				wCols[f] = math.Max(wCols[f], v)
			}
			for h, v := range norms(we, c.H, c.F, true) {
				wRows[h] = math.Max(wRows[h], v)
			}
		}
		gradRows := make([]float64, c.E*c.H)
		for e := 0; e < c.E; e++ {
			copy(gradRows[e*c.H:], xCols)
		}
		for _, outDt := range []tensor.Dtype{bf, tensor.Float32} {
			cpu, gpu := bothBackends(t, b, outDt, []int{n, c.F}, []*tensor.Dense{x, w, planH}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
				return be.GroupedMatMul(in[0], in[1], in[2], false, out)
			})
			gemmClose(t, "GroupedMatMul into "+outDt.String()+" "+name, cpu, gpu, outDt, c.H, xRows, wCols)
			cpu, gpu = bothBackends(t, b, outDt, []int{n, c.H}, []*tensor.Dense{dy, w, planH}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
				return be.GroupedMatMul(in[0], in[1], in[2], true, out)
			})
			gemmClose(t, "GroupedMatMul transposed into "+outDt.String()+" "+name, cpu, gpu, outDt, c.F, dyRows, wRows)
			cpu, gpu = bothBackends(t, b, outDt, []int{c.E, c.H, c.F}, []*tensor.Dense{x, dy, planH}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
				return be.GroupedMatMulGradW(in[0], in[1], in[2], out)
			})
			gemmClose(t, "GroupedMatMulGradW into "+outDt.String()+" "+name, cpu, gpu, outDt, n, gradRows, dyCols)
		}
		av, rv := randRows(rng, c.T*c.H), randRows(rng, c.E*c.H)
		a, r := bf16Host(bf, av, c.T, c.H), bf16Host(bf, rv, c.E, c.H)
		cpu, gpu := bothBackends(t, b, tensor.Float32, []int{c.T, c.E}, []*tensor.Dense{a, r},
			func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
				return be.MatMul(in[0], in[1], false, true, out)
			})
		gemmClose(t, "MatMul router logits into float32 "+name, cpu, gpu, tensor.Float32, c.H,
			norms(denseFloats(a), c.T, c.H, true), norms(denseFloats(r), c.E, c.H, true))
	}
}

// norms returns the Euclidean norms of the rows (rows true) or columns of a [R,C] row-major matrix.
func norms(v []float64, R, C int, rows bool) []float64 {
	n := C
	if rows {
		n = R
	}
	out := make([]float64, n)
	for r := 0; r < R; r++ {
		for c := 0; c < C; c++ {
			x := v[r*C+c] * v[r*C+c]
			if rows {
				out[r] += x
			} else {
				out[c] += x
			}
		}
	}
	for i := range out {
		out[i] = math.Sqrt(out[i])
	}
	return out
}

// gemmClose compares two float32-accumulated results [R,C] of the same products: element (r,c) may
// differ by 2(n+1)·2^-24·rowNorm[r]·colNorm[c] (two orders of a float32 sum of n terms whose magnitudes
// sum to at most that product of norms) plus one unit of the output's rounding.
func gemmClose(t *testing.T, what string, cpu, gpu *tensor.Dense, dt tensor.Dtype, n int, rowNorm, colNorm []float64) {
	t.Helper()
	a, b := denseFloats(cpu), denseFloats(gpu)
	C := len(colNorm)
	unit := 2 * unitRoundOf(dt)
	bad := 0
	for i := range a {
		tol := unit*math.Abs(a[i]) + float64(2*(n+1))*0x1p-24*rowNorm[i/C]*colNorm[i%C]
		if d := math.Abs(a[i] - b[i]); !(d <= tol) {
			if bad < 3 {
				t.Errorf("%s: element %d: CPU %v, GPU %v (tolerance %.3g)", what, i, a[i], b[i], tol)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements out of tolerance", what, bad, len(a))
	}
}

func unitRoundOf(dt tensor.Dtype) float64 {
	if dt == ops.BFloat16 {
		return 0x1p-8
	}
	return 0x1p-24
}

// checkBF16Training: the mixed-precision layer task (bf16_test.go) trained with Adam on b and on the
// CPU from the same float32 master weights and data: the first step's cost agrees within bfloat16
// accuracy (1/16 relative, the derived bound of TestBF16LayerGradients), b's run reduces the cost as
// the CPU run does, and two runs on b are bitwise identical.
func checkBF16Training(t *testing.T, b ops.Backend) {
	const steps = 40
	cpu, _ := trainMixed(t, ops.CPU(), steps)
	gpu1, w1 := trainMixed(t, b, steps)
	gpu2, w2 := trainMixed(t, b, steps)
	t.Logf("cost %.5f -> %.5f (CPU), %.5f -> %.5f (%s)", cpu[0], cpu[steps-1], gpu1[0], gpu1[steps-1], b.Name())
	if d := math.Abs(gpu1[0]-cpu[0]) / cpu[0]; d > bf16NormTol {
		t.Errorf("first cost: %s %v, CPU %v", b.Name(), gpu1[0], cpu[0])
	}
	if !(gpu1[steps-1] < 0.7*gpu1[0]) || math.Abs(gpu1[steps-1]-cpu[steps-1]) > 0.25*cpu[steps-1] {
		t.Errorf("%s training: %.5f -> %.5f, CPU %.5f -> %.5f", b.Name(), gpu1[0], gpu1[steps-1], cpu[0], cpu[steps-1])
	}
	for i := range gpu1 {
		if math.Float64bits(gpu1[i]) != math.Float64bits(gpu2[i]) {
			t.Fatalf("step %d: %s costs %v and %v in identical runs", i, b.Name(), gpu1[i], gpu2[i])
		}
	}
	a, c := weightBits(w1), weightBits(w2)
	for p := range a {
		for i := range a[p] {
			if a[p][i] != c[p][i] {
				t.Fatalf("parameter %d element %d differs between identical %s runs", p, i, b.Name())
			}
		}
	}
}

// TestSimBF16Parity runs the parity checks at small sizes on the simulated device (the CPU kernels
// through the device boundary: everything must match, and the checks themselves are exercised).
func TestSimBF16Parity(t *testing.T) {
	b := registeredSim(t, "sim-bf16", 64<<20, nil)
	t.Run("Kernels", func(t *testing.T) {
		checkBF16Kernels(t, b, []permShape{{64, 8, 2, 64}, {33, 5, 3, 13}}, 4099, 1027)
	})
	t.Run("GEMM", func(t *testing.T) { checkBF16GEMM(t, b, []gemmShape{{32, 64, 48, 4, 2}, {16, 24, 40, 8, 3}}) })
	t.Run("Training", func(t *testing.T) { checkBF16Training(t, b) })
}
