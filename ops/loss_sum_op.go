package ops

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// AddLosses is the sum of scalar loss nodes of one float dtype (e.g. a task loss and the router losses),
// as a scalar node that works on every backend. Use it instead of G.Add for the scalar outputs of this
// package's losses: on a device they are one-element device tensors, which Gorgonia's scalar arithmetic
// cannot add. On the CPU it adds host scalars in the dtype, in argument order (bitwise equal to a chain of
// G.Add); on a device it adds the one-element tensors in argument order with the backend's tensor engine
// (no host read). The gradient of every term is the upstream gradient. Nil terms are skipped (a layer
// without router losses); at least one term must be non-nil.
func AddLosses(terms ...*G.Node) (*G.Node, error) {
	var in G.Nodes
	for _, t := range terms {
		if t != nil {
			in = append(in, t)
		}
	}
	if len(in) == 0 {
		return nil, failf(ErrConfig, "add losses: no terms")
	}
	for i, t := range in {
		if !t.IsScalar() {
			return nil, failf(ErrShape, "add losses: term %d (%s) is not a scalar node (shape %v)", i, t.Name(), t.Shape())
		}
		if err := checkDtype("add losses", fmt.Sprintf("term %d", i), t.Dtype(), in[0].Dtype()); err != nil {
			return nil, err
		}
	}
	if err := checkDtype("add losses", "term 0", in[0].Dtype(), anyFloat); err != nil {
		return nil, err
	}
	if len(in) == 1 {
		return in[0], nil
	}
	return G.ApplyOp(&addLossesOp{n: len(in)}, in...)
}

// addLossesOp: (scalar, ..., scalar) -> scalar sum.
type addLossesOp struct {
	opBase
	n int
}

func (op *addLossesOp) Arity() int { return op.n }
func (op *addLossesOp) Type() hm.Type {
	ts := make([]hm.Type, op.n+1)
	for i := range ts {
		ts[i] = scalarT()
	}
	return hm.NewFnType(ts...)
}
func (op *addLossesOp) String() string        { return fmt.Sprintf("AddLosses{n=%d}", op.n) }
func (op *addLossesOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *addLossesOp) Hashcode() uint32      { return hashOf(op) }
func (op *addLossesOp) DiffWRT(n int) []bool  { return allTrue(n) }

func (op *addLossesOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	out := make(G.Nodes, len(in))
	for i := range out {
		out[i] = g
	}
	return out, nil
}

// DoDiff (LispMachine): every term's gradient is the output's.
func (op *addLossesOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return lispDiff(op, inputs, output, func(in []G.Value, g G.Value) ([]G.Value, error) {
		out := make([]G.Value, len(in))
		for i := range out {
			out[i] = g
		}
		return out, nil
	})
}

func (op *addLossesOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}

func (op *addLossesOp) Do(vs ...G.Value) (G.Value, error) {
	if err := arity(op, op.n, vs); err != nil {
		return nil, err
	}
	var dev []*tensor.Dense
	for i, v := range vs {
		if d, _ := deviceScalar(v); d != nil {
			dev = append(dev, d)
			continue
		}
		if len(dev) > 0 {
			return nil, failf(ErrMixedBackends, "add losses: term %d is a host value, earlier terms are device tensors", i)
		}
	}
	if len(dev) == 0 {
		return op.addHost(vs)
	}
	if len(dev) != len(vs) {
		return nil, failf(ErrMixedBackends, "add losses: %d of %d terms are device tensors", len(dev), len(vs))
	}
	return op.addDevice(dev)
}

// addHost sums host scalars in the dtype of the first term.
func (op *addLossesOp) addHost(vs []G.Value) (G.Value, error) {
	switch first := vs[0].(type) {
	case *G.F32:
		s := float32(*first)
		for i, v := range vs[1:] {
			x, ok := v.(*G.F32)
			if !ok {
				return nil, failf(ErrDtype, "add losses: term %d is %T, term 0 float32", i+1, v)
			}
			s += float32(*x)
		}
		return G.NewF32(s), nil
	case *G.F64:
		s := float64(*first)
		for i, v := range vs[1:] {
			x, ok := v.(*G.F64)
			if !ok {
				return nil, failf(ErrDtype, "add losses: term %d is %T, term 0 float64", i+1, v)
			}
			s += float64(*x)
		}
		return G.NewF64(s), nil
	}
	return nil, failf(ErrDtype, "add losses: term 0 is %T, want a float scalar", vs[0])
}

// addDevice sums one-element tensors of one device with its tensor engine: out = 0, out += term_i.
func (op *addLossesOp) addDevice(ts []*tensor.Dense) (G.Value, error) {
	b, err := backendOf("add losses", ts...)
	if err != nil {
		return nil, err
	}
	eng, err := deviceEngine("add losses", b)
	if err != nil {
		return nil, err
	}
	adder, ok := eng.(tensor.Adder)
	if !ok {
		return nil, failf(ErrUnsupported, "add losses: the %s tensor engine cannot add", b.Name())
	}
	out, err := b.New(ts[0].Dtype(), 1)
	if err != nil {
		return nil, err
	}
	for i, t := range ts {
		if t.Dtype() != out.Dtype() {
			return nil, failf(ErrDtype, "add losses: term %d is %v, term 0 %v", i, t.Dtype(), out.Dtype())
		}
		v, err := oneElement(b, t)
		if err != nil {
			return nil, err
		}
		if _, err := adder.Add(out, v, tensor.UseUnsafe()); err != nil {
			return nil, errorf("add losses: term %d: %w", i, err)
		}
	}
	return out, nil
}

