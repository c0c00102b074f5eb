package conformance

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// testTraining: the TrainingBackend kernels (dense matmul, task losses, SwiGLU, optimizer steps).
func (e *env) testTraining(t *testing.T) {
	t.Run("MatMul", e.testMatMul)
	t.Run("MSELoss", e.testMSE)
	t.Run("SoftmaxCrossEntropy", e.testCrossEntropy)
	t.Run("SwiGLU", e.testSwiGLU)
	t.Run("GroupedSwiGLU", e.testGroupedSwiGLU)
	t.Run("GradNormScale", e.testGradNormScale)
	t.Run("AdamStep", e.testAdam)
	t.Run("SGDStep", e.testSGD)
	t.Run("FiniteDifferences", e.testTrainingFD)
	if !e.o.NoGOMAXPROCS && !e.o.Short {
		t.Run("Scheduling", e.testTrainingScheduling)
	}
}

// errAfterSync returns err, or when err is nil and the backend is asynchronous, the fault reported by
// the next synchronisation (device kernels report data errors there).
func (e *env) errAfterSync(err error) error {
	if err != nil {
		return err
	}
	if s, ok := e.b.(ops.Synchronizer); ok {
		return s.Synchronize()
	}
	return nil
}

// oneElem is a one-element backend tensor holding v.
func (e *env) oneElem(t testing.TB, dt tensor.Dtype, v float64) *tensor.Dense {
	return e.devF(t, dt, []float64{v}, 1)
}

// ---- MatMul ----

type mmShape struct{ M, K, N int }

// matmulOperands returns the stored a and b of op(a) [M,K] and op(b) [K,N] for the flags, with their
// stored shapes.
func matmulOperands(a, b []float64, s mmShape, transA, transB bool) (as, bs []float64, ashape, bshape []int) {
	as, ashape = a, []int{s.M, s.K}
	if transA {
		as, ashape = transposed(a, s.M, s.K), []int{s.K, s.M}
	}
	bs, bshape = b, []int{s.K, s.N}
	if transB {
		bs, bshape = transposed(b, s.K, s.N), []int{s.N, s.K}
	}
	return
}

var allFlags = [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}}

func (e *env) testMatMul(t *testing.T) {
	// Known answer, every storage order: [[1,2,3],[4,5,6]] · [[7,8],[9,10],[11,12]].
	ka := []float64{1, 2, 3, 4, 5, 6}
	kb := []float64{7, 8, 9, 10, 11, 12}
	want := []float64{58, 64, 139, 154}
	shapes := []mmShape{{1, 1, 1}, {3, 5, 2}, {6, 4, 4}, {2, 0, 3}, {1, 0, 1}, {17, 33, 9}, {5, 1, 300}, {64, 130, 7}, {130, 70, 129}}
	for _, dt := range e.o.Dtypes {
		for _, f := range allFlags {
			as, bs, ash, bsh := matmulOperands(ka, kb, mmShape{2, 3, 2}, f[0], f[1])
			aD, bD := e.devF(t, dt, as, ash...), e.devF(t, dt, bs, bsh...)
			what := fmt.Sprintf("MatMul known answer (%v, transA=%t, transB=%t)", dt, f[0], f[1])
			out := e.kernel(t, what, dt, []int{2, 2}, []input{e.snapshot(t, "a", aD), e.snapshot(t, "b", bD)},
				func(o *tensor.Dense) error { return e.b.MatMul(aD, bD, f[0], f[1], o) })
			closeTo(t, what, e.readF(t, out), want, 0, nil)
		}
		for si, s := range shapes {
			rng := rand.New(rand.NewSource(int64(300 + si)))
			a, b := roundTo(dt, randVals(rng, s.M*s.K)), roundTo(dt, randVals(rng, s.K*s.N))
			ref, scale := refMatMul(a, b, s.M, s.K, s.N, false, false)
			for _, f := range allFlags {
				as, bs, ash, bsh := matmulOperands(a, b, s, f[0], f[1])
				aD, bD := e.devF(t, dt, as, ash...), e.devF(t, dt, bs, bsh...)
				what := fmt.Sprintf("MatMul(M=%d,K=%d,N=%d,%v,transA=%t,transB=%t)", s.M, s.K, s.N, dt, f[0], f[1])
				out := e.kernel(t, what, dt, []int{s.M, s.N}, []input{e.snapshot(t, "a", aD), e.snapshot(t, "b", bD)},
					func(o *tensor.Dense) error { return e.b.MatMul(aD, bD, f[0], f[1], o) })
				tol := e.o.tol(dt)
				if s.K == 0 {
					tol = 0 // an empty sum is exactly zero: the output must be written, not left alone
				}
				closeTo(t, what, e.readF(t, out), ref, tol, scale)
			}
		}
	}
}

// ---- MSE ----

