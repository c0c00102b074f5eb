//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// Dispatch and combine (permute.cu): the row permutations between token order and expert-major order,
// scalar and 16-byte vector variants, and the fused combine backward; the Backend methods over them.

// Dispatch writes out[rowOf[t*K+j]] = scale * x[t] (x [T,H], out [T*K,H]); scale = w[t,j] or 1 (w == 0).
// kept points at the plan's offsets[E]: slots with rowOf >= *kept (a capacity plan's dropped slots) get
// a zero row. The output rows are written with plain stores (they stay in L2 for the next kernel) unless
// the handle's option StreamingDispatchStores.
func (d *Device) Dispatch(dt tensor.Dtype, x, w, rowOf, kept, out cu.DevicePtr, T, K, H int) error {
	if err := checkDims("dispatch", T, K, H); err != nil {
		return err
	}
	name, nv, err := rowKernel("dispatch", dt, H, x, out)
	if err != nil {
		return err
	}
	return d.launch(name, d.warpGrid(T), ptrArg(x), ptrArg(w), ptrArg(rowOf), ptrArg(kept), ptrArg(out), i32(T), i32(K), i32(nv), i32(b2i(!d.opts.StreamingDispatchStores)))
}

// Combine writes out[t] = sum_j scale * ye[rowOf[t*K+j]] in increasing j over the kept slots
// (rowOf < *kept) (ye [T*K,H], out [T,H]).
func (d *Device) Combine(dt tensor.Dtype, ye, w, rowOf, kept, out cu.DevicePtr, T, K, H int) error {
	if err := checkDims("combine", T, K, H); err != nil {
		return err
	}
	name, nv, err := rowKernel("combine", dt, H, ye, out)
	if err != nil {
		return err
	}
	return d.launch(name, d.warpGrid(T), ptrArg(ye), ptrArg(w), ptrArg(rowOf), ptrArg(kept), ptrArg(out), i32(T), i32(K), i32(nv))
}

// CombineBackward writes dw[t,j] = <dy[t], ye[rowOf[t*K+j]]> and, when dye != 0, also
// dye[rowOf[t*K+j]] = w[t,j] * dy[t] in the same pass (the fused combine backward); dropped slots
// (rowOf >= *kept) get dw = 0 and a zero dye row.
func (d *Device) CombineBackward(dt tensor.Dtype, dy, ye, w, rowOf, kept, dw, dye cu.DevicePtr, T, K, H int) error {
	if err := checkDims("combine backward", T, K, H); err != nil {
		return err
	}
	if dye != 0 && w == 0 {
		return fmt.Errorf("cudaops: combine backward: dye needs the weights w")
	}
	name, nv, err := rowKernel("combine_bwd", dt, H, dy, ye, dye)
	if err != nil {
		return err
	}
	return d.launch(name, d.warpGrid(T), ptrArg(dy), ptrArg(ye), ptrArg(w), ptrArg(rowOf), ptrArg(kept), ptrArg(dw), ptrArg(dye), i32(T), i32(K), i32(nv))
}

// permuteArgs validates the operands shared by dispatch and combine: tokens [T,H], packed [T*K,H],
// optional w [T,K], plan.
func (b *Backend) permuteArgs(what string, tokens, packed, w, plan *tensor.Dense) (dt tensor.Dtype, pt, pp, pw, rowOf, kept cu.DevicePtr, T, K, H int, err error) {
	if dt, err = floatDtype(what, tokens); err != nil {
		return
	}
	pt, pp, pw, rowOf, kept, T, K, H, err = b.permuteOperands(what, tokens, packed, w, plan, dt, dt, dt, "w")
	return
}

