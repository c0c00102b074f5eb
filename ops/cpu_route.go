package ops

import (
	"fmt"
	"math"
	"sync"

	"gorgonia.org/tensor"
)

func (cpuBackend) RouteIndices(logits *tensor.Dense, cfg RouteConfig, idx *tensor.Dense) error {
	return byDtype(logits.Dtype(),
		func() error { return routeIndicesCPU[float32](logits, cfg, idx) },
		func() error { return routeIndicesCPU[float64](logits, cfg, idx) })
}

// routeIndicesCPU selects on the logits: softmax is monotonic, so the top-k of the probabilities are
// the top-k of the logits, and selecting on logits keeps exact ties exact (no rounding in exp).
func routeIndicesCPU[T float](logits *tensor.Dense, cfg RouteConfig, idx *tensor.Dense) error {
	l, err := floats[T](logits)
	if err != nil {
		return err
	}
	out, err := int32s(idx)
	if err != nil {
		return err
	}
	nT, nE := logits.Shape()[0], logits.Shape()[1]
	k := cfg.K
	var mu sync.Mutex
	var firstErr error
	errAt := -1
	parallelRows(nT, rowsFor(nE*k), func(lo, hi int) {
		vals := make([]T, k) // one scratch per goroutine
		for t := lo; t < hi; t++ {
			row := l[t*nE : (t+1)*nE]
			sel := out[t*k : (t+1)*k]
			if e := topK(row, vals, sel); e >= 0 {
				mu.Lock()
				if errAt < 0 || t < errAt { // the lowest bad row wins, whatever the scheduling
					errAt = t
					firstErr = fmt.Errorf("ops: route: logits[%d,%d] is NaN", t, e)
				}
				mu.Unlock()
				return
			}
		}
	})
	return firstErr
}

// topK writes into sel the indices of the len(sel) largest values of row in decreasing order; equal
// values keep increasing index order (ties to the lower expert index). It returns the index of a NaN
// in row, or -1.
func topK[T float](row []T, vals []T, sel []int32) int {
	k := len(sel)
	n := 0
	for e, v := range row {
		if v != v {
			return e
		}
		if n == k && v <= vals[k-1] {
			continue
		}
		// insert after every kept value >= v: earlier (lower-index) equals stay ahead
		pos := n
		if n == k {
			pos = k - 1
		}
		for pos > 0 && vals[pos-1] < v {
			if pos < k {
				vals[pos], sel[pos] = vals[pos-1], sel[pos-1]
			}
			pos--
		}
		vals[pos], sel[pos] = v, int32(e)
		if n < k {
			n++
		}
	}
	return -1
}

func (cpuBackend) RouteWeights(logits, idx *tensor.Dense, cfg RouteConfig, w *tensor.Dense) error {
	return byDtype(logits.Dtype(),
		func() error { return routeWeightsCPU[float32](logits, idx, cfg, w) },
		func() error { return routeWeightsCPU[float64](logits, idx, cfg, w) })
}

func routeWeightsCPU[T float](logits, idx *tensor.Dense, cfg RouteConfig, w *tensor.Dense) error {
	l, err := floats[T](logits)
	if err != nil {
		return err
	}
	sel, err := int32s(idx)
	if err != nil {
		return err
	}
	out, err := floats[T](w)
	if err != nil {
		return err
	}
	nT, nE := logits.Shape()[0], logits.Shape()[1]
	k := idx.Shape()[1]
	if err := checkIndices(sel, nE); err != nil {
		return fmt.Errorf("ops: route weights: %w", err)
	}
	renorm := cfg.EffectiveRenormalize()
	parallelRows(nT, rowsFor(nE), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			row := l[t*nE : (t+1)*nE]
			s := sel[t*k : (t+1)*k]
			o := out[t*k : (t+1)*k]
			routeRowWeights(row, s, renorm, o)
		}
	})
	return nil
}

