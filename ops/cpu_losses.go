package ops

import (
	"math"

	"gorgonia.org/tensor"
)

// LoadBalancingLoss: coef * E * sum_e f_e * P_e with f_e = counts[e]/T and P_e = mean_t softmax(logits)[t,e].
// Sums run in float64 in token order (deterministic).
func (cpuBackend) LoadBalancingLoss(logits, plan *tensor.Dense, coef float64, loss *tensor.Dense) error {
	return byDtype(logits.Dtype(),
		func() error {
			l, err := loadBalancingCPU[float32](logits, plan, 0, nil)
			return setScalar(loss, coef*l, err)
		},
		func() error {
			l, err := loadBalancingCPU[float64](logits, plan, 0, nil)
			return setScalar(loss, coef*l, err)
		})
}

func (cpuBackend) LoadBalancingLossGrad(logits, plan *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	scale, err := hostGrad(scale, g)
	if err != nil {
		return err
	}
	return byDtype(logits.Dtype(),
		func() error { _, err := loadBalancingCPU[float32](logits, plan, scale, dlogits); return err },
		func() error { _, err := loadBalancingCPU[float64](logits, plan, scale, dlogits); return err })
}

// setScalar stores v into the one-element tensor dst (unless err is set).
func setScalar(dst *tensor.Dense, v float64, err error) error {
	if err != nil {
		return err
	}
	if dst == nil || dst.Shape().TotalSize() != 1 {
		return errorf("a scalar result needs a one-element tensor: %w", ErrShape)
	}
	switch d := dst.Data().(type) {
	case []float32:
		d[0] = float32(v)
	case []float64:
		d[0] = v
	case float32, float64:
		return dst.SetAt(any(v), 0)
	default:
		return errorf("scalar result of dtype %v: %w", dst.Dtype(), ErrDtype)
	}
	return nil
}

// hostGrad folds an upstream gradient tensor (one element, host memory) into scale.
func hostGrad(scale float64, g *tensor.Dense) (float64, error) {
	if g == nil {
		return scale, nil
	}
	v, err := scalarOf(g)
	return scale * v, err
}

// loadBalancingCPU returns the loss, and when dlogits is given writes scale * dloss/dlogits:
// dloss/dp[t,e] = E*f_e/T =: g_e, then through the softmax dl[t,e] = p[t,e] (g_e - <p[t,:], g>).
func loadBalancingCPU[T float](logits, plan *tensor.Dense, scale float64, dlogits *tensor.Dense) (float64, error) {
	l, err := floats[T](logits)
	if err != nil {
		return 0, err
	}
	p, err := int32s(plan)
	if err != nil {
		return 0, err
	}
	nT, nE := logits.Shape()[0], logits.Shape()[1]
	if len(p) < nE {
		return 0, errorf("load-balancing loss: plan of %d elements is shorter than E=%d", len(p), nE)
	}
	counts := p[:nE]
	f := make([]float64, nE)
	for e, c := range counts {
		f[e] = float64(c) / float64(nT)
	}
	probs := make([]float64, nE)
	if dlogits == nil {
		meanP := make([]float64, nE)
		for t := 0; t < nT; t++ {
			softmaxRow(l[t*nE:(t+1)*nE], probs)
			for e, v := range probs {
				meanP[e] += v
			}
		}
		loss := 0.0
		for e := range f {
			loss += f[e] * meanP[e] / float64(nT)
		}
		return float64(nE) * loss, nil
	}
	out, err := floats[T](dlogits)
	if err != nil {
		return 0, err
	}
	g := make([]float64, nE)
	for e := range g {
		g[e] = scale * float64(nE) * f[e] / float64(nT)
	}
	for t := 0; t < nT; t++ {
		softmaxRow(l[t*nE:(t+1)*nE], probs)
		d := 0.0
		for e, v := range probs {
			d += v * g[e]
		}
		o := out[t*nE : (t+1)*nE]
		for e, v := range probs {
			o[e] = T(v * (g[e] - d))
		}
	}
	return 0, nil
}

// ZLoss: coef * mean_t logsumexp(logits[t,:])^2.
func (cpuBackend) ZLoss(logits *tensor.Dense, coef float64, loss *tensor.Dense) error {
	return byDtype(logits.Dtype(),
		func() error { l, err := zLossCPU[float32](logits, 0, nil); return setScalar(loss, coef*l, err) },
		func() error { l, err := zLossCPU[float64](logits, 0, nil); return setScalar(loss, coef*l, err) })
}

func (cpuBackend) ZLossGrad(logits *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	scale, err := hostGrad(scale, g)
	if err != nil {
		return err
	}
	return byDtype(logits.Dtype(),
		func() error { _, err := zLossCPU[float32](logits, scale, dlogits); return err },
		func() error { _, err := zLossCPU[float64](logits, scale, dlogits); return err })
}

// zLossCPU: d/dl[t,e] of mean_t lse_t^2 is 2 lse_t softmax[t,e] / T.
func zLossCPU[T float](logits *tensor.Dense, scale float64, dlogits *tensor.Dense) (float64, error) {
	l, err := floats[T](logits)
	if err != nil {
		return 0, err
	}
	nT, nE := logits.Shape()[0], logits.Shape()[1]
	var out []T
	if dlogits != nil {
		if out, err = floats[T](dlogits); err != nil {
			return 0, err
		}
	}
	probs := make([]float64, nE)
	sum := 0.0
	for t := 0; t < nT; t++ {
		row := l[t*nE : (t+1)*nE]
		lse := softmaxRow(row, probs)
		sum += lse * lse
		if out != nil {
			c := scale * 2 * lse / float64(nT)
			o := out[t*nE : (t+1)*nE]
			for e, v := range probs {
				o[e] = T(c * v)
			}
		}
	}
	return sum / float64(nT), nil
}

// softmaxRow writes softmax(row) into probs (float64) and returns logsumexp(row).
func softmaxRow[T float](row []T, probs []float64) float64 {
	m := math.Inf(-1)
	for _, v := range row {
		m = math.Max(m, float64(v))
	}
	z := 0.0
	for e, v := range row {
		probs[e] = math.Exp(float64(v) - m)
		z += probs[e]
	}
	for e := range probs {
		probs[e] /= z
	}
	return m + math.Log(z)
}
