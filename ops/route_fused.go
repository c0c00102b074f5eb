package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The route node of a graph computes a routing's indices and weights together, into one buffer that
// the Indices and Weights nodes view: on a backend with a fused router (the CUDA backend) that is one
// kernel, the one the benchmarks time (RouteInto); elsewhere RouteIndicesBias and RouteWeights, as
// before. The values are bitwise those of the two separate kernels.

// FusedRouter is implemented by backends that compute a routing's indices and weights in one kernel:
// idx [T,K] int32 as RouteIndicesBias and w [T,K] as RouteWeights would write them (bitwise equal).
type FusedRouter interface {
	RouteBiased(logits, bias *tensor.Dense, cfg RouteConfig, idx, w *tensor.Dense) error
}

// Reinterpreter is implemented by backends that can view a tensor's memory as another dtype (the route
// node's buffer holds int32 indices and float weights).
type Reinterpreter interface {
	// ViewAs returns a tensor of dtype dt and the given shape over t's memory from byteOffset on (no
	// copy; the view keeps t alive). The view must lie inside t's memory and start aligned to dt's size
	// (ErrShape otherwise).
	ViewAs(t *tensor.Dense, dt tensor.Dtype, byteOffset int, shape ...int) (*tensor.Dense, error)
}

// RouteInto writes the indices idx [T,K] (int32) and, when w is non-nil, the weights w [T,K] of the
// routing of logits [T,E] (bias [E] or nil, as in RouteBiased) exactly as a graph's route node computes
// them on backend b: the fused kernel where b is a FusedRouter, else RouteIndicesBias then
// RouteWeights. Benchmarks time this to time what graphs run.
func RouteInto(b Backend, logits, bias *tensor.Dense, cfg RouteConfig, idx, w *tensor.Dense) error {
	if f, ok := b.(FusedRouter); ok {
		return f.RouteBiased(logits, bias, cfg, idx, w)
	}
	if err := b.RouteIndicesBias(logits, bias, cfg, idx); err != nil {
		return err
	}
	if w == nil {
		return nil
	}
	return b.RouteWeights(logits, idx, cfg, w)
}

// routeLayout is the route node's buffer: int32, the indices [T,K] first, then (from an offset rounded
// up to 16 bytes) the weights [T,K] of the logits' dtype.
type routeLayout struct {
	t, k      int
	dt        tensor.Dtype
	weightsAt int // int32 elements before the weights (a multiple of 4: 16 bytes)
}

func newRouteLayout(nT, k int, dt tensor.Dtype) routeLayout {
	return routeLayout{t: nT, k: k, dt: dt, weightsAt: (nT*k + 3) / 4 * 4}
}

// len is the buffer's length in int32 elements.
func (l routeLayout) len() int { return l.weightsAt + l.t*l.k*int(l.dt.Size())/4 }

// views returns the indices and the weights over buf (w nil when the backend cannot reinterpret).
func (l routeLayout) views(b Backend, buf *tensor.Dense) (idx, w *tensor.Dense, err error) {
	if idx, err = b.View(buf, 0, l.t, l.k); err != nil {
		return nil, nil, err
	}
	w, err = l.weights(b, buf)
	return idx, w, err
}

// weights returns the weights view of buf, or nil when b is no Reinterpreter.
func (l routeLayout) weights(b Backend, buf *tensor.Dense) (*tensor.Dense, error) {
	r, ok := b.(Reinterpreter)
	if !ok {
		return nil, nil
	}
	return r.ViewAs(buf, l.dt, l.weightsAt*4, l.t, l.k)
}

// routeOp: logits [T,E] (and bias [E] when biased) -> the route buffer (routeLayout), int32. Not
// differentiable: the Weights node takes the gradient to the logits.
type routeOp struct {
	opBase
	cfg    RouteConfig
	e      int
	dt     tensor.Dtype
	biased bool
}

