package tests

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/simdevice"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// param is a G.ValueGrad over two tensors (the solvers only need Value and Grad).
type param struct {
	name string
	v, g *tensor.Dense
}

func (p *param) Value() G.Value         { return p.v }
func (p *param) Grad() (G.Value, error) { return p.g, nil }
func (p *param) Name() string           { return p.name }
func vgs(ps ...*param) (out []G.ValueGrad) {
	for _, p := range ps {
		out = append(out, p)
	}
	return out
}

func f64(shape []int, vals ...float64) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), vals...)))
}

func setVals(d *tensor.Dense, vals []float64) { copy(d.Data().([]float64), vals) }

// pytorchAdam is torch.optim.Adam/AdamW's single-tensor update, written out for the tests.
type pytorchAdam struct {
	lr, b1, b2, eps, wd float64
	decoupled           bool
	m, v                [][]float64
	step                int
}

func (a *pytorchAdam) update(ps, gs [][]float64, clip float64) {
	if a.m == nil {
		for _, p := range ps {
			a.m, a.v = append(a.m, make([]float64, len(p))), append(a.v, make([]float64, len(p)))
		}
	}
	a.step++
	bc1, bc2 := 1-math.Pow(a.b1, float64(a.step)), 1-math.Pow(a.b2, float64(a.step))
	for k, p := range ps {
		for i := range p {
			g := gs[k][i] * clip
			if a.decoupled {
				p[i] *= 1 - a.lr*a.wd
			} else {
				g += a.wd * p[i]
			}
			a.m[k][i] = a.b1*a.m[k][i] + (1-a.b1)*g
			a.v[k][i] = a.b2*a.v[k][i] + (1-a.b2)*g*g
			p[i] -= a.lr / bc1 * a.m[k][i] / (math.Sqrt(a.v[k][i])/math.Sqrt(bc2) + a.eps)
		}
	}
}

// clipFactor is torch.nn.utils.clip_grad_norm_'s factor min(1, max/(norm+1e-6)).
func clipFactor(gs [][]float64, maxNorm float64) float64 {
	if maxNorm == 0 {
		return 1
	}
	s := 0.0
	for _, g := range gs {
		for _, v := range g {
			s += v * v
		}
	}
	return math.Min(1, maxNorm/(math.Sqrt(s)+1e-6))
}

func TestAdamFirstStepByHand(t *testing.T) {
	p := &param{"p", f64([]int{1}, 1), f64([]int{1}, 0.5)}
	adam, err := ops.NewAdam(ops.AdamConfig{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8})
	if err != nil {
		t.Fatal(err)
	}
	if err := adam.Step(vgs(p)); err != nil {
		t.Fatal(err)
	}
	// m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25: p = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
	if got, want := p.v.Data().([]float64)[0], 0.900000002; math.Abs(got-want) > 1e-15 {
		t.Errorf("p = %.17g, want %.17g", got, want)
	}
	if adam.Steps() != 1 {
		t.Errorf("Steps() = %d, want 1", adam.Steps())
	}
}

// TestAdamMatchesPyTorch: Adam, AdamW and global-norm clipping over two parameters for five steps
// against PyTorch's update written out.
func TestAdamMatchesPyTorch(t *testing.T) {
	for _, c := range []ops.AdamConfig{
		{LR: 0.05, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8},
		{LR: 0.05, Beta1: 0.8, Beta2: 0.99, Eps: 1e-6, WeightDecay: 0.1},
		{LR: 0.05, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1, Decoupled: true},
		{LR: 0.05, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Decoupled: true, MaxGradNorm: 0.5},
		{LR: 0.05, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, MaxGradNorm: 100}, // clipping inactive
	} {
		t.Run(fmt.Sprintf("%+v", c), func(t *testing.T) {
			rng := rand.New(rand.NewSource(3))
			hp := [][]float64{randVals(rng, 3), randVals(rng, 4)}
			p1 := &param{"a", f64([]int{3}, hp[0]...), f64([]int{3}, 0, 0, 0)}
			p2 := &param{"b", f64([]int{2, 2}, hp[1]...), f64([]int{2, 2}, 0, 0, 0, 0)}
			ref := &pytorchAdam{lr: c.LR, b1: c.Beta1, b2: c.Beta2, eps: c.Eps, wd: c.WeightDecay, decoupled: c.Decoupled}
			adam, err := ops.NewAdam(c)
			if err != nil {
				t.Fatal(err)
			}
			for step := 0; step < 5; step++ {
				gs := [][]float64{randVals(rng, 3), randVals(rng, 4)}
				setVals(p1.g, gs[0])
				setVals(p2.g, gs[1])
				if err := adam.Step(vgs(p1, p2)); err != nil {
					t.Fatal(err)
				}
				ref.update(hp, gs, clipFactor(gs, c.MaxGradNorm))
				for k, p := range []*param{p1, p2} {
					for i, got := range p.v.Data().([]float64) {
						if d := math.Abs(got - hp[k][i]); d > 1e-13 {
							t.Fatalf("step %d: %s[%d] = %.17g, PyTorch %.17g", step+1, p.name, i, got, hp[k][i])
						}
					}
				}
			}
		})
	}
}

