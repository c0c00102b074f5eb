package ops

import "gorgonia.org/tensor"

// Training kernels of the CPU backend. Not implemented yet: each returns ErrUnsupported.

func (cpuBackend) MatMul(a, b *tensor.Dense, transA, transB bool, out *tensor.Dense) error {
	return errorf("cpu: MatMul: %w", ErrUnsupported)
}
func (cpuBackend) MSELoss(pred, target *tensor.Dense, loss *tensor.Dense) error {
	return errorf("cpu: MSELoss: %w", ErrUnsupported)
}
func (cpuBackend) MSELossGrad(pred, target *tensor.Dense, scale float64, g, dpred *tensor.Dense) error {
	return errorf("cpu: MSELossGrad: %w", ErrUnsupported)
}
func (cpuBackend) SoftmaxCrossEntropy(logits, labels *tensor.Dense, loss *tensor.Dense) error {
	return errorf("cpu: SoftmaxCrossEntropy: %w", ErrUnsupported)
}
func (cpuBackend) SoftmaxCrossEntropyGrad(logits, labels *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	return errorf("cpu: SoftmaxCrossEntropyGrad: %w", ErrUnsupported)
}
func (cpuBackend) SwiGLU(gate, up *tensor.Dense, out *tensor.Dense) error {
	return errorf("cpu: SwiGLU: %w", ErrUnsupported)
}
func (cpuBackend) SwiGLUGrad(gate, up, dout *tensor.Dense, dgate, dup *tensor.Dense) error {
	return errorf("cpu: SwiGLUGrad: %w", ErrUnsupported)
}
func (cpuBackend) GradNormScale(grads []*tensor.Dense, maxNorm float64, scale *tensor.Dense) error {
	return errorf("cpu: GradNormScale: %w", ErrUnsupported)
}
func (cpuBackend) AdamStep(p, g, m, v *tensor.Dense, hp AdamParams, clipScale *tensor.Dense) error {
	return errorf("cpu: AdamStep: %w", ErrUnsupported)
}
func (cpuBackend) SGDStep(p, g, buf *tensor.Dense, hp SGDParams, clipScale *tensor.Dense) error {
	return errorf("cpu: SGDStep: %w", ErrUnsupported)
}
