package devengine

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/chewxy/math32"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// HostKernels implements Kernels with plain Go loops over memory the host can address: the reference
// for device kernels, and the kernels of the simulated device (which makes its memory addressable only
// while they run). Float32 functions are computed as tensor's StdEng and Gorgonia compute them (math32,
// or float64 rounded once where Gorgonia does so).
type HostKernels struct{}

var _ Kernels = HostKernels{}

// hostPtr turns an address of host-addressable memory into a pointer (the memory is not Go's: the
// collector does not move or free it).
func hostPtr(u uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&u)) }

func bytesAt(p uintptr, n int64) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(hostPtr(p)), n)
}

func f32s(p uintptr, n int64) []float32 {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(hostPtr(p)), n)
}

func f64s(p uintptr, n int64) []float64 {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*float64)(hostPtr(p)), n)
}

// Fill writes n values of width bytes with the given bit pattern.
func (HostKernels) Fill(p uintptr, n, width int64, bits uint64) error {
	switch width {
	case 1:
		b := bytesAt(p, n)
		for i := range b {
			b[i] = byte(bits)
		}
	case 2:
		if n > 0 {
			s := unsafe.Slice((*uint16)(hostPtr(p)), n)
			for i := range s {
				s[i] = uint16(bits)
			}
		}
	case 4:
		if n > 0 {
			s := unsafe.Slice((*uint32)(hostPtr(p)), n)
			for i := range s {
				s[i] = uint32(bits)
			}
		}
	case 8:
		if n > 0 {
			s := unsafe.Slice((*uint64)(hostPtr(p)), n)
			for i := range s {
				s[i] = bits
			}
		}
	default:
		return fmt.Errorf("fill: unsupported width %d", width)
	}
	return nil
}

// Copy copies bytes from src to dst.
func (HostKernels) Copy(dst, src uintptr, bytes int64) error {
	copy(bytesAt(dst, bytes), bytesAt(src, bytes))
	return nil
}

// Upload copies bytes from host memory.
func (HostKernels) Upload(dst uintptr, src unsafe.Pointer, bytes int64) error {
	if bytes > 0 {
		copy(bytesAt(dst, bytes), unsafe.Slice((*byte)(src), bytes))
	}
	return nil
}

// Download copies bytes to host memory.
func (HostKernels) Download(dst unsafe.Pointer, src uintptr, bytes int64) error {
	if bytes > 0 {
		copy(unsafe.Slice((*byte)(dst), bytes), bytesAt(src, bytes))
	}
	return nil
}

func checkFloat(dt tensor.Dtype) error {
	if dt != tensor.Float32 && dt != tensor.Float64 {
		return fmt.Errorf("dtype %v, want float32 or float64: %w", dt, ops.ErrDtype)
	}
	return nil
}

// operand reads the i-th value of an operand (as float64: exact for float32 values).
func operandAt[T float32 | float64](o Operand, s []T, i int64) T {
	if !o.Scalar {
		return s[i]
	}
	if o.Ptr != 0 {
		return s[0]
	}
	return T(o.Imm)
}

func operandSlice[T float32 | float64](o Operand, n int64) []T {
	if o.Ptr == 0 {
		return nil
	}
	if o.Scalar {
		n = 1
	}
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*T)(hostPtr(o.Ptr)), n)
}

func binaryT[T float32 | float64](op BinaryOp, a, b Operand, out uintptr, n int64, incr bool) {
	as, bs := operandSlice[T](a, n), operandSlice[T](b, n)
	var os []T
	if n > 0 {
		os = unsafe.Slice((*T)(hostPtr(out)), n)
	}
	for i := int64(0); i < n; i++ {
		x, y := operandAt(a, as, i), operandAt(b, bs, i)
		var r T
		switch op {
		case OpAdd:
			r = x + y
		case OpSub:
			r = x - y
		case OpMul:
			r = x * y
		case OpDiv:
			r = x / y
		}
		if incr {
			r = os[i] + r
		}
		os[i] = r
	}
}

