package moe

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/expertrt/expertrt-go/internal/floats"
	"github.com/expertrt/expertrt-go/internal/names"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Layer is a Mixtral-style sparse MoE block with SwiGLU experts, as nodes of one graph.
type Layer struct {
	Config Config
	Router *G.Node // [E,H]
	W1     *G.Node // [E,H,F] gate projection
	W3     *G.Node // [E,H,F] up projection
	W2     *G.Node // [E,F,H] down projection
	Bias   *G.Node // [E] selection bias (Config.BiasRate > 0, Sigmoid), not trained: see UpdateBias
}

// Weights holds a layer's parameter values (host tensors) in the layer's layout.
type Weights struct {
	Router *tensor.Dense // [E,H]
	W1     *tensor.Dense // [E,H,F]
	W3     *tensor.Dense // [E,H,F]
	W2     *tensor.Dense // [E,F,H]
}

// Output is what Forward returns.
type Output struct {
	Y       *G.Node      // layer output, the input's shape ([T,H] or [B,S,H])
	Logits  *G.Node      // [T,E] router logits (T = all tokens, B*S for a [B,S,H] input)
	AuxLoss *G.Node      // scalar load-balancing loss (times its coefficient), nil when the coefficient is 0
	ZLoss   *G.Node      // scalar router z-loss (times its coefficient), nil when the coefficient is 0
	Routing *ops.Routing // indices, weights and plan, for diagnostics
}

// RouterLoss returns AuxLoss + ZLoss, the terms that are present; when both coefficients are 0 it is a
// constant scalar 0 of the layer's dtype, so G.Add(task, RouterLoss) works for every configuration on the
// CPU. Cost adds them to a task loss without the constant, on every backend (ops.AddLosses).
func (o *Output) RouterLoss() (*G.Node, error) {
	switch {
	case o.AuxLoss == nil && o.ZLoss == nil:
		if o.Logits.Dtype() == tensor.Float32 {
			return G.NewConstant(float32(0)), nil
		}
		return G.NewConstant(float64(0)), nil
	case o.AuxLoss == nil:
		return o.ZLoss, nil
	case o.ZLoss == nil:
		return o.AuxLoss, nil
	}
	return ops.AddLosses(o.AuxLoss, o.ZLoss)
}

// Cost returns task + AuxLoss + ZLoss (the router terms that are present; task itself when there are
// none): the one scalar to differentiate with G.Grad. task is a scalar node of the layer's dtype, e.g.
// MSE(out.Y, target).
func (o *Output) Cost(task *G.Node) (*G.Node, error) {
	if task == nil || !task.IsScalar() {
		return nil, fmt.Errorf("moe: the task loss must be a scalar node, got %v: %w", shapeOf(task), ops.ErrShape)
	}
	cost, err := ops.AddLosses(task, o.AuxLoss, o.ZLoss)
	if err != nil {
		return nil, fmt.Errorf("moe: adding the router losses to the task loss: %w", err)
	}
	return cost, nil
}

// NewLayer adds a layer with freshly initialised weights to g: Router and W1/W3 uniform in
// ±sqrt(3/H) (unit-variance activations for unit-variance inputs), W2 uniform in ±sqrt(3/F). With a
// non-zero Seed the same Config gives the same weights; with Seed 0 the n-th layer added to a graph
// draws from stream n, so the layers of one graph differ (see Config.Seed). An unset Dtype is float32.
// A mixed-precision layer (Dtype ops.BFloat16) gets float32 master weights, the values a float32 layer
// of the same Config gets.
func NewLayer(g *G.ExprGraph, cfg Config) (*Layer, error) {
	if g == nil {
		return nil, fmt.Errorf("moe: NewLayer: graph is nil: %w", ops.ErrConfig)
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src := rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15)
	if cfg.Seed == 0 {
		src = rand.NewPCG(uint64(layerIndex(g)), 0x5851f42d4c957f2d) // other stream than any explicit seed
	}
	rng := rand.New(src)
	h, f, e := cfg.Hidden, cfg.FFN, cfg.Experts
	dt := cfg.masterDtype()
	w := Weights{
		Router: uniform(rng, dt, math.Sqrt(3/float64(h)), e, h),
		W1:     uniform(rng, dt, math.Sqrt(3/float64(h)), e, h, f),
		W3:     uniform(rng, dt, math.Sqrt(3/float64(h)), e, h, f),
		W2:     uniform(rng, dt, math.Sqrt(3/float64(f)), e, f, h),
	}
	return NewLayerWithWeights(g, cfg, w)
}

