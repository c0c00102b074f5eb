package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// IgnoreLabel marks a row that SoftmaxCrossEntropy leaves out (PyTorch's ignore_index, here fixed at -1).
const IgnoreLabel = -1

// MSELoss is the mean squared error mean((pred - target)^2) over all elements, as a scalar node.
// pred and target share shape (any rank, at least one element) and float dtype. Differentiable w.r.t.
// both: d/dpred = 2 (pred - target) / n, d/dtarget = -d/dpred.
//
// On a device backend the value is a one-element device tensor and its gradient is computed on the
// device from the upstream gradient without a host read (read the value with Float, which synchronises).
func MSELoss(pred, target *G.Node) (*G.Node, error) {
	const name = "MSE loss"
	if err := nodeCheck(name, "pred", pred, -1, anyFloat); err != nil {
		return nil, err
	}
	if err := nodeCheck(name, "target", target, -1, pred.Dtype()); err != nil {
		return nil, err
	}
	if !pred.Shape().Eq(target.Shape()) {
		return nil, failf(ErrShape, "%s: pred %v and target %v differ in shape", name, pred.Shape(), target.Shape())
	}
	if pred.Shape().Dims() == 0 || pred.Shape().TotalSize() == 0 {
		return nil, failf(ErrShape, "%s: pred must be a tensor with at least one element, got shape %v", name, pred.Shape())
	}
	return G.ApplyOp(&taskLossOp{kind: mseLoss, shape: pred.Shape().Clone()}, pred, target)
}

// SoftmaxCrossEntropy is the mean over counted rows of -log softmax(logits[n,:])[labels[n]], as a scalar
// node (PyTorch's cross_entropy with reduction "mean" and ignore_index -1). logits [N,C] float, labels
// [N] int32 holding a class in [0,C) or IgnoreLabel (-1) for a row that is left out of the loss and the
// mean. When every row is ignored the loss is 0 and so is its gradient. A label outside [0,C) and not -1
// makes the op fail at run time with ErrLabel (on an asynchronous backend at the next synchronisation).
// Differentiable w.r.t. logits: (softmax(logits[n,:]) - onehot(labels[n])) / counted rows.
func SoftmaxCrossEntropy(logits, labels *G.Node) (*G.Node, error) {
	const name = "cross-entropy"
	if err := nodeCheck(name, "logits", logits, 2, anyFloat); err != nil {
		return nil, err
	}
	if err := nodeCheck(name, "labels", labels, 1, tensor.Int32); err != nil {
		return nil, err
	}
	if labels.Shape()[0] != logits.Shape()[0] {
		return nil, failf(ErrShape, "%s: %d labels for %d rows of logits", name, labels.Shape()[0], logits.Shape()[0])
	}
	return G.ApplyOp(&taskLossOp{kind: crossEntropyLoss, shape: logits.Shape().Clone()}, logits, labels)
}

type taskLossKind int

const (
	mseLoss          taskLossKind = iota // (pred, target) -> scalar
	crossEntropyLoss                     // (logits [N,C], labels [N] int32) -> scalar
)

// taskLossOp computes a task loss; with grad set it is the gradient instead:
// (inputs..., dloss scalar) -> d/d(input 0), shaped like input 0. swap exchanges the MSE operands, so
// the gradient w.r.t. target is the same kernel with the roles exchanged.
type taskLossOp struct {
	opBase
	kind  taskLossKind
	grad  bool
	swap  bool
	shape tensor.Shape // of input 0
}

func (op *taskLossOp) Arity() int {
	if op.grad {
		return 3
	}
	return 2
}

func (op *taskLossOp) Type() hm.Type {
	d := len(op.shape)
	ts := []hm.Type{floatT(d), floatT(d)}
	if op.kind == crossEntropyLoss {
		ts[1] = int32T(1)
	}
	if op.grad {
		return hm.NewFnType(append(ts, scalarT(), floatT(d))...)
	}
	return hm.NewFnType(append(ts, scalarT())...)
}

