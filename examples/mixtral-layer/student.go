package main

import (
	"fmt"
	"math/rand/v2"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// teacher is a fixed MoE layer in a forward-only graph on the CPU: it generates the training data, so
// runs on every device train on exactly the same targets.
type teacher struct {
	x, y   *G.Node
	runner *ops.Runner
}

func newTeacher(cfg moe.Config, tokens int) (*teacher, error) {
	cfg.Seed += 1000
	cfg.AuxLossCoef, cfg.ZLossCoef = 0, 0
	cfg.Backend = nil
	g := G.NewGraph()
	x := G.NewMatrix(g, cfg.Dtype, G.WithShape(tokens, cfg.Hidden), G.WithName("x"))
	layer, err := moe.NewLayer(g, cfg)
	if err != nil {
		return nil, err
	}
	out, err := layer.Forward(x)
	if err != nil {
		return nil, err
	}
	r, err := ops.NewRunner(g, ops.CPU())
	if err != nil {
		return nil, err
	}
	return &teacher{x: x, y: out.Y, runner: r}, nil
}

func (t *teacher) forward(x *tensor.Dense) (*tensor.Dense, error) {
	var y *tensor.Dense
	err := t.runner.Run(ops.Feeds{t.x: x}, func() error {
		y = t.y.Value().(*tensor.Dense).Clone().(*tensor.Dense)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("teacher: %w", err)
	}
	return y, nil
}

// student is the trained layer on its backend: loss (ops.MSELoss plus the router losses), gradients,
// the ops Adam solver and read-outs, run by an ops.Trainer (one memory step per training step).
type student struct {
	layer             *moe.Layer
	x, target         *G.Node
	lossV, auxV, plan G.Value
	experts, slots    int
	trainer           *ops.Trainer
}

type metrics struct {
	loss, aux float64
	load      []float64 // share of routed slots per expert
}

func newStudent(cfg moe.Config, tokens int, lr float64) (*student, error) {
	g := G.NewGraph()
	s := &student{experts: cfg.Experts, slots: tokens * cfg.TopK}
	s.x = G.NewMatrix(g, cfg.Dtype, G.WithShape(tokens, cfg.Hidden), G.WithName("x"))
	s.target = G.NewMatrix(g, cfg.Dtype, G.WithShape(tokens, cfg.Hidden), G.WithName("target"))
	var err error
	if s.layer, err = moe.NewLayer(g, cfg); err != nil {
		return nil, err
	}
	out, err := s.layer.Forward(s.x)
	if err != nil {
		return nil, err
	}
	mse, err := ops.MSELoss(out.Y, s.target)
	if err != nil {
		return nil, err
	}
	routerLoss, err := out.RouterLoss()
	if err != nil {
		return nil, err
	}
	cost, err := ops.AddLosses(mse, routerLoss)
	if err != nil {
		return nil, err
	}
	if routerLoss != nil {
		G.Read(routerLoss, &s.auxV)
	}
	// read the task loss and plan in the forward pass: backward may reuse intermediate buffers
	G.Read(mse, &s.lossV)
	G.Read(out.Routing.Plan, &s.plan)
	adam, err := ops.NewAdam(ops.DefaultAdam(lr))
	if err != nil {
		return nil, err
	}
	if s.trainer, err = ops.NewTrainer(cost, s.layer.Params(), adam, cfg.Backend); err != nil {
		return nil, err
	}
	return s, nil
}

// step runs forward, backward and the Adam update on one batch; with read it returns the batch's
// metrics (a host read: on a device it waits for the step).
func (s *student) step(x, y *tensor.Dense, read bool) (metrics, error) {
	var m metrics
	var readFn func() error
	if read {
		readFn = func() (err error) { m, err = s.metrics(); return err }
	}
	return m, s.trainer.StepThen(ops.Feeds{s.x: x, s.target: y}, readFn)
}

// evaluate runs the graph on a batch without updating the weights.
func (s *student) evaluate(x, y *tensor.Dense) (metrics, error) {
	var m metrics
	err := s.trainer.Run(ops.Feeds{s.x: x, s.target: y}, func() (err error) { m, err = s.metrics(); return err })
	return m, err
}

func (s *student) close() error { return s.trainer.Close() }

func (s *student) metrics() (metrics, error) {
	var m metrics
	var err error
	if m.loss, err = ops.Float(s.lossV); err != nil {
		return m, err
	}
	if s.auxV != nil {
		if m.aux, err = ops.Float(s.auxV); err != nil {
			return m, err
		}
	}
	pd, ok := s.plan.(*tensor.Dense)
	if !ok {
		return m, fmt.Errorf("plan is %T", s.plan)
	}
	b, err := ops.BackendFor(pd)
	if err != nil {
		return m, err
	}
	if pd, err = b.ToHost(pd); err != nil {
		return m, err
	}
	plan, ok := pd.Data().([]int32)
	if !ok {
		return m, fmt.Errorf("plan has %T data", pd.Data())
	}
	m.load = make([]float64, s.experts)
	for e := range m.load {
		m.load[e] = float64(plan[e]) / float64(s.slots)
	}
	return m, nil
}

func randomBatch(rng *rand.Rand, dt tensor.Dtype, rows, cols int) *tensor.Dense {
	n := rows * cols
	if dt == tensor.Float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(rng.NormFloat64())
		}
		return tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(d))
	}
	d := make([]float64, n)
	for i := range d {
		d[i] = rng.NormFloat64()
	}
	return tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(d))
}
