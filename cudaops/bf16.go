//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// Mixed precision (bfloat16) on the CUDA backend, following ops.MixedPrecisionBackend: Cast, the
// permutations with bfloat16 rows (bf16.cu), the fused SwiGLU and the engine's Add. The GEMMs on
// bfloat16 operands are the GEMM family's (gemm.cu, Bf16Tile: mma.sync m16n8k16, float32 accumulation,
// bfloat16 or float32 output; gemm_backend.go, matmul.go).

// hasBF16 reports whether any of ts is a bfloat16 tensor.
func hasBF16(ts ...*tensor.Dense) bool {
	for _, t := range ts {
		if t != nil && t.Dtype() == ops.BFloat16 {
			return true
		}
	}
	return false
}

// castSuffix names the kernel converting from to to (bf16.cu).
func castSuffix(from, to tensor.Dtype) (string, error) {
	name := func(dt tensor.Dtype) string {
		switch dt {
		case tensor.Float32:
			return "f32"
		case tensor.Float64:
			return "f64"
		case ops.BFloat16:
			return "bf16"
		}
		return ""
	}
	f, t := name(from), name(to)
	if f == "" || t == "" {
		return "", fmt.Errorf("cudaops: cast from %v to %v: want float32, float64 or bfloat16: %w", from, to, ops.ErrDtype)
	}
	return f + "_" + t, nil
}

// Cast writes dst = src converted to dst's dtype (ops.MixedPrecisionBackend.Cast): bit for bit the CPU
// reference (NaN payloads aside for float64 <-> float32). Equal dtypes copy.
func (b *Backend) Cast(src, dst *tensor.Dense) error {
	const what = "cast"
	if src == nil || dst == nil {
		return fmt.Errorf("cudaops: %s: nil tensor: %w", what, ops.ErrShape)
	}
	if _, err := castSuffix(src.Dtype(), dst.Dtype()); err != nil && src.Dtype() != dst.Dtype() {
		return err
	}
	n := numel(src)
	if numel(dst) != n {
		return fmt.Errorf("cudaops: %s: src %v and dst %v differ in size: %w", what, src.Shape(), dst.Shape(), ops.ErrShape)
	}
	ps, err := b.buf(what, "src", src, src.Dtype())
	if err != nil {
		return err
	}
	pd, err := b.buf(what, "dst", dst, dst.Dtype())
	if err != nil {
		return err
	}
	if err := noOverlap(what, dst, src); err != nil {
		return err
	}
	return b.dev.Cast(src.Dtype(), dst.Dtype(), ps, pd, int64(n))
}

// Cast launches the conversion of n elements from src (dtype from) to dst (dtype to); equal dtypes
// copy.
func (d *Device) Cast(from, to tensor.Dtype, src, dst cu.DevicePtr, n int64) error {
	if n == 0 {
		return nil
	}
	if from == to {
		if from != tensor.Float32 && from != tensor.Float64 && from != ops.BFloat16 {
			return fmt.Errorf("cudaops: cast of %v: %w", from, ops.ErrDtype)
		}
		return d.copyDtoD(dst, src, n*int64(from.Size()))
	}
	suf, err := castSuffix(from, to)
	if err != nil {
		return err
	}
	vec := vecOK(uintptr(src), uintptr(dst))
	return d.launch("cast_"+suf, d.flatGrid((n+7)/8), ptrArg(src), ptrArg(dst), i64(n), i32(b2i(vec)))
}

// bf16PermuteArgs validates the operands of a bfloat16 permutation (permuteOperands): token rows of
// dtype tokDt, bfloat16 expert-major rows, optional float32 weights.
func (b *Backend) bf16PermuteArgs(what string, tokens, packed, w, plan *tensor.Dense, tokDt tensor.Dtype) (pt, pp, pw, rowOf, kept cu.DevicePtr, T, K, H int, err error) {
	return b.permuteOperands(what, tokens, packed, w, plan, tokDt, ops.BFloat16, tensor.Float32, "w (float32 with bfloat16 rows)")
}

