package devengine

import (
	"fmt"
	"unsafe"

	"github.com/expertrt/expertrt-go/internal/bf16"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// bfloat16 in the engine: Add of two bfloat16 tensors (the gradient sums Gorgonia's G.Grad inserts for
// a bfloat16 node with several consumers), each sum rounded once to bfloat16 (ops.HostEngine's rule).
// The other operations refuse bfloat16 with ops.ErrDtype.

// binaryOperand checks an operand of a binary operation: a float32 or float64 tensor, or a bfloat16 one
// for Add.
func (e *Engine) binaryOperand(op BinaryOp, what, name string, t tensor.Tensor) (*tensor.Dense, uintptr, error) {
	if d, ok := t.(*tensor.Dense); ok && d != nil && d.Dtype() == ops.BFloat16 {
		if op != OpAdd {
			return nil, 0, e.errorf("%s: %s is bfloat16; the engine adds bfloat16 tensors but does no other bfloat16 arithmetic (cast to float32 with ops.Cast): %w", what, name, ops.ErrDtype)
		}
		p, err := e.resolveContiguous(what, name, d)
		if err != nil {
			return nil, 0, err
		}
		return d, p, nil
	}
	return e.floatOperand(what, name, t)
}

// binaryBF16 is HostKernels.Binary for bfloat16 (Add only; vector operands).
func binaryBF16(op BinaryOp, a, b Operand, out uintptr, n int64, incr bool) error {
	if op != OpAdd || a.Scalar || b.Scalar || a.Ptr == 0 || b.Ptr == 0 {
		return fmt.Errorf("bfloat16 %v: only Add of two vectors is implemented: %w", op, ops.ErrUnsupported)
	}
	if n == 0 {
		return nil
	}
	as := unsafe.Slice((*bf16.BFloat16)(hostPtr(a.Ptr)), n)
	bs := unsafe.Slice((*bf16.BFloat16)(hostPtr(b.Ptr)), n)
	os := unsafe.Slice((*bf16.BFloat16)(hostPtr(out)), n)
	for i := range os {
		s := bf16.FromFloat32(as[i].Float32() + bs[i].Float32())
		if incr {
			s = bf16.FromFloat32(os[i].Float32() + s.Float32())
		}
		os[i] = s
	}
	return nil
}
