package ops

import (
	"math"

	"gorgonia.org/tensor"
)

// sigmoid64 is the logistic function as every backend computes it: 1 / (1 + exp(-x)) in float64 (the
// CUDA kernels evaluate the same expression in double, so both round the same score to float32).
func sigmoid64(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// sigmoidSlope is sigmoid'(x) = sigmoid(x) * sigmoid(-x) (no cancellation in 1 - sigmoid(x)).
func sigmoidSlope(x float64) float64 { return sigmoid64(x) * sigmoid64(-x) }

// groupEps is the constant transformers adds to the sum of the k sigmoid scores before dividing.
const groupEps = 1e-20

// checkBias reports a NaN or infinite bias entry (ErrNaN) or a bias of the wrong length (ErrShape).
func checkBias[T float](what string, b []T, nE int) error {
	if len(b) != nE {
		return failf(ErrShape, "%s: bias has %d elements, want E = %d", what, len(b), nE)
	}
	for e, v := range b {
		if f := float64(v); f != f || math.IsInf(f, 0) {
			return failf(ErrNaN, "%s: bias[%d] is %v (the selection bias must be finite)", what, e, v)
		}
	}
	return nil
}

// routeIndicesSigmoidCPU selects with DeepSeek-V3's rule (Scoring Sigmoid). Selection values are
// computed in the logits' dtype, as transformers does in float32: s = T(sigmoid), c = s + bias (a T
// addition), a group's score = its two largest c added in T.
func routeIndicesSigmoidCPU[T float](logits, bias *tensor.Dense, cfg RouteConfig, idx *tensor.Dense) error {
	l, err := floats[T](logits)
	if err != nil {
		return err
	}
	out, err := int32s(idx)
	if err != nil {
		return err
	}
	nT, nE := logits.Shape()[0], logits.Shape()[1]
	var b []T
	if bias != nil {
		if b, err = floats[T](bias); err != nil {
			return err
		}
		if err := checkBias("route", b, nE); err != nil {
			return err
		}
	}
	k := cfg.K
	var rows rowErrors
	parallelRows(nT, rowsFor(nE*k), func(lo, hi int) {
		sc := newSigmoidScratch[T](nE, k, cfg)
		for t := lo; t < hi; t++ {
			row := l[t*nE : (t+1)*nE]
			if bad := sc.selectRow(row, b, cfg, out[t*k:(t+1)*k]); bad >= 0 {
				rows.report(t, func() error { return failf(ErrNaN, "route: logits[%d,%d] is NaN", t, bad) })
				return
			}
		}
	})
	return rows.err
}

// sigmoidScratch is one goroutine's working memory for sigmoidSelectRow.
type sigmoidScratch[T float] struct {
	choice, vals, gscore, gvals []T
	gsel                        []int32
	kept                        []bool
}

func newSigmoidScratch[T float](nE, k int, cfg RouteConfig) *sigmoidScratch[T] {
	s := &sigmoidScratch[T]{choice: make([]T, nE), vals: make([]T, k)}
	if cfg.Grouped() {
		s.gscore = make([]T, cfg.Groups)
		s.gvals = make([]T, cfg.TopKGroups)
		s.gsel = make([]int32, cfg.TopKGroups)
		s.kept = make([]bool, cfg.Groups)
	}
	return s
}

// selectRow writes the k chosen experts of one token into sel (decreasing selection value, ties to the
// lower index) and returns -1, or the index of the row's first NaN logit.
func (s *sigmoidScratch[T]) selectRow(row, bias []T, cfg RouteConfig, sel []int32) int {
	c := s.choice
	for e, v := range row {
		if v != v {
			return e
		}
		c[e] = T(sigmoid64(float64(v)))
		if bias != nil {
			c[e] += bias[e]
		}
	}
	if cfg.Grouped() {
		gs := len(row) / cfg.Groups
		for g := range s.gscore {
			top1, top2 := T(math.Inf(-1)), T(math.Inf(-1))
			for _, v := range c[g*gs : (g+1)*gs] {
				switch {
				case v > top1:
					top1, top2 = v, top1
				case v > top2:
					top2 = v
				}
			}
			s.gscore[g] = top1 + top2
		}
		topK(s.gscore, s.gvals, s.gsel) // finite scores: ties to the lower group index
		clear(s.kept)
		for _, g := range s.gsel {
			s.kept[g] = true
		}
		fill := T(0)
		if cfg.GroupMask == GroupMaskExclude {
			fill = T(math.Inf(-1))
		}
		for g, keep := range s.kept {
			if !keep {
				for e := g * gs; e < (g+1)*gs; e++ {
					c[e] = fill
				}
			}
		}
	}
	topK(c, s.vals, sel) // no NaN or +Inf; at least K finite values (Validate)
	return -1
}

// sigmoidWeightsCPU: w_j = scale * s_j (/ (sum_j s_j + 1e-20) when renormalised), s_j = sigmoid(l[i_j]),
// in float64.
func sigmoidWeightsCPU[T float](l []T, sel []int32, nT, nE, k int, cfg RouteConfig, out []T) error {
	if err := checkSigmoidRows("route weights", l, nT, nE); err != nil {
		return err
	}
	renorm, scale := cfg.Renormalize, cfg.EffectiveScale()
	parallelRows(nT, rowsFor(nE), func(lo, hi int) {
		s := make([]float64, k)
		for t := lo; t < hi; t++ {
			row, ix, o := l[t*nE:(t+1)*nE], sel[t*k:(t+1)*k], out[t*k:(t+1)*k]
			den := sigmoidScores(row, ix, renorm, s)
			for j := range o {
				o[j] = T(scale * s[j] / den)
			}
		}
	})
	return nil
}

// sigmoidScores writes s_j = sigmoid(row[sel[j]]) and returns the weights' denominator: sum_j s_j +
// 1e-20 (summed in increasing j) when renormalising, else 1.
func sigmoidScores[T float](row []T, sel []int32, renorm bool, s []float64) float64 {
	sum := 0.0
	for j, e := range sel {
		s[j] = sigmoid64(float64(row[e]))
		sum += s[j]
	}
	if !renorm {
		return 1
	}
	return sum + groupEps
}

// sigmoidWeightsGradCPU: with D the denominator and c the scale, w_j = c s_j / D, so
// dL/ds_m = (c/D)(g_m - sum_j g_j s_j / D) when renormalised (c g_m otherwise), and dl_e = sum over m
// with i_m = e of sigmoid'(l_e) dL/ds_m; unselected experts get 0.
func sigmoidWeightsGradCPU[T float](l []T, sel []int32, g []T, nT, nE, k int, cfg RouteConfig, out []T) error {
	if err := checkSigmoidRows("route weights grad", l, nT, nE); err != nil {
		return err
	}
	renorm, scale := cfg.Renormalize, cfg.EffectiveScale()
	parallelRows(nT, rowsFor(nE), func(lo, hi int) {
		s := make([]float64, k)
		acc := make([]float64, nE)
		for t := lo; t < hi; t++ {
			row, ix, gt, o := l[t*nE:(t+1)*nE], sel[t*k:(t+1)*k], g[t*k:(t+1)*k], out[t*nE:(t+1)*nE]
			den := sigmoidScores(row, ix, renorm, s)
			dot := 0.0
			if renorm {
				for j := range ix {
					dot += float64(gt[j]) * s[j] / den
				}
			}
			for j, e := range ix {
				acc[e] += scale / den * (float64(gt[j]) - dot) * sigmoidSlope(float64(row[e]))
			}
			for e := range o {
				o[e] = T(acc[e])
			}
			for _, e := range ix {
				acc[e] = 0
			}
		}
	})
	return nil
}

// checkSigmoidRows reports the first NaN logit (ErrNaN): the sigmoid of every other value is defined.
func checkSigmoidRows[T float](what string, l []T, nT, nE int) error {
	for i, v := range l {
		if v != v {
			return failf(ErrNaN, "%s: logits[%d,%d] is NaN", what, i/nE, i%nE)
		}
	}
	return nil
}