func (e *env) testMSE(t *testing.T) {
	for _, dt := range e.o.Dtypes {
		tol := e.o.tol(dt)
		// Known answer: diffs 1, 0, -2, 3 -> mean of squares 14/4; gradient 2*diff/4.
		p, q := []float64{1, 2, 3, 4}, []float64{0, 2, 5, 1}
		pD, qD := e.devF(t, dt, p, 2, 2), e.devF(t, dt, q, 2, 2)
		ins := []input{e.snapshot(t, "pred", pD), e.snapshot(t, "target", qD)}
		l := e.kernel(t, "MSELoss known answer", dt, []int{1}, ins, func(o *tensor.Dense) error { return e.b.MSELoss(pD, qD, o) })
		closeTo(t, "MSELoss known answer", e.readF(t, l), []float64{3.5}, tol, nil)
		wantG := []float64{0.5, 0, -1, 1.5}
		g := e.kernel(t, "MSELossGrad known answer", dt, []int{2, 2}, ins, func(o *tensor.Dense) error { return e.b.MSELossGrad(pD, qD, 1, nil, o) })
		closeTo(t, "MSELossGrad known answer", e.readF(t, g), wantG, tol, nil)
		// The upstream gradient as a one-element backend tensor, folded with scale: 0.25 * 4 = 1.
		up := e.oneElem(t, dt, 4)
		g = e.kernel(t, "MSELossGrad(scale 0.25, g=[4])", dt, []int{2, 2}, append(ins, e.snapshot(t, "g", up)),
			func(o *tensor.Dense) error { return e.b.MSELossGrad(pD, qD, 0.25, up, o) })
		closeTo(t, "MSELossGrad(scale 0.25, g=[4])", e.readF(t, g), wantG, tol, nil)
		// Target gradient: the same kernel with the roles exchanged.
		g = e.kernel(t, "MSELossGrad w.r.t. target", dt, []int{2, 2}, ins, func(o *tensor.Dense) error { return e.b.MSELossGrad(qD, pD, 1, nil, o) })
		closeTo(t, "MSELossGrad w.r.t. target", e.readF(t, g), []float64{-0.5, 0, 1, -1.5}, tol, nil)

		for si, shape := range [][]int{{1}, {7}, {3, 5}, {2, 3, 4}, {40000}, {129, 513}} {
			n := 1
			for _, s := range shape {
				n *= s
			}
			rng := rand.New(rand.NewSource(int64(400 + si)))
			p, q := roundTo(dt, randVals(rng, n)), roundTo(dt, randVals(rng, n))
			pD, qD := e.devF(t, dt, p, shape...), e.devF(t, dt, q, shape...)
			ins := []input{e.snapshot(t, "pred", pD), e.snapshot(t, "target", qD)}
			what := fmt.Sprintf("MSELoss(%v %v)", shape, dt)
			l := e.kernel(t, what, dt, []int{1}, ins, func(o *tensor.Dense) error { return e.b.MSELoss(pD, qD, o) })
			closeTo(t, what, e.readF(t, l), []float64{refMSE(p, q)}, tol, nil)
			g := e.kernel(t, what+" gradient", dt, shape, ins, func(o *tensor.Dense) error { return e.b.MSELossGrad(pD, qD, 0.7, nil, o) })
			closeTo(t, what+" gradient", e.readF(t, g), refMSEGrad(p, q, 0.7), tol, nil)
		}
	}
}

// ---- cross-entropy ----

