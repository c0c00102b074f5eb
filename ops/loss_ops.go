package ops

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// LoadBalancingLoss is the Switch/Mixtral auxiliary loss as a scalar node:
//
//	coef * E * sum_e f_e * P_e,  f_e = counts[e]/T (fraction of tokens sent to e; sums to K),
//	P_e = mean over tokens of softmax(logits)[t,e]
//
// (HF transformers' load_balancing_loss_func for one layer; perfectly balanced routing gives coef*K).
// f is a count and has no gradient; the gradient flows to r.Logits through P. coef must be finite and
// >= 0 (ErrConfig); the routing must come from Route (it needs the logits).
func LoadBalancingLoss(r *Routing, coef float64) (*G.Node, error) {
	return LoadBalancingLossMasked(r, nil, coef)
}

// LoadBalancingLossMasked is LoadBalancingLoss over the tokens that mask [T] (int32) counts: tokens
// whose mask is 0 (padding) are left out of both f and P, as transformers' load_balancing_loss_func does
// with an attention_mask:
//
//	f_e = (slots of counted tokens routed to e) / n,  P_e = (sum over counted t of softmax(logits)[t,e]) / n
//
// with n the number of counted tokens (mask != 0); no counted token gives a loss of 0. A nil mask counts
// every token (LoadBalancingLoss). Padding rows of the logits get a zero gradient.
func LoadBalancingLossMasked(r *Routing, mask *G.Node, coef float64) (*G.Node, error) {
	if err := checkRouting("load-balancing loss", r); err != nil {
		return nil, err
	}
	if r.Logits == nil {
		return nil, failf(ErrConfig, "load-balancing loss: the routing has no logits (made by NewRouting?); build it with Route")
	}
	if err := checkCoef("load-balancing loss", coef); err != nil {
		return nil, err
	}
	op := &lossOp{kind: balanceLoss, coef: coef, k: r.K(), e: r.E}
	if mask == nil {
		return G.ApplyOp(op, r.Logits, r.Plan)
	}
	if err := nodeCheck("load-balancing loss", "mask", mask, 1, tensor.Int32); err != nil {
		return nil, err
	}
	if mask.Shape()[0] != r.T {
		return nil, failf(ErrShape, "load-balancing loss: mask %s has %d entries, the routing has T=%d tokens", nodeName(mask), mask.Shape()[0], r.T)
	}
	op.masked = true
	return G.ApplyOp(op, r.Logits, r.Plan, mask)
}

// ZLoss is the ST-MoE router z-loss as a scalar node: coef * mean_t logsumexp(logits[t,:])^2. coef must
// be finite and >= 0 (ErrConfig).
func ZLoss(logits *G.Node, coef float64) (*G.Node, error) {
	if err := nodeCheck("z-loss", "logits", logits, 2, anyFloat); err != nil {
		return nil, err
	}
	if err := checkCoef("z-loss", coef); err != nil {
		return nil, err
	}
	return G.ApplyOp(&lossOp{kind: zLoss, coef: coef, e: logits.Shape()[1]}, logits)
}

func checkCoef(op string, coef float64) error {
	if !(coef >= 0) || math.IsInf(coef, 1) {
		return failf(ErrConfig, "%s: coefficient must be finite and >= 0, got %v", op, coef)
	}
	return nil
}

type lossKind int

const (
	balanceLoss lossKind = iota // (logits [T,E], plan [, mask [T]]) -> scalar
	zLoss                       // (logits [T,E]) -> scalar
)

// lossOp computes a router loss; with grad set it is the loss's gradient op instead:
// (inputs..., dloss scalar) -> dlogits [T,E].
type lossOp struct {
	opBase
	kind   lossKind
	grad   bool
	masked bool // balanceLoss only: a token mask [T] int32 follows the plan
	coef   float64
	k, e   int
}

// inputs is the number of inputs of the loss itself (without the gradient's upstream value).
func (op *lossOp) inputs() int {
	switch {
	case op.kind == zLoss:
		return 1
	case op.masked:
		return 3
	}
	return 2
}

