//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// The Backend's matrix products (ops.Backend.GroupedMatMul, GroupedMatMulGradW; MatMul in matmul.go):
// tensor validation here, kernels in gemm.go.

// gemmFloat returns the common float dtype of ts (ops.ErrDtype otherwise).
func gemmFloat(what string, names []string, ts ...*tensor.Dense) (tensor.Dtype, error) {
	var dt tensor.Dtype
	for i, t := range ts {
		if t == nil {
			return dt, fmt.Errorf("cudaops: %s: %s is nil: %w", what, names[i], ops.ErrShape)
		}
		if t.Dtype() != tensor.Float32 && t.Dtype() != tensor.Float64 {
			return dt, fmt.Errorf("cudaops: %s: %s has dtype %v, want float32 or float64: %w", what, names[i], t.Dtype(), ops.ErrDtype)
		}
		if i == 0 {
			dt = t.Dtype()
		} else if t.Dtype() != dt {
			return dt, fmt.Errorf("cudaops: %s: %s has dtype %v, %s has %v: %w", what, names[i], t.Dtype(), names[0], dt, ops.ErrDtype)
		}
	}
	return dt, nil
}

// gemmDtypes returns the operand and output dtypes of a product with inputs ins (named names[0..]) and
// output out (named names[len(ins)]): one float dtype for all (float32 or float64), or bfloat16 inputs
// with a bfloat16 or float32 output (ops.MixedPrecisionBackend); ops.ErrDtype otherwise.
func gemmDtypes(what string, names []string, out *tensor.Dense, ins ...*tensor.Dense) (in, outDt tensor.Dtype, err error) {
	if !hasBF16(append([]*tensor.Dense{out}, ins...)...) {
		dt, err := gemmFloat(what, names, append(ins, out)...)
		return dt, dt, err
	}
	for i, t := range ins {
		if t == nil {
			return in, outDt, fmt.Errorf("cudaops: %s: %s is nil: %w", what, names[i], ops.ErrShape)
		}
		if t.Dtype() != ops.BFloat16 {
			return in, outDt, fmt.Errorf("cudaops: %s: %s has dtype %v: a bfloat16 product needs bfloat16 operands (cast it): %w", what, names[i], t.Dtype(), ops.ErrDtype)
		}
	}
	if out == nil {
		return in, outDt, fmt.Errorf("cudaops: %s: %s is nil: %w", what, names[len(ins)], ops.ErrShape)
	}
	if out.Dtype() != ops.BFloat16 && out.Dtype() != tensor.Float32 {
		return in, outDt, fmt.Errorf("cudaops: %s: %s has dtype %v, a product of bfloat16 operands writes bfloat16 or float32: %w", what, names[len(ins)], out.Dtype(), ops.ErrDtype)
	}
	return ops.BFloat16, out.Dtype(), nil
}

// gemmShape checks that t has exactly the given shape (ops.ErrShape otherwise).
func gemmShape(what, name string, t *tensor.Dense, shape ...int) error {
	if !t.Shape().Eq(tensor.Shape(shape)) {
		return fmt.Errorf("cudaops: %s: %s has shape %v, want %v: %w", what, name, t.Shape(), shape, ops.ErrShape)
	}
	return nil
}

// noOverlap rejects an output whose memory overlaps an input: the kernels read the inputs while they
// write the output, so an in-place product would silently be wrong.
func noOverlap(what string, out *tensor.Dense, ins ...*tensor.Dense) error {
	bytes := func(t *tensor.Dense) uintptr { return uintptr(t.Shape().TotalSize() * int(t.Dtype().Size())) }
	if bytes(out) == 0 {
		return nil // an empty output overlaps nothing (and has no address to read)
	}
	o0, o1 := out.Uintptr(), out.Uintptr()+bytes(out)
	for _, in := range ins {
		if bytes(in) == 0 {
			continue
		}
		i0, i1 := in.Uintptr(), in.Uintptr()+bytes(in)
		if o0 < i1 && i0 < o1 {
			return fmt.Errorf("cudaops: %s: the output overlaps an input (in-place products are not supported): %w", what, ops.ErrUnsupported)
		}
	}
	return nil
}

func (b *Backend) GroupedMatMul(x, w, plan *tensor.Dense, transposeW bool, out *tensor.Dense) error {
	const what = "grouped matmul"
	dt, odt, err := gemmDtypes(what, []string{"x", "W", "out"}, out, x, w)
	if err != nil {
		return err
	}
	if x.Shape().Dims() != 2 || w.Shape().Dims() != 3 {
		return fmt.Errorf("cudaops: %s: x %v and W %v, want [N,In] and [E,In,Out]: %w", what, x.Shape(), w.Shape(), ops.ErrShape)
	}
	N, In := x.Shape()[0], x.Shape()[1]
	E, wIn, Out := w.Shape()[0], w.Shape()[1], w.Shape()[2]
	if transposeW {
		wIn, Out = Out, wIn
	}
	if wIn != In {
		return fmt.Errorf("cudaops: %s: x %v and W %v (transposeW=%t) disagree on In: %w", what, x.Shape(), w.Shape(), transposeW, ops.ErrShape)
	}
	if err := gemmShape(what, "out", out, N, Out); err != nil {
		return err
	}
	px, err := b.buf(what, "x", x, dt)
	if err != nil {
		return err
	}
	pw, err := b.buf(what, "W", w, dt)
	if err != nil {
		return err
	}
	pout, err := b.buf(what, "out", out, odt)
	if err != nil {
		return err
	}
	offsets, err := b.planOffsets(what, plan, N, E)
	if err != nil {
		return err
	}
	if err := noOverlap(what, out, x, w, plan); err != nil {
		return err
	}
	return b.dev.GroupedMatMul(dt, odt, px, pw, offsets, pout, E, N, In, Out, transposeW)
}

