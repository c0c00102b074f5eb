package main

import (
	"fmt"
	"math/rand/v2"

	"github.com/expertrt/expertrt-go/internal/floats"
	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// dataDtype is the dtype of the batches, targets and losses: the layer's, or float32 for a
// mixed-precision layer (which takes float32 inputs, computes its experts in bfloat16 and returns
// float32 outputs).
func dataDtype(cfg moe.Config) tensor.Dtype {
	if cfg.Mixed() {
		return tensor.Float32
	}
	return cfg.Dtype
}

// teacher is a fixed MoE layer in a forward-only graph on the CPU: it generates the training data, so
// runs on every device train on exactly the same targets (a float32 teacher for a mixed-precision
// student).
type teacher struct {
	x, y   *G.Node
	runner *ops.Runner
}

func newTeacher(cfg moe.Config, tokens int) (*teacher, error) {
	cfg.Seed += 1000
	cfg.AuxLossCoef, cfg.ZLossCoef = 0, 0
	cfg.Backend = nil
	cfg.Dtype = dataDtype(cfg)
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
	layer           *moe.Layer
	x, target       *G.Node
	lossV, auxV, zV G.Value
	read            *moe.Readout
	trainer         *ops.Trainer
}

type metrics struct {
	loss  float64          // task loss (MSE)
	aux   float64          // load-balancing loss times its coefficient (0 when the coefficient is 0)
	z     float64          // router z-loss times its coefficient (0 when the coefficient is 0)
	load  []float64        // share of routed slots per expert
	stats ops.RoutingStats // routing diagnostics
}

func newStudent(cfg moe.Config, tokens int, lr float64) (*student, error) {
	g := G.NewGraph()
	s := &student{}
	s.x = G.NewMatrix(g, dataDtype(cfg), G.WithShape(tokens, cfg.Hidden), G.WithName("x"))
	s.target = G.NewMatrix(g, dataDtype(cfg), G.WithShape(tokens, cfg.Hidden), G.WithName("target"))
	var err error
	if s.layer, err = moe.NewLayer(g, cfg); err != nil {
		return nil, err
	}
	out, err := s.layer.Forward(s.x)
	if err != nil {
		return nil, err
	}
	mse, err := moe.MSE(out.Y, s.target)
	if err != nil {
		return nil, err
	}
	cost, err := out.Cost(mse)
	if err != nil {
		return nil, err
	}
	// read the losses and the plan in the forward pass: backward reuses forward buffers for gradients
	G.Read(mse, &s.lossV)
	if out.AuxLoss != nil {
		G.Read(out.AuxLoss, &s.auxV)
	}
	if out.ZLoss != nil {
		G.Read(out.ZLoss, &s.zV)
	}
	s.read = out.Read()
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
	if read || s.layer.Bias != nil {
		readFn = func() (err error) {
			if s.layer.Bias != nil { // aux-loss-free balancing: after every step, on the step's plan
				if err := s.layer.UpdateBias(s.read); err != nil {
					return err
				}
			}
			if read {
				m, err = s.metrics()
			}
			return err
		}
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
	if s.auxV != nil { // nil when the layer has no load-balancing loss
		if m.aux, err = ops.Float(s.auxV); err != nil {
			return m, err
		}
	}
	if s.zV != nil {
		if m.z, err = ops.Float(s.zV); err != nil {
			return m, err
		}
	}
	if m.load, err = s.read.ExpertLoad(); err != nil {
		return m, err
	}
	m.stats, err = s.read.RoutingStats()
	return m, err
}

func randomBatch(rng *rand.Rand, dt tensor.Dtype, rows, cols int) *tensor.Dense {
	d := make([]float64, rows*cols)
	for i := range d {
		d[i] = rng.NormFloat64()
	}
	return floats.Dense(dt, d, rows, cols)
}
