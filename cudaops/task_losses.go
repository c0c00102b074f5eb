//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// The task losses of ops.TrainingBackend on the GPU (task_losses.cu). Losses are one-element device
// tensors of the inputs' dtype, written without synchronising; an upstream gradient g is a one-element
// device tensor of that dtype, or nil for 1. Out-of-range labels are reported at the next
// synchronisation (ops.ErrLabel).

// predTarget validates pred and target: float tensors of one dtype and shape on this device.
func (b *Backend) predTarget(what string, pred, target *tensor.Dense) (tensor.Dtype, cu.DevicePtr, cu.DevicePtr, int64, error) {
	dt, err := floatDtype(what, pred)
	if err != nil {
		return dt, 0, 0, 0, fmt.Errorf("%v: %w", err, ops.ErrDtype)
	}
	pp, err := b.buf(what, "pred", pred, dt)
	if err != nil {
		return dt, 0, 0, 0, err
	}
	if target == nil || !target.Shape().Eq(pred.Shape()) {
		return dt, 0, 0, 0, fmt.Errorf("cudaops: %s: target has shape %v, pred %v: %w", what, shapeOf(target), pred.Shape(), ops.ErrShape)
	}
	pt, err := b.buf(what, "target", target, dt)
	if err != nil {
		return dt, 0, 0, 0, err
	}
	return dt, pp, pt, int64(numel(pred)), nil
}

// MSELoss writes loss = mean over all elements of (pred - target)^2 (0 for no elements).
func (b *Backend) MSELoss(pred, target *tensor.Dense, loss *tensor.Dense) error {
	const what = "MSE loss"
	dt, pp, pt, n, err := b.predTarget(what, pred, target)
	if err != nil {
		return err
	}
	pl, err := b.scalarArg(what, "loss", loss, dt, false)
	if err != nil {
		return err
	}
	return b.dev.MSELoss(dt, pp, pt, pl, n)
}

// MSELossGrad writes dpred = scale * g * 2 (pred - target) / n.
func (b *Backend) MSELossGrad(pred, target *tensor.Dense, scale float64, g, dpred *tensor.Dense) error {
	const what = "MSE loss grad"
	dt, pp, pt, n, err := b.predTarget(what, pred, target)
	if err != nil {
		return err
	}
	pg, err := b.scalarArg(what, "upstream gradient", g, dt, true)
	if err != nil {
		return err
	}
	pd, err := b.buf(what, "dpred", dpred, dt, pred.Shape()...)
	if err != nil {
		return err
	}
	return b.dev.MSELossGrad(dt, pp, pt, pg, pd, n, scale)
}

// logitsLabels validates logits [N,C] float and labels [N] int32.
func (b *Backend) logitsLabels(what string, logits, labels *tensor.Dense) (tensor.Dtype, cu.DevicePtr, cu.DevicePtr, int, int, error) {
	dt, err := floatDtype(what, logits)
	if err != nil {
		return dt, 0, 0, 0, 0, fmt.Errorf("%v: %w", err, ops.ErrDtype)
	}
	N, C, err := dims2(what, "logits", logits)
	if err != nil {
		return dt, 0, 0, 0, 0, fmt.Errorf("%v: %w", err, ops.ErrShape)
	}
	pl, err := b.buf(what, "logits", logits, dt, N, C)
	if err != nil {
		return dt, 0, 0, 0, 0, err
	}
	py, err := b.buf(what, "labels", labels, tensor.Int32, N)
	if err != nil {
		return dt, 0, 0, 0, 0, err
	}
	return dt, pl, py, N, C, nil
}

// SoftmaxCrossEntropy writes loss = mean over counted rows of logsumexp(logits[n,:]) - logits[n,labels[n]].
func (b *Backend) SoftmaxCrossEntropy(logits, labels *tensor.Dense, loss *tensor.Dense) error {
	const what = "softmax cross-entropy"
	dt, pl, py, N, C, err := b.logitsLabels(what, logits, labels)
	if err != nil {
		return err
	}
	po, err := b.scalarArg(what, "loss", loss, dt, false)
	if err != nil {
		return err
	}
	return b.dev.SoftmaxCrossEntropy(dt, pl, py, po, N, C)
}