// TestSGDMatchesPyTorch: plain, momentum, Nesterov, weight decay and clipping against torch.optim.SGD.
func TestSGDMatchesPyTorch(t *testing.T) {
	for _, c := range []ops.SGDConfig{
		{LR: 0.1},
		{LR: 0.1, WeightDecay: 0.05},
		{LR: 0.05, Momentum: 0.9},
		{LR: 0.05, Momentum: 0.9, Nesterov: true, WeightDecay: 0.01},
		{LR: 0.05, Momentum: 0.5, MaxGradNorm: 0.3},
	} {
		t.Run(fmt.Sprintf("%+v", c), func(t *testing.T) {
			rng := rand.New(rand.NewSource(4))
			ref := randVals(rng, 5)
			buf := make([]float64, 5)
			p := &param{"p", f64([]int{5}, ref...), f64([]int{5}, 0, 0, 0, 0, 0)}
			sgd, err := ops.NewSGD(c)
			if err != nil {
				t.Fatal(err)
			}
			for step := 0; step < 4; step++ {
				g := randVals(rng, 5)
				setVals(p.g, g)
				if err := sgd.Step(vgs(p)); err != nil {
					t.Fatal(err)
				}
				clip := clipFactor([][]float64{g}, c.MaxGradNorm)
				for i := range ref {
					d := clip*g[i] + c.WeightDecay*ref[i]
					if c.Momentum > 0 {
						if step == 0 {
							buf[i] = d // torch: buf = clone(d) at the first step
						} else {
							buf[i] = c.Momentum*buf[i] + d
						}
						if c.Nesterov {
							d += c.Momentum * buf[i]
						} else {
							d = buf[i]
						}
					}
					ref[i] -= c.LR * d
				}
				for i, got := range p.v.Data().([]float64) {
					if math.Abs(got-ref[i]) > 1e-14 {
						t.Fatalf("step %d: p[%d] = %.17g, PyTorch %.17g", step+1, i, got, ref[i])
					}
				}
			}
		})
	}
}