// permuteOperands validates token rows [T,H] of dtype tokDt, expert-major rows [T*K,H] of packedDt,
// optional weights [T,K] of wDt (named wName in errors) and the plan, and returns their addresses (the
// rowOf section of the plan, and kept = &offsets[E]: slots of rows >= *kept were dropped by a capacity),
// T, K and H.
func (b *Backend) permuteOperands(what string, tokens, packed, w, plan *tensor.Dense, tokDt, packedDt, wDt tensor.Dtype, wName string) (pt, pp, pw, rowOf, kept cu.DevicePtr, T, K, H int, err error) {
	if T, H, err = dims2(what, "token rows", tokens); err != nil {
		return
	}
	var N, H2 int
	if N, H2, err = dims2(what, "expert-major rows", packed); err != nil {
		return
	}
	if H2 != H || T == 0 || N%T != 0 {
		err = fmt.Errorf("cudaops: %s: shapes %v and %v are not [T,H] and [T*K,H]: %w", what, tokens.Shape(), packed.Shape(), ops.ErrShape)
		return
	}
	K = N / T
	var E int
	if E, err = planExperts(what, plan, T, K); err != nil {
		return
	}
	if pt, err = b.buf(what, "token rows", tokens, tokDt, T, H); err != nil {
		return
	}
	if pp, err = b.buf(what, "expert-major rows", packed, packedDt, N, H); err != nil {
		return
	}
	if w != nil {
		if pw, err = b.buf(what, wName, w, wDt, T, K); err != nil {
			return
		}
	}
	var pplan cu.DevicePtr
	if pplan, err = b.buf(what, "plan", plan, tensor.Int32, ops.PlanLen(T, K, E)); err != nil {
		return
	}
	var offsets cu.DevicePtr
	_, offsets, rowOf, _ = PlanSections(pplan, T, K, E)
	kept = offsetPtr(offsets, int64(E)*4)
	return
}

func (b *Backend) Dispatch(x, w, plan *tensor.Dense, out *tensor.Dense) error {
	if hasBF16(x, out) {
		return b.dispatchBF16(x, w, plan, out)
	}
	dt, px, pout, pw, rowOf, kept, T, K, H, err := b.permuteArgs("dispatch", x, out, w, plan)
	if err != nil {
		return err
	}
	return b.dev.Dispatch(dt, px, pw, rowOf, kept, pout, T, K, H)
}

func (b *Backend) Combine(ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	if hasBF16(ye, out) {
		return b.combineBF16(ye, w, plan, out)
	}
	dt, pout, pye, pw, rowOf, kept, T, K, H, err := b.permuteArgs("combine", out, ye, w, plan)
	if err != nil {
		return err
	}
	return b.dev.Combine(dt, pye, pw, rowOf, kept, pout, T, K, H)
}

func (b *Backend) CombineGradWeights(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	if hasBF16(dy, ye) {
		return b.combineGradWeightsBF16(dy, ye, plan, dw)
	}
	dt, pdy, pye, _, rowOf, kept, T, K, H, err := b.permuteArgs("combine grad weights", dy, ye, nil, plan)
	if err != nil {
		return err
	}
	pdw, err := b.buf("combine grad weights", "dw", dw, dt, T, K)
	if err != nil {
		return err
	}
	return b.dev.CombineBackward(dt, pdy, pye, 0, rowOf, kept, pdw, 0, T, K, H)
}

// CombineBackward is the fused backward of Combine: dye [T*K,H] = Dispatch(dy, w) and
// dw [T,K] = CombineGradWeights(dy, ye) in one pass over dy and ye (bitwise equal to the two calls).
func (b *Backend) CombineBackward(dy, ye, w, plan *tensor.Dense, dye, dw *tensor.Dense) error {
	const what = "combine backward"
	dt, pdy, pye, pw, rowOf, kept, T, K, H, err := b.permuteArgs(what, dy, ye, w, plan)
	if err != nil {
		return err
	}
	if w == nil {
		return fmt.Errorf("cudaops: %s: w is nil: %w", what, ops.ErrShape)
	}
	pdw, err := b.buf(what, "dw", dw, dt, T, K)
	if err != nil {
		return err
	}
	pdye, err := b.buf(what, "dye", dye, dt, T*K, H)
	if err != nil {
		return err
	}
	return b.dev.CombineBackward(dt, pdy, pye, pw, rowOf, kept, pdw, pdye, T, K, H)
}