// Binary writes out = a op b (+ out).
func (HostKernels) Binary(op BinaryOp, dt tensor.Dtype, a, b Operand, out uintptr, n int64, incr bool) error {
	if dt == ops.BFloat16 {
		return binaryBF16(op, a, b, out, n, incr)
	}
	if err := checkFloat(dt); err != nil {
		return err
	}
	if dt == tensor.Float32 {
		binaryT[float32](op, a, b, out, n, incr)
	} else {
		binaryT[float64](op, a, b, out, n, incr)
	}
	return nil
}

func compareT[T float32 | float64](op CmpOp, a, b Operand, out uintptr, n int64, boolOut bool) {
	as, bs := operandSlice[T](a, n), operandSlice[T](b, n)
	for i := int64(0); i < n; i++ {
		x, y := operandAt(a, as, i), operandAt(b, bs, i)
		var r bool
		switch op {
		case CmpGt:
			r = x > y
		case CmpGte:
			r = x >= y
		case CmpLt:
			r = x < y
		case CmpLte:
			r = x <= y
		case CmpEq:
			r = x == y
		case CmpNe:
			r = x != y
		}
		if boolOut {
			*(*bool)(hostPtr(out + uintptr(i))) = r
			continue
		}
		v := T(0)
		if r {
			v = 1
		}
		*(*T)(hostPtr(out + uintptr(i)*unsafe.Sizeof(v))) = v
	}
}

// Compare writes out = a op b as 1/0 or bools.
func (HostKernels) Compare(op CmpOp, dt tensor.Dtype, a, b Operand, out uintptr, n int64, boolOut bool) error {
	if err := checkFloat(dt); err != nil {
		return err
	}
	if dt == tensor.Float32 {
		compareT[float32](op, a, b, out, n, boolOut)
	} else {
		compareT[float64](op, a, b, out, n, boolOut)
	}
	return nil
}

// Unary64 is the float64 reference of a unary function.
func Unary64(op UnaryOp, x float64) float64 {
	switch op {
	case UNeg:
		return -x
	case UInv:
		return 1 / x
	case USquare:
		return x * x
	case UCube:
		return x * x * x
	case UExp:
		return math.Exp(x)
	case UTanh:
		return math.Tanh(x)
	case ULog:
		return math.Log(x)
	case ULog2:
		return math.Log2(x)
	case ULog10:
		return math.Log10(x)
	case USqrt:
		return math.Sqrt(x)
	case UCbrt:
		return math.Cbrt(x)
	case UInvSqrt:
		return 1 / math.Sqrt(x)
	case UAbs:
		return math.Abs(x)
	case USign:
		switch {
		case x < 0:
			return -1
		case x > 0:
			return 1
		}
		return x
	case USignBit:
		if math.Signbit(x) {
			return -1
		}
		return 1
	case USigmoid:
		switch {
		case x < -709:
			return 0
		case x > 19:
			return 1
		}
		return 1.0 / (1.0 + math.Exp(-x))
	case USoftplus:
		switch {
		case x < -708:
			return 0
		case x > 16:
			return x
		}
		return math.Log1p(math.Exp(x))
	case ULog1p:
		return math.Log1p(x)
	case UExpm1:
		return math.Expm1(x)
	case USin:
		return math.Sin(x)
	case UCos:
		return math.Cos(x)
	case UCeil:
		return math.Ceil(x)
	case UFloor:
		return math.Floor(x)
	}
	return math.NaN()
}

