package trainingtest

import (
	"errors"
	"fmt"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Compare runs every training kernel (MatMul excepted) on two backends with the same inputs and
// compares the results (Options' tolerances): a device backend against ops.CPU(), or two host kernel
// sets. A kernel that either backend does not implement yet (ops.ErrUnsupported) is skipped.
func Compare(t *testing.T, ref, dev ops.Backend, o Options) {
	if o.Tol32 == 0 {
		o.Tol32 = 1e-5
	}
	if o.Tol64 == 0 {
		o.Tol64 = 1e-12
	}
	c := &cmpEnv{ref: &env{b: ref, o: o}, dev: &env{b: dev, o: o}, rng: rand.New(rand.NewSource(5))}
	for _, dt := range dtypes {
		t.Run(fmt.Sprintf("%v", dt), func(t *testing.T) { c.run(t, dt) })
	}
}

type cmpEnv struct {
	ref, dev *env
	rng      *rand.Rand
}

// kernelRun is one kernel call given its inputs (copied to the backend) and outputs (fresh, NaN).
type kernelRun struct {
	name    string
	inputs  []*tensor.Dense // host tensors; nil for an absent optional input
	outputs [][]int         // output shapes (dtype of the first input, or float64 for the clip scale)
	outDt   []tensor.Dtype
	inPlace []int // inputs the kernel updates (compared after the call)
	call    func(b ops.Backend, in, out []*tensor.Dense) error
}

func (c *cmpEnv) host(dt tensor.Dtype, n int, lo, hi float64, shape ...int) *tensor.Dense {
	vals := make([]float64, n)
	for i := range vals {
		vals[i] = lo + (hi-lo)*c.rng.Float64()
	}
	return hostOf(dt, vals, shape...)
}

func (c *cmpEnv) run(t *testing.T, dt tensor.Dtype) {
	const N, C, n = 37, 11, 1029
	labels := make([]int32, N)
	for i := range labels {
		labels[i] = int32(c.rng.Intn(C))
		if i%5 == 2 {
			labels[i] = -1
		}
	}
	lab := tensor.New(tensor.WithShape(N), tensor.WithBacking(labels))
	g1 := hostOf(dt, []float64{0.7}, 1)
	clip := hostOf(tensor.Float64, []float64{0.4}, 1)
	p, q, dout := c.host(dt, n, -2, 2, n), c.host(dt, n, -2, 2, n), c.host(dt, n, -1, 1, n)
	logits := c.host(dt, N*C, -3, 3, N, C)
	zeros := hostOf(dt, make([]float64, n), n)
	adam := ops.AdamParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.05, Step: 3}
	adamW := adam
	adamW.DecoupledWeightDecay = true
	sgd := ops.SGDParams{LR: 0.1, Momentum: 0.9, WeightDecay: 0.01, Nesterov: true}
	runs := []kernelRun{
		{name: "MSELoss", inputs: []*tensor.Dense{p, q}, outputs: [][]int{{1}}, outDt: []tensor.Dtype{dt},
			call: func(b ops.Backend, in, out []*tensor.Dense) error { return b.MSELoss(in[0], in[1], out[0]) }},
		{name: "MSELossGrad", inputs: []*tensor.Dense{p, q, g1}, outputs: [][]int{{n}}, outDt: []tensor.Dtype{dt},
			call: func(b ops.Backend, in, out []*tensor.Dense) error {
				return b.MSELossGrad(in[0], in[1], 1.5, in[2], out[0])
			}},
		{name: "SoftmaxCrossEntropy", inputs: []*tensor.Dense{logits, lab}, outputs: [][]int{{1}}, outDt: []tensor.Dtype{dt},
			call: func(b ops.Backend, in, out []*tensor.Dense) error { return b.SoftmaxCrossEntropy(in[0], in[1], out[0]) }},
		{name: "SoftmaxCrossEntropyGrad", inputs: []*tensor.Dense{logits, lab, g1}, outputs: [][]int{{N, C}}, outDt: []tensor.Dtype{dt},
			call: func(b ops.Backend, in, out []*tensor.Dense) error {
				return b.SoftmaxCrossEntropyGrad(in[0], in[1], 0.5, in[2], out[0])
			}},
		{name: "SwiGLU", inputs: []*tensor.Dense{p, q}, outputs: [][]int{{n}}, outDt: []tensor.Dtype{dt},
			call: func(b ops.Backend, in, out []*tensor.Dense) error { return b.SwiGLU(in[0], in[1], out[0]) }},
		{name: "SwiGLUGrad", inputs: []*tensor.Dense{p, q, dout}, outputs: [][]int{{n}, {n}}, outDt: []tensor.Dtype{dt, dt},
			call: func(b ops.Backend, in, out []*tensor.Dense) error {
				return b.SwiGLUGrad(in[0], in[1], in[2], out[0], out[1])
			}},
		{name: "GradNormScale", inputs: []*tensor.Dense{p, q}, outputs: [][]int{{1}}, outDt: []tensor.Dtype{tensor.Float64},
			call: func(b ops.Backend, in, out []*tensor.Dense) error {
				return b.GradNormScale([]*tensor.Dense{in[0], in[1]}, 3, out[0])
			}},
		{name: "AdamStep", inputs: []*tensor.Dense{p, q, dout, zeros.Clone().(*tensor.Dense), clip}, inPlace: []int{0, 2, 3},
			call: func(b ops.Backend, in, out []*tensor.Dense) error {
				return b.AdamStep(in[0], in[1], in[2], in[3], adam, in[4])
			}},
		{name: "AdamWStep", inputs: []*tensor.Dense{p, q, dout, zeros.Clone().(*tensor.Dense), nil}, inPlace: []int{0, 2, 3},
			call: func(b ops.Backend, in, out []*tensor.Dense) error {
				return b.AdamStep(in[0], in[1], in[2], in[3], adamW, nil)
			}},
		{name: "SGDStep", inputs: []*tensor.Dense{p, q, dout, clip}, inPlace: []int{0, 2},
			call: func(b ops.Backend, in, out []*tensor.Dense) error { return b.SGDStep(in[0], in[1], in[2], sgd, in[3]) }},
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			res := make([][][]float64, 2)
			for k, e := range []*env{c.ref, c.dev} {
				in := make([]*tensor.Dense, len(r.inputs))
				for i, h := range r.inputs {
					if h == nil {
						continue
					}
					d, err := e.b.FromHost(h.Clone().(*tensor.Dense))
					if err != nil {
						t.Fatal(err)
					}
					in[i] = d
				}
				out := make([]*tensor.Dense, len(r.outputs))
				for i, s := range r.outputs {
					out[i] = e.out(t, r.outDt[i], s...)
				}
				err := r.call(e.b, in, out)
				if err == nil {
					err = e.sync()
				}
				if errors.Is(err, ops.ErrUnsupported) {
					t.Skipf("%s on %s: %v", r.name, e.b.Name(), err)
				}
				if err != nil {
					t.Fatalf("%s on %s: %v", r.name, e.b.Name(), err)
				}
				for _, d := range out {
					res[k] = append(res[k], e.read(t, d))
				}
				for _, i := range r.inPlace {
					res[k] = append(res[k], e.read(t, in[i]))
				}
			}
			for i := range res[0] {
				c.ref.close(t, fmt.Sprintf("%s result %d: %s vs %s", r.name, i, c.dev.b.Name(), c.ref.b.Name()), dt, res[1][i], res[0][i])
			}
		})
	}
}
