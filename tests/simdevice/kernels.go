package simdevice

import (
	"fmt"
	"unsafe"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"gorgonia.org/tensor"
)

func addrOfBytes(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// simKernels are the device's kernels for the engine glue: the host reference kernels, run with the
// region unprotected. Every address they get must lie in the region (the glue resolved it), except the
// host side of Upload and Download.
type simKernels struct{ d *Device }

var _ devengine.Kernels = simKernels{}

var host devengine.HostKernels

// in checks that [p, p+bytes) is inside the region: a kernel never touches anything else.
func (k simKernels) in(p uintptr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	if !k.d.Contains(p) || !k.d.Contains(p+uintptr(bytes)-1) {
		return fmt.Errorf("simdevice %s: kernel operand %#x (+%d bytes) is outside device memory", k.d.name, p, bytes)
	}
	return nil
}

func (k simKernels) ins(pairs ...any) error {
	for i := 0; i < len(pairs); i += 2 {
		if err := k.in(pairs[i].(uintptr), pairs[i+1].(int64)); err != nil {
			return err
		}
	}
	return nil
}

func (k simKernels) Fill(p uintptr, n, width int64, bits uint64) error {
	if err := k.in(p, n*width); err != nil {
		return err
	}
	return k.d.run(func() error { return host.Fill(p, n, width, bits) })
}

func (k simKernels) Copy(dst, src uintptr, bytes int64) error {
	if err := k.ins(dst, bytes, src, bytes); err != nil {
		return err
	}
	return k.d.run(func() error { return host.Copy(dst, src, bytes) })
}

func (k simKernels) Upload(dst uintptr, src unsafe.Pointer, bytes int64) error {
	if err := k.in(dst, bytes); err != nil {
		return err
	}
	return k.d.run(func() error { return host.Upload(dst, src, bytes) })
}

func (k simKernels) Download(dst unsafe.Pointer, src uintptr, bytes int64) error {
	if err := k.in(src, bytes); err != nil {
		return err
	}
	return k.d.run(func() error { return host.Download(dst, src, bytes) })
}

func opBytes(o devengine.Operand, n, es int64) (uintptr, int64) {
	switch {
	case o.Ptr == 0:
		return 0, 0
	case o.Scalar:
		return o.Ptr, es
	}
	return o.Ptr, n * es
}

func (k simKernels) Binary(op devengine.BinaryOp, dt tensor.Dtype, a, b devengine.Operand, out uintptr, n int64, incr bool) error {
	es := int64(dt.Size())
	ap, an := opBytes(a, n, es)
	bp, bn := opBytes(b, n, es)
	if err := k.ins(ap, an, bp, bn, out, n*es); err != nil {
		return err
	}
	return k.d.run(func() error { return host.Binary(op, dt, a, b, out, n, incr) })
}

func (k simKernels) Compare(op devengine.CmpOp, dt tensor.Dtype, a, b devengine.Operand, out uintptr, n int64, boolOut bool) error {
	es := int64(dt.Size())
	ap, an := opBytes(a, n, es)
	bp, bn := opBytes(b, n, es)
	oes := es
	if boolOut {
		oes = 1
	}
	if err := k.ins(ap, an, bp, bn, out, n*oes); err != nil {
		return err
	}
	return k.d.run(func() error { return host.Compare(op, dt, a, b, out, n, boolOut) })
}

func (k simKernels) Unary(op devengine.UnaryOp, dt tensor.Dtype, a, out uintptr, n int64, incr bool) error {
	es := int64(dt.Size())
	if err := k.ins(a, n*es, out, n*es); err != nil {
		return err
	}
	return k.d.run(func() error { return host.Unary(op, dt, a, out, n, incr) })
}

func (k simKernels) SumAxis(dt tensor.Dtype, a, out uintptr, outer, mid, inner int64) error {
	es := int64(dt.Size())
	if err := k.ins(a, outer*mid*inner*es, out, outer*inner*es); err != nil {
		return err
	}
	return k.d.run(func() error { return host.SumAxis(dt, a, out, outer, mid, inner) })
}

func (k simKernels) Permute(elemSize int, dst, src uintptr, shape, strides []int) error {
	n, span := int64(1), int64(1)
	for i, s := range shape {
		n *= int64(s)
		if s > 0 {
			span += int64(s-1) * int64(strides[i])
		}
	}
	if n == 0 {
		return nil
	}
	if err := k.ins(dst, n*int64(elemSize), src, span*int64(elemSize)); err != nil {
		return err
	}
	return k.d.run(func() error { return host.Permute(elemSize, dst, src, shape, strides) })
}

func (k simKernels) Copy2D(elemSize int, dst uintptr, dstPitch int64, src uintptr, srcPitch int64, rows, cols int64) error {
	if rows == 0 || cols == 0 {
		return nil
	}
	es := int64(elemSize)
	if err := k.ins(dst, ((rows-1)*dstPitch+cols)*es, src, ((rows-1)*srcPitch+cols)*es); err != nil {
		return err
	}
	return k.d.run(func() error { return host.Copy2D(elemSize, dst, dstPitch, src, srcPitch, rows, cols) })
}