// bf16FloatSide returns the dtype of the float side of a bfloat16 permutation (float32 or bfloat16).
func bf16FloatSide(what, name string, t *tensor.Dense) (tensor.Dtype, error) {
	if t == nil {
		return tensor.Dtype{}, fmt.Errorf("cudaops: %s: %s is nil: %w", what, name, ops.ErrShape)
	}
	if dt := t.Dtype(); dt == ops.BFloat16 || dt == tensor.Float32 {
		return dt, nil
	}
	return tensor.Dtype{}, fmt.Errorf("cudaops: %s: %s has dtype %v; with bfloat16 rows it must be bfloat16 or float32: %w", what, name, t.Dtype(), ops.ErrDtype)
}

func (b *Backend) dispatchBF16(x, w, plan, out *tensor.Dense) error {
	const what = "dispatch (bfloat16)"
	dt, err := bf16FloatSide(what, "x", x)
	if err != nil {
		return err
	}
	px, pout, pw, rowOf, kept, T, K, H, err := b.bf16PermuteArgs(what, x, out, w, plan, dt)
	if err != nil {
		return err
	}
	return b.dev.DispatchBF16(dt, px, pw, rowOf, kept, pout, T, K, H)
}

func (b *Backend) combineBF16(ye, w, plan, out *tensor.Dense) error {
	const what = "combine (bfloat16)"
	dt, err := bf16FloatSide(what, "out", out)
	if err != nil {
		return err
	}
	pout, pye, pw, rowOf, kept, T, K, H, err := b.bf16PermuteArgs(what, out, ye, w, plan, dt)
	if err != nil {
		return err
	}
	return b.dev.CombineBF16(dt, pye, pw, rowOf, kept, pout, T, K, H)
}

func (b *Backend) combineGradWeightsBF16(dy, ye, plan, dw *tensor.Dense) error {
	const what = "combine grad weights (bfloat16)"
	dt, err := bf16FloatSide(what, "dy", dy)
	if err != nil {
		return err
	}
	pdy, pye, _, rowOf, kept, T, K, H, err := b.bf16PermuteArgs(what, dy, ye, nil, plan, dt)
	if err != nil {
		return err
	}
	pdw, err := b.buf(what, "dw", dw, tensor.Float32, T, K)
	if err != nil {
		return err
	}
	return b.dev.CombineGradWeightsBF16(dt, pdy, pye, rowOf, kept, pdw, T, K, H)
}

// bf16RowKernel picks the 8-element vector variant of a bfloat16 row kernel when H is a multiple of 8
// and every row start is 16-byte aligned.
func bf16RowKernel(base string, side tensor.Dtype, H int, ptrs ...cu.DevicePtr) string {
	name := base + "f32"
	if side == ops.BFloat16 {
		name = base + "bf16"
	}
	for _, p := range ptrs {
		if p != 0 && uintptr(p)%16 != 0 {
			return name
		}
	}
	if H%8 != 0 {
		return name
	}
	return name + "_v8"
}

// DispatchBF16 writes out (bfloat16) [rowOf[t*K+j]] = scale * x[t] (x [T,H] bfloat16 or float32, the
// dtype src; scale = w[t,j] (float32) or 1 when w == 0), rounded once; unscaled bfloat16 rows are
// copied bit for bit; rows of dropped slots (rowOf >= *kept) are zero.
func (d *Device) DispatchBF16(src tensor.Dtype, x, w, rowOf, kept, out cu.DevicePtr, T, K, H int) error {
	if err := checkDims("dispatch", T, K, H); err != nil {
		return err
	}
	name := bf16RowKernel("dispatch_bf16_from_", src, H, x, out)
	return d.launch(name, d.warpGrid(T), ptrArg(x), ptrArg(w), ptrArg(rowOf), ptrArg(kept), ptrArg(out), i32(T), i32(K), i32(H), i32(b2i(!d.opts.StreamingDispatchStores)))
}

