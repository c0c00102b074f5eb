package tests

import (
	"fmt"
	"github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/simdevice"
	"github.com/expertrt/expertrt-go/tests/trainingtest"
	"gorgonia.org/tensor"
)

// mirrorKernels are host kernels that follow the algorithms of the CUDA training kernels
// (task_losses.cu, elementwise.cu's SwiGLU, optim.cu) step by step in Go: per-element arithmetic in the
// same precision, double accumulation, the same guards. Run through the simulated device with the
// training suite, they check the suite's references and the kernels' algorithms on every CI run (the
// CUDA code itself runs only on the GPU host). Everything else is the CPU backend's.
type mirrorKernels struct{ ops.Backend }

func f64s(t *tensor.Dense) []float64 {
	v, err := floats.Of(t)
	if err != nil {
		panic(err)
	}
	return v
}

// store writes vals into t rounded to t's dtype.
func store(t *tensor.Dense, vals []float64) {
	switch d := t.Data().(type) {
	case []float64:
		copy(d, vals)
	case []float32:
		for i, x := range vals {
			d[i] = float32(x)
		}
	}
}

func upstream(g *tensor.Dense) float64 {
	if g == nil {
		return 1
	}
	return f64s(g)[0]
}

func (mirrorKernels) MSELoss(pred, target, loss *tensor.Dense) error {
	p, q := f64s(pred), f64s(target)
	acc := 0.0
	for i := range p {
		acc += (p[i] - q[i]) * (p[i] - q[i])
	}
	if len(p) > 0 {
		acc /= float64(len(p))
	}
	store(loss, []float64{acc})
	return nil
}

func (mirrorKernels) MSELossGrad(pred, target *tensor.Dense, scale float64, g, dpred *tensor.Dense) error {
	p, q := f64s(pred), f64s(target)
	c := scale * upstream(g) * 2 / float64(len(p))
	out := make([]float64, len(p))
	for i := range p {
		out[i] = c * (p[i] - q[i])
	}
	store(dpred, out)
	return nil
}

// rowStats is the row maximum (in the logits' dtype) and the double sum of exp(x - max) (exp in the
// logits' dtype).
func rowStats(row []float64, f32 bool) (float64, float64) {
	m := math.Inf(-1)
	for _, z := range row {
		m = math.Max(m, z)
	}
	s := 0.0
	for _, z := range row {
		e := math.Exp(z - m)
		if f32 {
			e = float64(float32(math.Exp(float64(float32(z - m)))))
		}
		s += e
	}
	return m, s
}

func (mirrorKernels) labels(labels *tensor.Dense, C int) ([]int32, error) {
	ys := labels.Data().([]int32)
	for _, y := range ys {
		if y != -1 && (y < 0 || int(y) >= C) {
			return nil, fmt.Errorf("mirror: label %d outside [0, %d): %w", y, C, ops.ErrLabel)
		}
	}
	return ys, nil
}

func (k mirrorKernels) SoftmaxCrossEntropy(logits, labels, loss *tensor.Dense) error {
	N, C := logits.Shape()[0], logits.Shape()[1]
	ys, err := k.labels(labels, C)
	if err != nil {
		return err
	}
	x := f64s(logits)
	acc, cnt := 0.0, 0
	for r := 0; r < N; r++ {
		if ys[r] < 0 {
			continue
		}
		m, s := rowStats(x[r*C:(r+1)*C], logits.Dtype() == tensor.Float32)
		acc += m + math.Log(s) - x[r*C+int(ys[r])]
		cnt++
	}
	if cnt > 0 {
		acc /= float64(cnt)
	}
	store(loss, []float64{acc})
	return nil
}

func (k mirrorKernels) SoftmaxCrossEntropyGrad(logits, labels *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	N, C := logits.Shape()[0], logits.Shape()[1]
	ys, err := k.labels(labels, C)
	if err != nil {
		return err
	}
	x := f64s(logits)
	cnt := 0
	for _, y := range ys {
		if y >= 0 {
			cnt++
		}
	}
	c := 0.0
	if cnt > 0 {
		c = scale * upstream(g) / float64(cnt)
	}
	out := make([]float64, N*C)
	f32 := logits.Dtype() == tensor.Float32
	for r := 0; r < N; r++ {
		if ys[r] < 0 {
			continue
		}
		m, s := rowStats(x[r*C:(r+1)*C], f32)
		for j := 0; j < C; j++ {
			e := math.Exp(x[r*C+j] - m)
			if f32 {
				e = float64(float32(math.Exp(float64(float32(x[r*C+j] - m)))))
			}
			p := e / s
			if j == int(ys[r]) {
				p--
			}
			out[r*C+j] = c * p
		}
	}
	store(dlogits, out)
	return nil
}

