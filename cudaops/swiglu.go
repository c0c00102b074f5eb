//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// sameShapeArgs validates float tensors of one dtype and shape on this device (names[i] for ts[i]).
func (b *Backend) sameShapeArgs(what string, names []string, ts ...*tensor.Dense) (tensor.Dtype, []cu.DevicePtr, int64, error) {
	dt, err := floatDtype(what, ts[0])
	if err != nil {
		return dt, nil, 0, fmt.Errorf("%v: %w", err, ops.ErrDtype)
	}
	ps := make([]cu.DevicePtr, len(ts))
	for i, t := range ts {
		if t == nil || !t.Shape().Eq(ts[0].Shape()) {
			return dt, nil, 0, fmt.Errorf("cudaops: %s: %s has shape %v, %s %v: %w", what, names[i], shapeOf(t), names[0], ts[0].Shape(), ops.ErrShape)
		}
		if ps[i], err = b.buf(what, names[i], t, dt); err != nil {
			return dt, nil, 0, err
		}
	}
	return dt, ps, int64(numel(ts[0])), nil
}

// SwiGLU writes out = silu(gate) * up, silu(a) = a * sigmoid(a) (elementwise.cu, 16-byte vectors when
// aligned).
func (b *Backend) SwiGLU(gate, up *tensor.Dense, out *tensor.Dense) error {
	if hasBF16(gate) {
		ps, n, err := b.bf16Elementwise("SwiGLU", []string{"gate", "up", "out"}, gate, up, out)
		if err != nil {
			return err
		}
		return b.dev.SwiGLUBF16(ps[0], ps[1], ps[2], n)
	}
	dt, ps, n, err := b.sameShapeArgs("SwiGLU", []string{"gate", "up", "out"}, gate, up, out)
	if err != nil {
		return err
	}
	return b.dev.SwiGLU(dt, ps[0], ps[1], ps[2], n)
}

// SwiGLUGrad writes dgate = dout * up * silu'(gate) and dup = dout * silu(gate).
func (b *Backend) SwiGLUGrad(gate, up, dout *tensor.Dense, dgate, dup *tensor.Dense) error {
	if hasBF16(gate) {
		ps, n, err := b.bf16Elementwise("SwiGLU grad", []string{"gate", "up", "dout", "dgate", "dup"}, gate, up, dout, dgate, dup)
		if err != nil {
			return err
		}
		return b.dev.SwiGLUGradBF16(ps[0], ps[1], ps[2], ps[3], ps[4], n)
	}
	dt, ps, n, err := b.sameShapeArgs("SwiGLU grad", []string{"gate", "up", "dout", "dgate", "dup"}, gate, up, dout, dgate, dup)
	if err != nil {
		return err
	}
	return b.dev.SwiGLUGrad(dt, ps[0], ps[1], ps[2], ps[3], ps[4], n)
}

// SwiGLU launches out = silu(gate) * up over n elements.
func (d *Device) SwiGLU(dt tensor.Dtype, gate, up, out cu.DevicePtr, n int64) error {
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	vec := vecOK(uintptr(gate), uintptr(up), uintptr(out))
	return d.launch("swiglu_"+suf, d.vecGrid(n, vec, dt), ptrArg(gate), ptrArg(up), ptrArg(out), i64(n), i32(b2i(vec)))
}

// SwiGLUGrad launches the SwiGLU backward over n elements.
func (d *Device) SwiGLUGrad(dt tensor.Dtype, gate, up, dout, dgate, dup cu.DevicePtr, n int64) error {
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	vec := vecOK(uintptr(gate), uintptr(up), uintptr(dout), uintptr(dgate), uintptr(dup))
	return d.launch("swiglu_grad_"+suf, d.vecGrid(n, vec, dt), ptrArg(gate), ptrArg(up), ptrArg(dout), ptrArg(dgate),
		ptrArg(dup), i64(n), i32(b2i(vec)))
}
