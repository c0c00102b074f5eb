package ops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/internal/bf16"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// HostEngine returns the host tensor engine of this module: tensor's StdEng plus Add for bfloat16
// tensors, which Gorgonia's G.Grad inserts to sum the gradients of a bfloat16 node with several
// consumers (tensor's own Add has no bfloat16 case). Run CPU graphs with bfloat16 nodes on
// G.NewTapeMachine(g, G.WithEngine(ops.HostEngine())); Runner and Trainer do so by themselves. Every
// other operation, and Add of other dtypes, is StdEng's.
func HostEngine() tensor.Engine { return hostEngine{} }

type hostEngine struct{ tensor.StdEng }

// Add adds two bfloat16 tensors of one shape elementwise, each sum rounded once to bfloat16 (exactly
// as the device kernels round); with WithIncr(r) the sum is then added into r (a second rounding, as
// StdEng's float32 incr rounds twice). WithReuse(r) writes into r, UseUnsafe into a. Other dtypes go to
// StdEng.
func (e hostEngine) Add(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	ad, aok := a.(*tensor.Dense)
	bd, bok := b.(*tensor.Dense)
	if !(aok && ad != nil && isBF16(ad.Dtype())) && !(bok && bd != nil && isBF16(bd.Dtype())) {
		return e.StdEng.Add(a, b, opts...)
	}
	const what = "bfloat16 Add"
	if !aok || !bok || ad == nil || bd == nil || ad.Dtype() != bd.Dtype() {
		return nil, failf(ErrDtype, "%s: both operands must be bfloat16 tensors, got %T and %T", what, a, b)
	}
	if !ad.Shape().Eq(bd.Shape()) || ad.Shape().IsScalar() {
		return nil, failf(ErrShape, "%s: operands of shapes %v and %v (want equal, non-scalar shapes)", what, ad.Shape(), bd.Shape())
	}
	x, err := bf16Elems(what, "a", ad)
	if err != nil {
		return nil, err
	}
	y, err := bf16Elems(what, "b", bd)
	if err != nil {
		return nil, err
	}
	fo := tensor.ParseFuncOpts(opts...)
	target, incr := fo.IncrReuse()
	var out *tensor.Dense
	switch {
	case target != nil:
		r, ok := target.(*tensor.Dense)
		if !ok || r == nil || !isBF16(r.Dtype()) || r.Shape().TotalSize() != ad.Shape().TotalSize() {
			return nil, failf(ErrDtype, "%s: the reuse/incr tensor must be a bfloat16 tensor of %d elements, got %v", what, ad.Shape().TotalSize(), target)
		}
		if !r.Shape().Eq(ad.Shape()) {
			if err := r.Reshape(ad.Shape().Clone()...); err != nil {
				return nil, failf(ErrShape, "%s: reshaping the reuse/incr tensor: %v", what, err)
			}
		}
		out = r
	case !fo.Safe():
		out = ad
	default:
		out = tensor.New(tensor.Of(BFloat16), tensor.WithShape(ad.Shape().Clone()...))
	}
	o, err := bf16Elems(what, "the output", out)
	if err != nil {
		return nil, err
	}
	for i := range o {
		s := bf16.FromFloat32(x[i].Float32() + y[i].Float32()) // exact in float32 or far from a tie: one rounding
		if incr {
			s = bf16.FromFloat32(o[i].Float32() + s.Float32())
		}
		o[i] = s
	}
	return out, nil
}

// bf16Elems returns the elements of a contiguous host bfloat16 tensor.
func bf16Elems(what, name string, d *tensor.Dense) ([]BF16, error) {
	if !d.IsNativelyAccessible() {
		return nil, failf(ErrMixedBackends, "%s: %s is not in host memory", what, name)
	}
	if d.RequiresIterator() {
		return nil, failf(ErrUnsupported, "%s: %s is a strided view; materialise it first", what, name)
	}
	s, ok := d.Data().([]BF16)
	if !ok {
		return nil, failf(ErrDtype, "%s: %s holds %T, want []ops.BF16", what, name, d.Data())
	}
	return s, nil
}

// Printable returns a value fmt prints with its numbers: a bfloat16 tensor (host or device memory, read
// through its backend) is printed as the float32 tensor of its exact values, with every verb and flag
// of tensor's formatter; any other value is printed as it is. (fmt on a bfloat16 *tensor.Dense prints
// the raw bit patterns: tensor's formatter switches on Go's kinds.)
func Printable(v G.Value) fmt.Formatter { return printable{v} }

type printable struct{ v G.Value }

func (p printable) Format(s fmt.State, c rune) {
	d, ok := p.v.(*tensor.Dense)
	if !ok || d == nil || !isBF16(d.Dtype()) {
		fmt.Fprintf(s, fmt.FormatString(s, c), p.v)
		return
	}
	w, err := widenForPrint(d)
	if err != nil {
		fmt.Fprintf(s, "<bfloat16 tensor %v: %v>", d.Shape(), err)
		return
	}
	w.Format(s, c)
}

// widenForPrint returns a host float32 copy of a bfloat16 tensor.
func widenForPrint(d *tensor.Dense) (*tensor.Dense, error) {
	h := d
	if b, err := BackendFor(d); err != nil {
		return nil, err
	} else if b.Name() != CPU().Name() {
		if h, err = b.ToHost(d); err != nil {
			return nil, err
		}
	} else if !d.IsNativelyAccessible() {
		return nil, failf(ErrUnsupported, "the memory is not readable by the host and no registered backend owns it")
	}
	if h.RequiresIterator() {
		h = h.Materialize().(*tensor.Dense)
	}
	switch data := h.Data().(type) {
	case []BF16:
		return tensor.New(tensor.WithShape(h.Shape().Clone()...), tensor.WithBacking(bf16.Float32s(data))), nil
	case BF16:
		return tensor.New(tensor.FromScalar(data.Float32())), nil
	}
	return nil, failf(ErrDtype, "unexpected data %T", h.Data())
}
