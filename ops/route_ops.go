package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Routing groups the nodes of one routing decision. Gorgonia ops have one output each, so routing is
// several nodes with data dependencies: Logits (and Bias) -> a route node that computes indices and
// weights together (one kernel on the GPU: route_fused.go) -> Indices and Weights, views of its buffer
// (Weights differentiable w.r.t. Logits); Indices -> Plan; under a DropProbs capacity the plan also
// reads the weights.
type Routing struct {
	Logits  *G.Node // [T,E] float router logits (nil when built by NewRouting)
	Bias    *G.Node // [E] selection bias of Sigmoid scoring (nil: none)
	Indices *G.Node // [T,K] int32 chosen experts, decreasing score, ties to the lower index
	Weights *G.Node // [T,K] float routing weights, differentiable w.r.t. Logits
	Plan    *G.Node // [PlanLen(T,K,E)] int32 routing plan (layout: plan_layout.go)
	Config  RouteConfig
	T, E    int
	// Capacity is the slots per expert the plan keeps (0: dropless). Dropped slots have zero rows in
	// Dispatch's output, no share in Combine and zero gradients; their Weights stay the router's.
	Capacity int
}

// K is the number of experts per token.
func (r *Routing) K() int { return r.Config.K }

// Route builds the routing nodes of logits [T,E] (float32 or float64).
//
// Selection takes the K largest scores of each token (for the softmax scorings the K largest logits:
// softmax is monotonic); equal scores go to the lower expert index. Weights follow cfg.Scoring (see
// Scoring) times cfg.Scale; they are differentiable w.r.t. logits, indices and plan are not. A capacity
// in cfg (Capacity or CapacityFactor) makes the plan keep at most C slots per expert (see
// CapacityPlanOf). Softmax scorings: a token whose logits hold a NaN or +Inf, or are all -Inf, makes the
// route op fail at run time (ErrNaN, naming the token); single -Inf logits are allowed (a masked expert:
// selected only after every finite one, with weight 0). Sigmoid: only NaN logits are an error.
// Errors: ErrShape, ErrDtype (logits), ErrConfig (cfg), ErrShape for T*K >= 2^31.
//
// Example (Mixtral):
//
//	r, err := ops.Route(logits, ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true})
func Route(logits *G.Node, cfg RouteConfig) (*Routing, error) {
	return RouteBiased(logits, nil, cfg)
}

// RouteBiased is Route with a selection bias [E] of the logits' dtype (Sigmoid scoring only; nil: none),
// DeepSeek-V3's e_score_correction_bias: it is added to the sigmoid scores to choose the experts and
// never enters the weights, and it gets no gradient (update it with UpdateBalanceBias). A NaN or
// infinite bias makes the route op fail at run time (ErrNaN).
//
// Example (DeepSeek-V3: 256 experts in 8 groups, 4 groups kept, top-8, normalised, scaled by 2.5):
//
//	cfg := ops.RouteConfig{K: 8, Scoring: ops.Sigmoid, Renormalize: true, Groups: 8, TopKGroups: 4, Scale: 2.5}
//	r, err := ops.RouteBiased(logits, bias, cfg)
func RouteBiased(logits, bias *G.Node, cfg RouteConfig) (*Routing, error) {
	if err := nodeCheck("route", "logits", logits, 2, anyFloat); err != nil {
		return nil, err
	}
	nT, nE := logits.Shape()[0], logits.Shape()[1]
	if err := cfg.Validate(nE); err != nil {
		return nil, err
	}
	if err := checkSizes("route", nT, cfg.K, nE, 1); err != nil {
		return nil, err
	}
	capacity, err := cfg.CapacityFor(nT, nE)
	if err != nil {
		return nil, err
	}
	in := G.Nodes{logits}
	if bias != nil {
		if cfg.Scoring != Sigmoid {
			return nil, failf(ErrConfig, "route: a selection bias needs sigmoid scoring, got %v", cfg.Scoring)
		}
		if err := nodeCheck("route", "bias", bias, 1, anyFloat); err != nil {
			return nil, err
		}
		if err := sameDtype("route", "logits", logits, "bias", bias); err != nil {
			return nil, err
		}
		if bias.Shape()[0] != nE {
			return nil, failf(ErrShape, "route: bias %s has %d elements, want E = %d", nodeName(bias), bias.Shape()[0], nE)
		}
		in = append(in, bias)
	}
	dt := logits.Dtype()
	buf, err := G.ApplyOp(&routeOp{cfg: cfg, e: nE, dt: dt, biased: bias != nil}, in...)
	if err != nil {
		return nil, errorf("route: %w", err)
	}
	idx, err := G.ApplyOp(&routeIndicesOp{cfg: cfg, e: nE, t: nT, dt: dt}, buf)
	if err != nil {
		return nil, errorf("route: indices: %w", err)
	}
	w, err := G.ApplyOp(&routeWeightsOp{cfg: cfg, e: nE, dt: dt}, buf, logits, idx)
	if err != nil {
		return nil, errorf("route: weights: %w", err)
	}
	r := &Routing{Logits: logits, Bias: bias, Indices: idx, Weights: w, Config: cfg, T: nT, E: nE}
	if capacity > 0 {
		var pw *G.Node
		if cfg.DropPolicy == DropProbs {
			pw = w
		}
		if r.Plan, err = CapacityPlanOf(idx, pw, nE, capacity, cfg.DropPolicy); err != nil {
			return nil, err
		}
		r.Capacity = capacity
		return r, nil
	}
	if r.Plan, err = PlanOf(idx, nE); err != nil {
		return nil, err
	}
	return r, nil
}