// CombineBF16 writes out[t] (dtype dst: bfloat16 or float32) = sum_j scale * ye[rowOf[t*K+j]] (ye
// bfloat16, scale = w[t,j] float32 or 1) over the kept slots (rowOf < *kept), summed in double in
// increasing j and rounded once.
func (d *Device) CombineBF16(dst tensor.Dtype, ye, w, rowOf, kept, out cu.DevicePtr, T, K, H int) error {
	if err := checkDims("combine", T, K, H); err != nil {
		return err
	}
	name := bf16RowKernel("combine_bf16_to_", dst, H, ye, out)
	return d.launch(name, d.warpGrid(T), ptrArg(ye), ptrArg(w), ptrArg(rowOf), ptrArg(kept), ptrArg(out), i32(T), i32(K), i32(H))
}

// CombineGradWeightsBF16 writes dw[t,j] (float32) = <dy[t], ye[rowOf[t*K+j]]> (ye bfloat16, dy of dtype
// dyDt: bfloat16 or float32), accumulated in double; 0 for dropped slots (rowOf >= *kept).
func (d *Device) CombineGradWeightsBF16(dyDt tensor.Dtype, dy, ye, rowOf, kept, dw cu.DevicePtr, T, K, H int) error {
	if err := checkDims("combine grad weights", T, K, H); err != nil {
		return err
	}
	name := bf16RowKernel("combine_gradw_bf16_dy_", dyDt, H, dy, ye)
	return d.launch(name, d.warpGrid(T), ptrArg(dy), ptrArg(ye), ptrArg(rowOf), ptrArg(kept), ptrArg(dw), i32(T), i32(K), i32(H))
}

// bf16Elementwise validates bfloat16 tensors of one shape on this device.
func (b *Backend) bf16Elementwise(what string, names []string, ts ...*tensor.Dense) ([]cu.DevicePtr, int64, error) {
	ps := make([]cu.DevicePtr, len(ts))
	for i, t := range ts {
		if t == nil || !t.Shape().Eq(ts[0].Shape()) {
			return nil, 0, fmt.Errorf("cudaops: %s: %s has shape %v, %s %v: %w", what, names[i], shapeOf(t), names[0], ts[0].Shape(), ops.ErrShape)
		}
		var err error
		if ps[i], err = b.buf(what, names[i], t, ops.BFloat16); err != nil {
			return nil, 0, err
		}
	}
	return ps, int64(numel(ts[0])), nil
}

// SwiGLUBF16 launches out = bf16(silu(gate) * up) over n bfloat16 elements (float32 arithmetic).
func (d *Device) SwiGLUBF16(gate, up, out cu.DevicePtr, n int64) error {
	if n == 0 {
		return nil
	}
	vec := vecOK(uintptr(gate), uintptr(up), uintptr(out))
	return d.launch("swiglu_bf16", d.flatGrid((n+7)/8), ptrArg(gate), ptrArg(up), ptrArg(out), i64(n), i32(b2i(vec)))
}

// SwiGLUGradBF16 launches the bfloat16 SwiGLU backward over n elements.
func (d *Device) SwiGLUGradBF16(gate, up, dout, dgate, dup cu.DevicePtr, n int64) error {
	if n == 0 {
		return nil
	}
	vec := vecOK(uintptr(gate), uintptr(up), uintptr(dout), uintptr(dgate), uintptr(dup))
	return d.launch("swiglu_grad_bf16", d.flatGrid((n+7)/8), ptrArg(gate), ptrArg(up), ptrArg(dout), ptrArg(dgate), ptrArg(dup), i64(n), i32(b2i(vec)))
}

// addBF16 is the engine's bfloat16 Add (devengine.Kernels.Binary with OpAdd): vector operands only.
func (k cudaKernels) addBF16(a, b, out uintptr, n int64, incr bool) error {
	if n == 0 {
		return nil
	}
	vec := vecOK(a, b, out)
	return k.d.launch("ew_add_bf16", k.d.flatGrid((n+7)/8), ptrArg(cu.DevicePtr(a)), ptrArg(cu.DevicePtr(b)), ptrArg(cu.DevicePtr(out)), i64(n), i32(b2i(incr)), i32(b2i(vec)))
}
