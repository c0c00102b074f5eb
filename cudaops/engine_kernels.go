//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"unsafe"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// cudaKernels are the device kernels of the tensor engine (devengine.Kernels), launched on the
// device's stream without waiting (elementwise.cu). Addresses are real device addresses, validated by
// the engine glue.
type cudaKernels struct{ d *Device }

var _ devengine.Kernels = cudaKernels{}

// Operand modes, mirroring MODE_* in elementwise.cu.
const (
	modeVec = 0
	modeDev = 1
	modeImm = 2
)

func operandArgs(o devengine.Operand) (arg, arg, arg) {
	switch {
	case o.Ptr == 0:
		return ptrArg(0), i32(modeImm), f64(o.Imm)
	case o.Scalar:
		return ptrArg(cu.DevicePtr(o.Ptr)), i32(modeDev), f64(0)
	}
	return ptrArg(cu.DevicePtr(o.Ptr)), i32(modeVec), f64(0)
}

// vecOK reports whether the 16-byte path applies: every vector operand 16-byte aligned.
func vecOK(ptrs ...uintptr) bool {
	for _, p := range ptrs {
		if p%16 != 0 {
			return false
		}
	}
	return true
}

func vecPtr(o devengine.Operand) uintptr {
	if o.Scalar || o.Ptr == 0 {
		return 0
	}
	return o.Ptr
}

func floatSuffix(dt tensor.Dtype) (string, error) {
	s, err := suffix(dt)
	if err != nil {
		return "", fmt.Errorf("%v: %w", err, ops.ErrDtype)
	}
	return s, nil
}

// vecGrid sizes an elementwise launch over n elements moved 16 bytes at a time when vec.
func (d *Device) vecGrid(n int64, vec bool, dt tensor.Dtype) launchCfg {
	return d.flatGrid(vecItems(n, vec, dt))
}

func (k cudaKernels) Fill(p uintptr, n, width int64, bits uint64) error {
	return k.d.fill(cu.DevicePtr(p), n, width, bits)
}

func (k cudaKernels) Copy(dst, src uintptr, bytes int64) error {
	return k.d.copyDtoD(cu.DevicePtr(dst), cu.DevicePtr(src), bytes)
}

func (k cudaKernels) Upload(dst uintptr, src unsafe.Pointer, bytes int64) error {
	return k.d.copyHtoD(cu.DevicePtr(dst), src, bytes)
}

func (k cudaKernels) Download(dst unsafe.Pointer, src uintptr, bytes int64) error {
	return k.d.copyDtoH(dst, cu.DevicePtr(src), bytes)
}

var binaryNames = [...]string{devengine.OpAdd: "add", devengine.OpSub: "sub", devengine.OpMul: "mul", devengine.OpDiv: "div"}

func (k cudaKernels) Binary(op devengine.BinaryOp, dt tensor.Dtype, a, b devengine.Operand, out uintptr, n int64, incr bool) error {
	if dt == ops.BFloat16 {
		if op != devengine.OpAdd || a.Scalar || b.Scalar || a.Ptr == 0 || b.Ptr == 0 {
			return fmt.Errorf("cudaops: bfloat16 %v: only Add of two vectors is implemented: %w", op, ops.ErrUnsupported)
		}
		return k.addBF16(a.Ptr, b.Ptr, out, n, incr)
	}
	suf, err := floatSuffix(dt)
	if err != nil {
		return err
	}
	if int(op) >= len(binaryNames) {
		return fmt.Errorf("cudaops: binary operation %d: %w", op, ops.ErrUnsupported)
	}
	if n == 0 {
		return nil
	}
	vec := vecOK(vecPtr(a), vecPtr(b), out)
	ap, am, ai := operandArgs(a)
	bp, bm, bi := operandArgs(b)
	return k.d.launch("ew_"+binaryNames[op]+"_"+suf, k.d.vecGrid(n, vec, dt), ap, am, ai, bp, bm, bi,
		ptrArg(cu.DevicePtr(out)), i64(n), i32(b2i(incr)), i32(b2i(vec)))
}

