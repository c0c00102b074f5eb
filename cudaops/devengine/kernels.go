package devengine

import (
	"unsafe"

	"gorgonia.org/tensor"
)

// Kernels is what a device provides to the engine glue: a handful of kernels over real (untagged)
// device addresses, already validated by the glue. Float kernels take float32 or float64 (dt); n counts
// elements. Kernels may run asynchronously in issue order (one stream): a later kernel sees the results
// of earlier ones, and only Download waits for them.
type Kernels interface {
	// Fill writes n values of width bytes (1, 2, 4 or 8) with the given bit pattern.
	Fill(p uintptr, n, width int64, bits uint64) error
	// Copy copies bytes from src to dst (device to device; the ranges do not overlap).
	Copy(dst, src uintptr, bytes int64) error
	// Upload copies bytes from host memory to the device; src may be reused once it returns.
	Upload(dst uintptr, src unsafe.Pointer, bytes int64) error
	// Download waits for the device, copies bytes to host memory and reports pending device faults.
	Download(dst unsafe.Pointer, src uintptr, bytes int64) error

	// Binary writes out[i] = a[i] op b[i] (plus out[i] when incr: out[i] + (a op b)); an operand may be
	// a broadcast scalar. Arithmetic rounds like Go: one rounding per operation, no fused multiply-add.
	// out may alias a vector operand.
	Binary(op BinaryOp, dt tensor.Dtype, a, b Operand, out uintptr, n int64, incr bool) error
	// Compare writes out[i] = a[i] op b[i] as 1/0 in dt, or as a Go bool (one byte) when boolOut.
	Compare(op CmpOp, dt tensor.Dtype, a, b Operand, out uintptr, n int64, boolOut bool) error
	// Unary writes out[i] = f(a[i]) (out[i] + f(a[i]) when incr); out may alias a.
	Unary(op UnaryOp, dt tensor.Dtype, a, out uintptr, n int64, incr bool) error
	// SumAxis writes out[o,i] = sum over m of a[o,m,i] for a viewed as [outer, mid, inner], accumulated
	// in float64 in an order fixed by the sizes (deterministic) and rounded once to dt.
	SumAxis(dt tensor.Dtype, a, out uintptr, outer, mid, inner int64) error
	// Permute writes dst[j] = src[sum_k idx_k(j) * strides[k]] where idx(j) is the row-major
	// multi-index of j in shape (elements of elemSize bytes: 1, 2, 4 or 8; at most MaxDims dims).
	Permute(elemSize int, dst, src uintptr, shape, strides []int) error
	// Copy2D copies rows x cols elements of elemSize bytes: dst[r*dstPitch + c] = src[r*srcPitch + c]
	// (pitches in elements).
	Copy2D(elemSize int, dst uintptr, dstPitch int64, src uintptr, srcPitch int64, rows, cols int64) error
}

// MaxDims is the largest rank Permute handles.
const MaxDims = 8

// Operand is one input of Binary or Compare: a vector (Ptr, not Scalar), a scalar in device memory
// broadcast to every element (Ptr, Scalar), or an immediate scalar (Ptr == 0, Scalar, Imm).
type Operand struct {
	Ptr    uintptr
	Scalar bool
	Imm    float64
}

// BinaryOp is an elementwise arithmetic operation.
type BinaryOp uint8

// Binary operations.
const (
	OpAdd BinaryOp = iota
	OpSub
	OpMul
	OpDiv
)

func (o BinaryOp) String() string { return [...]string{"Add", "Sub", "Mul", "Div"}[o] }

// CmpOp is an elementwise comparison.
type CmpOp uint8

// Comparisons.
const (
	CmpGt CmpOp = iota
	CmpGte
	CmpLt
	CmpLte
	CmpEq
	CmpNe
)

func (o CmpOp) String() string { return [...]string{"Gt", "Gte", "Lt", "Lte", "ElEq", "ElNe"}[o] }

// UnaryOp is an elementwise function. The float32 forms of the functions Gorgonia defines (sigmoid,
// softplus) compute as Gorgonia does: in float64, rounded once.
type UnaryOp uint8

// Unary functions. Sign follows tensor's StdEng (-1, 1, or x itself for zeros and NaN); SignBit
// follows Gorgonia's Go function (-1 when the sign bit is set, else 1).
const (
	UNeg UnaryOp = iota
	UInv
	USquare
	UCube
	UExp
	UTanh
	ULog
	ULog2
	ULog10
	USqrt
	UCbrt
	UInvSqrt
	UAbs
	USign
	USignBit
	USigmoid
	USoftplus
	ULog1p
	UExpm1
	USin
	UCos
	UCeil
	UFloor
	numUnary
)

var unaryNames = [numUnary]string{"Neg", "Inv", "Square", "Cube", "Exp", "Tanh", "Log", "Log2", "Log10",
	"Sqrt", "Cbrt", "InvSqrt", "Abs", "Sign", "SignBit", "Sigmoid", "Softplus", "Log1p", "Expm1", "Sin", "Cos",
	"Ceil", "Floor"}

func (u UnaryOp) String() string {
	if u < numUnary {
		return unaryNames[u]
	}
	return "UnaryOp(?)"
}
