package ops

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// opBase carries the Op methods every op of this package answers the same way. The embedding op's
// String() must spell out every parameter: it is the hash, and the compiler merges equal hashes.
type opBase struct{}

// ReturnsPtr is false and CallsExtern is false: with both true Gorgonia's compiler would insert a host
// allocation for the output, which a device backend cannot use. Ops allocate through their backend.
func (opBase) ReturnsPtr() bool     { return false }
func (opBase) CallsExtern() bool    { return false }
func (opBase) OverwritesInput() int { return -1 }

type stringer interface{ String() string }

func writeHash(op stringer, h hash.Hash) { fmt.Fprint(h, op.String()) }

func hashOf(op stringer) uint32 {
	h := fnv.New32a()
	writeHash(op, h)
	return h.Sum32()
}

// Types are built afresh on every call: Gorgonia's type system recycles the types it is given.
func floatT(dims int) hm.Type { return G.TensorType{Dims: dims, Of: hm.TypeVariable('a')} }
func int32T(dims int) hm.Type { return G.TensorType{Dims: dims, Of: tensor.Int32} }
func scalarT() hm.Type        { return hm.TypeVariable('a') }

// arg checks that v is a *tensor.Dense of the given dtype (anyFloat: float32 or float64) and shape.
// A shape entry of -1 matches any size.
func arg(op, name string, v G.Value, dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	d, ok := v.(*tensor.Dense)
	if !ok || d == nil {
		return nil, failf(ErrUnsupported, "%s: %s must be a *tensor.Dense, got %T", op, name, v)
	}
	if err := checkDtype(op, name, d.Dtype(), dt); err != nil {
		return nil, err
	}
	s := d.Shape()
	if len(s) != len(shape) {
		return nil, failf(ErrShape, "%s: %s must have rank %d, got shape %v", op, name, len(shape), s)
	}
	for i, want := range shape {
		if want >= 0 && s[i] != want {
			return nil, failf(ErrShape, "%s: %s has shape %v, want %v (-1: any)", op, name, s, shape)
		}
	}
	return d, nil
}

// checkDtype checks a dtype: want, float32/float64 when want is anyFloat, or float32/float64/bfloat16
// when want is anyAct.
func checkDtype(op, name string, got, want tensor.Dtype) error {
	switch {
	case want == anyAct:
		if got != tensor.Float32 && got != tensor.Float64 && !isBF16(got) {
			return failf(ErrDtype, "%s: %s must be float32, float64 or bfloat16, got %v", op, name, dtName(got))
		}
	case want.Type == nil && isBF16(got):
		return failf(ErrDtype, "%s: %s is bfloat16, which %s does not take (routing, losses and solvers run in float32 in mixed precision): Cast it to float32", op, name, op)
	case want.Type == nil && got != tensor.Float32 && got != tensor.Float64:
		return failf(ErrDtype, "%s: %s must be float32 or float64, got %v", op, name, got)
	case want.Type != nil && got != want:
		return failf(ErrDtype, "%s: %s must be %v, got %v", op, name, want, got)
	}
	return nil
}

// arity checks the number of values an op's Do received.
func arity(op stringer, want int, vs []G.Value) error {
	if len(vs) != want {
		return failf(ErrShape, "%v: want %d inputs, got %d", op, want, len(vs))
	}
	return nil
}

// backendOf picks the backend that owns all given (non-nil) tensors of op; tensors of different
// backends are an error (ErrMixedBackends) naming op.
func backendOf(op string, ts ...*tensor.Dense) (Backend, error) {
	var in []tensor.Tensor
	for _, t := range ts {
		if t != nil {
			in = append(in, t)
		}
	}
	return backendFor(op, in)
}

// output returns prealloc when it is a tensor of the right dtype and shape owned by b, else a new one.
func output(b Backend, prealloc G.Value, dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	if p, ok := prealloc.(*tensor.Dense); ok && p.Dtype() == dt && p.Shape().Eq(tensor.Shape(shape)) && b.Owns(p) {
		return p, nil
	}
	return b.New(dt, shape...)
}

// scalarResult turns a one-element loss tensor into the op's value: a Gorgonia scalar (*G.F32 / *G.F64)
// on the CPU, the one-element tensor itself on a device backend (reading it would synchronise).
func scalarResult(b Backend, loss *tensor.Dense) (G.Value, error) {
	if b.Name() != CPU().Name() {
		return loss, nil
	}
	v, err := scalarOf(loss)
	if err != nil {
		return nil, err
	}
	return scalarValue(loss.Dtype(), v), nil
}

// upstreamGrad splits the gradient value a scalar-output op receives into a host factor and, when the
// gradient lives on b's device, the one-element tensor holding it: host scalars give (g, nil), device
// scalars give (1, g).
func upstreamGrad(b Backend, v G.Value) (float64, *tensor.Dense, error) {
	if d, ok := v.(*tensor.Dense); ok && !d.IsNativelyAccessible() {
		if d.Shape().TotalSize() != 1 || !b.Owns(d) {
			return 0, nil, failf(ErrMixedBackends, "want a one-element %s gradient, got a %v tensor of another backend", b.Name(), d.Shape())
		}
		return 1, d, nil
	}
	g, err := scalarOf(v)
	return g, nil, err
}