func (op *taskLossOp) String() string {
	name := op.lossName()
	if op.grad {
		name += "Grad"
	}
	return fmt.Sprintf("%s{shape=%v,swap=%t}", name, op.shape, op.swap)
}
func (op *taskLossOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *taskLossOp) Hashcode() uint32      { return hashOf(op) }

// DiffWRT: the float inputs (logits, or pred and target). The gradient op marks its float inputs too, so
// that a second derivative reaches SymDiff, which names the op.
func (op *taskLossOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	d[0] = true
	if n > 1 {
		d[1] = op.kind == mseLoss
	}
	if op.grad && n > 2 {
		d[2] = true
	}
	return d
}

func (op *taskLossOp) lossName() string {
	return [...]string{"MSELoss", "SoftmaxCrossEntropy"}[op.kind]
}

// gradOps returns the gradient ops of the loss's inputs: d/d(input 0), and for MSE d/d(input 1) (the same
// kernel with the operands swapped, applied to (in[1], in[0], g)); nil where there is none.
func (op *taskLossOp) gradOps() [2]*taskLossOp {
	d := [2]*taskLossOp{{kind: op.kind, grad: true, shape: op.shape}}
	if op.kind == mseLoss {
		d[1] = &taskLossOp{kind: op.kind, grad: true, swap: true, shape: op.shape}
	}
	return d
}

func (op *taskLossOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	if op.grad {
		return nil, noSecondOrder(op, op.lossName())
	}
	if len(in) != 2 {
		return nil, failf(ErrShape, "%v: want 2 inputs, got %d", op, len(in))
	}
	out := make(G.Nodes, 2)
	for i, d := range op.gradOps() {
		if d == nil {
			continue
		}
		var err error
		if out[i], err = G.ApplyOp(d, in[i], in[1-i], g); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DoDiff (LispMachine) runs the gradient ops' kernels on values.
func (op *taskLossOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	if op.grad {
		return noSecondOrder(op, op.lossName())
	}
	return lispDiff(op, inputs, output, func(in []G.Value, g G.Value) ([]G.Value, error) {
		out := make([]G.Value, 2)
		for i, d := range op.gradOps() {
			if d == nil {
				continue
			}
			var err error
			if out[i], err = d.Do(in[i], in[1-i], g); err != nil {
				return nil, err
			}
		}
		return out, nil
	})
}

func (op *taskLossOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if !s.Eq(op.shape) {
		return nil, failf(ErrShape, "%v: input of shape %v", op, s)
	}
	if op.grad {
		return s.Clone(), nil
	}
	return tensor.ScalarShape(), nil
}

func (op *taskLossOp) Do(vs ...G.Value) (G.Value, error) {
	if err := arity(op, op.Arity(), vs); err != nil {
		return nil, err
	}
	name := op.String()
	x, err := arg(name, "input", vs[0], anyFloat, op.shape...)
	if err != nil {
		return nil, err
	}
	var other *tensor.Dense
	if op.kind == mseLoss {
		other, err = arg(name, "target", vs[1], x.Dtype(), op.shape...)
	} else {
		other, err = arg(name, "labels", vs[1], tensor.Int32, op.shape[0])
	}
	if err != nil {
		return nil, err
	}
	b, err := backendOf(name, x, other)
	if err != nil {
		return nil, err
	}
	if !op.grad {
		loss, err := b.New(x.Dtype(), 1)
		if err != nil {
			return nil, err
		}
		if op.kind == mseLoss {
			err = b.MSELoss(x, other, loss)
		} else {
			err = b.SoftmaxCrossEntropy(x, other, loss)
		}
		if err != nil {
			return nil, err
		}
		return scalarResult(b, loss)
	}
	scale, g, err := upstreamGrad(b, vs[2])
	if err != nil {
		return nil, err
	}
	out, err := b.New(x.Dtype(), op.shape...)
	if err != nil {
		return nil, err
	}
	if op.kind == mseLoss {
		return out, b.MSELossGrad(x, other, scale, g, out)
	}
	return out, b.SoftmaxCrossEntropyGrad(x, other, scale, g, out)
}
