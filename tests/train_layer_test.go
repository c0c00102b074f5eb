package tests

import (
	"errors"
	"math"
	"math/rand"
	"runtime"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/simdevice"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// layerTask is a small regression task for a MoE layer: y = tanh(x · M) for a fixed random M.
type layerTask struct {
	cfg     moe.Config
	tokens  int
	m       []float64 // [H,H]
	rngSeed int64
}

func newLayerTask(dt tensor.Dtype) layerTask {
	cfg := moe.Config{Hidden: 8, FFN: 12, Experts: 4, TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true,
		AuxLossCoef: 0.01, ZLossCoef: 0.001, Seed: 5, Dtype: dt}
	rng := rand.New(rand.NewSource(9))
	m := make([]float64, cfg.Hidden*cfg.Hidden)
	for i := range m {
		m[i] = rng.NormFloat64() / math.Sqrt(float64(cfg.Hidden))
	}
	return layerTask{cfg: cfg, tokens: 48, m: m, rngSeed: 11}
}

// batches returns n (x, y) host batches.
func (lt layerTask) batches(n int) [][2]*tensor.Dense {
	rng := rand.New(rand.NewSource(lt.rngSeed))
	h := lt.cfg.Hidden
	out := make([][2]*tensor.Dense, n)
	for b := range out {
		x := make([]float64, lt.tokens*h)
		for i := range x {
			x[i] = rng.NormFloat64()
		}
		y := make([]float64, lt.tokens*h)
		for t := 0; t < lt.tokens; t++ {
			for j := 0; j < h; j++ {
				s := 0.0
				for i := 0; i < h; i++ {
					s += x[t*h+i] * lt.m[i*h+j]
				}
				y[t*h+j] = math.Tanh(s)
			}
		}
		out[b] = [2]*tensor.Dense{fromF64(lt.cfg.Dtype, x, tensor.Shape{lt.tokens, h}), fromF64(lt.cfg.Dtype, y, tensor.Shape{lt.tokens, h})}
	}
	return out
}

// trainRun is one training run of the task's layer on a backend.
type trainRun struct {
	layer *moe.Layer
	tr    *ops.Trainer
	x, y  *G.Node
	mse   *G.Node
}

func (lt layerTask) build(t *testing.T, b ops.Backend, solver G.Solver) *trainRun {
	t.Helper()
	cfg := lt.cfg
	cfg.Backend = b
	g := G.NewGraph()
	r := &trainRun{}
	var err error
	if r.layer, err = moe.NewLayer(g, cfg); err != nil {
		t.Fatal(err)
	}
	r.x = G.NewMatrix(g, cfg.Dtype, G.WithShape(lt.tokens, cfg.Hidden), G.WithName("x"))
	r.y = G.NewMatrix(g, cfg.Dtype, G.WithShape(lt.tokens, cfg.Hidden), G.WithName("y"))
	out, err := r.layer.Forward(r.x)
	if err != nil {
		t.Fatal(err)
	}
	if r.mse, err = ops.MSELoss(out.Y, r.y); err != nil {
		t.Fatal(err)
	}
	rl, err := out.RouterLoss()
	if err != nil {
		t.Fatal(err)
	}
	cost, err := ops.AddLosses(r.mse, rl)
	if err != nil {
		t.Fatal(err)
	}
	if r.tr, err = ops.NewTrainer(cost, r.layer.Params(), solver, b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.tr.Close() })
	return r
}

// run trains on the batches and returns the cost of every step and the final host weights.
func (r *trainRun) run(t *testing.T, data [][2]*tensor.Dense) ([]float64, moe.Weights) {
	t.Helper()
	losses := make([]float64, len(data))
	for i, d := range data {
		l, err := r.tr.StepLoss(ops.Feeds{r.x: d[0], r.y: d[1]})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		losses[i] = l
	}
	w, err := r.layer.HostWeights()
	if err != nil {
		t.Fatal(err)
	}
	return losses, w
}