func (e *env) testCrossEntropy(t *testing.T) {
	for _, dt := range e.o.Dtypes {
		tol := e.o.tol(dt)
		// Known answer: row 0 label 2: log(e+e^2+e^3) - 3; row 1 ignored; row 2 label 0: log(2+e^10).
		logits := []float64{1, 2, 3, 1, 1, 1, 0, 0, 10}
		labels := []int32{2, -1, 0}
		lD, yD := e.devF(t, dt, logits, 3, 3), e.devI(t, labels, 3)
		ins := []input{e.snapshot(t, "logits", lD), e.snapshot(t, "labels", yD)}
		l := e.kernel(t, "SoftmaxCrossEntropy known answer", dt, []int{1}, ins, func(o *tensor.Dense) error { return e.b.SoftmaxCrossEntropy(lD, yD, o) })
		closeTo(t, "SoftmaxCrossEntropy known answer", e.readF(t, l), []float64{(0.40760596444438013 + 10.000090795737467) / 2}, tol, nil)
		g := e.kernel(t, "SoftmaxCrossEntropyGrad known answer", dt, []int{3, 3}, ins, func(o *tensor.Dense) error {
			return e.b.SoftmaxCrossEntropyGrad(lD, yD, 1, nil, o)
		})
		gv := e.readF(t, g)
		closeTo(t, "SoftmaxCrossEntropyGrad known answer", gv, refCrossEntropyGrad(logits, labels, 3, 1), tol, nil)
		closeTo(t, "SoftmaxCrossEntropyGrad of an ignored row", gv[3:6], []float64{0, 0, 0}, 0, nil)
		// Rows of the gradient sum to zero (softmax sums to one).
		for r := 0; r < 3; r++ {
			closeTo(t, fmt.Sprintf("gradient row %d sum", r), []float64{gv[3*r] + gv[3*r+1] + gv[3*r+2]}, []float64{0}, 4*tol, nil)
		}

		// Every row ignored: loss 0 and gradient 0.
		yAll := e.devI(t, []int32{-1, -1, -1}, 3)
		insAll := []input{e.snapshot(t, "logits", lD), e.snapshot(t, "labels", yAll)}
		l = e.kernel(t, "SoftmaxCrossEntropy all ignored", dt, []int{1}, insAll, func(o *tensor.Dense) error { return e.b.SoftmaxCrossEntropy(lD, yAll, o) })
		closeTo(t, "SoftmaxCrossEntropy with every row ignored", e.readF(t, l), []float64{0}, 0, nil)
		g = e.kernel(t, "SoftmaxCrossEntropyGrad all ignored", dt, []int{3, 3}, insAll, func(o *tensor.Dense) error {
			return e.b.SoftmaxCrossEntropyGrad(lD, yAll, 1, nil, o)
		})
		closeTo(t, "SoftmaxCrossEntropyGrad with every row ignored", e.readF(t, g), make([]float64, 9), 0, nil)

		// Labels outside [0,C) and not -1 are errors wrapping ErrLabel.
		for _, bad := range []int32{3, -2, 1 << 30, math.MinInt32} {
			yBad := e.devI(t, []int32{0, bad, 1}, 3)
			err := e.errAfterSync(call(t, "SoftmaxCrossEntropy", func() error {
				o := e.out(t, dt, 1)
				return e.b.SoftmaxCrossEntropy(lD, yBad, o.d)
			}))
			if !errors.Is(err, ops.ErrLabel) {
				t.Errorf("SoftmaxCrossEntropy(%v) with label %d (C=3): error %v, want ErrLabel", dt, bad, err)
			}
			err = e.errAfterSync(call(t, "SoftmaxCrossEntropyGrad", func() error {
				o := e.out(t, dt, 3, 3)
				return e.b.SoftmaxCrossEntropyGrad(lD, yBad, 1, nil, o.d)
			}))
			if !errors.Is(err, ops.ErrLabel) {
				t.Errorf("SoftmaxCrossEntropyGrad(%v) with label %d (C=3): error %v, want ErrLabel", dt, bad, err)
			}
		}

		// Random rows (about a fifth ignored), classes from 1 to 257, large logits.
		for si, s := range []struct {
			N, C  int
			shift float64
		}{{1, 1, 0}, {5, 2, 0}, {64, 10, 0}, {300, 257, 0}, {9, 7, 3000}, {9, 7, -3000}, {2000, 33, 0}} {
			rng := rand.New(rand.NewSource(int64(500 + si)))
			lg := randVals(rng, s.N*s.C)
			for i := range lg {
				lg[i] = 5*lg[i] + s.shift
			}
			lg = roundTo(dt, lg)
			lab := make([]int32, s.N)
			for i := range lab {
				lab[i] = int32(rng.Intn(s.C))
				if rng.Intn(5) == 0 {
					lab[i] = -1
				}
			}
			lD, yD := e.devF(t, dt, lg, s.N, s.C), e.devI(t, lab, s.N)
			ins := []input{e.snapshot(t, "logits", lD), e.snapshot(t, "labels", yD)}
			what := fmt.Sprintf("SoftmaxCrossEntropy(N=%d,C=%d,shift=%v,%v)", s.N, s.C, s.shift, dt)
			l := e.kernel(t, what, dt, []int{1}, ins, func(o *tensor.Dense) error { return e.b.SoftmaxCrossEntropy(lD, yD, o) })
			closeTo(t, what, e.readF(t, l), []float64{refCrossEntropy(lg, lab, s.C)}, tol, nil)
			up := e.oneElem(t, dt, 1.5)
			g := e.kernel(t, what+" gradient", dt, []int{s.N, s.C}, append(ins, e.snapshot(t, "g", up)), func(o *tensor.Dense) error {
				return e.b.SoftmaxCrossEntropyGrad(lD, yD, 0.5, up, o)
			})
			closeTo(t, what+" gradient", e.readF(t, g), refCrossEntropyGrad(lg, lab, s.C, 0.75), tol, nil)
		}
	}
}

// ---- SwiGLU ----

func (e *env) testSwiGLU(t *testing.T) {
	for _, dt := range e.o.Dtypes {
		tol := e.o.tol(dt)
		gate, up := []float64{0, 1, -1, 2}, []float64{1, 2, 3, -1}
		gD, uD := e.devF(t, dt, gate, 4), e.devF(t, dt, up, 4)
		ones := e.devF(t, dt, []float64{1, 1, 1, 1}, 4)
		ins := []input{e.snapshot(t, "gate", gD), e.snapshot(t, "up", uD)}
		o := e.kernel(t, "SwiGLU known answer", dt, []int{4}, ins, func(o *tensor.Dense) error { return e.b.SwiGLU(gD, uD, o) })
		closeTo(t, "SwiGLU known answer", e.readF(t, o), []float64{0, 1.4621171572600098, -0.8068242641099853, -1.7615941559557646}, tol, nil)
		dg, du := e.swigluGrad(t, "SwiGLUGrad known answer", dt, gD, uD, ones, 4)
		closeTo(t, "SwiGLUGrad known answer: dgate", dg, []float64{0.5, 1.8553410237429737, 0.2169884643855398, -1.0907842487848955}, tol, nil)
		closeTo(t, "SwiGLUGrad known answer: dup", du, []float64{0, 0.7310585786300049, -0.2689414213699951, 1.7615941559557646}, tol, nil)

		// Large gates: exp overflows in a naive sigmoid; results must stay finite and right.
		big := []float64{-1000, -100, -30, 30, 100, 1000, 0.5, -0.5}
		bigUp := []float64{1, -2, 3, 0.5, -1, 2, 7, -7}
		cases := []struct {
			name     string
			gate, up []float64
			shape    []int
		}{{"large gates", big, bigUp, []int{2, 4}}}
		for si, shape := range [][]int{{1}, {3, 5}, {2, 3, 7}, {40000}} {
			n := 1
			for _, s := range shape {
				n *= s
			}
			rng := rand.New(rand.NewSource(int64(600 + si)))
			g, u := randVals(rng, n), randVals(rng, n)
			for i := range g {
				g[i] *= 6
			}
			cases = append(cases, struct {
				name     string
				gate, up []float64
				shape    []int
			}{fmt.Sprintf("random %v", shape), g, u, shape})
		}
		for _, c := range cases {
			g, u := roundTo(dt, c.gate), roundTo(dt, c.up)
			rng := rand.New(rand.NewSource(int64(len(g))))
			d := roundTo(dt, randVals(rng, len(g)))
			gD, uD, dD := e.devF(t, dt, g, c.shape...), e.devF(t, dt, u, c.shape...), e.devF(t, dt, d, c.shape...)
			what := fmt.Sprintf("SwiGLU(%s, %v)", c.name, dt)
			o := e.kernel(t, what, dt, c.shape, []input{e.snapshot(t, "gate", gD), e.snapshot(t, "up", uD)},
				func(o *tensor.Dense) error { return e.b.SwiGLU(gD, uD, o) })
			closeTo(t, what, e.readF(t, o), refSwiGLU(g, u), tol, nil)
			dg, du := e.swigluGrad(t, what+" gradient", dt, gD, uD, dD, c.shape...)
			wg, wu := refSwiGLUGrad(g, u, d)
			closeTo(t, what+" gradient: dgate", dg, wg, tol, nil)
			closeTo(t, what+" gradient: dup", du, wu, tol, nil)
		}
	}
}