// deviceEngine returns the tensor engine of a device backend (TensorEngineProvider).
func deviceEngine(op string, b Backend) (tensor.Engine, error) {
	tp, ok := b.(TensorEngineProvider)
	if !ok {
		return nil, failf(ErrUnsupported, "%s: backend %s has no tensor engine", op, b.Name())
	}
	return tp.TensorEngine()
}

// oneElement returns a one-element tensor as shape [1] (a view when it has another shape, e.g. ()).
func oneElement(b Backend, t *tensor.Dense) (*tensor.Dense, error) {
	if t.Shape().Eq(tensor.Shape{1}) {
		return t, nil
	}
	return b.View(t, 0, 1)
}

// deviceScalar returns v as a one-element tensor of a device backend, or nil when v is a host value.
func deviceScalar(v G.Value) (*tensor.Dense, Backend) {
	d, ok := v.(*tensor.Dense)
	if !ok || d == nil || d.Shape().TotalSize() != 1 {
		return nil, nil
	}
	if b, err := BackendFor(d); err == nil && b.Name() != CPU().Name() {
		return d, b
	}
	return nil, nil
}

// ScaleLoss is coef * loss for a scalar loss node (float32 or float64), as a scalar node that works on
// every backend, e.g. a rank's share of a mean loss in expert parallelism (moe/ep's LossScale). Use it
// instead of G.Mul with a constant: on a device, loss is a one-element device tensor, which Gorgonia's
// scalar arithmetic cannot take. On the CPU the product is taken in the loss's dtype (bitwise equal to
// G.Mul(loss, G.NewConstant(coef in that dtype))); on a device the tensor engine multiplies without a host
// read. Its gradient is coef times the upstream gradient. coef must be finite (ErrConfig).
func ScaleLoss(loss *G.Node, coef float64) (*G.Node, error) {
	if loss == nil || !loss.IsScalar() {
		return nil, failf(ErrShape, "scale loss: the loss must be a scalar node, got %v", shapeOfNode(loss))
	}
	if err := checkDtype("scale loss", "loss "+nodeName(loss), loss.Dtype(), anyFloat); err != nil {
		return nil, err
	}
	if math.IsNaN(coef) || math.IsInf(coef, 0) {
		return nil, failf(ErrConfig, "scale loss: coefficient must be finite, got %v", coef)
	}
	return G.ApplyOp(&scaleLossOp{coef: coef}, loss)
}

func shapeOfNode(n *G.Node) tensor.Shape {
	if n == nil {
		return nil
	}
	return n.Shape()
}

// scaleLossOp: scalar -> coef * scalar.
type scaleLossOp struct {
	opBase
	coef float64
}

func (op *scaleLossOp) Arity() int            { return 1 }
func (op *scaleLossOp) Type() hm.Type         { return hm.NewFnType(scalarT(), scalarT()) }
func (op *scaleLossOp) String() string        { return fmt.Sprintf("ScaleLoss{coef=%v}", op.coef) }
func (op *scaleLossOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *scaleLossOp) Hashcode() uint32      { return hashOf(op) }
func (op *scaleLossOp) DiffWRT(n int) []bool  { return allTrue(n) }

func (op *scaleLossOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(op, g)
	return G.Nodes{d}, err
}

// DoDiff (LispMachine): the gradient is coef times the output's.
func (op *scaleLossOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return lispDiff(op, inputs, output, func(_ []G.Value, g G.Value) ([]G.Value, error) {
		d, err := op.Do(g)
		return []G.Value{d}, err
	})
}

func (op *scaleLossOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}

func (op *scaleLossOp) Do(vs ...G.Value) (G.Value, error) {
	if err := arity(op, 1, vs); err != nil {
		return nil, err
	}
	switch x := vs[0].(type) {
	case *G.F32:
		return G.NewF32(float32(op.coef) * float32(*x)), nil
	case *G.F64:
		return G.NewF64(op.coef * float64(*x)), nil
	}
	d, b := deviceScalar(vs[0])
	if d == nil {
		if v, err := scalarOf(vs[0]); err == nil { // a one-element host tensor
			dt := vs[0].Dtype()
			if dt == tensor.Float32 {
				return G.NewF32(float32(op.coef) * float32(v)), nil
			}
			return G.NewF64(op.coef * v), nil
		}
		return nil, failf(ErrDtype, "scale loss: the loss is %T, want a float scalar", vs[0])
	}
	if err := checkDtype("scale loss", "loss", d.Dtype(), anyFloat); err != nil {
		return nil, err
	}
	eng, err := deviceEngine("scale loss", b)
	if err != nil {
		return nil, err
	}
	muler, ok := eng.(tensor.Muler)
	if !ok {
		return nil, failf(ErrUnsupported, "scale loss: the %s tensor engine cannot multiply", b.Name())
	}
	v, err := oneElement(b, d)
	if err != nil {
		return nil, err
	}
	out, err := b.New(d.Dtype(), 1)
	if err != nil {
		return nil, err
	}
	var c any = op.coef
	if d.Dtype() == tensor.Float32 {
		c = float32(op.coef)
	}
	if _, err := muler.MulScalar(v, c, true, tensor.WithReuse(out)); err != nil {
		return nil, errorf("scale loss: %w", err)
	}
	return out, nil
}