// NewLayerWithWeights adds a layer with the given weights to g. Hidden, FFN and Experts of cfg may be 0:
// they are then read from the weight shapes; when set they must match. The weights' dtype must be
// cfg.Dtype (or, when cfg.Dtype is unset, the Router's dtype is used). On the CPU the tensors are bound as
// the nodes' values (not copied): training updates them in place. With a device cfg.Backend, host weights
// are copied to the device (weights it already owns are bound as they are); read them back with
// HostWeights.
func NewLayerWithWeights(g *G.ExprGraph, cfg Config, w Weights) (*Layer, error) {
	if g == nil {
		return nil, fmt.Errorf("moe: NewLayerWithWeights: graph is nil: %w", ops.ErrConfig)
	}
	cfg, w, err := PrepareWeights(cfg, w, 1)
	if err != nil {
		return nil, err
	}
	e, h, f := cfg.Experts, cfg.Hidden, cfg.FFN
	l := &Layer{Config: cfg}
	dt := w.Router.Dtype() // cfg.Dtype, or for mixed precision float32 (master) or bfloat16 weights
	l.Router = G.NewMatrix(g, dt, G.WithShape(e, h), G.WithName(names.Unique(g, "moe.router")), G.WithValue(w.Router))
	l.W1 = G.NewTensor(g, dt, 3, G.WithShape(e, h, f), G.WithName(names.Unique(g, "moe.w1")), G.WithValue(w.W1))
	l.W3 = G.NewTensor(g, dt, 3, G.WithShape(e, h, f), G.WithName(names.Unique(g, "moe.w3")), G.WithValue(w.W3))
	l.W2 = G.NewTensor(g, dt, 3, G.WithShape(e, f, h), G.WithName(names.Unique(g, "moe.w2")), G.WithValue(w.W2))
	if cfg.BiasRate > 0 {
		bias := floats.Dense(cfg.masterDtype(), make([]float64, e), e) // the router logits' dtype
		if b := cfg.Backend; b != nil && b.Name() != ops.CPU().Name() {
			d, err := b.FromHost(bias)
			if err != nil {
				return nil, fmt.Errorf("moe: placing the selection bias on %s: %w", b.Name(), err)
			}
			bias = d
		}
		l.Bias = G.NewVector(g, cfg.masterDtype(), G.WithShape(e), G.WithName(names.Unique(g, "moe.bias")), G.WithValue(bias))
	}
	return l, nil
}