// swigluGrad runs SwiGLUGrad twice into sentinel outputs, with the usual checks, and returns dgate, dup.
func (e *env) swigluGrad(t *testing.T, what string, dt tensor.Dtype, gD, uD, dD *tensor.Dense, shape ...int) (dg, du []float64) {
	t.Helper()
	ins := []input{e.snapshot(t, "gate", gD), e.snapshot(t, "up", uD), e.snapshot(t, "dout", dD)}
	var bits [2][2][]uint64
	for run := 0; run < 2; run++ {
		og, ou := e.out(t, dt, shape...), e.out(t, dt, shape...)
		mustCall(t, what, func() error { return e.b.SwiGLUGrad(gD, uD, dD, og.d, ou.d) })
		og.checkGuard(t, what+" dgate")
		ou.checkGuard(t, what+" dup")
		bits[run] = [2][]uint64{e.bits(t, og.d), e.bits(t, ou.d)}
		if run == 0 {
			dg, du = e.readF(t, og.d), e.readF(t, ou.d)
		}
	}
	sameBits(t, what+" dgate", bits[0][0], bits[1][0])
	sameBits(t, what+" dup", bits[0][1], bits[1][1])
	e.unchanged(t, what, ins...)
	return dg, du
}

// ---- GradNormScale ----

func (e *env) testGradNormScale(t *testing.T) {
	scaleOf := func(t *testing.T, what string, grads []*tensor.Dense, maxNorm float64) float64 {
		t.Helper()
		var ins []input
		for i, g := range grads {
			ins = append(ins, e.snapshot(t, fmt.Sprintf("grad %d", i), g))
		}
		s := e.kernel(t, what, tensor.Float64, []int{1}, ins, func(o *tensor.Dense) error { return e.b.GradNormScale(grads, maxNorm, o) })
		return e.readF(t, s)[0]
	}
	for _, dt := range e.o.Dtypes {
		g := e.devF(t, dt, []float64{3, 4}, 2) // norm 5
		for _, c := range []struct{ maxNorm, want float64 }{{10, 1}, {5.5, 1}, {1, 1 / (5 + 1e-6)}, {2.5, 2.5 / (5 + 1e-6)}, {math.Inf(1), 1}} {
			what := fmt.Sprintf("GradNormScale([3 4] %v, maxNorm=%v)", dt, c.maxNorm)
			closeTo(t, what, []float64{scaleOf(t, what, []*tensor.Dense{g}, c.maxNorm)}, []float64{c.want}, 1e-12, nil)
		}
		zero := e.devF(t, dt, make([]float64, 5), 5)
		closeTo(t, "GradNormScale of zero gradients", []float64{scaleOf(t, "zero", []*tensor.Dense{zero, zero}, 1)}, []float64{1}, 0, nil)

		// Several gradients of several sizes (the norm is global).
		rng := rand.New(rand.NewSource(700))
		var grads []*tensor.Dense
		var host [][]float64
		for _, shape := range [][]int{{1}, {10, 100}, {70001}, {3}, {2, 3, 4}} {
			n := 1
			for _, s := range shape {
				n *= s
			}
			v := roundTo(dt, randVals(rng, n))
			host = append(host, v)
			grads = append(grads, e.devF(t, dt, v, shape...))
		}
		for _, maxNorm := range []float64{0.5, 1e6} {
			what := fmt.Sprintf("GradNormScale(5 gradients %v, maxNorm=%v)", dt, maxNorm)
			closeTo(t, what, []float64{scaleOf(t, what, grads, maxNorm)}, []float64{refGradNormScale(host, maxNorm)}, 1e-12, nil)
		}

		// A NaN or Inf anywhere: ErrNaN, and the factor reads NaN (so update kernels skip the step).
		for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
			for _, pos := range []int{0, 70000} {
				v := append([]float64(nil), host[2]...)
				v[pos] = bad
				withBad := append(append([]*tensor.Dense(nil), grads[:2]...), e.devF(t, dt, v, 70001))
				withBad = append(withBad, grads[3:]...)
				s := e.out(t, tensor.Float64, 1)
				err := e.errAfterSync(call(t, "GradNormScale", func() error { return e.b.GradNormScale(withBad, 1, s.d) }))
				if !errors.Is(err, ops.ErrNaN) {
					t.Errorf("GradNormScale(%v) with %v at %d of gradient 2: error %v, want ErrNaN", dt, bad, pos, err)
				}
				if got := e.readF(t, s.d)[0]; !math.IsNaN(got) {
					t.Errorf("GradNormScale(%v) with %v in a gradient wrote %v, want NaN", dt, bad, got)
				}
			}
		}
	}
	if len(e.o.Dtypes) > 1 { // gradients of both dtypes in one call
		a, b := e.devF(t, tensor.Float32, []float64{3}, 1), e.devF(t, tensor.Float64, []float64{4}, 1)
		closeTo(t, "GradNormScale of float32 and float64 gradients", []float64{scaleOf(t, "mixed", []*tensor.Dense{a, b}, 1)},
			[]float64{1 / (5 + 1e-6)}, 1e-12, nil)
	}
}

