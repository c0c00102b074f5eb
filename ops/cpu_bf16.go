package ops

import (
	"github.com/expertrt/expertrt-go/internal/bf16"
	"gorgonia.org/tensor"
)

// bfloat16 kernels of the CPU backend (the rules of MixedPrecisionBackend). They are the reference:
// sums and products are formed in float64 (every product of a bfloat16 and a float32 is exact there)
// and each result is rounded once, except the matrix products, which accumulate in float32 as the GPU's
// tensor cores do (gonum's float32 GEMM on the widened operands), then round the float32 result once.

// mixedBF16 reports whether a kernel call involves bfloat16 operands (and so follows the mixed rules).
func mixedBF16(ts ...*tensor.Dense) bool {
	for _, t := range ts {
		if t != nil && isBF16(t.Dtype()) {
			return true
		}
	}
	return false
}

func bf16s(what, name string, t *tensor.Dense) ([]BF16, error) {
	if t == nil || !isBF16(t.Dtype()) {
		return nil, failf(ErrDtype, "%s: %s must be bfloat16, got %v", what, name, dtypeOf(t))
	}
	if t.Shape().TotalSize() == 0 {
		return nil, nil
	}
	d, ok := t.Data().([]BF16)
	if !ok {
		return nil, failf(ErrDtype, "%s: %s holds %T, want []ops.BF16", what, name, t.Data())
	}
	return d, nil
}

func f32s(what, name string, t *tensor.Dense) ([]float32, error) {
	if t == nil || t.Dtype() != tensor.Float32 {
		return nil, failf(ErrDtype, "%s: %s must be float32, got %v", what, name, dtypeOf(t))
	}
	if t.Shape().TotalSize() == 0 {
		return nil, nil
	}
	return floats[float32](t)
}

func dtypeOf(t *tensor.Dense) any {
	if t == nil {
		return "nil"
	}
	return t.Dtype()
}

// widen returns the float32 values of a bfloat16 or float32 tensor (a copy for bfloat16).
func widen(what, name string, t *tensor.Dense) ([]float32, error) {
	if t != nil && t.Dtype() == tensor.Float32 {
		return f32s(what, name, t)
	}
	b, err := bf16s(what, name, t)
	if err != nil {
		return nil, failf(ErrDtype, "%s: %s must be bfloat16 or float32, got %v", what, name, dtypeOf(t))
	}
	return bf16.Float32s(b), nil
}

// narrowInto writes float32 values into a float32 or bfloat16 tensor (rounded once).
func narrowInto(what, name string, dst *tensor.Dense, v []float32) error {
	if dst.Dtype() == tensor.Float32 {
		d, err := f32s(what, name, dst)
		if err != nil {
			return err
		}
		copy(d, v)
		return nil
	}
	d, err := bf16s(what, name, dst)
	if err != nil {
		return err
	}
	parallelRows(len(d), 1<<15, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			d[i] = bf16.FromFloat32(v[i])
		}
	})
	return nil
}

// Cast converts src into dst's dtype (float32, float64, bfloat16).
func (cpuBackend) Cast(src, dst *tensor.Dense) error {
	const what = "cast"
	if src == nil || dst == nil {
		return failf(ErrShape, "%s: nil tensor", what)
	}
	n := src.Shape().TotalSize()
	if dst.Shape().TotalSize() != n {
		return failf(ErrShape, "%s: src %v and dst %v differ in size", what, src.Shape(), dst.Shape())
	}
	for _, c := range []struct {
		name string
		t    *tensor.Dense
	}{{"src", src}, {"dst", dst}} {
		if err := checkDtype(what, c.name, c.t.Dtype(), anyAct); err != nil {
			return err
		}
		if !c.t.IsNativelyAccessible() || (n > 0 && c.t.RequiresIterator()) {
			return failf(ErrUnsupported, "%s: %s must be a contiguous host tensor", what, c.name)
		}
	}
	if n == 0 {
		return nil
	}
	conv := castFunc(src, dst)
	parallelRows(n, 1<<15, conv)
	return nil
}