// PrepareWeights checks weights against a layer configuration and readies them to be bound to a graph's
// nodes: Router [E,H] and the experts W1, W3 [L,H,F] and W2 [L,F,H] of L = E/shards consecutive experts
// (shards = 1 for a whole layer; the world size for one rank of an expert-parallel layer, package
// moe/ep). Hidden, FFN and Experts of cfg may be 0 (they are read from the shapes); when set they must
// match. An unset Dtype is the Router's. The weights have dtype cfg.Dtype; for mixed precision
// (ops.BFloat16) all four are float32 (master weights) or all bfloat16. It returns the completed,
// validated configuration and the weights, copied to cfg.Backend when that is a device (tensors it
// already owns are kept). Errors wrap ops.ErrConfig, ops.ErrShape or ops.ErrDtype.
func PrepareWeights(cfg Config, w Weights, shards int) (Config, Weights, error) {
	if w.Router == nil || w.W1 == nil || w.W2 == nil || w.W3 == nil {
		return cfg, w, fmt.Errorf("moe: all four weights (Router, W1, W3, W2) are required: %w", ops.ErrConfig)
	}
	rs := w.Router.Shape()
	if len(rs) != 2 || w.W1.Dims() != 3 {
		return cfg, w, fmt.Errorf("moe: Router must be [E,H] and W1 [E,H,F], got %v and %v: %w", rs, w.W1.Shape(), ops.ErrShape)
	}
	e, h, f := rs[0], rs[1], w.W1.Shape()[2]
	for _, c := range []struct {
		name      string
		have, cfg int
	}{{"hidden", h, cfg.Hidden}, {"ffn", f, cfg.FFN}, {"experts", e, cfg.Experts}} {
		if c.cfg != 0 && c.cfg != c.have {
			return cfg, w, fmt.Errorf("moe: config %s=%d but the weights have %d: %w", c.name, c.cfg, c.have, ops.ErrShape)
		}
	}
	cfg.Hidden, cfg.FFN, cfg.Experts = h, f, e
	if cfg.Dtype == (tensor.Dtype{}) {
		cfg.Dtype = w.Router.Dtype()
	}
	if err := cfg.Validate(); err != nil {
		return cfg, w, err
	}
	if shards < 1 || e%shards != 0 {
		return cfg, w, fmt.Errorf("moe: %d experts cannot be split into %d equal shards: %w", e, shards, ops.ErrConfig)
	}
	l := e / shards
	wdt := cfg.Dtype
	if cfg.Mixed() {
		if wdt = w.Router.Dtype(); wdt != tensor.Float32 && wdt != ops.BFloat16 {
			return cfg, w, fmt.Errorf("moe: a mixed-precision layer takes float32 (master) or bfloat16 weights, the Router is %v: %w", wdt, ops.ErrDtype)
		}
	}
	for _, c := range []struct {
		name  string
		t     *tensor.Dense
		shape tensor.Shape
	}{{"Router", w.Router, tensor.Shape{e, h}}, {"W1", w.W1, tensor.Shape{l, h, f}},
		{"W3", w.W3, tensor.Shape{l, h, f}}, {"W2", w.W2, tensor.Shape{l, f, h}}} {
		if !c.t.Shape().Eq(c.shape) {
			return cfg, w, fmt.Errorf("moe: %s has shape %v, want %v (%d of the %d experts): %w", c.name, c.t.Shape(), c.shape, l, e, ops.ErrShape)
		}
		if c.t.Dtype() != wdt {
			return cfg, w, fmt.Errorf("moe: %s has dtype %v, the layer's weights %v: %w", c.name, c.t.Dtype(), wdt, ops.ErrDtype)
		}
	}
	if b := cfg.Backend; b != nil && b.Name() != ops.CPU().Name() {
		for _, t := range []**tensor.Dense{&w.Router, &w.W1, &w.W3, &w.W2} {
			if b.Owns(*t) {
				continue
			}
			d, err := b.FromHost(*t)
			if err != nil {
				return cfg, w, fmt.Errorf("moe: placing the weights on %s: %w", b.Name(), err)
			}
			*t = d
		}
	}
	return cfg, w, nil
}

// UpdateBias applies one step of aux-loss-free balancing (ops.UpdateBalanceBias with Config.BiasRate)
// to the layer's selection bias, from the routing plan of the last run that r (Output.Read) received.
// Call it after every training step, while the step's values are alive (ops.Trainer.StepThen's read
// function); on a device it runs there without synchronising. A layer without a bias is an error
// (ops.ErrConfig).
func (l *Layer) UpdateBias(r *Readout) error {
	if l.Bias == nil {
		return fmt.Errorf("moe: the layer has no selection bias (Config.BiasRate is 0): %w", ops.ErrConfig)
	}
	bias, ok := l.Bias.Value().(*tensor.Dense)
	plan, ok2 := r.Plan.(*tensor.Dense)
	if !ok || !ok2 {
		return fmt.Errorf("moe: no bias or plan value (run the machine first): %w", ops.ErrConfig)
	}
	return ops.UpdateBalanceBias(bias, plan, l.Config.BiasRate)
}

