package ep

import (
	"errors"
	"fmt"

	"github.com/expertrt/expertrt-go/internal/names"
	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Options tune an expert-parallel layer.
type Options struct {
	// RecvRows is the number of rows of a rank's receive buffers (the expert-side activations). 0 sizes
	// them for any routing: W*T*min(K, E/W) rows, when every rank sends all its tokens to one rank. A
	// smaller value saves memory in proportion; a step whose routing would send more rows to one rank
	// fails on every rank with ErrCapacity (no token is dropped silently).
	RecvRows int
}

// Layer is the part of a Mixtral-style MoE layer (moe.Layer) that one rank of an expert-parallel group
// holds: the whole router (replicated on every rank) and the L = E/W experts [rank*L, (rank+1)*L).
type Layer struct {
	Config      moe.Config // the whole layer: Experts is E over all ranks
	Rank, World int
	Router      *G.Node // [E,H], replicated: sum its gradient over ranks (AllReduceRouterGrad)
	W1          *G.Node // [L,H,F] gate projections of the local experts
	W3          *G.Node // [L,H,F] up projections
	W2          *G.Node // [L,F,H] down projections

	tr   Transport
	opts Options
}

// Output is what Forward returns on each rank.
type Output struct {
	Y       *G.Node      // [T,H] this rank's tokens
	Logits  *G.Node      // [T,E]
	AuxLoss *G.Node      // this rank's share of the load-balancing loss (shares sum to the layer's), or nil
	ZLoss   *G.Node      // this rank's share of the z-loss, or nil
	Routing *ops.Routing // this rank's routing over all E experts
	// Counts is the host int32 [W,E] table of rows each rank routes to each expert (the same on every
	// rank; RankLoads turns it into rows per rank).
	Counts *G.Node
	// Received is [RecvRows,H]: the rows this rank's experts got, grouped by local expert and, within an
	// expert, by source rank and token; rows past the received count are zero.
	Received *G.Node

	lossScale float64 // the layer's LossScale, for Cost
}

// RouterLoss returns AuxLoss + ZLoss (ops.AddLosses: either may be absent), or nil when both are.
func (o *Output) RouterLoss() (*G.Node, error) {
	if o.AuxLoss == nil && o.ZLoss == nil {
		return nil, nil
	}
	return ops.AddLosses(o.AuxLoss, o.ZLoss)
}

// Cost returns this rank's cost: Layer.LossScale() * task + this rank's router-loss shares, with ops.ScaleLoss
// and ops.AddLosses (they run on every backend). task is this rank's mean loss over its own tokens
// (e.g. ops.MSELoss(out.Y, target)); the ranks' costs then add up to the single-rank cost of all W*T
// tokens, the objective whose gradients the exchanges deliver.
func (o *Output) Cost(task *G.Node) (*G.Node, error) {
	if task == nil || !task.IsScalar() {
		var s tensor.Shape
		if task != nil {
			s = task.Shape()
		}
		return nil, fmt.Errorf("ep: the task loss must be a scalar node, got %v: %w", s, ops.ErrShape)
	}
	share, err := ops.ScaleLoss(task, o.lossScale)
	if err != nil {
		return nil, err
	}
	return ops.AddLosses(share, o.AuxLoss, o.ZLoss)
}

// NewLayer adds this rank's part of a layer to g, with the weights moe.NewLayer would give the whole
// layer for cfg (same seed, same values): every rank initialises all of them on the host and keeps its
// slice, so a group's layer equals the single-rank one. With a device cfg.Backend the slices are
// copied there (see NewLayerWithWeights).
func NewLayer(g *G.ExprGraph, cfg moe.Config, tr Transport, opts Options) (*Layer, error) {
	if err := checkConfig(cfg, tr); err != nil {
		return nil, err
	}
	host := cfg
	host.Backend = nil
	full, err := moe.NewLayer(G.NewGraph(), host)
	if err != nil {
		return nil, configErr(err)
	}
	w, err := LocalWeights(full.Weights(), tr.Rank(), tr.World())
	if err != nil {
		return nil, err
	}
	return NewLayerWithWeights(g, cfg, tr, w, opts)
}

// LocalWeights returns rank's part of a whole layer's host weights: the router (a copy) and copies of
// the experts [rank*L, (rank+1)*L), L = E/world.
func LocalWeights(full moe.Weights, rank, world int) (moe.Weights, error) {
	if full.Router == nil || full.W1 == nil || full.W3 == nil || full.W2 == nil {
		return moe.Weights{}, fmt.Errorf("ep: all four weights are required: %w", ops.ErrShape)
	}
	if full.W1.Dims() != 3 || full.W3.Dims() != 3 || full.W2.Dims() != 3 {
		return moe.Weights{}, fmt.Errorf("ep: expert weights must be [E,·,·], got %v %v %v: %w", full.W1.Shape(), full.W3.Shape(), full.W2.Shape(), ops.ErrShape)
	}
	e := full.W1.Shape()[0]
	if world < 1 || rank < 0 || rank >= world || e%world != 0 {
		return moe.Weights{}, fmt.Errorf("ep: rank %d of %d cannot hold an equal share of %d experts: %w", rank, world, e, ops.ErrConfig)
	}
	l := e / world
	slice := func(t *tensor.Dense) (*tensor.Dense, error) {
		s := t.Shape()
		if s[0] != e {
			return nil, fmt.Errorf("ep: expert weights of shapes %v and %v disagree on E: %w", full.W1.Shape(), s, ops.ErrShape)
		}
		per := s[1] * s[2]
		out := tensor.New(tensor.Of(t.Dtype()), tensor.WithShape(l, s[1], s[2]))
		return out, copyElems(out, 0, t, rank*l*per, l*per)
	}
	var w moe.Weights
	var err error
	if w.W1, err = slice(full.W1); err != nil {
		return w, err
	}
	if w.W3, err = slice(full.W3); err != nil {
		return w, err
	}
	if w.W2, err = slice(full.W2); err != nil {
		return w, err
	}
	rt, err := toHost(full.Router)
	if err != nil {
		return w, err
	}
	w.Router = rt.Clone().(*tensor.Dense)
	return w, nil
}

func checkConfig(cfg moe.Config, tr Transport) error {
	if tr == nil {
		return fmt.Errorf("ep: a transport is required: %w", ops.ErrConfig)
	}
	w, r := tr.World(), tr.Rank()
	if w < 1 || r < 0 || r >= w {
		return fmt.Errorf("ep: transport reports rank %d of world %d: %w", r, w, ops.ErrConfig)
	}
	if cfg.Mixed() {
		return fmt.Errorf("ep: expert-parallel layers run in float32 or float64; mixed precision (bfloat16) is single-device for now: %w", ops.ErrUnsupported)
	}
	if cfg.Experts%w != 0 || cfg.Experts < w {
		return fmt.Errorf("ep: %d experts cannot be split evenly over %d ranks (E must be a multiple of the world size): %w", cfg.Experts, w, ops.ErrConfig)
	}
	return nil
}

// configErr makes a configuration error from package moe match ops.ErrConfig.
func configErr(err error) error {
	if errors.Is(err, ops.ErrConfig) {
		return err
	}
	return fmt.Errorf("ep: %w (%w)", err, ops.ErrConfig)
}

// NewLayerWithWeights adds this rank's part of a layer to g with the given weights: Router [E,H] and
// the local experts W1, W3 [E/W,H,F], W2 [E/W,F,H] (LocalWeights cuts them from a whole layer's). cfg
// describes the whole layer; Hidden, FFN and Experts may be 0 (then read from the weights). The tensors
// are bound as the nodes' values (training updates them in place); with a device cfg.Backend, weights in
// host memory are first copied there (FromHost), as moe.NewLayerWithWeights does.
func NewLayerWithWeights(g *G.ExprGraph, cfg moe.Config, tr Transport, w moe.Weights, opts Options) (*Layer, error) {
	if tr == nil {
		return nil, fmt.Errorf("ep: a transport is required: %w", ops.ErrConfig)
	}
	if opts.RecvRows < 0 {
		return nil, fmt.Errorf("ep: Options.RecvRows must be >= 0, got %d: %w", opts.RecvRows, ops.ErrConfig)
	}
	if w.Router != nil && w.Router.Dims() == 2 {
		if err := checkConfig(moe.Config{Experts: w.Router.Shape()[0]}, tr); err != nil {
			return nil, err
		}
	}
	cfg, w, err := moe.PrepareWeights(cfg, w, tr.World())
	if err != nil {
		return nil, fmt.Errorf("ep: rank %d of %d: %w", tr.Rank(), tr.World(), err)
	}
	if err := checkConfig(cfg, tr); err != nil {
		return nil, err
	}
	world := tr.World()
	e, h, f, l := cfg.Experts, cfg.Hidden, cfg.FFN, cfg.Experts/world
	ly := &Layer{Config: cfg, Rank: tr.Rank(), World: world, tr: tr, opts: opts}
	name := func(base string) string { return names.Unique(g, fmt.Sprintf("ep%d.%s", ly.Rank, base)) }
	ly.Router = G.NewMatrix(g, cfg.Dtype, G.WithShape(e, h), G.WithName(name("router")), G.WithValue(w.Router))
	ly.W1 = G.NewTensor(g, cfg.Dtype, 3, G.WithShape(l, h, f), G.WithName(name("w1")), G.WithValue(w.W1))
	ly.W3 = G.NewTensor(g, cfg.Dtype, 3, G.WithShape(l, h, f), G.WithName(name("w3")), G.WithValue(w.W3))
	ly.W2 = G.NewTensor(g, cfg.Dtype, 3, G.WithShape(l, f, h), G.WithName(name("w2")), G.WithValue(w.W2))
	return ly, nil
}

// Params lists the trainable nodes: Router, W1, W3, W2.
func (l *Layer) Params() G.Nodes { return G.Nodes{l.Router, l.W1, l.W3, l.W2} }

// FirstExpert is the global index of this rank's first local expert.
func (l *Layer) FirstExpert() int { return l.Rank * l.LocalExperts() }

// LocalExperts is E/W.
func (l *Layer) LocalExperts() int { return l.Config.Experts / l.World }

// Transport returns the layer's transport.
func (l *Layer) Transport() Transport { return l.tr }

// RecvRows is the number of rows of the receive buffers for T tokens per rank.
func (l *Layer) RecvRows(tokens int) int {
	return RecvRows(l.World, tokens, l.Config.TopK, l.Config.Experts, l.opts.RecvRows)
}

// LossScale is the factor (1/W) for a per-rank mean loss so that the sum of the ranks' losses is the
// mean over all ranks' tokens — the objective whose gradients the exchanges deliver (an expert's
// gradient is the sum of every rank's contribution). Output.Cost applies it with ops.ScaleLoss.
func (l *Layer) LossScale() float64 { return 1 / float64(l.World) }

// AllReduceRouterGrad sums the router's gradient over all ranks, in place (a collective; call it on
// every rank after the backward pass, before the optimizer step). Expert gradients need no reduction:
// each expert lives on one rank and its gradient already holds every rank's tokens.
func (l *Layer) AllReduceRouterGrad() error {
	gv, err := l.Router.Grad()
	if err != nil {
		return fmt.Errorf("ep: router gradient: %w", err)
	}
	d, ok := gv.(*tensor.Dense)
	if !ok {
		return fmt.Errorf("ep: router gradient is %T, not a *tensor.Dense: %w", gv, ops.ErrShape)
	}
	return l.tr.AllReduceSum(d)
}

// Forward applies the layer to this rank's tokens x [T,H]. Every rank must call it with the same T.
//
//	logits = x · Router^T; routing over all E experts (ops.Route); p = ops.Dispatch(x)   [T*K,H]
//	counts: all-gather of every rank's per-expert counts                                  [W,E]
//	received = exchange(p) to the ranks owning the experts                                [R,H]
//	o = SwiGLU experts on the received rows (moe.ExpertFFN over the local experts)        [R,H]
//	back = exchange(o) to the ranks the rows came from                                    [T*K,H]
//	y = ops.Combine(back, routing)                                                        [T,H]
//
// Gradients: each exchange's backward is the other direction over the same counts. The router losses
// are this rank's shares: the load-balancing loss uses the counts summed over ranks (coefficient
// coef/W^2 per rank, so the shares sum to the single-rank loss of all W*T tokens) and the z-loss has
// coefficient coef/W.
func (l *Layer) Forward(x *G.Node) (*Output, error) {
	c := l.Config
	if x == nil || x.Shape().Dims() != 2 || x.Shape()[1] != c.Hidden {
		var s tensor.Shape
		if x != nil {
			s = x.Shape()
		}
		return nil, fmt.Errorf("ep: input must be [T,%d], got %v: %w", c.Hidden, s, ops.ErrShape)
	}
	if x.Dtype() != c.Dtype {
		return nil, fmt.Errorf("ep: input dtype %v, layer dtype %v: %w", x.Dtype(), c.Dtype, ops.ErrDtype)
	}
	if c.Route().Dropping() || c.BiasRate > 0 {
		return nil, fmt.Errorf("ep: capacity and the balancing bias are not supported with expert parallelism yet: %w", ops.ErrUnsupported)
	}
	logits, r, packed, err := moe.RouteTokens(x, l.Router, nil, c.Route())
	if err != nil {
		return nil, err
	}
	ex, err := NewExchange(r, c.Hidden, c.Dtype, l.tr, l.opts.RecvRows)
	if err != nil {
		return nil, err
	}
	recv, err := ex.ToExperts(packed)
	if err != nil {
		return nil, err
	}
	expertOut, err := moe.ExpertFFN(recv, l.W1, l.W3, l.W2, ex.GroupedMatMul)
	if err != nil {
		return nil, err
	}
	back, err := ex.FromExperts(expertOut)
	if err != nil {
		return nil, err
	}
	y, err := ops.Combine(back, r)
	if err != nil {
		return nil, err
	}
	out := &Output{Y: y, Logits: logits, Routing: r, Counts: ex.Counts, Received: recv, lossScale: l.LossScale()}
	w := float64(l.World)
	if c.AuxLossCoef > 0 {
		rg, err := ex.GlobalRouting()
		if err != nil {
			return nil, err
		}
		if out.AuxLoss, err = ops.LoadBalancingLoss(rg, c.AuxLossCoef/(w*w)); err != nil {
			return nil, err
		}
	}
	if c.ZLossCoef > 0 {
		if out.ZLoss, err = ops.ZLoss(logits, c.ZLossCoef/w); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RankLoads returns the rows each rank's experts receive, from a counts table [W,E] (Output.Counts'
// value) of world ranks.
func RankLoads(counts []int32, world int) ([]int, error) {
	if world < 1 || len(counts)%world != 0 || (len(counts)/world)%world != 0 {
		return nil, fmt.Errorf("ep: a counts table of %d values is not [W,E] for W=%d with E a multiple of W: %w", len(counts), world, ops.ErrShape)
	}
	lay, err := newLayout(counts, world, 0, len(counts)/world)
	if err != nil {
		return nil, err
	}
	loads := make([]int, world)
	for q := range loads {
		loads[q] = lay.received(q)
	}
	return loads, nil
}