func weightBits(w moe.Weights) [][]uint64 {
	var out [][]uint64
	for _, d := range []*tensor.Dense{w.Router, w.W1, w.W3, w.W2} {
		out = append(out, hostBits(d))
	}
	return out
}

func hostBits(d *tensor.Dense) []uint64 {
	v := denseFloats(d)
	b := make([]uint64, len(v))
	for i, x := range v {
		b[i] = math.Float64bits(x)
	}
	return b
}

// TestTrainLayerCPU trains the MoE layer (ops.MatMul router, ops.SwiGLU experts, ops.MSELoss, router
// losses) with ops.Adam through ops.Trainer on the CPU: the loss must fall well below its start, and a
// second run must give bitwise identical losses and weights.
func TestTrainLayerCPU(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		t.Run(dt.String(), func(t *testing.T) {
			lt := newLayerTask(dt)
			data := lt.batches(80)
			var runs [2][]float64
			var ws [2]moe.Weights
			for i := range runs {
				adam, err := ops.NewAdam(ops.DefaultAdam(0.02))
				if err != nil {
					t.Fatal(err)
				}
				runs[i], ws[i] = lt.build(t, ops.CPU(), adam).run(t, data)
			}
			first, last := mean(runs[0][:5]), mean(runs[0][len(data)-5:])
			t.Logf("%v: cost %.5f -> %.5f", dt, first, last)
			if !(last < 0.5*first) {
				t.Errorf("training did not halve the cost: %.5f -> %.5f", first, last)
			}
			for i := range runs[0] {
				if math.Float64bits(runs[0][i]) != math.Float64bits(runs[1][i]) {
					t.Fatalf("step %d: cost %v then %v in an identical run", i, runs[0][i], runs[1][i])
				}
			}
			b0, b1 := weightBits(ws[0]), weightBits(ws[1])
			for p := range b0 {
				for i := range b0[p] {
					if b0[p][i] != b1[p][i] {
						t.Fatalf("parameter %d element %d differs between identical runs", p, i)
					}
				}
			}
		})
	}
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// TestTrainLayerSim runs the whole GPU training path on the simulated device (memory the host cannot
// read): the MoE layer's parameters placed by Config.Backend, ops.Trainer (graph check, TapeMachine with
// the device's tensor engine, feeds copied per step, one memory step per training step), the project's
// ops (MatMul router, grouped matmuls, SwiGLU, route/dispatch/combine), ops.MSELoss plus the router
// losses added by ops.AddLosses, Gorgonia's gradient sums through the device engine, and ops.Adam with
// clipping and decoupled weight decay (state on the device, persisted beyond its first step). The costs
// of every step and the weights after 20 steps must equal the CPU run's: float64 within 1e-12
// relative, float32 within 1e-5 (the device engine's host kernels may round a few built-in functions
// differently from the tensor package's; in practice the runs agree bitwise).
func TestTrainLayerSim(t *testing.T) {
	dev := registeredSim(t, "sim-train", 64<<20, nil)
	newAdam := func() *ops.Adam {
		cfg := ops.DefaultAdam(0.02)
		cfg.MaxGradNorm = 1
		cfg.WeightDecay, cfg.Decoupled = 0.01, true
		a, err := ops.NewAdam(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, c := range []struct {
		dt  tensor.Dtype
		tol float64
	}{{tensor.Float64, 1e-12}, {tensor.Float32, 1e-5}} {
		t.Run(c.dt.String(), func(t *testing.T) {
			lt := newLayerTask(c.dt)
			data := lt.batches(20)
			cpuLoss, cpuW := lt.build(t, ops.CPU(), newAdam()).run(t, data)
			run := lt.build(t, dev, newAdam())
			for _, p := range run.layer.Params() {
				if !dev.Owns(p.Value().(*tensor.Dense)) {
					t.Fatalf("parameter %s is not on the device", p.Name())
				}
			}
			devLoss, devW := run.run(t, data)
			worst := 0.0
			for i := range cpuLoss {
				d := math.Abs(devLoss[i]-cpuLoss[i]) / math.Max(1, math.Abs(cpuLoss[i]))
				if !(d <= c.tol) {
					t.Fatalf("step %d: device cost %v, CPU %v", i, devLoss[i], cpuLoss[i])
				}
				worst = math.Max(worst, d)
			}
			cw, dw := weightFloats(cpuW), weightFloats(devW)
			for p := range cw {
				for i := range cw[p] {
					d := math.Abs(cw[p][i]-dw[p][i]) / math.Max(1, math.Abs(cw[p][i]))
					if !(d <= c.tol) {
						t.Fatalf("parameter %d element %d after %d steps: device %v, CPU %v", p, i, len(data), dw[p][i], cw[p][i])
					}
					worst = math.Max(worst, d)
				}
			}
			t.Logf("%v: largest relative difference from the CPU over %d steps: %.3g", c.dt, len(data), worst)
		})
	}
}

// TestTrainLayerSimMemory: training on the simulated device leaves no memory behind (see
// checkTrainingMemory).
func TestTrainLayerSimMemory(t *testing.T) {
	dev := registeredSim(t, "sim-memory", 64<<20, nil) // a device of its own: no other test's garbage
	checkTrainingMemory(t, dev, dev.(*simdevice.Backend).Device().Pool())
}

// checkTrainingMemory trains the layer task on dev for 200 steps: after every step no step memory is
// left, and the memory in use after step 10 (weights, optimizer state) is exactly the memory in use
// after step 200, served from the pool's cache (no new device allocations).
func checkTrainingMemory(t *testing.T, dev ops.Backend, pool *devengine.Pool) {
	adam, err := ops.NewAdam(ops.DefaultAdam(0.02))
	if err != nil {
		t.Fatal(err)
	}
	lt := newLayerTask(tensor.Float32)
	run := lt.build(t, dev, adam)
	data := lt.batches(8)
	inUse := func() devengine.Stats {
		runtime.GC() // memory of tensors nobody references any more is not in use
		runtime.GC()
		pool.Reclaim()
		return pool.Stats()
	}
	var at10 devengine.Stats
	for step := 1; step <= 200; step++ {
		d := data[step%len(data)]
		if err := run.tr.Step(ops.Feeds{run.x: d[0], run.y: d[1]}); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if st := pool.Stats(); st.StepBytes != 0 {
			t.Fatalf("after step %d, %d bytes of step memory are still held", step, st.StepBytes)
		}
		switch step {
		case 10:
			at10 = inUse()
		case 200:
			at200 := inUse()
			t.Logf("in use after step 10: %+v; after step 200: %+v", at10, at200)
			if at200.LiveBytes != at10.LiveBytes {
				t.Errorf("memory in use grew from %d bytes after step 10 to %d after step 200", at10.LiveBytes, at200.LiveBytes)
			}
			if at200.DriverAllocs != at10.DriverAllocs {
				t.Errorf("steps 11..200 allocated %d new device blocks; every step should reuse the pool's cache", at200.DriverAllocs-at10.DriverAllocs)
			}
		}
	}
	if _, err := run.layer.HostWeights(); err != nil {
		t.Errorf("the weights after 200 steps cannot be read: %v", err)
	}
}

// weightFloats returns a layer's four weight tensors as float64 slices.
func weightFloats(w moe.Weights) [][]float64 {
	var all [][]float64
	for _, d := range []*tensor.Dense{w.Router, w.W1, w.W3, w.W2} {
		all = append(all, denseFloats(d))
	}
	return all
}

// TestTrainerErrors: what NewTrainer and Step refuse.
func TestTrainerErrors(t *testing.T) {
	lt := newLayerTask(tensor.Float64)
	adam, _ := ops.NewAdam(ops.DefaultAdam(0.01))
	r := lt.build(t, ops.CPU(), adam)
	data := lt.batches(1)[0]
	bad := []struct {
		name  string
		feeds ops.Feeds
		want  error
	}{
		{"wrong shape", ops.Feeds{r.x: tensor.New(tensor.WithShape(3, 8), tensor.Of(tensor.Float64)), r.y: data[1]}, ops.ErrShape},
		{"wrong dtype", ops.Feeds{r.x: tensor.New(tensor.WithShape(48, 8), tensor.Of(tensor.Float32)), r.y: data[1]}, ops.ErrDtype},
		{"not an input", ops.Feeds{r.mse: data[0]}, ops.ErrConfig},
	}
	for _, c := range bad {
		if err := r.tr.Step(c.feeds); !errors.Is(err, c.want) {
			t.Errorf("%s: Step gave %v, want %v", c.name, err, c.want)
		}
	}
	// A device trainer refuses Gorgonia's own solvers and graphs with host-only ops.
	dev := simBackend(t)
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("x"))
	w := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 2), G.WithName("w"),
		G.WithValue(mustFromHost(t, dev, tensor.New(tensor.WithShape(3, 2), tensor.Of(tensor.Float64)))))
	y := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("y"))
	p, _ := G.Mul(x, w)
	loss, _ := ops.MSELoss(p, y)
	if _, err := ops.NewTrainer(loss, G.Nodes{w}, G.NewAdamSolver(), dev); !errors.Is(err, ops.ErrUnsupported) {
		t.Errorf("NewTrainer with Gorgonia's Adam on a device: %v, want ErrUnsupported", err)
	}
	g2 := G.NewGraph()
	x2 := G.NewMatrix(g2, tensor.Float64, G.WithShape(2, 3), G.WithName("x"))
	w2 := G.NewMatrix(g2, tensor.Float64, G.WithShape(3, 2), G.WithName("w"),
		G.WithValue(mustFromHost(t, dev, tensor.New(tensor.WithShape(3, 2), tensor.Of(tensor.Float64)))))
	y2 := G.NewMatrix(g2, tensor.Float64, G.WithShape(2, 2), G.WithName("y"))
	p2, _ := G.Mul(x2, w2)
	loss2, _ := ops.MSELoss(p2, y2)
	if _, err := ops.NewTrainer(loss2, G.Nodes{w2}, adam, dev); !errors.Is(err, ops.ErrUnsupported) || err == nil {
		t.Errorf("NewTrainer of a graph with G.Mul on a device: %v, want ErrUnsupported", err)
	}
	// A parameter still in host memory is refused on a device.
	g3 := G.NewGraph()
	x3 := G.NewMatrix(g3, tensor.Float64, G.WithShape(2, 3), G.WithName("x"))
	w3 := G.NewMatrix(g3, tensor.Float64, G.WithShape(3, 2), G.WithName("w"),
		G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.Of(tensor.Float64))))
	y3 := G.NewMatrix(g3, tensor.Float64, G.WithShape(2, 2), G.WithName("y"))
	p3, _ := ops.MatMul(x3, w3, false, false)
	loss3, _ := ops.MSELoss(p3, y3)
	if _, err := ops.NewTrainer(loss3, G.Nodes{w3}, adam, dev); !errors.Is(err, ops.ErrMixedBackends) {
		t.Errorf("NewTrainer with a host parameter on a device: %v, want ErrMixedBackends", err)
	}
}