// Params lists the trainable nodes: Router, W1, W3, W2.
func (l *Layer) Params() G.Nodes { return G.Nodes{l.Router, l.W1, l.W3, l.W2} }

// Weights returns the current parameter values (the tensors bound to the nodes, not copies; device
// tensors when the layer lives on a device).
func (l *Layer) Weights() Weights {
	get := func(n *G.Node) *tensor.Dense {
		d, _ := n.Value().(*tensor.Dense)
		return d
	}
	return Weights{Router: get(l.Router), W1: get(l.W1), W3: get(l.W3), W2: get(l.W2)}
}

// HostWeights returns host copies of the current parameter values, read through the backend that owns
// them (a device read synchronises).
func (l *Layer) HostWeights() (Weights, error) {
	w := l.Weights()
	var out Weights
	for _, c := range []struct {
		name string
		src  *tensor.Dense
		dst  **tensor.Dense
	}{{"Router", w.Router, &out.Router}, {"W1", w.W1, &out.W1}, {"W3", w.W3, &out.W3}, {"W2", w.W2, &out.W2}} {
		if c.src == nil {
			return Weights{}, fmt.Errorf("moe: %s has no tensor value", c.name)
		}
		b, err := ops.BackendFor(c.src)
		if err != nil {
			return Weights{}, fmt.Errorf("moe: %s: %w", c.name, err)
		}
		if *c.dst, err = b.ToHost(c.src); err != nil {
			return Weights{}, fmt.Errorf("moe: reading %s from %s: %w", c.name, b.Name(), err)
		}
	}
	return out, nil
}

// Forward applies the layer to x [T,H] or [B,S,H] (the layer's dtype; float32 or bfloat16 for a
// mixed-precision layer); Y has x's shape and dtype, the routing and Logits (float32 for mixed
// precision) are over the T = B*S tokens in row-major order. Same as ForwardMasked(x, nil).
func (l *Layer) Forward(x *G.Node) (*Output, error) { return l.ForwardMasked(x, nil) }