// Unary32 is the float32 reference of a unary function (math32, or float64 rounded once for the
// functions Gorgonia computes that way).
func Unary32(op UnaryOp, x float32) float32 {
	switch op {
	case UNeg:
		return -x
	case UInv:
		return 1 / x
	case USquare:
		return x * x
	case UCube:
		return x * x * x
	case UExp:
		return math32.Exp(x)
	case UTanh:
		return math32.Tanh(x)
	case ULog:
		return math32.Log(x)
	case ULog2:
		return math32.Log2(x)
	case ULog10:
		return math32.Log10(x)
	case USqrt:
		return math32.Sqrt(x)
	case UCbrt:
		return math32.Cbrt(x)
	case UInvSqrt:
		return 1 / math32.Sqrt(x)
	case UAbs:
		return math32.Abs(x)
	case USign:
		switch {
		case x < 0:
			return -1
		case x > 0:
			return 1
		}
		return x
	case USignBit:
		if math32.Signbit(x) {
			return -1
		}
		return 1
	case USigmoid:
		switch {
		case x < -88:
			return 0
		case x > 15:
			return 1
		}
		return float32(1.0 / (1.0 + math.Exp(float64(-x))))
	case USoftplus:
		switch {
		case x < -103:
			return 0
		case x > 14:
			return x
		}
		return float32(math.Log1p(math.Exp(float64(x))))
	case ULog1p:
		return math32.Log1p(x)
	case UExpm1:
		return math32.Expm1(x)
	case USin:
		return math32.Sin(x)
	case UCos:
		return math32.Cos(x)
	case UCeil:
		return math32.Ceil(x)
	case UFloor:
		return math32.Floor(x)
	}
	return float32(math.NaN())
}

// Unary writes out = f(a) (+ out).
func (HostKernels) Unary(op UnaryOp, dt tensor.Dtype, a, out uintptr, n int64, incr bool) error {
	if err := checkFloat(dt); err != nil {
		return err
	}
	if op >= numUnary {
		return fmt.Errorf("unary: unknown function %d: %w", op, ops.ErrUnsupported)
	}
	if dt == tensor.Float32 {
		as, os := f32s(a, n), f32s(out, n)
		for i := range os {
			r := Unary32(op, as[i])
			if incr {
				r = os[i] + r
			}
			os[i] = r
		}
		return nil
	}
	as, os := f64s(a, n), f64s(out, n)
	for i := range os {
		r := Unary64(op, as[i])
		if incr {
			r = os[i] + r
		}
		os[i] = r
	}
	return nil
}

// SumAxis sums a [outer, mid, inner] over mid in float64, in increasing m.
func (HostKernels) SumAxis(dt tensor.Dtype, a, out uintptr, outer, mid, inner int64) error {
	if err := checkFloat(dt); err != nil {
		return err
	}
	n := outer * mid * inner
	a32, a64 := f32s(a, n), f64s(a, n)
	o32, o64 := f32s(out, outer*inner), f64s(out, outer*inner)
	for o := int64(0); o < outer; o++ {
		for i := int64(0); i < inner; i++ {
			acc := 0.0
			for m := int64(0); m < mid; m++ {
				j := (o*mid+m)*inner + i
				if dt == tensor.Float32 {
					acc += float64(a32[j])
				} else {
					acc += a64[j]
				}
			}
			if dt == tensor.Float32 {
				o32[o*inner+i] = float32(acc)
			} else {
				o64[o*inner+i] = acc
			}
		}
	}
	return nil
}

// Permute gathers src through strides into row-major dst.
func (HostKernels) Permute(elemSize int, dst, src uintptr, shape, strides []int) error {
	if len(shape) != len(strides) || len(shape) > MaxDims {
		return fmt.Errorf("permute: %d dims with %d strides (at most %d): %w", len(shape), len(strides), MaxDims, ops.ErrShape)
	}
	n := 1
	for _, s := range shape {
		n *= s
	}
	idx := make([]int, len(shape))
	es := uintptr(elemSize)
	for j := 0; j < n; j++ {
		off := 0
		for k := range idx {
			off += idx[k] * strides[k]
		}
		copy(bytesAt(dst+uintptr(j)*es, int64(es)), bytesAt(src+uintptr(off)*es, int64(es)))
		for k := len(idx) - 1; k >= 0; k-- {
			idx[k]++
			if idx[k] < shape[k] {
				break
			}
			idx[k] = 0
		}
	}
	return nil
}

// Copy2D copies a rows x cols block between pitched layouts.
func (HostKernels) Copy2D(elemSize int, dst uintptr, dstPitch int64, src uintptr, srcPitch int64, rows, cols int64) error {
	es := int64(elemSize)
	for r := int64(0); r < rows; r++ {
		copy(bytesAt(dst+uintptr(r*dstPitch*es), cols*es), bytesAt(src+uintptr(r*srcPitch*es), cols*es))
	}
	return nil
}
