package ops

import (
	"gorgonia.org/tensor"
)

func (cpuBackend) Dispatch(x, w, plan *tensor.Dense, out *tensor.Dense) error {
	return byDtype(x.Dtype(),
		func() error { return dispatchCPU[float32](x, w, plan, out) },
		func() error { return dispatchCPU[float64](x, w, plan, out) })
}

func dispatchCPU[T float](x, w, plan *tensor.Dense, out *tensor.Dense) error {
	xs, err := floats[T](x)
	if err != nil {
		return err
	}
	ws, err := optFloats[T](w)
	if err != nil {
		return err
	}
	os, err := floats[T](out)
	if err != nil {
		return err
	}
	nT, h := x.Shape()[0], x.Shape()[1]
	n := out.Shape()[0]
	k := n / nT
	pv, err := planOf(plan, nT, k)
	if err != nil {
		return err
	}
	parallelRows(n, rowsFor(h), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			s := int(pv.SlotOf[r])
			src := xs[(s/k)*h : (s/k+1)*h]
			dst := os[r*h : (r+1)*h]
			if ws == nil {
				copy(dst, src)
				continue
			}
			scale := ws[s]
			for i, v := range src {
				dst[i] = scale * v
			}
		}
	})
	return nil
}

func (cpuBackend) Combine(ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	return byDtype(ye.Dtype(),
		func() error { return combineCPU[float32](ye, w, plan, out) },
		func() error { return combineCPU[float64](ye, w, plan, out) })
}

// combineCPU sums each token's K rows in increasing j: the order never depends on scheduling.
func combineCPU[T float](ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	ys, err := floats[T](ye)
	if err != nil {
		return err
	}
	ws, err := optFloats[T](w)
	if err != nil {
		return err
	}
	os, err := floats[T](out)
	if err != nil {
		return err
	}
	nT, h := out.Shape()[0], out.Shape()[1]
	k := ye.Shape()[0] / nT
	pv, err := planOf(plan, nT, k)
	if err != nil {
		return err
	}
	parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			dst := os[t*h : (t+1)*h]
			for j := 0; j < k; j++ {
				r := int(pv.RowOf[t*k+j])
				src := ys[r*h : (r+1)*h]
				switch {
				case ws == nil && j == 0:
					copy(dst, src)
				case ws == nil:
					for i, v := range src {
						dst[i] += v
					}
				case j == 0:
					scale := ws[t*k]
					for i, v := range src {
						dst[i] = scale * v
					}
				default:
					scale := ws[t*k+j]
					for i, v := range src {
						dst[i] += scale * v
					}
				}
			}
		}
	})
	return nil
}

func (cpuBackend) CombineGradWeights(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	return byDtype(dy.Dtype(),
		func() error { return combineGradWeightsCPU[float32](dy, ye, plan, dw) },
		func() error { return combineGradWeightsCPU[float64](dy, ye, plan, dw) })
}

func combineGradWeightsCPU[T float](dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	g, err := floats[T](dy)
	if err != nil {
		return err
	}
	ys, err := floats[T](ye)
	if err != nil {
		return err
	}
	out, err := floats[T](dw)
	if err != nil {
		return err
	}
	nT, h := dy.Shape()[0], dy.Shape()[1]
	k := dw.Shape()[1]
	pv, err := planOf(plan, nT, k)
	if err != nil {
		return err
	}
	parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			gt := g[t*h : (t+1)*h]
			for j := 0; j < k; j++ {
				r := int(pv.RowOf[t*k+j])
				out[t*k+j] = dot(gt, ys[r*h:(r+1)*h])
			}
		}
	})
	return nil
}

// dot accumulates in float64 with four independent partial sums (fixed order, so deterministic).
func dot[T float](a, b []T) T {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(a[i]) * float64(b[i])
		s1 += float64(a[i+1]) * float64(b[i+1])
		s2 += float64(a[i+2]) * float64(b[i+2])
		s3 += float64(a[i+3]) * float64(b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(a[i]) * float64(b[i])
	}
	return T((s0 + s1) + (s2 + s3))
}
