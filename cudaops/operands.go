package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Operand checks of the Backend that need no device: dtypes, ranks, the expert count a plan implies.
// No build tag: CPU CI tests them.

// floatDtype is t's dtype when it is float32 or float64 (ErrDtype otherwise, ErrShape for nil).
func floatDtype(what string, t *tensor.Dense) (tensor.Dtype, error) {
	if t == nil {
		return tensor.Dtype{}, fmt.Errorf("cudaops: %s: nil tensor: %w", what, ops.ErrShape)
	}
	if dt := t.Dtype(); dt == tensor.Float32 || dt == tensor.Float64 {
		return dt, nil
	}
	return tensor.Dtype{}, fmt.Errorf("cudaops: %s: dtype %v, want float32 or float64: %w", what, t.Dtype(), ops.ErrDtype)
}

// dims2 returns the two dimensions of a matrix (ErrShape for anything else).
func dims2(what, name string, t *tensor.Dense) (int, int, error) {
	if t == nil || t.Shape().Dims() != 2 {
		return 0, 0, fmt.Errorf("cudaops: %s: %s must be a matrix: %w", what, name, ops.ErrShape)
	}
	return t.Shape()[0], t.Shape()[1], nil
}

// planExperts returns E from the plan length for T tokens and K experts per token.
func planExperts(what string, plan *tensor.Dense, T, K int) (int, error) {
	if plan == nil || plan.Shape().Dims() != 1 {
		return 0, fmt.Errorf("cudaops: %s: plan must be a vector: %w", what, ops.ErrShape)
	}
	rest := plan.Shape()[0] - 1 - 2*T*K
	if rest < 2 || rest%2 != 0 {
		return 0, fmt.Errorf("cudaops: %s: plan has %d elements, not 2E+1+2TK for T=%d, K=%d: %w", what, plan.Shape()[0], T, K, ops.ErrShape)
	}
	return rest / 2, nil
}