// castFunc returns the conversion loop of src's dtype to dst's (both validated).
func castFunc(src, dst *tensor.Dense) func(lo, hi int) {
	switch s := src.Data().(type) {
	case []float32:
		switch d := dst.Data().(type) {
		case []float32:
			return func(lo, hi int) { copy(d[lo:hi], s[lo:hi]) }
		case []float64:
			return func(lo, hi int) {
				for i := lo; i < hi; i++ {
					d[i] = float64(s[i])
				}
			}
		case []BF16:
			return func(lo, hi int) {
				for i := lo; i < hi; i++ {
					d[i] = bf16.FromFloat32(s[i])
				}
			}
		}
	case []float64:
		switch d := dst.Data().(type) {
		case []float32:
			return func(lo, hi int) {
				for i := lo; i < hi; i++ {
					d[i] = float32(s[i])
				}
			}
		case []float64:
			return func(lo, hi int) { copy(d[lo:hi], s[lo:hi]) }
		case []BF16:
			return func(lo, hi int) {
				for i := lo; i < hi; i++ {
					d[i] = bf16.FromFloat64(s[i])
				}
			}
		}
	case []BF16:
		switch d := dst.Data().(type) {
		case []float32:
			return func(lo, hi int) {
				for i := lo; i < hi; i++ {
					d[i] = s[i].Float32()
				}
			}
		case []float64:
			return func(lo, hi int) {
				for i := lo; i < hi; i++ {
					d[i] = s[i].Float64()
				}
			}
		case []BF16:
			return func(lo, hi int) { copy(d[lo:hi], s[lo:hi]) }
		}
	}
	return func(int, int) {} // unreachable: dtypes were checked
}

// dispatchBF16CPU: out (bfloat16) [T*K,H] from x (bfloat16 or float32) [T,H], scaled by w (float32) when
// given; rows of slots a capacity plan dropped (row >= offsets[E]) are zero.
func dispatchBF16CPU(x, w, plan *tensor.Dense, out *tensor.Dense) error {
	const what = "dispatch (bfloat16)"
	os, err := bf16s(what, "the output", out)
	if err != nil {
		return err
	}
	var ws []float32
	if w != nil {
		if ws, err = f32s(what, "the weights", w); err != nil {
			return err
		}
	}
	nT, h := x.Shape()[0], x.Shape()[1]
	k := out.Shape()[0] / nT
	pv, err := planOf(plan, nT, k)
	if err != nil {
		return err
	}
	limit := pv.Offsets[pv.E]
	dst := func(t, j int) ([]BF16, bool) {
		r := pv.RowOf[t*k+j]
		return os[int(r)*h : (int(r)+1)*h], r >= limit
	}
	scale := func(t, j int) float64 { return float64(ws[t*k+j]) }
	switch xs := x.Data().(type) {
	case []BF16:
		parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
			for t := lo; t < hi; t++ {
				src := xs[t*h : (t+1)*h]
				for j := 0; j < k; j++ {
					d, dropped := dst(t, j)
					if dropped {
						clear(d)
						continue
					}
					if ws == nil {
						copy(d, src) // bytes only move
						continue
					}
					s := scale(t, j)
					for i, v := range src {
						d[i] = bf16.FromFloat64(s * v.Float64()) // exact product, one rounding
					}
				}
			}
		})
	case []float32:
		parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
			for t := lo; t < hi; t++ {
				src := xs[t*h : (t+1)*h]
				for j := 0; j < k; j++ {
					d, dropped := dst(t, j)
					if dropped {
						clear(d)
						continue
					}
					s := 1.0
					if ws != nil {
						s = scale(t, j)
					}
					for i, v := range src {
						d[i] = bf16.FromFloat64(s * float64(v))
					}
				}
			}
		})
	default:
		return failf(ErrDtype, "%s: x must be bfloat16 or float32, got %v", what, x.Dtype())
	}
	return nil
}

