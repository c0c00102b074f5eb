package ops

import (
	"fmt"
	"hash"

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
		return nil, errorf("add losses: no terms: %w", ErrConfig)
	}
	for i, t := range in {
		if !t.IsScalar() {
			return nil, errorf("add losses: term %d (%s) is not a scalar node (shape %v): %w", i, t.Name(), t.Shape(), ErrShape)
		}
		if err := dtypeIs("add losses", fmt.Sprintf("term %d", i), t.Dtype(), in[0].Dtype()); err != nil {
			return nil, err
		}
	}
	if err := dtypeIs("add losses", "term 0", in[0].Dtype(), anyFloat); err != nil {
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
func (op *addLossesOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = true
	}
	return d
}

func (op *addLossesOp) SymDiff(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
	out := make(G.Nodes, len(in))
	for i := range out {
		out[i] = g
	}
	return out, nil
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
		if d, ok := v.(*tensor.Dense); ok && d != nil && d.Shape().TotalSize() == 1 {
			if b, err := BackendFor(d); err == nil && b.Name() != CPU().Name() {
				dev = append(dev, d)
				continue
			}
		}
		if len(dev) > 0 {
			return nil, errorf("add losses: term %d is a host value, earlier terms are device tensors: %w", i, ErrMixedBackends)
		}
	}
	if len(dev) == 0 {
		return op.addHost(vs)
	}
	if len(dev) != len(vs) {
		return nil, errorf("add losses: %d of %d terms are device tensors: %w", len(dev), len(vs), ErrMixedBackends)
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
				return nil, errorf("add losses: term %d is %T, term 0 float32: %w", i+1, v, ErrDtype)
			}
			s += float32(*x)
		}
		return G.NewF32(s), nil
	case *G.F64:
		s := float64(*first)
		for i, v := range vs[1:] {
			x, ok := v.(*G.F64)
			if !ok {
				return nil, errorf("add losses: term %d is %T, term 0 float64: %w", i+1, v, ErrDtype)
			}
			s += float64(*x)
		}
		return G.NewF64(s), nil
	}
	return nil, errorf("add losses: term 0 is %T, want a float scalar: %w", vs[0], ErrDtype)
}

// addDevice sums one-element tensors of one device with its tensor engine: out = 0, out += term_i.
func (op *addLossesOp) addDevice(ts []*tensor.Dense) (G.Value, error) {
	b, err := ownerOf("add losses", ts...)
	if err != nil {
		return nil, err
	}
	tp, ok := b.(TensorEngineProvider)
	if !ok {
		return nil, errorf("add losses: backend %s has no tensor engine: %w", b.Name(), ErrUnsupported)
	}
	eng, err := tp.TensorEngine()
	if err != nil {
		return nil, err
	}
	adder, ok := eng.(tensor.Adder)
	if !ok {
		return nil, errorf("add losses: the %s tensor engine cannot add: %w", b.Name(), ErrUnsupported)
	}
	out, err := b.New(ts[0].Dtype(), 1)
	if err != nil {
		return nil, err
	}
	for i, t := range ts {
		if t.Dtype() != out.Dtype() {
			return nil, errorf("add losses: term %d is %v, term 0 %v: %w", i, t.Dtype(), out.Dtype(), ErrDtype)
		}
		v := t
		if !v.Shape().Eq(out.Shape()) {
			if v, err = b.View(t, 0, 1); err != nil {
				return nil, err
			}
		}
		if _, err := adder.Add(out, v, tensor.UseUnsafe()); err != nil {
			return nil, errorf("add losses: term %d: %w", i, err)
		}
	}
	return out, nil
}
