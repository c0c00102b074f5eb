package ops

import (
	"fmt"
	"hash"

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
// f is a count and has no gradient; the gradient flows to r.Logits through P.
func LoadBalancingLoss(r *Routing, coef float64) (*G.Node, error) {
	if err := checkRouting("load-balancing loss", r); err != nil {
		return nil, err
	}
	if r.Logits == nil {
		return nil, fmt.Errorf("ops: load-balancing loss: routing has no logits (built by NewRouting?)")
	}
	return G.ApplyOp(&lossOp{kind: balanceLoss, coef: coef, k: r.K(), e: r.E}, r.Logits, r.Plan)
}

// ZLoss is the ST-MoE router z-loss as a scalar node: coef * mean_t logsumexp(logits[t,:])^2.
func ZLoss(logits *G.Node, coef float64) (*G.Node, error) {
	if err := nodeCheck("z-loss", "logits", logits, 2, anyFloat); err != nil {
		return nil, err
	}
	return G.ApplyOp(&lossOp{kind: zLoss, coef: coef, e: logits.Shape()[1]}, logits)
}

type lossKind int

const (
	balanceLoss lossKind = iota // (logits [T,E], plan) -> scalar
	zLoss                       // (logits [T,E]) -> scalar
)

// lossOp computes a router loss; with grad set it is the loss's gradient op instead:
// (inputs..., dloss scalar) -> dlogits [T,E].
type lossOp struct {
	opBase
	kind lossKind
	grad bool
	coef float64
	k, e int
}

func (op *lossOp) Arity() int {
	n := 1
	if op.kind == balanceLoss {
		n = 2
	}
	if op.grad {
		n++
	}
	return n
}

func (op *lossOp) Type() hm.Type {
	ts := []hm.Type{floatT(2)}
	if op.kind == balanceLoss {
		ts = append(ts, int32T(1))
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
	return fmt.Sprintf("%s{coef=%v,K=%d,E=%d}", name, op.coef, op.k, op.e)
}
func (op *lossOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *lossOp) Hashcode() uint32      { return hashOf(op) }

func (op *lossOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	d[0] = !op.grad
	return d
}

func (op *lossOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	if op.grad {
		return nil, fmt.Errorf("ops: %v is not differentiable", op)
	}
	gop := *op
	gop.grad = true
	d, err := G.ApplyOp(&gop, append(append(G.Nodes{}, in...), g)...)
	out := make(G.Nodes, len(in))
	out[0] = d
	return out, err
}

func (op *lossOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	l, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if len(l) != 2 || l[1] != op.e {
		return nil, fmt.Errorf("ops: %v: logits shape %v, want [T,%d]", op, l, op.e)
	}
	if op.grad {
		return l.Clone(), nil
	}
	return tensor.ScalarShape(), nil
}

func (op *lossOp) Do(vs ...G.Value) (G.Value, error) {
	if len(vs) != op.Arity() {
		return nil, fmt.Errorf("ops: %v: want %d inputs, got %d", op, op.Arity(), len(vs))
	}
	logits, err := arg(op.String(), "logits", vs[0], anyFloat, -1, op.e)
	if err != nil {
		return nil, err
	}
	nT := logits.Shape()[0]
	var plan *tensor.Dense
	if op.kind == balanceLoss {
		if plan, err = arg(op.String(), "plan", vs[1], tensor.Int32, PlanLen(nT, op.k, op.e)); err != nil {
			return nil, err
		}
	}
	b, err := backendOf(logits, plan)
	if err != nil {
		return nil, err
	}
	if !op.grad {
		loss, err := b.New(logits.Dtype(), 1)
		if err != nil {
			return nil, err
		}
		if op.kind == balanceLoss {
			err = b.LoadBalancingLoss(logits, plan, op.coef, loss)
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
		return out, b.LoadBalancingLossGrad(logits, plan, op.coef*scale, g, out)
	}
	return out, b.ZLossGrad(logits, op.coef*scale, g, out)
}
