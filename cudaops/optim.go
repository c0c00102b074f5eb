//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"math"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// The optimizer kernels of ops.TrainingBackend on the GPU (optim.cu): the global gradient-norm clipping
// factor (a one-element float64 device tensor, never read by the host) and one fused update kernel per
// parameter for Adam(W) and SGD with momentum.

// GradNormScale writes scale = min(1, maxNorm / (sqrt(sum over all grads of g^2) + 1e-6)): per-block
// partial sums of squares in double (grids fixed by each tensor's size), then one block sums them in a
// fixed order. A NaN or infinite gradient makes scale NaN and is reported at the next synchronisation
// (ops.ErrNaN).
func (b *Backend) GradNormScale(grads []*tensor.Dense, maxNorm float64, scale *tensor.Dense) error {
	const what = "grad norm scale"
	if !(maxNorm > 0) {
		return fmt.Errorf("cudaops: %s: maxNorm %v must be > 0 (+Inf: no clipping): %w", what, maxNorm, ops.ErrConfig)
	}
	ps := make([]cu.DevicePtr, len(grads))
	dts := make([]tensor.Dtype, len(grads))
	ns := make([]int64, len(grads))
	for i, g := range grads {
		dt, err := floatDtype(what, g)
		if err != nil {
			return fmt.Errorf("%v (gradient %d): %w", err, i, ops.ErrDtype)
		}
		if ps[i], err = b.buf(what, fmt.Sprintf("gradient %d", i), g, dt); err != nil {
			return err
		}
		dts[i], ns[i] = dt, int64(numel(g))
	}
	pScale, err := b.scalarArg(what, "scale", scale, tensor.Float64, false)
	if err != nil {
		return err
	}
	return b.dev.GradNormScale(dts, ps, ns, maxNorm, pScale)
}

// GradNormScale launches the partial sums of every gradient, then the finishing kernel.
func (d *Device) GradNormScale(dts []tensor.Dtype, grads []cu.DevicePtr, ns []int64, maxNorm float64, scale cu.DevicePtr) error {
	parts := make([]int, len(grads))
	total := 0
	for i, n := range ns {
		if n > 0 {
			parts[i] = reductionParts(n, 2048, 256)
			total += parts[i]
		}
	}
	var partial cu.DevicePtr
	if total > 0 {
		var err error
		if partial, err = d.scratch(int64(total) * 8); err != nil {
			return err
		}
		defer d.putScratch(partial)
	}
	off := int64(0)
	for i, g := range grads {
		if parts[i] == 0 {
			continue
		}
		suf, err := suffix(dts[i])
		if err != nil {
			return err
		}
		if err := d.launch("sumsq_partial_"+suf, launchCfg{grid: parts[i], block: 256}, ptrArg(g), i64(ns[i]),
			ptrArg(offsetPtr(partial, off*8)), ptrArg(d.fault)); err != nil {
			return err
		}
		off += int64(parts[i])
	}
	return d.launch("norm_scale_finish", launchCfg{grid: 1, block: 256}, ptrArg(partial), i32(total), f64(maxNorm), ptrArg(scale))
}

// clipArg validates the optional clipping factor: a one-element float64 device tensor.
func (b *Backend) clipArg(what string, clip *tensor.Dense) (cu.DevicePtr, error) {
	return b.scalarArg(what, "clipScale", clip, tensor.Float64, true)
}

// AdamStep updates one parameter in place with Adam (AdamW when hp.DecoupledWeightDecay), one fused
// kernel: see ops.TrainingBackend for the formula. hp.Step counts from 1; Beta1 and Beta2 lie in [0, 1).
func (b *Backend) AdamStep(p, g, m, v *tensor.Dense, hp ops.AdamParams, clipScale *tensor.Dense) error {
	const what = "Adam step"
	if hp.Step < 1 || !(hp.Beta1 >= 0 && hp.Beta1 < 1) || !(hp.Beta2 >= 0 && hp.Beta2 < 1) {
		return fmt.Errorf("cudaops: %s: step %d, beta1 %v, beta2 %v (want step >= 1 and betas in [0, 1)): %w", what, hp.Step, hp.Beta1, hp.Beta2, ops.ErrConfig)
	}
	dt, ps, n, err := b.sameShapeArgs(what, []string{"p", "g", "m", "v"}, p, g, m, v)
	if err != nil {
		return err
	}
	pc, err := b.clipArg(what, clipScale)
	if err != nil {
		return err
	}
	bc1 := 1 - math.Pow(hp.Beta1, float64(hp.Step))
	bc2 := 1 - math.Pow(hp.Beta2, float64(hp.Step))
	return b.dev.AdamStep(dt, ps[0], ps[1], ps[2], ps[3], n, hp, bc1, bc2, pc)
}

// AdamStep launches the fused Adam update over n elements.
func (d *Device) AdamStep(dt tensor.Dtype, p, g, m, v cu.DevicePtr, n int64, hp ops.AdamParams, bc1, bc2 float64, clip cu.DevicePtr) error {
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return d.launch("adam_"+suf, d.flatGrid(n), ptrArg(p), ptrArg(g), ptrArg(m), ptrArg(v), i64(n), f64(hp.LR),
		f64(hp.Beta1), f64(hp.Beta2), f64(hp.Eps), f64(hp.WeightDecay), i32(b2i(hp.DecoupledWeightDecay)),
		f64(bc1), f64(bc2), ptrArg(clip))
}

// SGDStep updates one parameter in place with SGD (momentum, Nesterov, weight decay), one fused kernel.
// buf is the momentum buffer (may be nil when hp.Momentum is 0, and is ignored then).
func (b *Backend) SGDStep(p, g, buf *tensor.Dense, hp ops.SGDParams, clipScale *tensor.Dense) error {
	const what = "SGD step"
	if hp.Momentum < 0 || math.IsNaN(hp.Momentum) {
		return fmt.Errorf("cudaops: %s: momentum %v: %w", what, hp.Momentum, ops.ErrConfig)
	}
	names, ts := []string{"p", "g"}, []*tensor.Dense{p, g}
	if hp.Momentum > 0 {
		if buf == nil {
			return fmt.Errorf("cudaops: %s: momentum %v needs a momentum buffer: %w", what, hp.Momentum, ops.ErrConfig)
		}
		names, ts = append(names, "buf"), append(ts, buf)
	}
	dt, ps, n, err := b.sameShapeArgs(what, names, ts...)
	if err != nil {
		return err
	}
	pc, err := b.clipArg(what, clipScale)
	if err != nil {
		return err
	}
	var pb cu.DevicePtr
	if len(ps) == 3 {
		pb = ps[2]
	}
	return b.dev.SGDStep(dt, ps[0], ps[1], pb, n, hp, pc)
}

// SGDStep launches the fused SGD update over n elements (buf == 0: no momentum).
func (d *Device) SGDStep(dt tensor.Dtype, p, g, buf cu.DevicePtr, n int64, hp ops.SGDParams, clip cu.DevicePtr) error {
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return d.launch("sgd_"+suf, d.flatGrid(n), ptrArg(p), ptrArg(g), ptrArg(buf), i64(n), f64(hp.LR), f64(hp.Momentum),
		f64(hp.WeightDecay), i32(b2i(hp.Nesterov)), ptrArg(clip))
}
