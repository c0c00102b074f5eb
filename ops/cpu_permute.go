package ops

import (
	"gorgonia.org/tensor"
)

func (cpuBackend) Dispatch(x, w, plan *tensor.Dense, out *tensor.Dense) error {
	if mixedBF16(x, out) {
		return dispatchBF16CPU(x, w, plan, out)
	}
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
	if limit := pv.Offsets[pv.E]; int(limit) != n {
		dispatchDropping(xs, ws, os, pv, h, limit)
		return nil
	}
	// Walk tokens, not rows: each x row is read from memory once and written to its K rows while it is
	// still in cache (row order would read every x row K times). Every out row is written exactly once.
	parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			src := xs[t*h : (t+1)*h]
			dst := func(j int) []T {
				r := int(pv.RowOf[t*k+j])
				return os[r*h : (r+1)*h][:len(src)]
			}
			if ws == nil {
				for j := 0; j < k; j++ {
					copy(dst(j), src)
				}
				continue
			}
			// Scaled rows are written two per pass over src: two interleaved store streams keep
			// more cache lines in flight than one (measured ~1.5x at H=4096).
			j := 0
			for ; j+1 < k; j += 2 {
				d0, d1 := dst(j), dst(j+1)
				s0, s1 := ws[t*k+j], ws[t*k+j+1]
				for i, v := range src {
					d0[i] = s0 * v
					d1[i] = s1 * v
				}
			}
			if j < k {
				d0, s0 := dst(j), ws[t*k+j]
				for i, v := range src {
					d0[i] = s0 * v
				}
			}
		}
	})
	return nil
}

// dispatchDropping is Dispatch over a capacity plan: rows of dropped slots (row >= limit) are zero.
func dispatchDropping[T float](xs, ws, os []T, pv PlanView, h int, limit int32) {
	k := pv.K
	parallelRows(pv.T, rowsFor(h*k), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			src := xs[t*h : (t+1)*h]
			for j := 0; j < k; j++ {
				r := pv.RowOf[t*k+j]
				dst := os[int(r)*h : (int(r)+1)*h][:len(src)]
				switch {
				case r >= limit:
					clear(dst)
				case ws == nil:
					copy(dst, src)
				default:
					sc := ws[t*k+j]
					for i, v := range src {
						dst[i] = sc * v
					}
				}
			}
		}
	})
}

func (cpuBackend) Combine(ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	if mixedBF16(ye, out) {
		return combineBF16CPU(ye, w, plan, out)
	}
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
	limit := pv.Offsets[pv.E]
	if int(limit) == nT*k {
		parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
			for t := lo; t < hi; t++ {
				combineRow(os[t*h:(t+1)*h], ys, ws, pv.RowOf[t*k:(t+1)*k], t*k)
			}
		})
		return nil
	}
	// A capacity plan: each token sums its kept rows in increasing j (none: a zero row).
	parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			dst := os[t*h : (t+1)*h]
			clear(dst)
			for j := 0; j < k; j++ {
				r := int(pv.RowOf[t*k+j])
				if r >= int(limit) {
					continue
				}
				src := ys[r*h : (r+1)*h][:len(dst)]
				sc := T(1)
				if ws != nil {
					sc = ws[t*k+j]
				}
				for i, v := range src {
					dst[i] += sc * v
				}
			}
		}
	})
	return nil
}

// combineRow writes dst = sum_j scale_j * ye[rows[j]] with scale_j = w[slot0+j] (1 when w is nil).
// It reads two rows per pass over dst (one memory pass instead of K), yet every element is still
// summed in increasing j: ((s0*a0 + s1*a1) + s2*a2) + s3*a3 ..., the same order for every schedule.
func combineRow[T float](dst, ys, w []T, rows []int32, slot0 int) {
	h := len(dst)
	row := func(j int) []T {
		r := int(rows[j])
		return ys[r*h : (r+1)*h : (r+1)*h]
	}
	scale := func(j int) T {
		if w == nil {
			return 1 // 1*v == v exactly, so the unweighted sum is unchanged
		}
		return w[slot0+j]
	}
	k := len(rows)
	a, sa := row(0), scale(0)
	dst = dst[:len(a)] // a and b have len(dst) elements: lets the compiler drop bounds checks
	if k == 1 {
		for i, v := range a {
			dst[i] = sa * v
		}
		return
	}
	b, sb := row(1), scale(1)
	b = b[:len(a)]
	for i := range a {
		dst[i] = sa*a[i] + sb*b[i]
	}
	j := 2
	for ; j+1 < k; j += 2 {
		a, sa = row(j), scale(j)
		b, sb = row(j+1), scale(j+1)
		a, b = a[:len(dst)], b[:len(dst)]
		for i := range dst {
			dst[i] = (dst[i] + sa*a[i]) + sb*b[i]
		}
	}
	if j < k {
		a, sa = row(j), scale(j)
		a = a[:len(dst)]
		for i := range dst {
			dst[i] += sa * a[i]
		}
	}
}

func (cpuBackend) CombineGradWeights(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	if mixedBF16(dy, ye) {
		return combineGradWeightsBF16CPU(dy, ye, plan, dw)
	}
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
	if limit := pv.Offsets[pv.E]; int(limit) != nT*k {
		// A capacity plan: dropped slots take no part in the combine, so their weight gradient is 0.
		parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
			for t := lo; t < hi; t++ {
				for j := 0; j < k; j++ {
					r := int(pv.RowOf[t*k+j])
					if r >= int(limit) {
						out[t*k+j] = 0
						continue
					}
					out[t*k+j] = dot(g[t*h:(t+1)*h], ys[r*h:(r+1)*h])
				}
			}
		})
		return nil
	}
	parallelRows(nT, rowsFor(h*k), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			gt := g[t*h : (t+1)*h]
			row := func(j int) []T {
				r := int(pv.RowOf[t*k+j])
				return ys[r*h : (r+1)*h]
			}
			// Two rows per pass over dy (dot2 gives bitwise the same sums as two dot calls).
			j := 0
			for ; j+1 < k; j += 2 {
				out[t*k+j], out[t*k+j+1] = dot2(gt, row(j), row(j+1))
			}
			if j < k {
				out[t*k+j] = dot(gt, row(j))
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

// dot2 returns dot(g, a) and dot(g, b) in one pass over g, each summed exactly as dot sums it.
func dot2[T float](g, a, b []T) (T, T) {
	a, b = a[:len(g)], b[:len(g)]
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	i := 0
	for ; i+4 <= len(g); i += 4 {
		g0, g1, g2, g3 := float64(g[i]), float64(g[i+1]), float64(g[i+2]), float64(g[i+3])
		a0 += g0 * float64(a[i])
		a1 += g1 * float64(a[i+1])
		a2 += g2 * float64(a[i+2])
		a3 += g3 * float64(a[i+3])
		b0 += g0 * float64(b[i])
		b1 += g1 * float64(b[i+1])
		b2 += g2 * float64(b[i+2])
		b3 += g3 * float64(b[i+3])
	}
	for ; i < len(g); i++ {
		a0 += float64(g[i]) * float64(a[i])
		b0 += float64(g[i]) * float64(b[i])
	}
	return T((a0 + a1) + (a2 + a3)), T((b0 + b1) + (b2 + b3))
}