// TestSolverRejectsNaNGradients: on the CPU a non-finite gradient is ErrNaN before anything changes,
// and the solver then continues exactly as if the bad step had not been attempted.
func TestSolverRejectsNaNGradients(t *testing.T) {
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		mk := func() (*param, *param) {
			return &param{"a", f64([]int{2}, 1, 2), f64([]int{2}, 0.1, -0.2)}, &param{"b", f64([]int{3}, 3, 4, 5), f64([]int{3}, 0.3, 0.1, -0.5)}
		}
		a, b := mk()
		adam, _ := ops.NewAdam(ops.DefaultAdam(0.1))
		sgd, _ := ops.NewSGD(ops.SGDConfig{LR: 0.1, Momentum: 0.9})
		for _, s := range []interface {
			Step([]G.ValueGrad) error
			Steps() int
		}{adam, sgd} {
			if err := s.Step(vgs(a, b)); err != nil { // one good step, so there is state to protect
				t.Fatal(err)
			}
			before := append(denseFloats(a.v), denseFloats(b.v)...)
			b.g.Data().([]float64)[2] = bad
			err := s.Step(vgs(a, b))
			if !errors.Is(err, ops.ErrNaN) {
				t.Fatalf("%T.Step with a %v gradient: %v, want ErrNaN", s, bad, err)
			}
			after := append(denseFloats(a.v), denseFloats(b.v)...)
			for i := range before {
				if math.Float64bits(before[i]) != math.Float64bits(after[i]) {
					t.Fatalf("%T.Step with a %v gradient changed parameter element %d: %v -> %v", s, bad, i, before[i], after[i])
				}
			}
			if s.Steps() != 1 {
				t.Errorf("%T: Steps() = %d after a rejected step, want 1", s, s.Steps())
			}
			b.g.Data().([]float64)[2] = -0.5
		}
	}
	// The state was not touched: a rejected step followed by a good one equals the good one alone.
	run := func(withBad bool) []float64 {
		p := &param{"p", f64([]int{2}, 1, 2), f64([]int{2}, 0.1, -0.2)}
		adam, _ := ops.NewAdam(ops.DefaultAdam(0.1))
		if err := adam.Step(vgs(p)); err != nil {
			t.Fatal(err)
		}
		if withBad {
			p.g.Data().([]float64)[0] = math.NaN()
			if err := adam.Step(vgs(p)); err == nil {
				t.Fatal("NaN gradient accepted")
			}
			p.g.Data().([]float64)[0] = 0.1
		}
		if err := adam.Step(vgs(p)); err != nil {
			t.Fatal(err)
		}
		return denseFloats(p.v)
	}
	clean, withBad := run(false), run(true)
	for i := range clean {
		if math.Float64bits(clean[i]) != math.Float64bits(withBad[i]) {
			t.Errorf("element %d: %v after a rejected step, %v without", i, withBad[i], clean[i])
		}
	}
}

func TestSolverErrors(t *testing.T) {
	for _, c := range []ops.AdamConfig{
		{LR: -1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8},
		{LR: 0.1, Beta1: 1, Beta2: 0.999, Eps: 1e-8},
		{LR: 0.1, Beta1: 0.9, Beta2: -0.1, Eps: 1e-8},
		{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 0},
		{LR: math.NaN(), Beta1: 0.9, Beta2: 0.999, Eps: 1e-8},
		{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: -1},
		{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, MaxGradNorm: -1},
	} {
		if _, err := ops.NewAdam(c); !errors.Is(err, ops.ErrConfig) {
			t.Errorf("NewAdam(%+v) = %v, want ErrConfig", c, err)
		}
	}
	for _, c := range []ops.SGDConfig{{LR: -0.1}, {LR: 0.1, Nesterov: true}, {LR: 0.1, Momentum: -1}, {LR: 0.1, MaxGradNorm: math.Inf(1)}} {
		if _, err := ops.NewSGD(c); !errors.Is(err, ops.ErrConfig) {
			t.Errorf("NewSGD(%+v) = %v, want ErrConfig", c, err)
		}
	}
	adam, _ := ops.NewAdam(ops.DefaultAdam(0.1))
	if err := adam.SetLR(-1); !errors.Is(err, ops.ErrConfig) {
		t.Errorf("SetLR(-1) = %v, want ErrConfig", err)
	}
	a := &param{"a", f64([]int{2}, 1, 2), f64([]int{2}, 0.1, 0.2)}
	b := &param{"b", f64([]int{2}, 1, 2), f64([]int{2}, 0.1, 0.2)}
	if err := adam.Step(nil); !errors.Is(err, ops.ErrConfig) {
		t.Errorf("Step(nil) = %v, want ErrConfig", err)
	}
	if err := adam.Step(vgs(a)); err != nil {
		t.Fatal(err)
	}
	if err := adam.Step(vgs(b)); !errors.Is(err, ops.ErrConfig) {
		t.Errorf("Step with another parameter = %v, want ErrConfig", err)
	}
	if err := adam.Step(vgs(a, b)); !errors.Is(err, ops.ErrConfig) {
		t.Errorf("Step with an added parameter = %v, want ErrConfig", err)
	}
	adam.Reset()
	if err := adam.Step(vgs(b)); err != nil {
		t.Errorf("Step after Reset: %v", err)
	}
	adam.Reset()
	wrong := &param{"w", f64([]int{2}, 1, 2), f64([]int{3}, 0.1, 0.2, 0.3)}
	if err := adam.Step(vgs(wrong)); !errors.Is(err, ops.ErrShape) {
		t.Errorf("Step with a gradient of another shape = %v, want ErrShape", err)
	}
	dev := simBackend(t)
	onDev := &param{"d", mustFromHost(t, dev, f64([]int{2}, 1, 2)), mustFromHost(t, dev, f64([]int{2}, 0.1, 0.2))}
	if err := adam.Step(vgs(a, onDev)); !errors.Is(err, ops.ErrMixedBackends) {
		t.Errorf("Step with parameters on two backends = %v, want ErrMixedBackends", err)
	}
	half := &param{"h", f64([]int{2}, 1, 2), mustFromHost(t, dev, f64([]int{2}, 0.1, 0.2))}
	if err := adam.Step(vgs(half)); !errors.Is(err, ops.ErrMixedBackends) {
		t.Errorf("Step with a host parameter and a device gradient = %v, want ErrMixedBackends", err)
	}
	// A graph node without a gradient (G.Grad not called): ErrConfig naming it.
	g := G.NewGraph()
	n := G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName("lonely"), G.WithValue(f64([]int{2}, 1, 2)))
	adam.Reset()
	if err := adam.Step(G.NodesToValueGrads(G.Nodes{n})); !errors.Is(err, ops.ErrConfig) {
		t.Errorf("Step of a node without gradient = %v, want ErrConfig", err)
	}
}