// ForwardMasked is Forward with a token mask for the load-balancing loss: mask (int32, [T], or [B,S]
// for a [B,S,H] input; 0 marks padding) leaves padding tokens out of the loss, as transformers'
// load_balancing_loss_func does with an attention mask. Padding tokens are still routed and computed
// (their outputs are whatever the layer gives them); only the aux loss ignores them. A nil mask
// counts every token.
func (l *Layer) ForwardMasked(x, mask *G.Node) (*Output, error) {
	c := l.Config
	lead, err := l.checkInput(x)
	if err != nil {
		return nil, err
	}
	if mask, err = tokenMask(mask, lead); err != nil {
		return nil, err
	}
	if len(lead) > 1 { // [B,S,H] -> [T,H]: a view, differentiable
		if x, err = G.Reshape(x, tensor.Shape{lead.TotalSize(), c.Hidden}); err != nil {
			return nil, fmt.Errorf("moe: flattening the input to [T,H]: %w", err)
		}
	}
	rows := x.Dtype()
	if c.Mixed() {
		rows = ops.BFloat16
	}
	logits, r, packed, err := RouteTokensTo(x, l.Router, l.Bias, c.Route(), rows)
	if err != nil {
		return nil, err
	}
	mm := func(x, w *G.Node) (*G.Node, error) { return ops.GroupedMatMul(x, w, r) }
	var down *G.Node
	if c.FusedSwiGLU {
		down, err = ExpertFFNFused(packed, l.W1, l.W3, l.W2, r, mm)
	} else {
		down, err = ExpertFFN(packed, l.W1, l.W3, l.W2, mm)
	}
	if err != nil {
		return nil, err
	}
	y, err := ops.CombineTo(down, r, x.Dtype())
	if err != nil {
		return nil, err
	}
	if len(lead) > 1 {
		if y, err = G.Reshape(y, append(lead.Clone(), c.Hidden)); err != nil {
			return nil, fmt.Errorf("moe: reshaping the output to %v: %w", append(lead.Clone(), c.Hidden), err)
		}
	}
	out := &Output{Y: y, Logits: logits, Routing: r}
	if c.AuxLossCoef > 0 {
		if out.AuxLoss, err = ops.LoadBalancingLossMasked(r, mask, c.AuxLossCoef); err != nil {
			return nil, err
		}
	}
	if c.ZLossCoef > 0 {
		if out.ZLoss, err = ops.ZLoss(logits, c.ZLossCoef); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkInput validates x ([T,H] or [B,S,H] of the layer's dtype) and returns its leading shape.
func (l *Layer) checkInput(x *G.Node) (tensor.Shape, error) {
	c := l.Config
	if x == nil || (x.Shape().Dims() != 2 && x.Shape().Dims() != 3) || x.Shape()[x.Shape().Dims()-1] != c.Hidden {
		return nil, fmt.Errorf("moe: input must be [T,%d] or [B,S,%d], got %v: %w", c.Hidden, c.Hidden, shapeOf(x), ops.ErrShape)
	}
	if c.Mixed() {
		if x.Dtype() != tensor.Float32 && x.Dtype() != ops.BFloat16 {
			return nil, fmt.Errorf("moe: input %q is %v; a mixed-precision layer takes float32 or bfloat16 inputs: %w", x.Name(), x.Dtype(), ops.ErrDtype)
		}
	} else if x.Dtype() != c.Dtype {
		return nil, fmt.Errorf("moe: input %q is %v, the layer's weights are %v: %w", x.Name(), x.Dtype(), c.Dtype, ops.ErrDtype)
	}
	s := x.Shape()
	lead := s[:len(s)-1].Clone()
	if lead.TotalSize() < 1 {
		return nil, fmt.Errorf("moe: input %v has no tokens: %w", s, ops.ErrShape)
	}
	return lead, nil
}

// tokenMask validates a token mask against the input's leading shape and returns it as [T] (nil stays nil).
func tokenMask(mask *G.Node, lead tensor.Shape) (*G.Node, error) {
	if mask == nil {
		return nil, nil
	}
	if mask.Dtype() != tensor.Int32 {
		return nil, fmt.Errorf("moe: the token mask must be int32 (0: padding), got %v: %w", mask.Dtype(), ops.ErrDtype)
	}
	ms := mask.Shape()
	if !ms.Eq(lead) && !(ms.Dims() == 1 && ms[0] == lead.TotalSize()) {
		return nil, fmt.Errorf("moe: token mask of shape %v for an input with leading shape %v, want %v or [%d]: %w",
			ms, lead, lead, lead.TotalSize(), ops.ErrShape)
	}
	if ms.Dims() == 1 {
		return mask, nil
	}
	m, err := G.Reshape(mask, tensor.Shape{lead.TotalSize()})
	if err != nil {
		return nil, fmt.Errorf("moe: flattening the token mask: %w", err)
	}
	return m, nil
}

func uniform(rng *rand.Rand, dt tensor.Dtype, limit float64, shape ...int) *tensor.Dense {
	d := make([]float64, tensor.Shape(shape).TotalSize())
	for i := range d {
		d[i] = (2*rng.Float64() - 1) * limit
	}
	return floats.Dense(dt, d, shape...)
}

// layerIndex is the number of layers NewLayer/NewLayerWithWeights added to g before (their router
// nodes are named moe.router, moe.router.1, ... by names.Unique).
func layerIndex(g *G.ExprGraph) int {
	if len(g.ByName("moe.router")) == 0 {
		return 0
	}
	i := 1
	for len(g.ByName(fmt.Sprintf("moe.router.%d", i))) > 0 {
		i++
	}
	return i
}

func shapeOf(n *G.Node) tensor.Shape {
	if n == nil {
		return nil
	}
	return n.Shape()
}
