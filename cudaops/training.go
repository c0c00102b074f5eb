//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Training kernels of the CUDA backend (ops.TrainingBackend). Not implemented yet: each returns
// ops.ErrUnsupported.

func (b *Backend) MSELoss(pred, target *tensor.Dense, loss *tensor.Dense) error {
	return fmt.Errorf("cudaops: MSELoss: %w", ops.ErrUnsupported)
}
func (b *Backend) MSELossGrad(pred, target *tensor.Dense, scale float64, g, dpred *tensor.Dense) error {
	return fmt.Errorf("cudaops: MSELossGrad: %w", ops.ErrUnsupported)
}
func (b *Backend) SoftmaxCrossEntropy(logits, labels *tensor.Dense, loss *tensor.Dense) error {
	return fmt.Errorf("cudaops: SoftmaxCrossEntropy: %w", ops.ErrUnsupported)
}
func (b *Backend) SoftmaxCrossEntropyGrad(logits, labels *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	return fmt.Errorf("cudaops: SoftmaxCrossEntropyGrad: %w", ops.ErrUnsupported)
}
func (b *Backend) SwiGLU(gate, up *tensor.Dense, out *tensor.Dense) error {
	return fmt.Errorf("cudaops: SwiGLU: %w", ops.ErrUnsupported)
}
func (b *Backend) SwiGLUGrad(gate, up, dout *tensor.Dense, dgate, dup *tensor.Dense) error {
	return fmt.Errorf("cudaops: SwiGLUGrad: %w", ops.ErrUnsupported)
}
func (b *Backend) GradNormScale(grads []*tensor.Dense, maxNorm float64, scale *tensor.Dense) error {
	return fmt.Errorf("cudaops: GradNormScale: %w", ops.ErrUnsupported)
}
func (b *Backend) AdamStep(p, g, m, v *tensor.Dense, hp ops.AdamParams, clipScale *tensor.Dense) error {
	return fmt.Errorf("cudaops: AdamStep: %w", ops.ErrUnsupported)
}
func (b *Backend) SGDStep(p, g, buf *tensor.Dense, hp ops.SGDParams, clipScale *tensor.Dense) error {
	return fmt.Errorf("cudaops: SGDStep: %w", ops.ErrUnsupported)
}