// combineBF16CPU: out (bfloat16 or float32) [T,H] = sum_j w[t,j] ye[rowOf(t,j)], ye bfloat16, w float32
// or nil; summed in float64 in increasing j, rounded once; slots a capacity plan dropped take no part.
func combineBF16CPU(ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	const what = "combine (bfloat16)"
	ys, err := bf16s(what, "the expert outputs", ye)
	if err != nil {
		return err
	}
	var ws []float32
	if w != nil {
		if ws, err = f32s(what, "the weights", w); err != nil {
			return err
		}
	}
	var o32 []float32
	var o16 []BF16
	switch out.Dtype() {
	case tensor.Float32:
		o32, err = f32s(what, "the output", out)
	default:
		o16, err = bf16s(what, "the output (bfloat16 or float32)", out)
	}
	if err != nil {
		return err
	}
	nT, h := out.Shape()[0], out.Shape()[1]
	k := ye.Shape()[0] / nT
	pv, err := planOf(plan, nT, k)
	if err != nil {
		return err
	}
	parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
		acc := make([]float64, h)
		for t := lo; t < hi; t++ {
			clear(acc)
			for j := 0; j < k; j++ {
				r := int(pv.RowOf[t*k+j])
				if r >= int(pv.Offsets[pv.E]) {
					continue
				}
				row := ys[r*h : (r+1)*h]
				s := 1.0
				if ws != nil {
					s = float64(ws[t*k+j])
				}
				for i, v := range row {
					acc[i] += s * v.Float64()
				}
			}
			if o32 != nil {
				for i, v := range acc {
					o32[t*h+i] = float32(v)
				}
			} else {
				for i, v := range acc {
					o16[t*h+i] = bf16.FromFloat64(v)
				}
			}
		}
	})
	return nil
}

// combineGradWeightsBF16CPU: dw (float32) [T,K] = <dy[t], ye[rowOf(t,j)]>, dy bfloat16 or float32, ye
// bfloat16; accumulated in float64; 0 for slots a capacity plan dropped.
func combineGradWeightsBF16CPU(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	const what = "combine grad weights (bfloat16)"
	ys, err := bf16s(what, "the expert outputs", ye)
	if err != nil {
		return err
	}
	out, err := f32s(what, "dw", dw)
	if err != nil {
		return err
	}
	g, err := widen(what, "dy", dy)
	if err != nil {
		return err
	}
	nT, h := dy.Shape()[0], dy.Shape()[1]
	k := dw.Shape()[1]
	pv, err := planOf(plan, nT, k)
	if err != nil {
		return err
	}
	parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			gt := g[t*h : (t+1)*h]
			for j := 0; j < k; j++ {
				r := int(pv.RowOf[t*k+j])
				if r >= int(pv.Offsets[pv.E]) {
					out[t*k+j] = 0
					continue
				}
				row := ys[r*h : (r+1)*h]
				var s float64
				for i, v := range row {
					s += float64(gt[i]) * v.Float64()
				}
				out[t*k+j] = float32(s)
			}
		}
	})
	return nil
}

// f32Tensor wraps float32 values as a host tensor of the given shape.
func f32Tensor(v []float32, shape ...int) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
}

// outF32 returns a float32 tensor to compute into: out itself when it is float32, else a temporary.
func outF32(out *tensor.Dense) *tensor.Dense {
	if out.Dtype() == tensor.Float32 {
		return out
	}
	return tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(out.Shape().Clone()...))
}

// finishF32 rounds a temporary float32 result into out (nothing to do when out was computed in place).
func finishF32(what string, tmp, out *tensor.Dense) error {
	if tmp == out || out.Shape().TotalSize() == 0 {
		return nil
	}
	v, err := floats[float32](tmp)
	if err != nil {
		return err
	}
	return narrowInto(what, "the output", out, v)
}

// checkGemmBF16 validates the dtypes of a bfloat16 product: both operands bfloat16, out bfloat16 or
// float32.
func checkGemmBF16(what string, a, b, out *tensor.Dense) error {
	if !isBF16(a.Dtype()) || !isBF16(b.Dtype()) {
		return failf(ErrDtype, "%s: bfloat16 products take two bfloat16 operands, got %v and %v", what, a.Dtype(), b.Dtype())
	}
	if !isBF16(out.Dtype()) && out.Dtype() != tensor.Float32 {
		return failf(ErrDtype, "%s: the output of a bfloat16 product is bfloat16 or float32, got %v", what, out.Dtype())
	}
	return nil
}