// NewRouting builds a Routing from given expert indices [T,K] int32 and weights [T,K] (for example a
// fixed assignment in a test, or routing computed elsewhere). It adds the plan node (dropless; see
// WithCapacity). Indices must lie in [0, numExperts) (checked at run time: ErrExpertIndex); repeated
// experts within a token are allowed.
func NewRouting(indices, weights *G.Node, numExperts int) (*Routing, error) {
	if err := nodeCheck("routing", "indices", indices, 2, tensor.Int32); err != nil {
		return nil, err
	}
	if err := nodeCheck("routing", "weights", weights, 2, anyFloat); err != nil {
		return nil, err
	}
	if !indices.Shape().Eq(weights.Shape()) {
		return nil, failf(ErrShape, "routing: indices %v and weights %v must have the same shape", indices.Shape(), weights.Shape())
	}
	nT, k := indices.Shape()[0], indices.Shape()[1]
	if numExperts < 1 || k < 1 {
		return nil, failf(ErrConfig, "routing: need E >= 1 and K >= 1, got E=%d, K=%d", numExperts, k)
	}
	plan, err := PlanOf(indices, numExperts)
	if err != nil {
		return nil, err
	}
	return &Routing{Indices: indices, Weights: weights, Plan: plan, Config: RouteConfig{K: k}, T: nT, E: numExperts}, nil
}

// WithCapacity returns a copy of r whose plan keeps at most capacity >= 1 slots per expert, chosen by
// policy (DropProbs ranks by r.Weights); Logits, Indices and Weights are shared. See CapacityPlanOf.
func (r *Routing) WithCapacity(capacity int, policy DropPolicy) (*Routing, error) {
	if err := checkRouting("capacity", r); err != nil {
		return nil, err
	}
	var w *G.Node
	if policy == DropProbs {
		if w = r.Weights; w == nil {
			return nil, failf(ErrConfig, "capacity: the probs policy needs the routing weights")
		}
	}
	plan, err := CapacityPlanOf(r.Indices, w, r.E, capacity, policy)
	if err != nil {
		return nil, err
	}
	c := *r
	c.Plan, c.Capacity = plan, capacity
	c.Config.Capacity, c.Config.CapacityFactor, c.Config.DropPolicy = capacity, 0, policy
	return &c, nil
}

// routeWeightsGradOp: (logits [T,E], indices [T,K], dweights [T,K]) -> dlogits [T,E].
type routeWeightsGradOp struct {
	opBase
	cfg RouteConfig
	e   int
}

func (op *routeWeightsGradOp) Arity() int { return 3 }
func (op *routeWeightsGradOp) Type() hm.Type {
	return hm.NewFnType(floatT(2), int32T(2), floatT(2), floatT(2))
}
func (op *routeWeightsGradOp) String() string {
	return fmt.Sprintf("RouteWeightsGrad{%v,E=%d}", op.cfg, op.e)
}
func (op *routeWeightsGradOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *routeWeightsGradOp) Hashcode() uint32      { return hashOf(op) }

// DiffWRT marks the float inputs so that a second derivative reaches SymDiff, which names this op.
func (op *routeWeightsGradOp) DiffWRT(int) []bool { return []bool{true, false, true} }
func (op *routeWeightsGradOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, noSecondOrder(op, "the routing weights")
}
func (op *routeWeightsGradOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error {
	return noSecondOrder(op, "the routing weights")
}

func (op *routeWeightsGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	l, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	return l.Clone(), nil
}

func (op *routeWeightsGradOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *routeWeightsGradOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 3, vs); err != nil {
		return nil, err
	}
	logits, err := arg("route weights grad", "logits", vs[0], anyFloat, -1, op.e)
	if err != nil {
		return nil, err
	}
	nT := logits.Shape()[0]
	idx, err := arg("route weights grad", "indices", vs[1], tensor.Int32, nT, op.cfg.K)
	if err != nil {
		return nil, err
	}
	dw, err := arg("route weights grad", "gradient", vs[2], logits.Dtype(), nT, op.cfg.K)
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), logits, idx, dw)
	if err != nil {
		return nil, err
	}
	out, err := output(b, prealloc, logits.Dtype(), nT, op.e)
	if err != nil {
		return nil, err
	}
	return out, b.RouteWeightsGrad(logits, idx, dw, op.cfg, out)
}