// TestSolverOnDeviceSteps: the solver on the simulated device, one memory step per update, gives the
// CPU's weights bitwise: its state, created inside the first step, survives EndStep because it is
// persisted. On a device whose Persist does nothing the second step fails with ErrReleased (the state
// went back to the pool) instead of using released memory.
func TestSolverOnDeviceSteps(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	p0, gs := randVals(rng, 6), [][]float64{randVals(rng, 6), randVals(rng, 6), randVals(rng, 6)}
	cfg := ops.DefaultAdam(0.1)
	cfg.MaxGradNorm = 0.5
	cpuA, _ := ops.NewAdam(cfg)
	cp := &param{"p", f64([]int{6}, p0...), f64([]int{6}, make([]float64, 6)...)}
	for _, g := range gs {
		setVals(cp.g, g)
		if err := cpuA.Step(vgs(cp)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(dev ops.Backend) (*tensor.Dense, error) {
		scoper := dev.(ops.StepScoper)
		devA, _ := ops.NewAdam(cfg)
		dp := &param{"p", mustFromHost(t, dev, f64([]int{6}, p0...)), nil}
		for i, g := range gs {
			if err := scoper.BeginStep(); err != nil {
				t.Fatal(err)
			}
			dp.g = mustFromHost(t, dev, f64([]int{6}, g...))
			err := devA.Step(vgs(dp))
			if e := scoper.EndStep(); e != nil {
				t.Fatal(e)
			}
			if err != nil {
				return nil, fmt.Errorf("step %d: %w", i, err)
			}
		}
		return dev.ToHost(dp.v)
	}
	h, err := run(simBackend(t))
	if err != nil {
		t.Fatal(err)
	}
	want, got := denseFloats(cp.v), denseFloats(h)
	for i := range want {
		if math.Float64bits(want[i]) != math.Float64bits(got[i]) {
			t.Fatalf("element %d: device %v, CPU %v", i, got[i], want[i])
		}
	}
	noPersist := registeredSim(t, "sim-nopersist", 8<<20, func(b *simdevice.Backend) ops.Backend { return noPersistSim{b} })
	if _, err := run(noPersist); !errors.Is(err, devengine.ErrReleased) || !strings.Contains(err.Error(), "step 1") {
		t.Errorf("a solver whose state is not persisted: %v, want ErrReleased at step 1", err)
	}
}