func (op *routeOp) Arity() int {
	if op.biased {
		return 2
	}
	return 1
}
func (op *routeOp) Type() hm.Type {
	if op.biased {
		return hm.NewFnType(floatT(2), floatT(1), int32T(1))
	}
	return hm.NewFnType(floatT(2), int32T(1))
}
func (op *routeOp) String() string {
	return fmt.Sprintf("Route{%v,E=%d,%v,biased=%t}", op.cfg, op.e, op.dt, op.biased)
}
func (op *routeOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *routeOp) Hashcode() uint32      { return hashOf(op) }
func (op *routeOp) DiffWRT(n int) []bool  { return make([]bool, n) }
func (op *routeOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, failf(ErrUnsupported, "%v is not differentiable", op)
}

// DoDiff: the buffer carries no gradient (the Weights node's does).
func (op *routeOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error { return noDiff() }

func (op *routeOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if len(s) != 2 || s[1] != op.e {
		return nil, failf(ErrShape, "route: logits shape %v, want [T,%d]", s, op.e)
	}
	if op.biased {
		b, err := shapeArg(ds, 1)
		if err != nil {
			return nil, err
		}
		if len(b) != 1 || b[0] != op.e {
			return nil, failf(ErrShape, "route: bias shape %v, want [%d]", b, op.e)
		}
	}
	return tensor.Shape{newRouteLayout(s[0], op.cfg.K, op.dt).len()}, nil
}

func (op *routeOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *routeOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, op.Arity(), vs); err != nil {
		return nil, err
	}
	logits, err := arg("route", "logits", vs[0], op.dt, -1, op.e)
	if err != nil {
		return nil, err
	}
	var bias *tensor.Dense
	if op.biased {
		if bias, err = arg("route", "bias", vs[1], op.dt, op.e); err != nil {
			return nil, err
		}
	}
	b, err := backendOf(op.String(), logits, bias)
	if err != nil {
		return nil, err
	}
	l := newRouteLayout(logits.Shape()[0], op.cfg.K, op.dt)
	buf, err := output(b, prealloc, tensor.Int32, l.len())
	if err != nil {
		return nil, err
	}
	idx, w, err := l.views(b, buf)
	if err != nil {
		return nil, err
	}
	return buf, RouteInto(b, logits, bias, op.cfg, idx, w)
}

// routeIndicesOp: the route buffer -> indices [T,K] int32, a view. Not differentiable.
type routeIndicesOp struct {
	opBase
	cfg RouteConfig
	e   int
	t   int
	dt  tensor.Dtype
}

func (op *routeIndicesOp) Arity() int    { return 1 }
func (op *routeIndicesOp) Type() hm.Type { return hm.NewFnType(int32T(1), int32T(2)) }
func (op *routeIndicesOp) String() string {
	return fmt.Sprintf("RouteIndices{%v,E=%d,T=%d,%v}", op.cfg, op.e, op.t, op.dt)
}
func (op *routeIndicesOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *routeIndicesOp) Hashcode() uint32      { return hashOf(op) }
func (op *routeIndicesOp) DiffWRT(n int) []bool  { return make([]bool, n) }
func (op *routeIndicesOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, failf(ErrUnsupported, "%v is not differentiable", op)
}

// DoDiff: indices carry no gradient.
func (op *routeIndicesOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error { return noDiff() }

func (op *routeIndicesOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if l := newRouteLayout(op.t, op.cfg.K, op.dt); len(s) != 1 || s[0] != l.len() {
		return nil, failf(ErrShape, "route indices: buffer shape %v, want [%d]", s, l.len())
	}
	return tensor.Shape{op.t, op.cfg.K}, nil
}

// Do returns a view (no UsePreallocDo: the value is always the view of the buffer).
func (op *routeIndicesOp) Do(vs ...G.Value) (G.Value, error) {
	if err := arity(op, 1, vs); err != nil {
		return nil, err
	}
	l := newRouteLayout(op.t, op.cfg.K, op.dt)
	buf, err := arg("route indices", "route buffer", vs[0], tensor.Int32, l.len())
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), buf)
	if err != nil {
		return nil, err
	}
	return b.View(buf, 0, op.t, op.cfg.K)
}

