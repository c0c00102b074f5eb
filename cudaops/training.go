//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Training kernels of the CUDA backend (ops.TrainingBackend): the task losses (task_losses.go), the
// fused SwiGLU (swiglu.go) and the optimizer updates (optim.go). MatMul is not implemented yet.

func (b *Backend) MatMul(a, bm *tensor.Dense, transA, transB bool, out *tensor.Dense) error {
	return fmt.Errorf("cudaops: MatMul: %w", ops.ErrUnsupported)
}
