package ops

import (
	"gorgonia.org/tensor"
)

// Task losses of the CPU backend. Sums run in float64 over fixed blocks (blockSum), so results do not
// depend on the number of threads.

func (cpuBackend) MSELoss(pred, target *tensor.Dense, loss *tensor.Dense) error {
	if err := checkMSE(pred, target, loss, "loss"); err != nil {
		return err
	}
	if loss.Shape().TotalSize() != 1 {
		return failf(ErrShape, "MSE loss: the loss tensor has shape %v, want one element", loss.Shape())
	}
	return byDtype(pred.Dtype(),
		func() error { l, err := mseCPU[float32](pred, target); return setScalar(loss, l, err) },
		func() error { l, err := mseCPU[float64](pred, target); return setScalar(loss, l, err) })
}

func (cpuBackend) MSELossGrad(pred, target *tensor.Dense, scale float64, g, dpred *tensor.Dense) error {
	if err := checkMSE(pred, target, dpred, "gradient"); err != nil {
		return err
	}
	if dpred.Shape().TotalSize() != pred.Shape().TotalSize() {
		return failf(ErrShape, "MSE loss gradient: dpred has shape %v, want %v", dpred.Shape(), pred.Shape())
	}
	scale, err := hostGrad(scale, g)
	if err != nil {
		return err
	}
	c := 2 * scale / float64(pred.Shape().TotalSize())
	return byDtype(pred.Dtype(),
		func() error { return mseGradCPU[float32](pred, target, c, dpred) },
		func() error { return mseGradCPU[float64](pred, target, c, dpred) })
}

func checkMSE(pred, target, out *tensor.Dense, what string) error {
	if pred == nil || target == nil || out == nil {
		return failf(ErrShape, "MSE loss: nil tensor")
	}
	if !pred.Shape().Eq(target.Shape()) {
		return failf(ErrShape, "MSE loss: pred %v and target %v differ in shape", pred.Shape(), target.Shape())
	}
	if pred.Shape().TotalSize() == 0 {
		return failf(ErrShape, "MSE loss: the mean over %v has no elements", pred.Shape())
	}
	if target.Dtype() != pred.Dtype() || out.Dtype() != pred.Dtype() {
		return failf(ErrDtype, "MSE loss: pred %v, target %v and %s %v must share a dtype", pred.Dtype(), target.Dtype(), what, out.Dtype())
	}
	return nil
}

func mseCPU[T float](pred, target *tensor.Dense) (float64, error) {
	p, err := floats[T](pred)
	if err != nil {
		return 0, err
	}
	q, err := floats[T](target)
	if err != nil {
		return 0, err
	}
	n := pred.Shape().TotalSize()
	s := blockSum(n, reduceBlock, func(lo, hi int) float64 {
		s := 0.0
		for i := lo; i < hi; i++ {
			d := float64(p[i]) - float64(q[i])
			s += d * d
		}
		return s
	})
	return s / float64(n), nil
}

func mseGradCPU[T float](pred, target *tensor.Dense, c float64, dpred *tensor.Dense) error {
	p, err := floats[T](pred)
	if err != nil {
		return err
	}
	q, err := floats[T](target)
	if err != nil {
		return err
	}
	o, err := floats[T](dpred)
	if err != nil {
		return err
	}
	parallelRows(len(o), 1<<15, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			o[i] = T(c * (float64(p[i]) - float64(q[i])))
		}
	})
	return nil
}

func (cpuBackend) SoftmaxCrossEntropy(logits, labels *tensor.Dense, loss *tensor.Dense) error {
	lab, err := checkCE(logits, labels, loss, false)
	if err != nil {
		return err
	}
	return byDtype(logits.Dtype(),
		func() error { l, err := crossEntropyCPU[float32](logits, lab, 0, nil); return setScalar(loss, l, err) },
		func() error { l, err := crossEntropyCPU[float64](logits, lab, 0, nil); return setScalar(loss, l, err) })
}