// planOffsets validates a plan of N = T*K rows over E experts and returns its offsets section. The
// offsets themselves are checked on the device (a fault at the next synchronisation).
func (b *Backend) planOffsets(what string, plan *tensor.Dense, N, E int) (cu.DevicePtr, error) {
	if plan == nil {
		return 0, fmt.Errorf("cudaops: %s: plan is nil: %w", what, ops.ErrShape)
	}
	if plan.Dtype() != tensor.Int32 {
		return 0, fmt.Errorf("cudaops: %s: plan has dtype %v, want int32: %w", what, plan.Dtype(), ops.ErrDtype)
	}
	if err := gemmShape(what, "plan", plan, 2*E+1+2*N); err != nil {
		return 0, err
	}
	pp, err := b.buf(what, "plan", plan, tensor.Int32)
	if err != nil {
		return 0, err
	}
	return offsetPtr(pp, int64(E)*4), nil
}

func (b *Backend) GroupedMatMulGradW(x, dy, plan *tensor.Dense, dW *tensor.Dense) error {
	const what = "grouped matmul grad W"
	dt, odt, err := gemmDtypes(what, []string{"x", "dy", "dW"}, dW, x, dy)
	if err != nil {
		return err
	}
	if x.Shape().Dims() != 2 || dy.Shape().Dims() != 2 || dW.Shape().Dims() != 3 {
		return fmt.Errorf("cudaops: %s: x %v, dy %v, dW %v, want [N,In], [N,Out], [E,In,Out]: %w", what, x.Shape(), dy.Shape(), dW.Shape(), ops.ErrShape)
	}
	N, In := x.Shape()[0], x.Shape()[1]
	Out := dy.Shape()[1]
	E := dW.Shape()[0]
	if err := gemmShape(what, "dy", dy, N, Out); err != nil {
		return err
	}
	if err := gemmShape(what, "dW", dW, E, In, Out); err != nil {
		return err
	}
	px, err := b.buf(what, "x", x, dt)
	if err != nil {
		return err
	}
	pdy, err := b.buf(what, "dy", dy, dt)
	if err != nil {
		return err
	}
	pdW, err := b.buf(what, "dW", dW, odt)
	if err != nil {
		return err
	}
	offsets, err := b.planOffsets(what, plan, N, E)
	if err != nil {
		return err
	}
	if err := noOverlap(what, dW, x, dy, plan); err != nil {
		return err
	}
	return b.dev.GroupedMatMulGradW(dt, odt, px, pdy, offsets, pdW, E, N, In, Out)
}

// GroupedSwiGLU implements ops.GroupedSwiGLUBackend: h = silu(x·W1[e]) ⊙ (x·W3[e]) over the plan's
// segments in one GEMM launch (Device.GroupedSwiGLU); gate and up (nil: not kept) receive the products.
// Rows from offsets[E] on are not written.
func (b *Backend) GroupedSwiGLU(x, w1, w3, plan *tensor.Dense, h, gate, up *tensor.Dense) error {
	const what = "grouped swiglu"
	if x == nil || w1 == nil || w3 == nil || h == nil {
		return fmt.Errorf("cudaops: %s: x, W1, W3 and h must not be nil: %w", what, ops.ErrShape)
	}
	dt := x.Dtype()
	if dt != tensor.Float32 && dt != tensor.Float64 && dt != ops.BFloat16 {
		return fmt.Errorf("cudaops: %s: x has dtype %v, want float32, float64 or bfloat16: %w", what, dt, ops.ErrDtype)
	}
	if x.Shape().Dims() != 2 || w1.Shape().Dims() != 3 {
		return fmt.Errorf("cudaops: %s: x %v and W1 %v, want [N,In] and [E,In,F]: %w", what, x.Shape(), w1.Shape(), ops.ErrShape)
	}
	N, In := x.Shape()[0], x.Shape()[1]
	E, F := w1.Shape()[0], w1.Shape()[2]
	if w1.Shape()[1] != In {
		return fmt.Errorf("cudaops: %s: x %v and W1 %v disagree on In: %w", what, x.Shape(), w1.Shape(), ops.ErrShape)
	}
	px, err := b.buf(what, "x", x, dt)
	if err != nil {
		return err
	}
	pw1, err := b.buf(what, "W1", w1, dt)
	if err != nil {
		return err
	}
	pw3, err := b.buf(what, "W3", w3, dt, E, In, F)
	if err != nil {
		return err
	}
	ph, err := b.buf(what, "h", h, dt, N, F)
	if err != nil {
		return err
	}
	ins := []*tensor.Dense{x, w1, w3, plan}
	outs := []*tensor.Dense{h}
	ptrs := [2]cu.DevicePtr{}
	for i, t := range []*tensor.Dense{gate, up} {
		if t == nil {
			continue
		}
		if ptrs[i], err = b.buf(what, [2]string{"gate", "up"}[i], t, dt, N, F); err != nil {
			return err
		}
		outs = append(outs, t)
	}
	offsets, err := b.planOffsets(what, plan, N, E)
	if err != nil {
		return err
	}
	for i, o := range outs {
		others := append(append([]*tensor.Dense{}, ins...), outs[i+1:]...)
		if err := noOverlap(what, o, others...); err != nil {
			return err
		}
	}
	return b.dev.GroupedSwiGLU(dt, px, pw1, pw3, offsets, ph, ptrs[0], ptrs[1], E, N, In, F)
}