// ---- Adam ----

type adamCase struct {
	name  string
	hp    adamHP
	clip  float64 // 0: no clipping tensor
	start int     // first step number
	steps int
}

func (e *env) testAdam(t *testing.T) {
	for _, dt := range e.o.Dtypes {
		tol := e.o.tol(dt)
		// Hand-computed first step: p=1, g=0.5, lr=0.1: m=0.05, v=0.00025, m̂=0.5, v̂=0.25,
		// p = 1 - 0.1*0.5/(0.5+1e-8) = 0.900000002.
		p, g, m, v := e.devF(t, dt, []float64{1}, 1), e.devF(t, dt, []float64{0.5}, 1), e.devF(t, dt, []float64{0}, 1), e.devF(t, dt, []float64{0}, 1)
		hp := ops.AdamParams{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1}
		mustCall(t, "AdamStep", func() error { return e.b.AdamStep(p, g, m, v, hp, nil) })
		closeTo(t, "AdamStep known answer: p", e.readF(t, p), []float64{0.900000002}, tol, nil)
		closeTo(t, "AdamStep known answer: m", e.readF(t, m), []float64{0.05}, tol, nil)
		closeTo(t, "AdamStep known answer: v", e.readF(t, v), []float64{0.00025}, tol, nil)

		base := adamHP{lr: 0.01, b1: 0.9, b2: 0.999, eps: 1e-8}
		withWD := base
		withWD.wd = 0.1
		adamW := withWD
		adamW.decoupled = true
		noMomentum := base
		noMomentum.b1 = 0
		cases := []adamCase{
			{"defaults", base, 0, 1, 3},
			{"L2 weight decay", withWD, 0, 1, 3},
			{"AdamW", adamW, 0, 1, 3},
			{"clipped gradient", adamW, 0.37, 1, 2},
			{"beta1 = 0", noMomentum, 1, 1, 2},
			{"late steps", withWD, 0, 1000, 2},
		}
		for ci, c := range cases {
			for _, n := range []int{1, 7, 40000} {
				e.adamCase(t, dt, tol, c, n, int64(800+10*ci+n%7))
			}
		}

		// A non-finite clipping factor leaves everything unchanged.
		for _, bad := range []float64{math.NaN(), math.Inf(1)} {
			rng := rand.New(rand.NewSource(899))
			pv, gv := roundTo(dt, randVals(rng, 9)), roundTo(dt, randVals(rng, 9))
			mv, vv := roundTo(dt, randVals(rng, 9)), roundTo(dt, randVals(rng, 9))
			for i := range vv {
				vv[i] = math.Abs(vv[i])
			}
			p, g, m, v := e.devF(t, dt, pv, 9), e.devF(t, dt, gv, 9), e.devF(t, dt, mv, 9), e.devF(t, dt, vv, 9)
			ins := []input{e.snapshot(t, "p", p), e.snapshot(t, "g", g), e.snapshot(t, "m", m), e.snapshot(t, "v", v)}
			clip := e.devF(t, tensor.Float64, []float64{bad}, 1)
			mustCall(t, "AdamStep", func() error {
				return e.b.AdamStep(p, g, m, v, ops.AdamParams{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 3}, clip)
			})
			e.unchanged(t, fmt.Sprintf("AdamStep with clip factor %v", bad), ins...)
		}
	}
}