func (cpuBackend) SoftmaxCrossEntropyGrad(logits, labels *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	lab, err := checkCE(logits, labels, dlogits, true)
	if err != nil {
		return err
	}
	scale, err = hostGrad(scale, g)
	if err != nil {
		return err
	}
	return byDtype(logits.Dtype(),
		func() error { _, err := crossEntropyCPU[float32](logits, lab, scale, dlogits); return err },
		func() error { _, err := crossEntropyCPU[float64](logits, lab, scale, dlogits); return err })
}

// checkCE validates the operands of the cross-entropy kernels, every label included, and returns the labels.
func checkCE(logits, labels, out *tensor.Dense, grad bool) ([]int32, error) {
	if logits == nil || labels == nil || out == nil {
		return nil, failf(ErrShape, "cross-entropy: nil tensor")
	}
	if logits.Dims() != 2 || labels.Dims() != 1 || labels.Shape()[0] != logits.Shape()[0] {
		return nil, failf(ErrShape, "cross-entropy: logits %v and labels %v, want [N,C] and [N]", logits.Shape(), labels.Shape())
	}
	if labels.Dtype() != tensor.Int32 {
		return nil, failf(ErrDtype, "cross-entropy: labels must be int32, got %v", labels.Dtype())
	}
	if out.Dtype() != logits.Dtype() {
		return nil, failf(ErrDtype, "cross-entropy: output dtype %v, logits %v", out.Dtype(), logits.Dtype())
	}
	if want := logits.Shape(); grad && !out.Shape().Eq(want) || !grad && out.Shape().TotalSize() != 1 {
		return nil, failf(ErrShape, "cross-entropy: output shape %v does not fit logits %v", out.Shape(), want)
	}
	lab, err := int32s(labels)
	if err != nil {
		return nil, err
	}
	c := int32(logits.Shape()[1])
	for n, l := range lab {
		if l != IgnoreLabel && (l < 0 || l >= c) {
			return nil, failf(ErrLabel, "cross-entropy: labels[%d] = %d is outside [0,%d) and not the ignore label %d", n, l, c, IgnoreLabel)
		}
	}
	return lab, nil
}

// crossEntropyCPU returns the mean over counted rows of logsumexp(row) - row[label], and when dlogits is
// given writes scale * its gradient instead.
func crossEntropyCPU[T float](logits *tensor.Dense, labels []int32, scale float64, dlogits *tensor.Dense) (float64, error) {
	l, err := floats[T](logits)
	if err != nil {
		return 0, err
	}
	n, c := logits.Shape()[0], logits.Shape()[1]
	counted := 0
	for _, lab := range labels {
		if lab != IgnoreLabel {
			counted++
		}
	}
	if dlogits == nil {
		if counted == 0 {
			return 0, nil
		}
		sum := blockSum(n, reduceBlock/max(c, 1), func(lo, hi int) float64 {
			probs := make([]float64, c)
			s := 0.0
			for r := lo; r < hi; r++ {
				if labels[r] == IgnoreLabel {
					continue
				}
				row := l[r*c : (r+1)*c]
				s += softmaxRow(row, probs) - float64(row[labels[r]])
			}
			return s
		})
		return sum / float64(counted), nil
	}
	out, err := floats[T](dlogits)
	if err != nil {
		return 0, err
	}
	k := 0.0
	if counted > 0 {
		k = scale / float64(counted)
	}
	parallelRows(n, rowsFor(c), func(lo, hi int) {
		probs := make([]float64, c)
		for r := lo; r < hi; r++ {
			o := out[r*c : (r+1)*c]
			if labels[r] == IgnoreLabel {
				clear(o)
				continue
			}
			softmaxRow(l[r*c:(r+1)*c], probs)
			probs[labels[r]]--
			for j, p := range probs {
				o[j] = T(k * p)
			}
		}
	})
	return 0, nil
}