// routeWeightsOp: (route buffer, logits [T,E], indices [T,K]) -> weights [T,K], a view of the buffer
// (computed by RouteWeights when the backend cannot reinterpret memory); differentiable w.r.t. logits.
type routeWeightsOp struct {
	opBase
	cfg RouteConfig
	e   int
	dt  tensor.Dtype
}

func (op *routeWeightsOp) Arity() int { return 3 }
func (op *routeWeightsOp) Type() hm.Type {
	return hm.NewFnType(int32T(1), floatT(2), int32T(2), floatT(2))
}
func (op *routeWeightsOp) String() string {
	return fmt.Sprintf("RouteWeights{%v,E=%d,%v}", op.cfg, op.e, op.dt)
}
func (op *routeWeightsOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *routeWeightsOp) Hashcode() uint32      { return hashOf(op) }
func (op *routeWeightsOp) DiffWRT(int) []bool    { return []bool{false, true, false} }

func (op *routeWeightsOp) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	if len(in) != 3 {
		return nil, failf(ErrShape, "%v: want 3 inputs, got %d", op, len(in))
	}
	d, err := G.ApplyOp(&routeWeightsGradOp{cfg: op.cfg, e: op.e}, in[1], in[2], grad)
	return G.Nodes{nil, d, nil}, err
}

// DoDiff (LispMachine) runs the same gradient kernel as SymDiff's node.
func (op *routeWeightsOp) DoDiff(_ G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return lispDiff(op, inputs, output, func(in []G.Value, g G.Value) ([]G.Value, error) {
		d, err := (&routeWeightsGradOp{cfg: op.cfg, e: op.e}).Do(in[1], in[2], g)
		return []G.Value{nil, d, nil}, err
	})
}

func (op *routeWeightsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	l, err := shapeArg(ds, 1)
	if err != nil {
		return nil, err
	}
	i, err := shapeArg(ds, 2)
	if err != nil {
		return nil, err
	}
	if len(l) != 2 || len(i) != 2 || l[1] != op.e || i[0] != l[0] || i[1] != op.cfg.K {
		return nil, failf(ErrShape, "route weights: logits %v and indices %v, want [T,%d] and [T,%d]", l, i, op.e, op.cfg.K)
	}
	b, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if n := newRouteLayout(l[0], op.cfg.K, op.dt).len(); len(b) != 1 || b[0] != n {
		return nil, failf(ErrShape, "route weights: buffer shape %v, want [%d]", b, n)
	}
	return i.Clone(), nil
}

// Do returns the weights view of the buffer (no UsePreallocDo: the value is always that view), or
// computes the weights when the backend cannot reinterpret memory (the route node then left them out).
func (op *routeWeightsOp) Do(vs ...G.Value) (G.Value, error) {
	if err := arity(op, 3, vs); err != nil {
		return nil, err
	}
	logits, err := arg("route weights", "logits", vs[1], op.dt, -1, op.e)
	if err != nil {
		return nil, err
	}
	nT := logits.Shape()[0]
	l := newRouteLayout(nT, op.cfg.K, op.dt)
	buf, err := arg("route weights", "route buffer", vs[0], tensor.Int32, l.len())
	if err != nil {
		return nil, err
	}
	idx, err := arg("route weights", "indices", vs[2], tensor.Int32, nT, op.cfg.K)
	if err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), buf, logits, idx)
	if err != nil {
		return nil, err
	}
	w, err := l.weights(b, buf)
	if err != nil {
		return nil, err
	}
	if w != nil {
		return w, nil
	}
	if w, err = b.New(op.dt, nT, op.cfg.K); err != nil {
		return nil, err
	}
	return w, b.RouteWeights(logits, idx, op.cfg, w)
}