// adamCase runs c.steps AdamSteps on n random elements from random state, twice (bitwise equal), against
// refAdamStep.
func (e *env) adamCase(t *testing.T, dt tensor.Dtype, tol float64, c adamCase, n int, seed int64) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	p0 := roundTo(dt, randVals(rng, n))
	m0, v0 := make([]float64, n), make([]float64, n)
	if c.start > 1 { // state of an earlier step
		m0 = roundTo(dt, randVals(rng, n))
		for i := range v0 {
			v0[i] = float64(float32(0.01 * rng.Float64()))
		}
		v0 = roundTo(dt, v0)
	}
	grads := make([][]float64, c.steps)
	for s := range grads {
		grads[s] = roundTo(dt, randVals(rng, n))
	}
	what := fmt.Sprintf("AdamStep(%s, n=%d, %v)", c.name, n, dt)
	var bits [2][]uint64
	var got [3][]float64
	for run := 0; run < 2; run++ {
		p, m, v := e.devF(t, dt, p0, n), e.devF(t, dt, m0, n), e.devF(t, dt, v0, n)
		var clip *tensor.Dense
		if c.clip != 0 {
			clip = e.devF(t, tensor.Float64, []float64{c.clip}, 1)
		}
		for s := 0; s < c.steps; s++ {
			g := e.devF(t, dt, grads[s], n)
			in := e.snapshot(t, "g", g)
			hp := ops.AdamParams{LR: c.hp.lr, Beta1: c.hp.b1, Beta2: c.hp.b2, Eps: c.hp.eps, WeightDecay: c.hp.wd,
				DecoupledWeightDecay: c.hp.decoupled, Step: c.start + s}
			mustCall(t, what, func() error { return e.b.AdamStep(p, g, m, v, hp, clip) })
			e.unchanged(t, what, in)
		}
		bits[run] = append(append(e.bits(t, p), e.bits(t, m)...), e.bits(t, v)...)
		if run == 0 {
			got = [3][]float64{e.readF(t, p), e.readF(t, m), e.readF(t, v)}
		}
	}
	sameBits(t, what, bits[0], bits[1])
	p, m, v := append([]float64(nil), p0...), append([]float64(nil), m0...), append([]float64(nil), v0...)
	clip := c.clip
	if clip == 0 {
		clip = 1
	}
	for s := 0; s < c.steps; s++ {
		refAdamStep(p, grads[s], m, v, c.hp, c.start+s, clip)
		p, m, v = roundTo(dt, p), roundTo(dt, m), roundTo(dt, v)
	}
	// Adam divides by sqrt(v̂)+eps, which amplifies rounding of small v: compare updates, not weights.
	closeTo(t, what+": p", got[0], p, 4*tol, nil)
	closeTo(t, what+": m", got[1], m, tol, nil)
	closeTo(t, what+": v", got[2], v, tol, nil)
}

// ---- SGD ----

func (e *env) testSGD(t *testing.T) {
	for _, dt := range e.o.Dtypes {
		tol := e.o.tol(dt)
		// Hand-computed: p=1, g=0.5, lr=0.1 -> 0.95; with momentum 0.9 twice: buf 0.5 then 0.9*0.5+0.5.
		p, g := e.devF(t, dt, []float64{1}, 1), e.devF(t, dt, []float64{0.5}, 1)
		mustCall(t, "SGDStep", func() error { return e.b.SGDStep(p, g, nil, ops.SGDParams{LR: 0.1}, nil) })
		closeTo(t, "SGDStep known answer", e.readF(t, p), []float64{0.95}, tol, nil)
		buf := e.devF(t, dt, []float64{0}, 1)
		for s := 0; s < 2; s++ {
			mustCall(t, "SGDStep", func() error { return e.b.SGDStep(p, g, buf, ops.SGDParams{LR: 0.1, Momentum: 0.9}, nil) })
		}
		closeTo(t, "SGDStep momentum known answer: p", e.readF(t, p), []float64{0.95 - 0.05 - 0.1*0.95}, tol, nil)
		closeTo(t, "SGDStep momentum known answer: buf", e.readF(t, buf), []float64{0.95}, tol, nil)

		cases := []struct {
			name              string
			lr, mom, wd, clip float64
			nesterov, withBuf bool
		}{
			{"plain", 0.1, 0, 0, 0, false, false},
			{"weight decay", 0.1, 0, 0.01, 0, false, false},
			{"momentum", 0.05, 0.9, 0, 0, false, true},
			{"Nesterov", 0.05, 0.9, 0.01, 0, true, true},
			{"clipped", 0.05, 0.5, 0, 0.25, false, true},
		}
		for ci, c := range cases {
			for _, n := range []int{1, 7, 40000} {
				rng := rand.New(rand.NewSource(int64(900 + 10*ci + n%7)))
				p0 := roundTo(dt, randVals(rng, n))
				grads := [][]float64{roundTo(dt, randVals(rng, n)), roundTo(dt, randVals(rng, n)), roundTo(dt, randVals(rng, n))}
				what := fmt.Sprintf("SGDStep(%s, n=%d, %v)", c.name, n, dt)
				var bits [2][]uint64
				var gotP []float64
				for run := 0; run < 2; run++ {
					p := e.devF(t, dt, p0, n)
					var buf, clip *tensor.Dense
					if c.withBuf {
						buf = e.devF(t, dt, make([]float64, n), n)
					}
					if c.clip != 0 {
						clip = e.devF(t, tensor.Float64, []float64{c.clip}, 1)
					}
					for _, gv := range grads {
						g := e.devF(t, dt, gv, n)
						mustCall(t, what, func() error {
							return e.b.SGDStep(p, g, buf, ops.SGDParams{LR: c.lr, Momentum: c.mom, WeightDecay: c.wd, Nesterov: c.nesterov}, clip)
						})
					}
					bits[run] = e.bits(t, p)
					if run == 0 {
						gotP = e.readF(t, p)
					}
				}
				sameBits(t, what, bits[0], bits[1])
				p := append([]float64(nil), p0...)
				var buf []float64
				if c.withBuf {
					buf = make([]float64, n)
				}
				clip := c.clip
				if clip == 0 {
					clip = 1
				}
				for _, gv := range grads {
					refSGDStep(p, gv, buf, c.lr, c.mom, c.wd, c.nesterov, clip)
					p = roundTo(dt, p)
					if buf != nil {
						buf = roundTo(dt, buf)
					}
				}
				closeTo(t, what, gotP, p, 2*tol, nil)
			}
		}
		// A non-finite clipping factor leaves p and the momentum buffer unchanged.
		p, g, buf = e.devF(t, dt, []float64{1, 2}, 2), e.devF(t, dt, []float64{0.5, -1}, 2), e.devF(t, dt, []float64{0.3, 0.1}, 2)
		ins := []input{e.snapshot(t, "p", p), e.snapshot(t, "buf", buf)}
		clip := e.devF(t, tensor.Float64, []float64{math.NaN()}, 1)
		mustCall(t, "SGDStep", func() error { return e.b.SGDStep(p, g, buf, ops.SGDParams{LR: 0.1, Momentum: 0.9}, clip) })
		e.unchanged(t, "SGDStep with a NaN clip factor", ins...)
	}
}