// SoftmaxCrossEntropyGrad writes dlogits = scale * g * (softmax - onehot) / counted rows, 0 for ignored rows.
func (b *Backend) SoftmaxCrossEntropyGrad(logits, labels *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	const what = "softmax cross-entropy grad"
	dt, pl, py, N, C, err := b.logitsLabels(what, logits, labels)
	if err != nil {
		return err
	}
	pg, err := b.scalarArg(what, "upstream gradient", g, dt, true)
	if err != nil {
		return err
	}
	pd, err := b.buf(what, "dlogits", dlogits, dt, N, C)
	if err != nil {
		return err
	}
	return b.dev.SoftmaxCrossEntropyGrad(dt, pl, py, pg, pd, N, C, scale)
}

// MSELoss: loss[0] = mean (p - t)^2 over n elements, summed in double in a fixed order.
func (d *Device) MSELoss(dt tensor.Dtype, p, t, loss cu.DevicePtr, n int64) error {
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	parts := 0
	var partial cu.DevicePtr
	if n > 0 {
		parts = reductionParts(n, 256*8, 1024)
		if partial, err = d.scratch(int64(parts) * 8); err != nil {
			return err
		}
		defer d.putScratch(partial)
		if err := d.launch("mse_partial_"+suf, launchCfg{grid: parts, block: 256}, ptrArg(p), ptrArg(t), i64(n), ptrArg(partial)); err != nil {
			return err
		}
	}
	return d.launch("mean_finish_"+suf, launchCfg{grid: 1, block: 256}, ptrArg(partial), i32(parts), i64(n), ptrArg(loss))
}

// MSELossGrad: dp = scale * g[0] * 2 (p - t) / n (g == 0: g[0] = 1).
func (d *Device) MSELossGrad(dt tensor.Dtype, p, t, g, dp cu.DevicePtr, n int64, scale float64) error {
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return d.launch("mse_grad_"+suf, d.flatGrid(n), ptrArg(p), ptrArg(t), i64(n), f64(scale), ptrArg(g), ptrArg(dp))
}

// SoftmaxCrossEntropy: loss[0] over logits [N,C] and labels [N] (one warp per row, then one block).
func (d *Device) SoftmaxCrossEntropy(dt tensor.Dtype, logits, labels, loss cu.DevicePtr, N, C int) error {
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	var rows cu.DevicePtr
	if N > 0 {
		if rows, err = d.scratch(int64(N) * 12); err != nil {
			return err
		}
		defer d.putScratch(rows)
		if err := d.launch("ce_rows_"+suf, d.warpGrid(N), ptrArg(logits), ptrArg(labels), i64(int64(N)), i32(C),
			ptrArg(rows), ptrArg(offsetPtr(rows, int64(N)*8)), ptrArg(d.fault)); err != nil {
			return err
		}
	}
	return d.launch("ce_finish_"+suf, launchCfg{grid: 1, block: 256}, ptrArg(rows), ptrArg(offsetPtr(rows, int64(N)*8)), i64(int64(N)), ptrArg(loss))
}

// SoftmaxCrossEntropyGrad: dlogits [N,C] (the count of labelled rows is computed on the device).
func (d *Device) SoftmaxCrossEntropyGrad(dt tensor.Dtype, logits, labels, g, dlogits cu.DevicePtr, N, C int, scale float64) error {
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	if N == 0 {
		return nil
	}
	count, err := d.scratch(8)
	if err != nil {
		return err
	}
	defer d.putScratch(count)
	if err := d.launch("ce_count", launchCfg{grid: 1, block: 256}, ptrArg(labels), i64(int64(N)), i32(C), ptrArg(count)); err != nil {
		return err
	}
	return d.launch("ce_grad_"+suf, d.warpGrid(N), ptrArg(logits), ptrArg(labels), i64(int64(N)), i32(C), f64(scale),
		ptrArg(g), ptrArg(count), ptrArg(dlogits), ptrArg(d.fault))
}