func (mirrorKernels) SwiGLU(gate, up, out *tensor.Dense) error {
	g, u := f64s(gate), f64s(up)
	r := make([]float64, len(g))
	for i := range g {
		r[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
	}
	store(out, r)
	return nil
}

func (mirrorKernels) SwiGLUGrad(gate, up, dout, dgate, dup *tensor.Dense) error {
	g, u, d := f64s(gate), f64s(up), f64s(dout)
	dg, du := make([]float64, len(g)), make([]float64, len(g))
	for i := range g {
		s := 1 / (1 + math.Exp(-g[i]))
		dg[i] = d[i] * u[i] * s * (1 + g[i]*(1-s))
		du[i] = d[i] * g[i] * s
	}
	store(dgate, dg)
	store(dup, du)
	return nil
}

func (mirrorKernels) GradNormScale(grads []*tensor.Dense, maxNorm float64, scale *tensor.Dense) error {
	acc := 0.0
	for _, g := range grads {
		for _, x := range f64s(g) {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("mirror: non-finite gradient: %w", ops.ErrNaN)
			}
			acc += x * x
		}
	}
	store(scale, []float64{math.Min(1, maxNorm/(math.Sqrt(acc)+1e-6))})
	return nil
}

func (mirrorKernels) AdamStep(p, g, m, v *tensor.Dense, hp ops.AdamParams, clipScale *tensor.Dense) error {
	if hp.Step < 1 {
		return fmt.Errorf("mirror: step %d: %w", hp.Step, ops.ErrConfig)
	}
	c := 1.0
	if clipScale != nil {
		c = f64s(clipScale)[0]
	}
	bc1, bc2 := 1-math.Pow(hp.Beta1, float64(hp.Step)), 1-math.Pow(hp.Beta2, float64(hp.Step))
	ps, gs, ms, vs := f64s(p), f64s(g), f64s(m), f64s(v)
	np, nm, nv := make([]float64, len(ps)), make([]float64, len(ps)), make([]float64, len(ps))
	for i := range ps {
		gi := c * gs[i]
		if !hp.DecoupledWeightDecay {
			gi += hp.WeightDecay * ps[i]
		}
		nm[i] = hp.Beta1*ms[i] + (1-hp.Beta1)*gi
		nv[i] = hp.Beta2*vs[i] + (1-hp.Beta2)*gi*gi
		upd := (nm[i] / bc1) / (math.Sqrt(nv[i]/bc2) + hp.Eps)
		if hp.DecoupledWeightDecay {
			upd += hp.WeightDecay * ps[i]
		}
		np[i] = ps[i] - hp.LR*upd
	}
	store(p, np)
	store(m, nm)
	store(v, nv)
	return nil
}

func (mirrorKernels) SGDStep(p, g, buf *tensor.Dense, hp ops.SGDParams, clipScale *tensor.Dense) error {
	if hp.Momentum > 0 && buf == nil {
		return fmt.Errorf("mirror: momentum without a buffer: %w", ops.ErrConfig)
	}
	c := 1.0
	if clipScale != nil {
		c = f64s(clipScale)[0]
	}
	ps, gs := f64s(p), f64s(g)
	var bs []float64
	if hp.Momentum > 0 {
		bs = f64s(buf)
	}
	np := make([]float64, len(ps))
	for i := range ps {
		gr := c*gs[i] + hp.WeightDecay*ps[i]
		if bs != nil {
			b := hp.Momentum*bs[i] + gr
			bs[i] = b
			if hp.Nesterov {
				gr += hp.Momentum * b
			} else {
				gr = b
			}
		}
		np[i] = ps[i] - hp.LR*gr
	}
	store(p, np)
	if bs != nil {
		store(buf, bs)
	}
	return nil
}

// TestTrainingSuiteOnMirror runs the training suite on the simulated device with the mirror kernels.
func TestTrainingSuiteOnMirror(t *testing.T) {
	d, err := simdevice.Open("sim-mirror", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	trainingtest.Run(t, simdevice.NewBackendWith(d, mirrorKernels{ops.CPU()}), trainingtest.Options{Stats: d.Stats})
}

// TestMirrorMatchesCPU compares the CUDA kernels' algorithms (the mirror kernels, through the simulated
// device) with the CPU training kernels: kernels the CPU backend does not implement yet are skipped.
func TestMirrorMatchesCPU(t *testing.T) {
	d, err := simdevice.Open("sim-mirror-cmp", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	trainingtest.Compare(t, ops.CPU(), simdevice.NewBackendWith(d, mirrorKernels{ops.CPU()}), trainingtest.Options{})
}