// widenedTensor returns a float32 host copy of a bfloat16 tensor.
func widenedTensor(what, name string, t *tensor.Dense) (*tensor.Dense, error) {
	if t.Shape().TotalSize() == 0 {
		return tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(t.Shape().Clone()...)), nil
	}
	v, err := widen(what, name, t)
	if err != nil {
		return nil, err
	}
	return f32Tensor(v, t.Shape().Clone()...), nil
}

func groupedMatMulBF16CPU(x, w, plan *tensor.Dense, transposeW bool, out *tensor.Dense) error {
	const what = "grouped matmul (bfloat16)"
	if err := checkGemmBF16(what, x, w, out); err != nil {
		return err
	}
	xf, err := widenedTensor(what, "x", x)
	if err != nil {
		return err
	}
	wf, err := widenedTensor(what, "w", w)
	if err != nil {
		return err
	}
	tmp := outF32(out)
	if out.Shape().TotalSize() == 0 {
		return nil
	}
	if err := groupedMatMulCPU[float32](xf, wf, plan, transposeW, tmp); err != nil {
		return err
	}
	return finishF32(what, tmp, out)
}

func groupedMatMulGradWBF16CPU(x, dy, plan *tensor.Dense, dW *tensor.Dense) error {
	const what = "grouped matmul grad W (bfloat16)"
	if err := checkGemmBF16(what, x, dy, dW); err != nil {
		return err
	}
	xf, err := widenedTensor(what, "x", x)
	if err != nil {
		return err
	}
	gf, err := widenedTensor(what, "dy", dy)
	if err != nil {
		return err
	}
	if dW.Shape().TotalSize() == 0 {
		return nil
	}
	tmp := outF32(dW)
	if err := groupedMatMulGradWCPU[float32](xf, gf, plan, tmp); err != nil {
		return err
	}
	return finishF32(what, tmp, dW)
}

func matMulBF16CPU(a, b *tensor.Dense, transA, transB bool, out *tensor.Dense, m, k, n int) error {
	const what = "matmul (bfloat16)"
	if err := checkGemmBF16(what, a, b, out); err != nil {
		return err
	}
	if m == 0 || n == 0 {
		return nil
	}
	af, err := widenedTensor(what, "a", a)
	if err != nil {
		return err
	}
	bf, err := widenedTensor(what, "b", b)
	if err != nil {
		return err
	}
	tmp := outF32(out)
	if err := matMulCPU[float32](af, bf, transA, transB, tmp, m, k, n); err != nil {
		return err
	}
	return finishF32(what, tmp, out)
}

func swigluBF16CPU(gate, up, out *tensor.Dense) error {
	const what = "SwiGLU (bfloat16)"
	g, err := bf16s(what, "gate", gate)
	if err != nil {
		return err
	}
	u, err := bf16s(what, "up", up)
	if err != nil {
		return err
	}
	o, err := bf16s(what, "out", out)
	if err != nil {
		return err
	}
	parallelRows(len(o), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			a := g[i].Float64()
			o[i] = bf16.FromFloat64(a * sigmoid(a) * u[i].Float64())
		}
	})
	return nil
}

func swigluGradBF16CPU(gate, up, dout, dgate, dup *tensor.Dense) error {
	const what = "SwiGLU gradient (bfloat16)"
	var s [5][]BF16
	for i, c := range []struct {
		name string
		t    *tensor.Dense
	}{{"gate", gate}, {"up", up}, {"dout", dout}, {"dgate", dgate}, {"dup", dup}} {
		var err error
		if s[i], err = bf16s(what, c.name, c.t); err != nil {
			return err
		}
	}
	g, u, d, dg, du := s[0], s[1], s[2], s[3], s[4]
	parallelRows(len(d), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			a, dy := g[i].Float64(), d[i].Float64()
			sg := sigmoid(a)
			dg[i] = bf16.FromFloat64(dy * u[i].Float64() * sg * (1 + a*(1-sg)))
			du[i] = bf16.FromFloat64(dy * a * sg)
		}
	})
	return nil
}