// ---- finite differences of the training gradients (float64) ----

func (e *env) testTrainingFD(t *testing.T) {
	dt := tensor.Float64
	forward := func(shape []int, run func(out *tensor.Dense) error) []float64 {
		out := e.out(t, dt, shape...).d
		mustCall(t, "forward", func() error { return run(out) })
		return e.readF(t, out)
	}
	loss := func(run func(out *tensor.Dense) error) float64 {
		var l float64
		mustCall(t, "loss", func() (err error) { l, err = e.lossValue(dt, run); return err })
		return l
	}
	rng := rand.New(rand.NewSource(1000))

	// MatMul: with C = op(A)·op(B) and upstream dC, the gradients ops.MatMul's SymDiff builds.
	s := mmShape{4, 3, 5}
	a, b := randVals(rng, s.M*s.K), randVals(rng, s.K*s.N)
	dc := randVals(rng, s.M*s.N)
	dcD := e.devF(t, dt, dc, s.M, s.N)
	for _, f := range allFlags {
		tA, tB := f[0], f[1]
		as, bs, ash, bsh := matmulOperands(a, b, s, tA, tB)
		aD, bD := e.devF(t, dt, as, ash...), e.devF(t, dt, bs, bsh...)
		var ga, gb []float64
		if tA {
			ga = forward(ash, func(o *tensor.Dense) error { return e.b.MatMul(bD, dcD, tB, true, o) })
		} else {
			ga = forward(ash, func(o *tensor.Dense) error { return e.b.MatMul(dcD, bD, false, !tB, o) })
		}
		if tB {
			gb = forward(bsh, func(o *tensor.Dense) error { return e.b.MatMul(dcD, aD, true, tA, o) })
		} else {
			gb = forward(bsh, func(o *tensor.Dense) error { return e.b.MatMul(aD, dcD, !tA, false, o) })
		}
		fa := fdGrad(as, func(v []float64) float64 {
			vd := e.devF(t, dt, v, ash...)
			return dotF(dc, forward([]int{s.M, s.N}, func(o *tensor.Dense) error { return e.b.MatMul(vd, bD, tA, tB, o) }))
		})
		fb := fdGrad(bs, func(v []float64) float64 {
			vd := e.devF(t, dt, v, bsh...)
			return dotF(dc, forward([]int{s.M, s.N}, func(o *tensor.Dense) error { return e.b.MatMul(aD, vd, tA, tB, o) }))
		})
		fdClose(t, fmt.Sprintf("MatMul(transA=%t,transB=%t) wrt a", tA, tB), ga, fa, e.o.FDTol)
		fdClose(t, fmt.Sprintf("MatMul(transA=%t,transB=%t) wrt b", tA, tB), gb, fb, e.o.FDTol)
	}

	// MSE w.r.t. pred and target.
	p, q := randVals(rng, 12), randVals(rng, 12)
	pD, qD := e.devF(t, dt, p, 3, 4), e.devF(t, dt, q, 3, 4)
	g := forward([]int{3, 4}, func(o *tensor.Dense) error { return e.b.MSELossGrad(pD, qD, 0.6, nil, o) })
	fd := fdGrad(p, func(v []float64) float64 {
		return 0.6 * loss(func(o *tensor.Dense) error { return e.b.MSELoss(e.devF(t, dt, v, 3, 4), qD, o) })
	})
	fdClose(t, "MSELossGrad wrt pred", g, fd, e.o.FDTol)
	g = forward([]int{3, 4}, func(o *tensor.Dense) error { return e.b.MSELossGrad(qD, pD, 0.6, nil, o) })
	fd = fdGrad(q, func(v []float64) float64 {
		return 0.6 * loss(func(o *tensor.Dense) error { return e.b.MSELoss(pD, e.devF(t, dt, v, 3, 4), o) })
	})
	fdClose(t, "MSELossGrad wrt target (operands exchanged)", g, fd, e.o.FDTol)

	// Cross-entropy w.r.t. logits, one row ignored.
	lg := randVals(rng, 4*5)
	for i := range lg {
		lg[i] *= 3
	}
	labD := e.devI(t, []int32{4, -1, 0, 2}, 4)
	up := e.oneElem(t, dt, 0.8)
	g = forward([]int{4, 5}, func(o *tensor.Dense) error {
		return e.b.SoftmaxCrossEntropyGrad(e.devF(t, dt, lg, 4, 5), labD, 1.25, up, o)
	})
	fd = fdGrad(lg, func(v []float64) float64 {
		return loss(func(o *tensor.Dense) error { return e.b.SoftmaxCrossEntropy(e.devF(t, dt, v, 4, 5), labD, o) })
	})
	fdClose(t, "SoftmaxCrossEntropyGrad wrt logits", g, fd, e.o.FDTol)

	// SwiGLU w.r.t. gate and up.
	gate, upv, dout := randVals(rng, 10), randVals(rng, 10), randVals(rng, 10)
	for i := range gate {
		gate[i] *= 4
	}
	gD, uD, dD := e.devF(t, dt, gate, 2, 5), e.devF(t, dt, upv, 2, 5), e.devF(t, dt, dout, 2, 5)
	og, ou := e.out(t, dt, 2, 5), e.out(t, dt, 2, 5)
	mustCall(t, "SwiGLUGrad", func() error { return e.b.SwiGLUGrad(gD, uD, dD, og.d, ou.d) })
	fd = fdGrad(gate, func(v []float64) float64 {
		vd := e.devF(t, dt, v, 2, 5)
		return dotF(dout, forward([]int{2, 5}, func(o *tensor.Dense) error { return e.b.SwiGLU(vd, uD, o) }))
	})
	fdClose(t, "SwiGLUGrad wrt gate", e.readF(t, og.d), fd, e.o.FDTol)
	fd = fdGrad(upv, func(v []float64) float64 {
		vd := e.devF(t, dt, v, 2, 5)
		return dotF(dout, forward([]int{2, 5}, func(o *tensor.Dense) error { return e.b.SwiGLU(gD, vd, o) }))
	})
	fdClose(t, "SwiGLUGrad wrt up", e.readF(t, ou.d), fd, e.o.FDTol)
}