// routeRowWeights computes one token's k weights in float64 and stores them as T.
// Renormalised weights are a softmax over the selected logits only (identical to dividing the selected
// probabilities by their sum, without the rounding of the full softmax).
func routeRowWeights[T float](row []T, sel []int32, renorm bool, out []T) {
	m := math.Inf(-1)
	if renorm {
		for _, e := range sel {
			m = math.Max(m, float64(row[e]))
		}
		z := 0.0
		for _, e := range sel {
			z += math.Exp(float64(row[e]) - m)
		}
		for j, e := range sel {
			out[j] = T(math.Exp(float64(row[e])-m) / z)
		}
		return
	}
	for _, v := range row {
		m = math.Max(m, float64(v))
	}
	z := 0.0
	for _, v := range row {
		z += math.Exp(float64(v) - m)
	}
	for j, e := range sel {
		out[j] = T(math.Exp(float64(row[e])-m) / z)
	}
}

func (cpuBackend) RouteWeightsGrad(logits, idx, dw *tensor.Dense, cfg RouteConfig, dlogits *tensor.Dense) error {
	return byDtype(logits.Dtype(),
		func() error { return routeWeightsGradCPU[float32](logits, idx, dw, cfg, dlogits) },
		func() error { return routeWeightsGradCPU[float64](logits, idx, dw, cfg, dlogits) })
}

// routeWeightsGradCPU: with renormalisation w = softmax over the selected logits, so
// dl[sel_j] = w_j (g_j - sum_i g_i w_i) and every other logit gets 0. Without it w_j = p[sel_j] of the
// full softmax, so dl[e] = p_e (G_e - sum_j g_j w_j) with G_e = g_j where e = sel_j, else 0.
func routeWeightsGradCPU[T float](logits, idx, dw *tensor.Dense, cfg RouteConfig, dlogits *tensor.Dense) error {
	l, err := floats[T](logits)
	if err != nil {
		return err
	}
	sel, err := int32s(idx)
	if err != nil {
		return err
	}
	g, err := floats[T](dw)
	if err != nil {
		return err
	}
	out, err := floats[T](dlogits)
	if err != nil {
		return err
	}
	nT, nE := logits.Shape()[0], logits.Shape()[1]
	k := idx.Shape()[1]
	if err := checkIndices(sel, nE); err != nil {
		return fmt.Errorf("ops: route weights grad: %w", err)
	}
	renorm := cfg.EffectiveRenormalize()
	parallelRows(nT, rowsFor(nE), func(lo, hi int) {
		w := make([]T, k)
		for t := lo; t < hi; t++ {
			row := l[t*nE : (t+1)*nE]
			s := sel[t*k : (t+1)*k]
			gt := g[t*k : (t+1)*k]
			o := out[t*nE : (t+1)*nE]
			routeRowWeights(row, s, renorm, w)
			dot := 0.0
			for j := range s {
				dot += float64(gt[j]) * float64(w[j])
			}
			if renorm {
				clear(o)
				for j, e := range s {
					o[e] += T(float64(w[j]) * (float64(gt[j]) - dot))
				}
				continue
			}
			m := math.Inf(-1)
			for _, v := range row {
				m = math.Max(m, float64(v))
			}
			z := 0.0
			for _, v := range row {
				z += math.Exp(float64(v) - m)
			}
			for e, v := range row {
				o[e] = T(-math.Exp(float64(v)-m) / z * dot)
			}
			for j, e := range s {
				o[e] += T(float64(w[j]) * float64(gt[j]))
			}
		}
	})
	return nil
}

// checkIndices reports the first expert index outside [0, numExperts).
func checkIndices(idx []int32, numExperts int) error {
	for i, e := range idx {
		if e < 0 || int(e) >= numExperts {
			return fmt.Errorf("expert index %d at position %d is outside [0, %d)", e, i, numExperts)
		}
	}
	return nil
}