func mustFromHost(t *testing.T, b ops.Backend, h *tensor.Dense) *tensor.Dense {
	t.Helper()
	d, err := b.FromHost(h)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestTrainerClassifier trains a softmax classifier (MatMul + SoftmaxCrossEntropy, labels with ignored
// rows) with SGD + Nesterov momentum on the CPU and on the simulated device: the same losses, and a
// label out of range fails the step with ErrLabel (through the machine's error) without an update.
func TestTrainerClassifier(t *testing.T) {
	const n, in, classes = 32, 5, 4
	rng := rand.New(rand.NewSource(12))
	xs := make([][]float64, 20)
	ys := make([][]int32, 20)
	for b := range xs {
		xs[b] = randVals(rng, n*in)
		ys[b] = make([]int32, n)
		for r := range ys[b] {
			best, bv := 0, math.Inf(-1)
			for c := 0; c < classes; c++ {
				if v := xs[b][r*in+c%in] * float64(c+1); v > bv {
					best, bv = c, v
				}
			}
			ys[b][r] = int32(best)
			if r%7 == 3 {
				ys[b][r] = ops.IgnoreLabel
			}
		}
	}
	run := func(b ops.Backend) ([]float64, *ops.Trainer, *G.Node, *G.Node, *G.Node) {
		g := G.NewGraph()
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(n, in), G.WithName("x"))
		y := G.NewVector(g, tensor.Int32, G.WithShape(n), G.WithName("y"))
		w0 := tensor.New(tensor.WithShape(in, classes), tensor.Of(tensor.Float64))
		if b.Name() != ops.CPU().Name() {
			w0 = mustFromHost(t, b, w0)
		}
		w := G.NewMatrix(g, tensor.Float64, G.WithShape(in, classes), G.WithName("w"), G.WithValue(w0))
		logits, err := ops.MatMul(x, w, false, false)
		if err != nil {
			t.Fatal(err)
		}
		loss, err := ops.SoftmaxCrossEntropy(logits, y)
		if err != nil {
			t.Fatal(err)
		}
		sgd, err := ops.NewSGD(ops.SGDConfig{LR: 0.5, Momentum: 0.9, Nesterov: true})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := ops.NewTrainer(loss, G.Nodes{w}, sgd, b)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		var losses []float64
		for i := range xs {
			l, err := tr.StepLoss(ops.Feeds{x: fromF64(tensor.Float64, xs[i], tensor.Shape{n, in}),
				y: tensor.New(tensor.WithShape(n), tensor.WithBacking(append([]int32(nil), ys[i]...)))})
			if err != nil {
				t.Fatalf("%s step %d: %v", b.Name(), i, err)
			}
			losses = append(losses, l)
		}
		return losses, tr, x, y, w
	}
	cpu, _, _, _, _ := run(ops.CPU())
	dev, tr, x, y, w := run(simBackend(t))
	if !(cpu[len(cpu)-1] < 0.5*cpu[0]) {
		t.Errorf("classifier loss %v -> %v: not learning", cpu[0], cpu[len(cpu)-1])
	}
	for i := range cpu {
		if math.Float64bits(cpu[i]) != math.Float64bits(dev[i]) {
			t.Fatalf("step %d: CPU loss %v, device %v", i, cpu[i], dev[i])
		}
	}
	before := denseFloats(plainCopy(t, w.Value().(*tensor.Dense)))
	bad := append([]int32(nil), ys[0]...)
	bad[5] = classes
	err := tr.Step(ops.Feeds{x: fromF64(tensor.Float64, xs[0], tensor.Shape{n, in}), y: tensor.New(tensor.WithShape(n), tensor.WithBacking(bad))})
	if !errors.Is(err, ops.ErrLabel) {
		t.Errorf("a step with label %d of %d classes: %v, want ErrLabel", classes, classes, err)
	}
	after := denseFloats(plainCopy(t, w.Value().(*tensor.Dense)))
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("the failed step changed w[%d]: %v -> %v", i, before[i], after[i])
		}
	}
}

// plainCopy reads a tensor of any registered backend into host memory.
func plainCopy(t *testing.T, d *tensor.Dense) *tensor.Dense {
	t.Helper()
	b, err := ops.BackendFor(d)
	if err != nil {
		t.Fatal(err)
	}
	h, err := b.ToHost(d)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