// ---- results independent of the thread count ----

func (e *env) testTrainingScheduling(t *testing.T) {
	for _, dt := range e.o.Dtypes {
		t.Run(dt.String(), func(t *testing.T) {
			rng := rand.New(rand.NewSource(1100))
			const M, K, N, n, rows, C = 200, 300, 150, 70001, 3000, 37
			aD, bD := e.devF(t, dt, randVals(rng, M*K), M, K), e.devF(t, dt, randVals(rng, K*N), K, N)
			pD, qD := e.devF(t, dt, randVals(rng, n), n), e.devF(t, dt, randVals(rng, n), n)
			lg := randVals(rng, rows*C)
			lab := make([]int32, rows)
			for i := range lab {
				lab[i] = int32(rng.Intn(C+1)) - 1
			}
			lD, yD := e.devF(t, dt, lg, rows, C), e.devI(t, lab, rows)
			p0, g0 := randVals(rng, n), randVals(rng, n)
			runAll := func() [][]uint64 {
				o := func(dt tensor.Dtype, shape ...int) *tensor.Dense { return e.out(t, dt, shape...).d }
				mm := o(dt, M, N)
				mustCall(t, "MatMul", func() error { return e.b.MatMul(aD, bD, false, false, mm) })
				mse := o(dt, 1)
				mustCall(t, "MSELoss", func() error { return e.b.MSELoss(pD, qD, mse) })
				ce := o(dt, 1)
				mustCall(t, "SoftmaxCrossEntropy", func() error { return e.b.SoftmaxCrossEntropy(lD, yD, ce) })
				ceg := o(dt, rows, C)
				mustCall(t, "SoftmaxCrossEntropyGrad", func() error { return e.b.SoftmaxCrossEntropyGrad(lD, yD, 1, nil, ceg) })
				sw := o(dt, n)
				mustCall(t, "SwiGLU", func() error { return e.b.SwiGLU(pD, qD, sw) })
				sc := o(tensor.Float64, 1)
				mustCall(t, "GradNormScale", func() error { return e.b.GradNormScale([]*tensor.Dense{pD, qD, mm}, 1, sc) })
				p, g := e.devF(t, dt, p0, n), e.devF(t, dt, g0, n)
				m, v := e.devF(t, dt, make([]float64, n), n), e.devF(t, dt, make([]float64, n), n)
				mustCall(t, "AdamStep", func() error {
					return e.b.AdamStep(p, g, m, v, ops.AdamParams{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1}, sc)
				})
				var res [][]uint64
				for _, d := range []*tensor.Dense{mm, mse, ce, ceg, sw, sc, p} {
					res = append(res, e.bits(t, d))
				}
				return res
			}
			names := []string{"MatMul", "MSELoss", "SoftmaxCrossEntropy", "SoftmaxCrossEntropyGrad", "SwiGLU", "GradNormScale", "AdamStep"}
			base := runAll()
			for _, procs := range []int{1, 7} {
				old := runtime.GOMAXPROCS(procs)
				got := runAll()
				runtime.GOMAXPROCS(old)
				for i := range base {
					sameBits(t, fmt.Sprintf("%s with GOMAXPROCS=%d vs %d", names[i], procs, old), got[i], base[i])
				}
			}
		})
	}
}