func (op *lossOp) Arity() int {
	if op.grad {
		return op.inputs() + 1
	}
	return op.inputs()
}

func (op *lossOp) Type() hm.Type {
	ts := []hm.Type{floatT(2)}
	if op.kind == balanceLoss {
		ts = append(ts, int32T(1))
		if op.masked {
			ts = append(ts, int32T(1))
		}
	}
	if op.grad {
		ts = append(ts, scalarT(), floatT(2))
	} else {
		ts = append(ts, scalarT())
	}
	return hm.NewFnType(ts...)
}

func (op *lossOp) String() string {
	name := [...]string{"LoadBalancingLoss", "ZLoss"}[op.kind]
	if op.grad {
		name += "Grad"
	}
	return fmt.Sprintf("%s{coef=%v,masked=%t,K=%d,E=%d}", name, op.coef, op.masked, op.k, op.e)
}
func (op *lossOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *lossOp) Hashcode() uint32      { return hashOf(op) }

// DiffWRT: the logits (input 0). The gradient op marks them too, so that a second derivative reaches
// SymDiff, which names the op.
func (op *lossOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	d[0] = true
	return d
}

func (op *lossOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	if op.grad {
		return nil, noSecondOrder(op, "the router loss")
	}
	gop := *op
	gop.grad = true
	d, err := G.ApplyOp(&gop, append(append(G.Nodes{}, in...), g)...)
	out := make(G.Nodes, len(in))
	out[0] = d
	return out, err
}

// DoDiff (LispMachine) runs the gradient op's kernel on values.
func (op *lossOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	if op.grad {
		return noSecondOrder(op, "the router loss")
	}
	return lispDiff(op, inputs, output, func(in []G.Value, g G.Value) ([]G.Value, error) {
		gop := *op
		gop.grad = true
		d, err := gop.Do(append(append([]G.Value{}, in...), g)...)
		out := make([]G.Value, len(in))
		out[0] = d
		return out, err
	})
}

func (op *lossOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	l, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if len(l) != 2 || l[1] != op.e {
		return nil, failf(ErrShape, "%v: logits shape %v, want [T,%d]", op, l, op.e)
	}
	if op.grad {
		return l.Clone(), nil
	}
	return tensor.ScalarShape(), nil
}

func (op *lossOp) Do(vs ...G.Value) (G.Value, error) {
	if err := arity(op, op.Arity(), vs); err != nil {
		return nil, err
	}
	logits, err := arg(op.String(), "logits", vs[0], anyFloat, -1, op.e)
	if err != nil {
		return nil, err
	}
	nT := logits.Shape()[0]
	var plan, mask *tensor.Dense
	if op.kind == balanceLoss {
		if plan, err = arg(op.String(), "plan", vs[1], tensor.Int32, PlanLen(nT, op.k, op.e)); err != nil {
			return nil, err
		}
		if op.masked {
			if mask, err = arg(op.String(), "mask", vs[2], tensor.Int32, nT); err != nil {
				return nil, err
			}
		}
	}
	b, err := backendOf(op.String(), logits, plan, mask)
	if err != nil {
		return nil, err
	}
	if !op.grad {
		loss, err := b.New(logits.Dtype(), 1)
		if err != nil {
			return nil, err
		}
		if op.kind == balanceLoss {
			err = b.LoadBalancingLoss(logits, plan, mask, op.coef, loss)
		} else {
			err = b.ZLoss(logits, op.coef, loss)
		}
		if err != nil {
			return nil, err
		}
		return scalarResult(b, loss)
	}
	scale, g, err := upstreamGrad(b, vs[len(vs)-1])
	if err != nil {
		return nil, err
	}
	out, err := b.New(logits.Dtype(), nT, op.e)
	if err != nil {
		return nil, err
	}
	if op.kind == balanceLoss {
		return out, b.LoadBalancingLossGrad(logits, plan, mask, op.coef*scale, g, out)
	}
	return out, b.ZLossGrad(logits, op.coef*scale, g, out)
}