// scalarOf reads a scalar value (a Gorgonia scalar or a one-element host tensor).
func scalarOf(v G.Value) (float64, error) {
	switch s := v.(type) {
	case *G.F64:
		return float64(*s), nil
	case *G.F32:
		return float64(*s), nil
	case *tensor.Dense:
		if s.Shape().TotalSize() == 1 && s.IsNativelyAccessible() {
			if x, ok := firstFloat(s.Data()); ok {
				return x, nil
			}
		}
	}
	return 0, failf(ErrShape, "want a scalar gradient, got %T", v)
}

// firstFloat returns the first element of float data (a []float32/[]float64 slice or a scalar).
func firstFloat(data any) (float64, bool) {
	switch d := data.(type) {
	case []float64:
		if len(d) > 0 {
			return d[0], true
		}
	case []float32:
		if len(d) > 0 {
			return float64(d[0]), true
		}
	case float64:
		return d, true
	case float32:
		return float64(d), true
	}
	return 0, false
}

// nodeCheck validates a node at graph-build time: non-nil, the given rank (-1: any rank) and dtype
// (anyFloat: float32 or float64).
func nodeCheck(op, name string, n *G.Node, rank int, dt tensor.Dtype) error {
	if n == nil {
		return failf(ErrShape, "%s: %s is nil", op, name)
	}
	if got := n.Shape().Dims(); rank >= 0 && got != rank {
		return failf(ErrShape, "%s: %s %s must have rank %d, got shape %v", op, name, nodeName(n), rank, n.Shape())
	}
	if nn := nodeName(n); nn != "" {
		name += " " + nn
	}
	return checkDtype(op, name, n.Dtype(), dt)
}

// sameDtype checks at build time that two float inputs of one op share their dtype, naming both the
// way the caller knows them (aDesc/bDesc, e.g. "expert outputs" and "routing weights (...)").
func sameDtype(op, aDesc string, a *G.Node, bDesc string, b *G.Node) error {
	if a.Dtype() != b.Dtype() {
		return failf(ErrDtype, "%s: %s %s are %v but %s %s are %v; all float inputs of one op share a dtype",
			op, aDesc, nodeName(a), a.Dtype(), bDesc, nodeName(b), b.Dtype())
	}
	return nil
}

// nodeName quotes a node's name for messages ("" for unnamed nodes).
func nodeName(n *G.Node) string {
	if n == nil || n.Name() == "" {
		return ""
	}
	return fmt.Sprintf("%q", n.Name())
}

// shapeArg reads input i of InferShape as a tensor.Shape.
func shapeArg(ds []G.DimSizer, i int) (tensor.Shape, error) {
	if i >= len(ds) {
		return nil, failf(ErrShape, "InferShape needs %d inputs, got %d", i+1, len(ds))
	}
	s, ok := ds[i].(tensor.Shape)
	if !ok {
		return nil, failf(ErrShape, "InferShape input %d is %T, not a tensor.Shape", i, ds[i])
	}
	return s, nil
}

// anyFloat, as a dtype argument, accepts float32 and float64.
var anyFloat = tensor.Dtype{}

func scalarValue(dt tensor.Dtype, v float64) G.Value {
	if dt == tensor.Float32 {
		return G.NewF32(float32(v))
	}
	return G.NewF64(v)
}

// maxSlots bounds T*K: plans, expert-major row numbers and the kernels' slot indices are int32.
const maxSlots = math.MaxInt32

// checkSizes refuses routing sizes whose slot count T*K does not fit the int32 plan (T*K >= 2^31), or
// whose largest buffer (T*K rows of width elements of 8 bytes) overflows a byte count. It runs when
// graphs are built and before kernels allocate, so an oversized request fails before any allocation.
func checkSizes(op string, t, k, e, width int) error {
	if t < 0 || k < 0 || e < 0 || width < 0 {
		return failf(ErrShape, "%s: negative size T=%d K=%d E=%d width=%d", op, t, k, e, width)
	}
	slots, ok := mulInt(t, k)
	if !ok || slots >= maxSlots || e >= maxSlots {
		return failf(ErrShape, "%s: T*K = %d*%d slots (E=%d) do not fit the int32 routing plan (T*K and E must be < 2^31)", op, t, k, e)
	}
	if bytes, ok := mulInt(slots, max(width, 1)); !ok || bytes > math.MaxInt64/8 {
		return failf(ErrShape, "%s: T*K*%d = %d*%d*%d elements overflow a byte count", op, width, t, k, width)
	}
	return nil
}

// mulInt returns a*b for non-negative a, b and whether it did not overflow.
func mulInt(a, b int) (int, bool) {
	if a == 0 || b == 0 {
		return 0, true
	}
	p := a * b
	return p, p/b == a && p >= 0
}
