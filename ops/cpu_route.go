package ops

import (
	"math"
	"sync"

	"gorgonia.org/tensor"
)

func (c cpuBackend) RouteIndices(logits *tensor.Dense, cfg RouteConfig, idx *tensor.Dense) error {
	return c.RouteIndicesBias(logits, nil, cfg, idx)
}

func (cpuBackend) RouteIndicesBias(logits, bias *tensor.Dense, cfg RouteConfig, idx *tensor.Dense) error {
	if cfg.Scoring == Sigmoid {
		return byDtype(logits.Dtype(),
			func() error { return routeIndicesSigmoidCPU[float32](logits, bias, cfg, idx) },
			func() error { return routeIndicesSigmoidCPU[float64](logits, bias, cfg, idx) })
	}
	if bias != nil {
		return failf(ErrConfig, "route: a selection bias needs sigmoid scoring, got %v", cfg.Scoring)
	}
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
	var rows rowErrors
	parallelRows(nT, rowsFor(nE*k), func(lo, hi int) {
		vals := make([]T, k) // one scratch per goroutine
		for t := lo; t < hi; t++ {
			row := l[t*nE : (t+1)*nE]
			if bad := topK(row, vals, out[t*k:(t+1)*k]); bad >= 0 {
				rows.report(t, func() error { return badRow("route", t, row, bad) })
				return
			}
		}
	})
	return rows.err
}

// rowErrors keeps the error of the lowest failing row, whatever the scheduling of parallelRows.
type rowErrors struct {
	mu  sync.Mutex
	at  int
	err error
}

func (r *rowErrors) report(row int, mk func() error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil || row < r.at {
		r.at, r.err = row, mk()
	}
}

// topK writes into sel the indices of the len(sel) largest values of row in decreasing order; equal
// values keep increasing index order (ties to the lower expert index). It returns -1, or, when the
// row's softmax is undefined, the index of its first NaN or +Inf (len(row) when all values are -Inf).
func topK[T float](row []T, vals []T, sel []int32) int {
	k := len(sel)
	n := 0
	for e, v := range row {
		if v != v || math.IsInf(float64(v), 1) {
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
	if n > 0 && math.IsInf(float64(vals[0]), -1) {
		return len(row)
	}
	return -1
}

// softmaxStats returns m = max(row) and z = sum_e exp(row[e] - m), summed in float64 in index order (the
// statistics of every softmax and logsumexp of this backend), and bad: -1, or the index of the row's
// first NaN or +Inf, or len(row) when every value is -Inf (softmax and logsumexp are then undefined).
func softmaxStats[T float](row []T) (m, z float64, bad int) {
	m = math.Inf(-1)
	for e, v := range row {
		x := float64(v)
		if x != x || math.IsInf(x, 1) {
			return 0, 0, e
		}
		m = math.Max(m, x)
	}
	if math.IsInf(m, -1) {
		return 0, 0, len(row)
	}
	for _, v := range row {
		z += math.Exp(float64(v) - m)
	}
	return m, z, -1
}

// badRow is the ErrNaN error for token t's logits row with the problem softmaxStats or topK found at bad.
func badRow[T float](what string, t int, row []T, bad int) error {
	if bad >= len(row) {
		return failf(ErrNaN, "%s: the logits of token %d are all -Inf (softmax undefined)", what, t)
	}
	return failf(ErrNaN, "%s: logits[%d,%d] is %v", what, t, bad, row[bad])
}

// checkRows reports the first row of l [T,E] whose softmax is undefined (ErrNaN), skipping rows where
// counted (when non-nil) is 0.
func checkRows[T float](what string, l []T, nT, nE int, counted []int32) error {
	for t := 0; t < nT; t++ {
		if counted != nil && counted[t] == 0 {
			continue
		}
		row := l[t*nE : (t+1)*nE]
		if _, _, bad := softmaxStats(row); bad >= 0 {
			return badRow(what, t, row, bad)
		}
	}
	return nil
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
	if err := checkIndices("route weights", sel, nE); err != nil {
		return err
	}
	if cfg.Scoring == Sigmoid {
		return sigmoidWeightsCPU(l, sel, nT, nE, k, cfg, out)
	}
	if err := checkRows("route weights", l, nT, nE, nil); err != nil {
		return err
	}
	renorm := cfg.EffectiveRenormalize()
	scale := cfg.EffectiveScale()
	parallelRows(nT, rowsFor(nE), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			o := out[t*k : (t+1)*k]
			routeRowWeights(l[t*nE:(t+1)*nE], sel[t*k:(t+1)*k], renorm, o)
			if scale != 1 {
				for j := range o {
					o[j] = T(float64(o[j]) * scale)
				}
			}
		}
	})
	return nil
}

// routeRowWeights computes one token's k weights in float64 and stores them as T (the row is valid:
// checkRows). Renormalised weights are a softmax over the selected logits only (identical to dividing
// the selected probabilities by their sum, without the rounding of the full softmax).
func routeRowWeights[T float](row []T, sel []int32, renorm bool, out []T) {
	var m, z float64
	if renorm {
		m = math.Inf(-1)
		for _, e := range sel {
			m = math.Max(m, float64(row[e]))
		}
		for _, e := range sel {
			z += math.Exp(float64(row[e]) - m)
		}
	} else {
		m, z, _ = softmaxStats(row)
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
	if err := checkIndices("route weights grad", sel, nE); err != nil {
		return err
	}
	if cfg.Scoring == Sigmoid {
		return sigmoidWeightsGradCPU(l, sel, g, nT, nE, k, cfg, out)
	}
	if err := checkRows("route weights grad", l, nT, nE, nil); err != nil {
		return err
	}
	renorm := cfg.EffectiveRenormalize()
	scale := cfg.EffectiveScale() // w = scale * w', so d/dw' = scale * g
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
				dot += scale * float64(gt[j]) * float64(w[j])
			}
			if renorm {
				clear(o)
				for j, e := range s {
					o[e] += T(float64(w[j]) * (scale*float64(gt[j]) - dot))
				}
				continue
			}
			m, z, _ := softmaxStats(row)
			for e, v := range row {
				o[e] = T(-math.Exp(float64(v)-m) / z * dot)
			}
			for j, e := range s {
				o[e] += T(float64(w[j]) * scale * float64(gt[j]))
			}
		}
	})
	return nil
}

// checkIndices reports the first expert index outside [0, numExperts) (ErrExpertIndex).
func checkIndices(what string, idx []int32, numExperts int) error {
	for i, e := range idx {
		if e < 0 || int(e) >= numExperts {
			return failf(ErrExpertIndex, "%s: expert index %d at position %d is outside [0, %d)", what, e, i, numExperts)
		}
	}
	return nil
}
