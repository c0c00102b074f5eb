// Package trainingtest checks the training kernels of an ops.Backend (ops.TrainingBackend, MatMul
// excepted) against float64 references written here from the contract's formulas: MSE and softmax
// cross-entropy losses and their gradients (ignored rows, no counted rows, a device upstream gradient),
// SwiGLU and its gradient, the global-norm clipping factor, the fused Adam(W) and SGD steps (with and
// without clipping, momentum, Nesterov, weight decay); data faults (a label out of range, a NaN
// gradient) must give errors wrapping ops.ErrLabel and ops.ErrNaN (at the next synchronisation on
// asynchronous backends); every kernel must be deterministic; and, with Options.Stats, a training-like
// step repeated between BeginStep and EndStep must not grow device memory.
//
// A method that returns ops.ErrUnsupported is skipped (with a log line), so the suite can run on a
// backend whose kernels are still being written.
package trainingtest

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Options tune the suite.
type Options struct {
	// Tol32 and Tol64 bound |got - want| <= tol * max(1, |want|). Defaults 1e-5 and 1e-12.
	Tol32, Tol64 float64
	// Stats reads the backend's pool counters (optional; enables the step-memory test).
	Stats func() devengine.Stats
	// ChecksArgs asserts that the kernels themselves refuse mismatched shapes and dtypes (ErrShape,
	// ErrDtype) and invalid hyper-parameters (ErrConfig). The contract leaves that to the ops; a device
	// backend, whose kernels would read out of bounds, checks anyway.
	ChecksArgs bool
}

type env struct {
	b   ops.Backend
	o   Options
	rng *rand.Rand
}

// Run runs the suite against b.
func Run(t *testing.T, b ops.Backend, o Options) {
	if o.Tol32 == 0 {
		o.Tol32 = 1e-5
	}
	if o.Tol64 == 0 {
		o.Tol64 = 1e-12
	}
	v := &env{b: b, o: o, rng: rand.New(rand.NewSource(11))}
	t.Run("MSE", v.testMSE)
	t.Run("CrossEntropy", v.testCE)
	t.Run("SwiGLU", v.testSwiGLU)
	t.Run("GradNormScale", v.testGradNorm)
	t.Run("Adam", v.testAdam)
	t.Run("SGD", v.testSGD)
	t.Run("Faults", v.testFaults)
	if o.Stats != nil {
		t.Run("StepMemory", v.testStepMemory)
	}
}

var dtypes = []tensor.Dtype{tensor.Float64, tensor.Float32}

func (v *env) tol(dt tensor.Dtype) float64 {
	if dt == tensor.Float32 {
		return v.o.Tol32
	}
	return v.o.Tol64
}

// rnd returns n values in [lo, hi) rounded to dt.
func (v *env) rnd(dt tensor.Dtype, n int, lo, hi float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = round(dt, lo+(hi-lo)*v.rng.Float64())
	}
	return out
}

func round(dt tensor.Dtype, x float64) float64 {
	if dt == tensor.Float32 {
		return float64(float32(x))
	}
	return x
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

func (v *env) dev(t testing.TB, dt tensor.Dtype, vals []float64, shape ...int) *tensor.Dense {
	t.Helper()
	d, err := v.b.FromHost(hostOf(dt, vals, shape...))
	if err != nil {
		t.Fatalf("FromHost: %v", err)
	}
	return d
}

func (v *env) devI(t testing.TB, vals []int32, shape ...int) *tensor.Dense {
	t.Helper()
	d, err := v.b.FromHost(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]int32(nil), vals...))))
	if err != nil {
		t.Fatalf("FromHost: %v", err)
	}
	return d
}

// out is a NaN-filled output (so an unwritten element fails).
func (v *env) out(t testing.TB, dt tensor.Dtype, shape ...int) *tensor.Dense {
	t.Helper()
	n := tensor.Shape(shape).TotalSize()
	vals := make([]float64, n)
	for i := range vals {
		vals[i] = math.NaN()
	}
	return v.dev(t, dt, vals, shape...)
}

