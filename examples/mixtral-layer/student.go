package main

import (
	"fmt"
	"math/rand/v2"

	"github.com/expertrt/expertrt-go/internal/floats"
	"github.com/expertrt/expertrt-go/moe"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// teacher is a fixed MoE layer in a forward-only graph.
type teacher struct {
	x, y    *G.Node
	machine G.VM
}

func newTeacher(cfg moe.Config, tokens int) (*teacher, error) {
	cfg.Seed += 1000
	cfg.AuxLossCoef, cfg.ZLossCoef = 0, 0
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
	return &teacher{x: x, y: out.Y, machine: G.NewTapeMachine(g)}, nil
}

func (t *teacher) forward(x *tensor.Dense) (*tensor.Dense, error) {
	defer t.machine.Reset()
	if err := G.Let(t.x, x); err != nil {
		return nil, err
	}
	if err := t.machine.RunAll(); err != nil {
		return nil, fmt.Errorf("teacher: %w", err)
	}
	return t.y.Value().(*tensor.Dense).Clone().(*tensor.Dense), nil
}

// student is the trained layer with its loss, gradients and read-outs in one graph.
type student struct {
	layer        *moe.Layer
	x, target    *G.Node
	lossV, auxV  G.Value
	zV           G.Value
	read         *moe.Readout
	machine      G.VM
	hasAux, hasZ bool
}

type metrics struct {
	loss float64   // task loss (MSE)
	aux  float64   // load-balancing loss times its coefficient (0 when the coefficient is 0)
	z    float64   // router z-loss times its coefficient (0 when the coefficient is 0)
	load []float64 // share of routed slots per expert
}

func newStudent(cfg moe.Config, tokens int) (*student, error) {
	g := G.NewGraph()
	s := &student{}
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
	if s.hasAux = out.AuxLoss != nil; s.hasAux {
		G.Read(out.AuxLoss, &s.auxV)
	}
	if s.hasZ = out.ZLoss != nil; s.hasZ {
		G.Read(out.ZLoss, &s.zV)
	}
	s.read = out.Read()
	if _, err := G.Grad(cost, s.layer.Params()...); err != nil {
		return nil, fmt.Errorf("grad: %w", err)
	}
	s.machine = G.NewTapeMachine(g, G.BindDualValues(s.layer.Params()...))
	return s, nil
}

// step runs forward and backward on one batch; the caller applies the solver.
func (s *student) step(x, y *tensor.Dense) (metrics, error) {
	s.machine.Reset()
	if err := G.Let(s.x, x); err != nil {
		return metrics{}, err
	}
	if err := G.Let(s.target, y); err != nil {
		return metrics{}, err
	}
	if err := s.machine.RunAll(); err != nil {
		return metrics{}, err
	}
	return s.metrics()
}

// evaluate runs the graph on a batch without updating the weights.
func (s *student) evaluate(x, y *tensor.Dense) (metrics, error) { return s.step(x, y) }

func (s *student) metrics() (metrics, error) {
	var m metrics
	var err error
	if m.loss, err = scalar(s.lossV); err != nil {
		return m, err
	}
	if s.hasAux {
		if m.aux, err = scalar(s.auxV); err != nil {
			return m, err
		}
	}
	if s.hasZ {
		if m.z, err = scalar(s.zV); err != nil {
			return m, err
		}
	}
	m.load, err = s.read.ExpertLoad()
	return m, err
}

func scalar(v G.Value) (float64, error) { return floats.Scalar(v) }

func randomBatch(rng *rand.Rand, dt tensor.Dtype, rows, cols int) *tensor.Dense {
	d := make([]float64, rows*cols)
	for i := range d {
		d[i] = rng.NormFloat64()
	}
	return floats.Dense(dt, d, rows, cols)
}
