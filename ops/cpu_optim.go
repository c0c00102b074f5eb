package ops

import (
	"math"

	"gorgonia.org/tensor"
)

// Optimizer kernels of the CPU backend. Updates are computed per element in float64 and stored once in
// the parameter's dtype (state too).

// gradNormEps keeps the clipping factor finite for an all-zero gradient (PyTorch's clip_grad_norm_).
const gradNormEps = 1e-6

func (cpuBackend) GradNormScale(grads []*tensor.Dense, maxNorm float64, scale *tensor.Dense) error {
	if err := checkClipScale(scale, "GradNormScale: scale"); err != nil {
		return err
	}
	if !(maxNorm > 0) {
		return failf(ErrConfig, "GradNormScale: maxNorm must be > 0 (+Inf: no clipping), got %v", maxNorm)
	}
	sum := 0.0
	for i, g := range grads {
		if g == nil {
			return failf(ErrShape, "GradNormScale: gradient %d is nil", i)
		}
		var s float64
		err := byDtype(g.Dtype(),
			func() (err error) { s, err = sumSquares[float32](g); return err },
			func() (err error) { s, err = sumSquares[float64](g); return err })
		if err != nil {
			return errorf("GradNormScale: gradient %d: %w", i, err)
		}
		if math.IsNaN(s) || math.IsInf(s, 0) {
			if err := setScalar(scale, math.NaN(), nil); err != nil {
				return err
			}
			return failf(ErrNaN, "GradNormScale: gradient %d (shape %v) holds NaN or Inf (or its norm overflows float64)", i, g.Shape())
		}
		sum += s
	}
	return setScalar(scale, math.Min(1, maxNorm/(math.Sqrt(sum)+gradNormEps)), nil)
}

func sumSquares[T float](t *tensor.Dense) (float64, error) {
	d, err := floats[T](t)
	if err != nil {
		return 0, err
	}
	d = d[:t.Shape().TotalSize()]
	return blockSum(len(d), reduceBlock, func(lo, hi int) float64 {
		s := 0.0
		for _, v := range d[lo:hi] {
			s += float64(v) * float64(v)
		}
		return s
	}), nil
}

// checkClipScale requires a one-element float64 tensor.
func checkClipScale(s *tensor.Dense, what string) error {
	if s == nil || s.Shape().TotalSize() != 1 {
		return failf(ErrShape, "%s must be a one-element tensor, got %v", what, shapeOrNil(s))
	}
	if s.Dtype() != tensor.Float64 {
		return failf(ErrDtype, "%s must be float64, got %v", what, s.Dtype())
	}
	return nil
}

// clipFactor reads the optional clipping factor; ok is false when it is not finite (the step is skipped).
func clipFactor(s *tensor.Dense) (c float64, ok bool, err error) {
	if s == nil {
		return 1, true, nil
	}
	if err := checkClipScale(s, "clip scale"); err != nil {
		return 0, false, err
	}
	if c, err = scalarOf(s); err != nil {
		return 0, false, err
	}
	return c, !math.IsNaN(c) && !math.IsInf(c, 0), nil
}

func (cpuBackend) AdamStep(p, g, m, v *tensor.Dense, hp AdamParams, clipScale *tensor.Dense) error {
	if err := checkElementwise("AdamStep", p, g, m, v); err != nil {
		return err
	}
	if err := hp.Validate(); err != nil {
		return err
	}
	clip, ok, err := clipFactor(clipScale)
	if err != nil || !ok {
		return err
	}
	return byDtype(p.Dtype(),
		func() error { return adamCPU[float32](p, g, m, v, hp, clip) },
		func() error { return adamCPU[float64](p, g, m, v, hp, clip) })
}

func adamCPU[T float](p, g, m, v *tensor.Dense, hp AdamParams, clip float64) error {
	ps, gs, ms, vs, err := floats4[T](p, g, m, v)
	if err != nil {
		return err
	}
	bc1 := 1 - math.Pow(hp.Beta1, float64(hp.Step))
	bc2 := 1 - math.Pow(hp.Beta2, float64(hp.Step))
	parallelRows(len(ps), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			w := float64(ps[i])
			gr := clip * float64(gs[i])
			if !hp.DecoupledWeightDecay {
				gr += hp.WeightDecay * w
			}
			mi := hp.Beta1*float64(ms[i]) + (1-hp.Beta1)*gr
			vi := hp.Beta2*float64(vs[i]) + (1-hp.Beta2)*gr*gr
			upd := (mi / bc1) / (math.Sqrt(vi/bc2) + hp.Eps)
			if hp.DecoupledWeightDecay {
				upd += hp.WeightDecay * w
			}
			ms[i], vs[i], ps[i] = T(mi), T(vi), T(w-hp.LR*upd)
		}
	})
	return nil
}

func (cpuBackend) SGDStep(p, g, buf *tensor.Dense, hp SGDParams, clipScale *tensor.Dense) error {
	ts := []*tensor.Dense{p, g}
	if hp.Momentum > 0 || buf != nil {
		ts = append(ts, buf)
	}
	if err := checkElementwise("SGDStep", ts...); err != nil {
		return err
	}
	if err := hp.Validate(); err != nil {
		return err
	}
	clip, ok, err := clipFactor(clipScale)
	if err != nil || !ok {
		return err
	}
	return byDtype(p.Dtype(),
		func() error { return sgdCPU[float32](p, g, buf, hp, clip) },
		func() error { return sgdCPU[float64](p, g, buf, hp, clip) })
}

func sgdCPU[T float](p, g, buf *tensor.Dense, hp SGDParams, clip float64) error {
	ps, err := floats[T](p)
	if err != nil {
		return err
	}
	gs, err := floats[T](g)
	if err != nil {
		return err
	}
	var bs []T
	if hp.Momentum > 0 {
		if bs, err = floats[T](buf); err != nil {
			return err
		}
	}
	parallelRows(len(ps), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			w := float64(ps[i])
			gr := clip*float64(gs[i]) + hp.WeightDecay*w
			if bs != nil {
				b := hp.Momentum*float64(bs[i]) + gr
				bs[i] = T(b)
				if hp.Nesterov {
					gr += hp.Momentum * b
				} else {
					gr = b
				}
			}
			ps[i] = T(w - hp.LR*gr)
		}
	})
	return nil
}

func floats4[T float](a, b, c, d *tensor.Dense) (as, bs, cs, ds []T, err error) {
	if as, err = floats[T](a); err != nil {
		return
	}
	if bs, err = floats[T](b); err != nil {
		return
	}
	if cs, err = floats[T](c); err != nil {
		return
	}
	ds, err = floats[T](d)
	return
}