func (v *env) read(t testing.TB, d *tensor.Dense) []float64 {
	t.Helper()
	h, err := v.b.ToHost(d)
	if err != nil {
		t.Fatalf("ToHost: %v", err)
	}
	switch x := h.Data().(type) {
	case []float64:
		return append([]float64(nil), x...)
	case []float32:
		out := make([]float64, len(x))
		for i, y := range x {
			out[i] = float64(y)
		}
		return out
	case float64:
		return []float64{x}
	case float32:
		return []float64{float64(x)}
	}
	t.Fatalf("unexpected data %T", h.Data())
	return nil
}

func (v *env) close(t testing.TB, what string, dt tensor.Dtype, got, want []float64) {
	t.Helper()
	tol := v.tol(dt)
	if len(got) != len(want) {
		t.Errorf("%s: %d elements, want %d", what, len(got), len(want))
		return
	}
	bad := 0
	for i := range got {
		if !(math.Abs(got[i]-want[i]) <= tol*math.Max(1, math.Abs(want[i]))) {
			if bad < 4 {
				t.Errorf("%s: element %d = %.17g, want %.17g", what, i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 4 {
		t.Errorf("%s: %d of %d elements differ", what, bad, len(got))
	}
}

// do runs a kernel; ErrUnsupported skips the test, other errors fail it, and the result of an
// asynchronous backend is synchronised (so device faults surface here).
func (v *env) do(t *testing.T, what string, f func() error) {
	t.Helper()
	err := f()
	if err == nil {
		err = v.sync()
	}
	if errors.Is(err, ops.ErrUnsupported) {
		t.Skipf("%s: %v", what, err)
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (v *env) sync() error {
	if s, ok := v.b.(ops.Synchronizer); ok {
		return s.Synchronize()
	}
	return nil
}

// bits reads a tensor as raw bits (for determinism).
func (v *env) bits(t testing.TB, d *tensor.Dense) []uint64 {
	vals := v.read(t, d)
	out := make([]uint64, len(vals))
	for i, x := range vals {
		out[i] = math.Float64bits(x)
	}
	return out
}

func sameBits(t testing.TB, what string, a, b []uint64) {
	t.Helper()
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("%s: not deterministic at element %d", what, i)
			return
		}
	}
}

// gradScalar returns a device upstream gradient (0.5) or nil, and its value.
func (v *env) gradScalar(t testing.TB, dt tensor.Dtype, onDevice bool) (*tensor.Dense, float64) {
	if !onDevice {
		return nil, 1
	}
	return v.dev(t, dt, []float64{0.5}, 1), 0.5
}

func (v *env) testMSE(t *testing.T) {
	for _, dt := range dtypes {
		for _, n := range []int{1, 7, 1000, 5003} {
			for _, gDev := range []bool{false, true} {
				what := fmt.Sprintf("%v n=%d device g=%t", dt, n, gDev)
				p, q := v.rnd(dt, n, -2, 2), v.rnd(dt, n, -2, 2)
				dp, dq := v.dev(t, dt, p, n), v.dev(t, dt, q, n)
				loss := v.out(t, dt, 1)
				v.do(t, "MSELoss", func() error { return v.b.MSELoss(dp, dq, loss) })
				want := 0.0
				for i := range p {
					want += (p[i] - q[i]) * (p[i] - q[i])
				}
				want /= float64(n)
				v.close(t, "MSELoss "+what, dt, v.read(t, loss), []float64{want})
				g, gv := v.gradScalar(t, dt, gDev)
				dpred := v.out(t, dt, n)
				v.do(t, "MSELossGrad", func() error { return v.b.MSELossGrad(dp, dq, 0.75, g, dpred) })
				wg := make([]float64, n)
				for i := range wg {
					wg[i] = 0.75 * gv * 2 * (p[i] - q[i]) / float64(n)
				}
				v.close(t, "MSELossGrad "+what, dt, v.read(t, dpred), wg)
				first := v.bits(t, loss)
				v.do(t, "MSELoss", func() error { return v.b.MSELoss(dp, dq, loss) })
				sameBits(t, "MSELoss "+what, first, v.bits(t, loss))
			}
		}
		// A 2-D prediction is one flat mean.
		p, q := v.rnd(dt, 12, -1, 1), v.rnd(dt, 12, -1, 1)
		loss := v.out(t, dt, 1)
		v.do(t, "MSELoss 3x4", func() error { return v.b.MSELoss(v.dev(t, dt, p, 3, 4), v.dev(t, dt, q, 3, 4), loss) })
		want := 0.0
		for i := range p {
			want += (p[i] - q[i]) * (p[i] - q[i]) / 12
		}
		v.close(t, fmt.Sprintf("MSELoss %v [3,4]", dt), dt, v.read(t, loss), []float64{want})
	}
}

// ceRef returns the loss and the gradient (scale*g folded in) of softmax cross-entropy.
func ceRef(x []float64, labels []int32, N, C int, sg float64) (float64, []float64) {
	loss, cnt := 0.0, 0
	grad := make([]float64, N*C)
	for r := 0; r < N; r++ {
		if labels[r] >= 0 {
			cnt++
		}
	}
	for r := 0; r < N; r++ {
		y := labels[r]
		if y < 0 {
			continue
		}
		row := x[r*C : (r+1)*C]
		m := math.Inf(-1)
		for _, z := range row {
			m = math.Max(m, z)
		}
		s := 0.0
		for _, z := range row {
			s += math.Exp(z - m)
		}
		loss += m + math.Log(s) - row[y]
		for c, z := range row {
			p := math.Exp(z-m) / s
			if int32(c) == y {
				p--
			}
			grad[r*C+c] = sg * p / float64(cnt)
		}
	}
	if cnt == 0 {
		return 0, grad
	}
	return loss / float64(cnt), grad
}

func (v *env) testCE(t *testing.T) {
	for _, dt := range dtypes {
		for _, c := range []struct{ N, C int }{{1, 2}, {9, 5}, {70, 33}, {17, 300}} {
			for _, ignore := range []string{"none", "some", "all"} {
				for _, gDev := range []bool{false, true} {
					what := fmt.Sprintf("%v N=%d C=%d ignored=%s device g=%t", dt, c.N, c.C, ignore, gDev)
					x := v.rnd(dt, c.N*c.C, -4, 4)
					labels := make([]int32, c.N)
					for i := range labels {
						labels[i] = int32(v.rng.Intn(c.C))
						if ignore == "all" || ignore == "some" && i%3 == 1 {
							labels[i] = -1
						}
					}
					dx, dy := v.dev(t, dt, x, c.N, c.C), v.devI(t, labels, c.N)
					loss := v.out(t, dt, 1)
					v.do(t, "SoftmaxCrossEntropy", func() error { return v.b.SoftmaxCrossEntropy(dx, dy, loss) })
					g, gv := v.gradScalar(t, dt, gDev)
					wl, wg := ceRef(x, labels, c.N, c.C, 1.5*gv)
					v.close(t, "SoftmaxCrossEntropy "+what, dt, v.read(t, loss), []float64{wl})
					dl := v.out(t, dt, c.N, c.C)
					v.do(t, "SoftmaxCrossEntropyGrad", func() error { return v.b.SoftmaxCrossEntropyGrad(dx, dy, 1.5, g, dl) })
					v.close(t, "SoftmaxCrossEntropyGrad "+what, dt, v.read(t, dl), wg)
				}
			}
		}
		// Large logits stay finite (log-sum-exp with the row maximum).
		x := []float64{1000, 999, -1000, 0}
		loss := v.out(t, dt, 1)
		v.do(t, "SoftmaxCrossEntropy large", func() error {
			return v.b.SoftmaxCrossEntropy(v.dev(t, dt, x, 2, 2), v.devI(t, []int32{1, 0}, 2), loss)
		})
		wl, _ := ceRef(x, []int32{1, 0}, 2, 2, 1)
		v.close(t, fmt.Sprintf("SoftmaxCrossEntropy %v large logits", dt), dt, v.read(t, loss), []float64{wl})
	}
}

func silu(a float64) float64 { return a / (1 + math.Exp(-a)) }

func (v *env) testSwiGLU(t *testing.T) {
	for _, dt := range dtypes {
		for _, shape := range [][]int{{1}, {7}, {3, 129}, {64, 64}} {
			n := tensor.Shape(shape).TotalSize()
			what := fmt.Sprintf("%v %v", dt, shape)
			gt, up, do := v.rnd(dt, n, -6, 6), v.rnd(dt, n, -2, 2), v.rnd(dt, n, -1, 1)
			gt[0] = round(dt, -120) // exp overflow on the way: must stay finite
			dg, du, dd := v.dev(t, dt, gt, shape...), v.dev(t, dt, up, shape...), v.dev(t, dt, do, shape...)
			out := v.out(t, dt, shape...)
			v.do(t, "SwiGLU", func() error { return v.b.SwiGLU(dg, du, out) })
			want := make([]float64, n)
			wdg, wdu := make([]float64, n), make([]float64, n)
			for i := range want {
				s := 1 / (1 + math.Exp(-gt[i]))
				want[i] = silu(gt[i]) * up[i]
				wdg[i] = do[i] * up[i] * s * (1 + gt[i]*(1-s))
				wdu[i] = do[i] * silu(gt[i])
			}
			v.close(t, "SwiGLU "+what, dt, v.read(t, out), want)
			dgate, dup := v.out(t, dt, shape...), v.out(t, dt, shape...)
			v.do(t, "SwiGLUGrad", func() error { return v.b.SwiGLUGrad(dg, du, dd, dgate, dup) })
			v.close(t, "SwiGLUGrad dgate "+what, dt, v.read(t, dgate), wdg)
			v.close(t, "SwiGLUGrad dup "+what, dt, v.read(t, dup), wdu)
		}
	}
}

func (v *env) testGradNorm(t *testing.T) {
	for _, maxNorm := range []float64{0.5, 1e6} {
		sizes := []int{3, 1000, 5000, 1}
		var grads []*tensor.Dense
		sum := 0.0
		for i, n := range sizes {
			dt := dtypes[i%2]
			x := v.rnd(dt, n, -1, 1)
			for _, z := range x {
				sum += z * z
			}
			grads = append(grads, v.dev(t, dt, x, n))
		}
		scale := v.out(t, tensor.Float64, 1)
		v.do(t, "GradNormScale", func() error { return v.b.GradNormScale(grads, maxNorm, scale) })
		want := math.Min(1, maxNorm/(math.Sqrt(sum)+1e-6))
		v.close(t, fmt.Sprintf("GradNormScale maxNorm=%v", maxNorm), tensor.Float64, v.read(t, scale), []float64{want})
		first := v.bits(t, scale)
		v.do(t, "GradNormScale", func() error { return v.b.GradNormScale(grads, maxNorm, scale) })
		sameBits(t, "GradNormScale", first, v.bits(t, scale))
	}
	scale := v.out(t, tensor.Float64, 1)
	v.do(t, "GradNormScale of no gradients", func() error { return v.b.GradNormScale(nil, 1, scale) })
	v.close(t, "GradNormScale of no gradients", tensor.Float64, v.read(t, scale), []float64{1})
}

// adamRef is one Adam step in float64 on stored (rounded) values; it returns p, m, v rounded to dt.
func adamRef(dt tensor.Dtype, p, g, m, vv []float64, hp ops.AdamParams, clip float64) ([]float64, []float64, []float64) {
	np, nm, nv := make([]float64, len(p)), make([]float64, len(p)), make([]float64, len(p))
	bc1 := 1 - math.Pow(hp.Beta1, float64(hp.Step))
	bc2 := 1 - math.Pow(hp.Beta2, float64(hp.Step))
	for i := range p {
		gr := clip * g[i]
		if !hp.DecoupledWeightDecay {
			gr += hp.WeightDecay * p[i]
		}
		mi := hp.Beta1*m[i] + (1-hp.Beta1)*gr
		vi := hp.Beta2*vv[i] + (1-hp.Beta2)*gr*gr
		upd := (mi / bc1) / (math.Sqrt(vi/bc2) + hp.Eps)
		if hp.DecoupledWeightDecay {
			upd += hp.WeightDecay * p[i]
		}
		np[i], nm[i], nv[i] = round(dt, p[i]-hp.LR*upd), round(dt, mi), round(dt, vi)
	}
	return np, nm, nv
}

func (v *env) testAdam(t *testing.T) {
	for _, dt := range dtypes {
		for _, decoupled := range []bool{false, true} {
			for _, clipped := range []bool{false, true} {
				what := fmt.Sprintf("%v decoupled=%t clipped=%t", dt, decoupled, clipped)
				n := 1031
				p := v.rnd(dt, n, -1, 1)
				m, vv := make([]float64, n), make([]float64, n)
				dp, dm, dv := v.dev(t, dt, p, n), v.dev(t, dt, m, n), v.dev(t, dt, vv, n)
				var clip *tensor.Dense
				cv := 1.0
				if clipped {
					cv = 0.3
					clip = v.dev(t, tensor.Float64, []float64{cv}, 1)
				}
				for step := 1; step <= 3; step++ {
					g := v.rnd(dt, n, -1, 1)
					hp := ops.AdamParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, DecoupledWeightDecay: decoupled, Step: step}
					v.do(t, "AdamStep", func() error { return v.b.AdamStep(dp, v.dev(t, dt, g, n), dm, dv, hp, clip) })
					p, m, vv = adamRef(dt, p, g, m, vv, hp, cv)
					// Continue from the device's state so that rounding differences do not accumulate.
					gp, gm, gv := v.read(t, dp), v.read(t, dm), v.read(t, dv)
					v.close(t, fmt.Sprintf("Adam p %s step %d", what, step), dt, gp, p)
					v.close(t, fmt.Sprintf("Adam m %s step %d", what, step), dt, gm, m)
					v.close(t, fmt.Sprintf("Adam v %s step %d", what, step), dt, gv, vv)
					p, m, vv = gp, gm, gv
				}
			}
		}
	}
}

func (v *env) testSGD(t *testing.T) {
	for _, dt := range dtypes {
		for _, c := range []struct {
			mom      float64
			nesterov bool
		}{{0, false}, {0.9, false}, {0.9, true}} {
			for _, clipped := range []bool{false, true} {
				what := fmt.Sprintf("%v momentum=%v nesterov=%t clipped=%t", dt, c.mom, c.nesterov, clipped)
				n := 777
				p := v.rnd(dt, n, -1, 1)
				buf := make([]float64, n)
				dp := v.dev(t, dt, p, n)
				var dbuf *tensor.Dense
				if c.mom > 0 {
					dbuf = v.dev(t, dt, buf, n)
				}
				var clip *tensor.Dense
				cv := 1.0
				if clipped {
					cv = 0.25
					clip = v.dev(t, tensor.Float64, []float64{cv}, 1)
				}
				hp := ops.SGDParams{LR: 0.05, Momentum: c.mom, WeightDecay: 0.001, Nesterov: c.nesterov}
				for step := 0; step < 3; step++ {
					g := v.rnd(dt, n, -1, 1)
					v.do(t, "SGDStep", func() error { return v.b.SGDStep(dp, v.dev(t, dt, g, n), dbuf, hp, clip) })
					for i := range p {
						gr := cv*g[i] + hp.WeightDecay*p[i]
						if c.mom > 0 {
							b := c.mom*buf[i] + gr
							buf[i] = round(dt, b)
							if c.nesterov {
								gr += c.mom * b
							} else {
								gr = b
							}
						}
						p[i] = round(dt, p[i]-hp.LR*gr)
					}
					gp := v.read(t, dp)
					v.close(t, fmt.Sprintf("SGD p %s step %d", what, step), dt, gp, p)
					p = gp
					if dbuf != nil {
						gb := v.read(t, dbuf)
						v.close(t, fmt.Sprintf("SGD buf %s step %d", what, step), dt, gb, buf)
						buf = gb
					}
				}
			}
		}
	}
}

// faultErr runs a kernel that meets bad data and returns the error, from the call or from the next
// synchronisation.
func (v *env) faultErr(f func() error) error {
	err := f()
	if err == nil {
		err = v.sync()
	}
	return err
}

func (v *env) testFaults(t *testing.T) {
	dt := tensor.Float32
	x := v.dev(t, dt, v.rnd(dt, 12, -1, 1), 4, 3)
	for _, bad := range []int32{3, -2, 1 << 30} {
		labels := v.devI(t, []int32{0, bad, -1, 2}, 4)
		loss := v.out(t, dt, 1)
		err := v.faultErr(func() error { return v.b.SoftmaxCrossEntropy(x, labels, loss) })
		if errors.Is(err, ops.ErrUnsupported) {
			t.Skipf("SoftmaxCrossEntropy: %v", err)
		}
		if !errors.Is(err, ops.ErrLabel) {
			t.Errorf("SoftmaxCrossEntropy with label %d: %v, want an error wrapping ErrLabel", bad, err)
		}
		err = v.faultErr(func() error { return v.b.SoftmaxCrossEntropyGrad(x, labels, 1, nil, v.out(t, dt, 4, 3)) })
		if !errors.Is(err, ops.ErrLabel) {
			t.Errorf("SoftmaxCrossEntropyGrad with label %d: %v, want an error wrapping ErrLabel", bad, err)
		}
	}
	if err := v.sync(); err != nil {
		t.Errorf("a fault was reported twice: %v", err)
	}
	for _, badVal := range []float64{math.NaN(), math.Inf(1)} {
		g := v.rnd(dt, 100, -1, 1)
		g[37] = badVal
		grads := []*tensor.Dense{v.dev(t, dt, v.rnd(dt, 10, -1, 1), 10), v.dev(t, dt, g, 100)}
		scale := v.out(t, tensor.Float64, 1)
		err := v.faultErr(func() error { return v.b.GradNormScale(grads, 1, scale) })
		if !errors.Is(err, ops.ErrNaN) {
			t.Errorf("GradNormScale with a %v gradient: %v, want an error wrapping ErrNaN", badVal, err)
		}
	}
	if !v.o.ChecksArgs {
		return
	}
	// Shapes, dtypes and configurations are checked by the call itself.
	p := v.dev(t, dt, v.rnd(dt, 5, -1, 1), 5)
	q := v.dev(t, dt, v.rnd(dt, 6, -1, 1), 6)
	if err := v.b.MSELoss(p, q, v.out(t, dt, 1)); !errors.Is(err, ops.ErrShape) {
		t.Errorf("MSELoss of [5] and [6]: %v, want ErrShape", err)
	}
	q64 := v.dev(t, tensor.Float64, v.rnd(tensor.Float64, 5, -1, 1), 5)
	if err := v.b.SwiGLU(p, q64, v.out(t, dt, 5)); !errors.Is(err, ops.ErrDtype) && !errors.Is(err, ops.ErrShape) {
		t.Errorf("SwiGLU of float32 and float64: %v, want ErrDtype", err)
	}
	zero := make([]float64, 5)
	hp := ops.AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 0}
	if err := v.b.AdamStep(p, p, v.dev(t, dt, zero, 5), v.dev(t, dt, zero, 5), hp, nil); !errors.Is(err, ops.ErrConfig) {
		t.Errorf("AdamStep at step 0: %v, want ErrConfig", err)
	}
	if err := v.b.SGDStep(p, p, nil, ops.SGDParams{LR: 0.1, Momentum: 0.9}, nil); !errors.Is(err, ops.ErrConfig) {
		t.Errorf("SGDStep with momentum and no buffer: %v, want ErrConfig", err)
	}
}

// testStepMemory repeats a training-like step (inputs copied in, forward and backward kernels, a
// persistent parameter and Adam state updated in place) between BeginStep and EndStep: device memory
// in use must be the same after step 10 and step 200.
func (v *env) testStepMemory(t *testing.T) {
	s, ok := v.b.(ops.StepScoper)
	if !ok {
		t.Skip("the backend has no training-step scopes")
	}
	if testing.Short() {
		t.Skip("short: 200 steps")
	}
	dt := tensor.Float32
	n := 4096
	p := v.dev(t, dt, v.rnd(dt, n, -1, 1), 64, 64)
	m, vv := v.dev(t, dt, make([]float64, n), 64, 64), v.dev(t, dt, make([]float64, n), 64, 64)
	x, y := v.rnd(dt, n, -1, 1), v.rnd(dt, n, -1, 1)
	labels := make([]int32, 64)
	for i := range labels {
		labels[i] = int32(i % 64)
	}
	step := func(k int) {
		if err := s.BeginStep(); err != nil {
			t.Fatal(err)
		}
		dx, dy := v.dev(t, dt, x, 64, 64), v.dev(t, dt, y, 64, 64)
		h, err := v.b.New(dt, 64, 64)
		if err != nil {
			t.Fatal(err)
		}
		v.do(t, "SwiGLU", func() error { return v.b.SwiGLU(p, dx, h) })
		loss, _ := v.b.New(dt, 1)
		v.do(t, "MSELoss", func() error { return v.b.MSELoss(h, dy, loss) })
		ce, _ := v.b.New(dt, 1)
		v.do(t, "SoftmaxCrossEntropy", func() error { return v.b.SoftmaxCrossEntropy(h, v.devI(t, labels, 64), ce) })
		dh, _ := v.b.New(dt, 64, 64)
		v.do(t, "MSELossGrad", func() error { return v.b.MSELossGrad(h, dy, 1, loss, dh) })
		dp, _ := v.b.New(dt, 64, 64)
		dxx, _ := v.b.New(dt, 64, 64)
		v.do(t, "SwiGLUGrad", func() error { return v.b.SwiGLUGrad(p, dx, dh, dp, dxx) })
		scale, _ := v.b.New(tensor.Float64, 1)
		v.do(t, "GradNormScale", func() error { return v.b.GradNormScale([]*tensor.Dense{dp}, 1, scale) })
		hp := ops.AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: k}
		v.do(t, "AdamStep", func() error { return v.b.AdamStep(p, dp, m, vv, hp, scale) })
		if _, err := v.b.ToHost(loss); err != nil {
			t.Fatal(err)
		}
		if err := s.EndStep(); err != nil {
			t.Fatal(err)
		}
	}
	var at10 devengine.Stats
	for k := 1; k <= 200; k++ {
		step(k)
		if k == 10 {
			at10 = v.o.Stats()
		}
	}
	at200 := v.o.Stats()
	t.Logf("pool after step 10: %+v; after step 200: %+v", at10, at200)
	if at10.LiveBytes+at10.CachedBytes != at200.LiveBytes+at200.CachedBytes || at10.DriverAllocs != at200.DriverAllocs {
		t.Errorf("device memory grew between step 10 (%d bytes, %d allocations) and step 200 (%d bytes, %d allocations)",
			at10.LiveBytes+at10.CachedBytes, at10.DriverAllocs, at200.LiveBytes+at200.CachedBytes, at200.DriverAllocs)
	}
	if final := v.read(t, p); math.IsNaN(final[0]) {
		t.Errorf("the parameter became NaN")
	}
}
