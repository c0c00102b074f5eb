package simdevice

import (
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

// ranges turns (address, bytes) pairs into the ranges a kernel may touch.
func ranges(pairs ...any) []span {
	var out []span
	for i := 0; i < len(pairs); i += 2 {
		p, n := pairs[i].(uintptr), pairs[i+1].(int64)
		if n > 0 {
			out = append(out, span{p, p + uintptr(n)})
		}
	}
	return out
}

func (k simKernels) Fill(p uintptr, n, width int64, bits uint64) error {
	return k.d.run(ranges(p, n*width), func() error { return host.Fill(p, n, width, bits) })
}

func (k simKernels) Copy(dst, src uintptr, bytes int64) error {
	return k.d.run(ranges(dst, bytes, src, bytes), func() error { return host.Copy(dst, src, bytes) })
}

func (k simKernels) Upload(dst uintptr, src unsafe.Pointer, bytes int64) error {
	k.d.uploads.Add(1)
	return k.d.run(ranges(dst, bytes), func() error { return host.Upload(dst, src, bytes) })
}

func (k simKernels) Download(dst unsafe.Pointer, src uintptr, bytes int64) error {
	k.d.downloads.Add(1)
	return k.d.run(ranges(src, bytes), func() error { return host.Download(dst, src, bytes) })
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
	return k.d.run(ranges(ap, an, bp, bn, out, n*es), func() error { return host.Binary(op, dt, a, b, out, n, incr) })
}

func (k simKernels) Compare(op devengine.CmpOp, dt tensor.Dtype, a, b devengine.Operand, out uintptr, n int64, boolOut bool) error {
	es := int64(dt.Size())
	ap, an := opBytes(a, n, es)
	bp, bn := opBytes(b, n, es)
	oes := es
	if boolOut {
		oes = 1
	}
	return k.d.run(ranges(ap, an, bp, bn, out, n*oes), func() error { return host.Compare(op, dt, a, b, out, n, boolOut) })
}

func (k simKernels) Unary(op devengine.UnaryOp, dt tensor.Dtype, a, out uintptr, n int64, incr bool) error {
	es := int64(dt.Size())
	return k.d.run(ranges(a, n*es, out, n*es), func() error { return host.Unary(op, dt, a, out, n, incr) })
}

func (k simKernels) SumAxis(dt tensor.Dtype, a, out uintptr, outer, mid, inner int64) error {
	es := int64(dt.Size())
	return k.d.run(ranges(a, outer*mid*inner*es, out, outer*inner*es), func() error { return host.SumAxis(dt, a, out, outer, mid, inner) })
}

func (k simKernels) Permute(elemSize int, dst, src uintptr, shape, strides []int) error {
	n, extent := int64(1), int64(1)
	for i, s := range shape {
		n *= int64(s)
		if s > 0 {
			extent += int64(s-1) * int64(strides[i])
		}
	}
	if n == 0 {
		return nil
	}
	return k.d.run(ranges(dst, n*int64(elemSize), src, extent*int64(elemSize)), func() error { return host.Permute(elemSize, dst, src, shape, strides) })
}

func (k simKernels) Copy2D(elemSize int, dst uintptr, dstPitch int64, src uintptr, srcPitch int64, rows, cols int64) error {
	if rows == 0 || cols == 0 {
		return nil
	}
	es := int64(elemSize)
	return k.d.run(ranges(dst, ((rows-1)*dstPitch+cols)*es, src, ((rows-1)*srcPitch+cols)*es), func() error { return host.Copy2D(elemSize, dst, dstPitch, src, srcPitch, rows, cols) })
}