func (k cudaKernels) Compare(op devengine.CmpOp, dt tensor.Dtype, a, b devengine.Operand, out uintptr, n int64, boolOut bool) error {
	suf, err := floatSuffix(dt)
	if err != nil {
		return err
	}
	if op > devengine.CmpNe {
		return fmt.Errorf("cudaops: comparison %d: %w", op, ops.ErrUnsupported)
	}
	if n == 0 {
		return nil
	}
	ap, am, ai := operandArgs(a)
	bp, bm, bi := operandArgs(b)
	return k.d.launch("ew_cmp_"+suf, k.d.flatGrid(n), i32(int(op)), ap, am, ai, bp, bm, bi,
		ptrArg(cu.DevicePtr(out)), i64(n), i32(b2i(boolOut)))
}

func (k cudaKernels) Unary(op devengine.UnaryOp, dt tensor.Dtype, a, out uintptr, n int64, incr bool) error {
	suf, err := floatSuffix(dt)
	if err != nil {
		return err
	}
	if op > devengine.UFloor {
		return fmt.Errorf("cudaops: unary function %d: %w", op, ops.ErrUnsupported)
	}
	if n == 0 {
		return nil
	}
	vec := vecOK(a, out)
	return k.d.launch("ew_unary_"+suf, k.d.vecGrid(n, vec, dt), i32(int(op)), ptrArg(cu.DevicePtr(a)),
		ptrArg(cu.DevicePtr(out)), i64(n), i32(b2i(incr)), i32(b2i(vec)))
}

func (k cudaKernels) SumAxis(dt tensor.Dtype, a, out uintptr, outer, mid, inner int64) error {
	suf, err := floatSuffix(dt)
	if err != nil {
		return err
	}
	if outer*inner == 0 {
		return nil
	}
	if inner == 1 {
		// One block per row; the block size depends only on the sizes, so the summation tree does not
		// depend on the GPU.
		block := 256
		if outer <= 64 {
			block = 1024
		}
		grid := outer
		if grid > 65535 {
			grid = 65535
		}
		return k.d.launch("sum_rows_"+suf, launchCfg{grid: int(grid), block: block}, ptrArg(cu.DevicePtr(a)),
			ptrArg(cu.DevicePtr(out)), i64(outer), i64(mid))
	}
	return k.d.launch("sum_inner_"+suf, k.d.flatGrid(outer*inner), ptrArg(cu.DevicePtr(a)), ptrArg(cu.DevicePtr(out)),
		i64(outer), i64(mid), i64(inner))
}

func elemSuffix(elemSize int) (string, error) {
	switch elemSize {
	case 1:
		return "u8", nil
	case 2:
		return "u16", nil
	case 4:
		return "u32", nil
	case 8:
		return "u64", nil
	}
	return "", fmt.Errorf("cudaops: elements of %d bytes: %w", elemSize, ops.ErrDtype)
}

func (k cudaKernels) Permute(elemSize int, dst, src uintptr, shape, strides []int) error {
	suf, err := elemSuffix(elemSize)
	if err != nil {
		return err
	}
	if len(shape) > devengine.MaxDims || len(strides) != len(shape) {
		return fmt.Errorf("cudaops: permute of %d dims (at most %d): %w", len(shape), devengine.MaxDims, ops.ErrShape)
	}
	n := int64(1)
	args := []arg{ptrArg(cu.DevicePtr(dst)), ptrArg(cu.DevicePtr(src)), i64(0), i32(len(shape))}
	for i := 0; i < devengine.MaxDims; i++ {
		v := int64(1)
		if i < len(shape) {
			v = int64(shape[i])
		}
		n *= v
		args = append(args, i64(v))
	}
	for i := 0; i < devengine.MaxDims; i++ {
		v := int64(0)
		if i < len(strides) {
			v = int64(strides[i])
		}
		args = append(args, i64(v))
	}
	if n == 0 {
		return nil
	}
	args[2] = i64(n)
	return k.d.launch("permute_"+suf, k.d.flatGrid(n), args...)
}

func (k cudaKernels) Copy2D(elemSize int, dst uintptr, dstPitch int64, src uintptr, srcPitch int64, rows, cols int64) error {
	suf, err := elemSuffix(elemSize)
	if err != nil {
		return err
	}
	if rows*cols == 0 {
		return nil
	}
	return k.d.launch("copy2d_"+suf, k.d.flatGrid(rows*cols), ptrArg(cu.DevicePtr(dst)), i64(dstPitch),
		ptrArg(cu.DevicePtr(src)), i64(srcPitch), i64(rows), i64(cols))
}
