package ops

import (
	"math"

	"gorgonia.org/tensor"
)

// LoadBalancingLoss: coef * E * sum_e f_e * P_e with f_e = counts[e]/n and P_e = (sum over counted t of
// softmax(logits)[t,e])/n (n = T, or the counted tokens of mask). Sums run in float64 in token order
// (deterministic).
func (cpuBackend) LoadBalancingLoss(logits, plan, mask *tensor.Dense, coef float64, loss *tensor.Dense) error {
	return byDtype(logits.Dtype(),
		func() error {
			l, err := loadBalancingCPU[float32](logits, plan, mask, 0, nil)
			return setScalar(loss, coef*l, err)
		},
		func() error {
			l, err := loadBalancingCPU[float64](logits, plan, mask, 0, nil)
			return setScalar(loss, coef*l, err)
		})
}

func (cpuBackend) LoadBalancingLossGrad(logits, plan, mask *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	scale, err := hostGrad(scale, g)
	if err != nil {
		return err
	}
	return byDtype(logits.Dtype(),
		func() error { _, err := loadBalancingCPU[float32](logits, plan, mask, scale, dlogits); return err },
		func() error { _, err := loadBalancingCPU[float64](logits, plan, mask, scale, dlogits); return err })
}

// setScalar stores v into the one-element tensor dst (unless err is set).
func setScalar(dst *tensor.Dense, v float64, err error) error {
	if err != nil {
		return err
	}
	if dst == nil || dst.Shape().TotalSize() != 1 {
		return failf(ErrShape, "a scalar result needs a one-element tensor")
	}
	switch d := dst.Data().(type) {
	case []float32:
		d[0] = float32(v)
	case []float64:
		d[0] = v
	case float32, float64:
		return dst.SetAt(any(v), 0)
	default:
		return failf(ErrDtype, "scalar result of dtype %v", dst.Dtype())
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

// balanceCounts returns f_e * n (the slots of counted tokens routed to e, dropped by a capacity or not)
// and n, the number of counted tokens: from the plan's counts without a mask; with a mask, by walking
// each expert's rows (kept and dropped) back to their tokens (slotOf[r] / K).
func balanceCounts(p []int32, mask *tensor.Dense, nT, nE int) (counts []float64, n int, err error) {
	if len(p) < 2*nE+1 || (len(p)-2*nE-1)%(2*max(nT, 1)) != 0 {
		return nil, 0, failf(ErrShape, "load-balancing loss: a plan of %d elements does not fit T=%d, E=%d", len(p), nT, nE)
	}
	counts = make([]float64, nE)
	if mask == nil {
		for e, c := range p[:nE] {
			counts[e] = float64(c)
		}
		return counts, nT, nil
	}
	m, err := int32s(mask)
	if err != nil || len(m) != nT {
		return nil, 0, failf(ErrShape, "load-balancing loss: mask must be [%d] int32", nT)
	}
	for _, v := range m {
		if v != 0 {
			n++
		}
	}
	if nT == 0 {
		return counts, 0, nil
	}
	k := (len(p) - 2*nE - 1) / (2 * nT)
	pv, err := NewPlanView(p, nT, k, nE)
	if err != nil {
		return nil, 0, err
	}
	countRows := func(e, lo, hi int) {
		for r := lo; r < hi; r++ {
			if s := int(pv.SlotOf[r]); s >= 0 && s < nT*k && m[s/k] != 0 {
				counts[e]++
			}
		}
	}
	for e := 0; e < nE; e++ {
		countRows(e, int(pv.Offsets[e]), int(pv.Offsets[e+1]))
		if lo, hi := pv.DroppedRows(e); hi > lo && lo >= 0 && hi <= nT*k { // a capacity plan's dropped slots still count
			countRows(e, lo, hi)
		}
	}
	return counts, n, nil
}

// loadBalancingCPU returns the loss, and when dlogits is given writes scale * dloss/dlogits:
// dloss/dp[t,e] = E*f_e/n =: g_e for counted t, then through the softmax dl[t,e] = p[t,e] (g_e - <p[t,:], g>);
// rows of tokens the mask leaves out get 0.
func loadBalancingCPU[T float](logits, plan, mask *tensor.Dense, scale float64, dlogits *tensor.Dense) (float64, error) {
	l, err := floats[T](logits)
	if err != nil {
		return 0, err
	}
	p, err := int32s(plan)
	if err != nil {
		return 0, err
	}
	nT, nE := logits.Shape()[0], logits.Shape()[1]
	counts, n, err := balanceCounts(p, mask, nT, nE)
	if err != nil {
		return 0, err
	}
	var counted []int32
	if mask != nil {
		counted, _ = int32s(mask)
	}
	if err := checkRows("load-balancing loss", l, nT, nE, counted); err != nil {
		return 0, err
	}
	var out []T
	if dlogits != nil {
		if out, err = floats[T](dlogits); err != nil {
			return 0, err
		}
		clear(out)
	}
	if n == 0 {
		return 0, nil // no counted token: loss 0, gradient 0
	}
	probs := make([]float64, nE)
	if dlogits == nil {
		meanP := make([]float64, nE)
		for t := 0; t < nT; t++ {
			if counted != nil && counted[t] == 0 {
				continue
			}
			softmaxRow(l[t*nE:(t+1)*nE], probs)
			for e, v := range probs {
				meanP[e] += v
			}
		}
		loss := 0.0
		for e := range counts {
			loss += counts[e] / float64(n) * meanP[e] / float64(n)
		}
		return float64(nE) * loss, nil
	}
	g := make([]float64, nE)
	for e := range g {
		g[e] = scale * float64(nE) * (counts[e] / float64(n)) / float64(n)
	}
	for t := 0; t < nT; t++ {
		if counted != nil && counted[t] == 0 {
			continue
		}
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
	if err := checkRows("z-loss", l, nT, nE, nil); err != nil {
		return 0, err
	}
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

// softmaxRow writes softmax(row) into probs (float64) and returns logsumexp(row). The row is valid
// (checkRows).
func softmaxRow[T float](row []T, probs []float64) float64 {
	m, z, _ := softmaxStats(row)
	for e, v := range row {
		probs[e] = math.Exp(float64(v)-m) / z
	}
	return m + math.Log(z)
}
