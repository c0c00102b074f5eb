package ops

import (
	"math"
	"sort"

	"gorgonia.org/tensor"
)

// CapacityPlan is a counting sort like Plan that also decides, per expert, which slots keep a row.
func (cpuBackend) CapacityPlan(idx, w *tensor.Dense, numExperts, capacity int, policy DropPolicy, plan *tensor.Dense) error {
	sel, err := int32s(idx)
	if err != nil {
		return errorf("capacity plan: indices: %w", err)
	}
	p, err := int32s(plan)
	if err != nil {
		return errorf("capacity plan: %w", err)
	}
	nT, k := idx.Shape()[0], idx.Shape()[1]
	if err := checkSizes("capacity plan", nT, k, numExperts, 1); err != nil {
		return err
	}
	if capacity < 1 {
		return failf(ErrConfig, "capacity plan: capacity must be >= 1, got %d", capacity)
	}
	v, err := NewPlanView(p, nT, k, numExperts)
	if err != nil {
		return err
	}
	if err := checkIndices("capacity plan", sel, numExperts); err != nil {
		return err
	}
	var weights []float64
	switch policy {
	case DropPosition:
	case DropProbs:
		if w == nil || !w.Shape().Eq(idx.Shape()) {
			return failf(ErrShape, "capacity plan: the probs policy needs weights of shape %v", idx.Shape())
		}
		if weights, err = floatsAsF64(w); err != nil {
			return err
		}
		for i, x := range weights {
			if x != x {
				return failf(ErrNaN, "capacity plan: weight %d (token %d) is NaN", i, i/k)
			}
		}
	default:
		return failf(ErrConfig, "capacity plan: unknown drop policy %d", int(policy))
	}
	n := nT * k
	counts := make([]int, numExperts)
	for _, e := range sel {
		counts[e]++
	}
	keep := make([]bool, n)
	switch policy {
	case DropPosition:
		seen := make([]int, numExperts)
		for s, e := range sel {
			keep[s] = seen[e] < capacity
			seen[e]++
		}
	case DropProbs:
		// Each expert's slots in slot order, then a stable sort by decreasing weight: ties keep the
		// lower slot first.
		start := make([]int, numExperts+1)
		for e, c := range counts {
			start[e+1] = start[e] + c
		}
		bySlot := make([]int32, n)
		fill := append([]int(nil), start[:numExperts]...)
		for s, e := range sel {
			bySlot[fill[e]] = int32(s)
			fill[e]++
		}
		for e := 0; e < numExperts; e++ {
			seg := bySlot[start[e]:start[e+1]]
			if len(seg) > capacity {
				sort.SliceStable(seg, func(a, b int) bool { return weights[seg[a]] > weights[seg[b]] })
			}
			for i, s := range seg {
				keep[s] = i < capacity
			}
		}
	}
	v.Offsets[0] = 0
	dropped := 0
	for e := 0; e < numExperts; e++ {
		v.Counts[e] = int32(counts[e])
		kept := min(counts[e], capacity)
		v.Offsets[e+1] = v.Offsets[e] + int32(kept)
		dropped += counts[e] - kept
	}
	keptNext := make([]int32, numExperts)
	dropNext := make([]int32, numExperts)
	copy(keptNext, v.Offsets[:numExperts])
	d := v.Offsets[numExperts]
	for e := 0; e < numExperts; e++ {
		dropNext[e] = d
		d += int32(counts[e] - min(counts[e], capacity))
	}
	for s, e := range sel {
		var r int32
		if keep[s] {
			r = keptNext[e]
			keptNext[e]++
		} else {
			r = dropNext[e]
			dropNext[e]++
		}
		v.RowOf[s] = r
		v.SlotOf[r] = int32(s)
	}
	return nil
}

// floatsAsF64 copies a float32 or float64 host tensor into float64 values.
func floatsAsF64(t *tensor.Dense) ([]float64, error) {
	switch d := t.Data().(type) {
	case []float64:
		return d, nil
	case []float32:
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out, nil
	}
	return nil, failf(ErrDtype, "want float32 or float64 data, got %v", t.Dtype())
}

// planExpertsOf returns E from a plan's length for a buffer of n = T*K rows.
func planExpertsOf(what string, plan *tensor.Dense, n int) (PlanView, error) {
	p, err := int32s(plan)
	if err != nil {
		return PlanView{}, err
	}
	rest := len(p) - 1 - 2*n
	if rest < 2 || rest%2 != 0 {
		return PlanView{}, failf(ErrShape, "%s: a plan of %d elements does not fit %d rows", what, len(p), n)
	}
	return NewPlanView(p, n, 1, rest/2)
}

func (cpuBackend) ClearDroppedRows(rows, plan *tensor.Dense) error {
	if rows == nil || rows.Shape().Dims() != 2 {
		return failf(ErrShape, "clear dropped rows: rows must be a matrix")
	}
	n, w := rows.Shape()[0], rows.Shape()[1]
	pv, err := planExpertsOf("clear dropped rows", plan, n)
	if err != nil {
		return err
	}
	lo := int(pv.Offsets[pv.E])
	if lo < 0 || lo > n {
		return failf(ErrShape, "clear dropped rows: plan offsets[E] = %d outside [0, %d]", lo, n)
	}
	switch d := rows.Data().(type) {
	case []float32:
		clear(d[lo*w : n*w])
	case []float64:
		clear(d[lo*w : n*w])
	default:
		return failf(ErrDtype, "clear dropped rows: rows of dtype %v", rows.Dtype())
	}
	return nil
}

func (cpuBackend) UpdateBalanceBias(bias, plan *tensor.Dense, rate float64) error {
	if bias == nil || bias.Shape().Dims() != 1 {
		return failf(ErrShape, "balance bias: bias must be a vector [E]")
	}
	if rate != rate || math.IsInf(rate, 0) {
		return failf(ErrConfig, "balance bias: rate must be finite, got %v", rate)
	}
	nE := bias.Shape()[0]
	p, err := int32s(plan)
	if err != nil {
		return err
	}
	slots := len(p) - 2*nE - 1
	if nE < 1 || slots < 0 || slots%2 != 0 {
		return failf(ErrShape, "balance bias: a plan of %d elements does not fit E = %d", len(p), nE)
	}
	mean := float64(slots/2) / float64(nE)
	step := func(e int) float64 {
		switch d := mean - float64(p[e]); {
		case d > 0:
			return rate
		case d < 0:
			return -rate
		}
		return 0
	}
	switch b := bias.Data().(type) {
	case []float32:
		for e := range b {
			b[e] = float32(float64(b[e]) + step(e))
		}
	case []float64:
		for e := range b {
			b[e] += step(e)
		}
	default:
		return failf(ErrDtype, "balance bias: bias of dtype %v", bias.Dtype())
	}
	return nil
}

func (cpuBackend) RouteStats(logits, plan *tensor.Dense, cfg RouteConfig, stats *tensor.Dense) error {
	return byDtype(logits.Dtype(),
		func() error { return routeStatsCPU[float32](logits, plan, cfg, stats) },
		func() error { return routeStatsCPU[float64](logits, plan, cfg, stats) })
}

func routeStatsCPU[T float](logits, plan *tensor.Dense, cfg RouteConfig, stats *tensor.Dense) error {
	l, err := floats[T](logits)
	if err != nil {
		return err
	}
	out, err := floats[float64](stats)
	if err != nil {
		return err
	}
	nT, nE := logits.Shape()[0], logits.Shape()[1]
	if len(out) != RouteStatsLen(nE) {
		return failf(ErrShape, "route stats: stats has %d elements, want %d", len(out), RouteStatsLen(nE))
	}
	p, err := int32s(plan)
	if err != nil {
		return err
	}
	if nT < 1 || (len(p)-2*nE-1) < 2*nT || (len(p)-2*nE-1)%(2*nT) != 0 {
		return failf(ErrShape, "route stats: a plan of %d elements does not fit T=%d, E=%d", len(p), nT, nE)
	}
	k := (len(p) - 2*nE - 1) / (2 * nT)
	pv, err := NewPlanView(p, nT, k, nE)
	if err != nil {
		return err
	}
	if cfg.Scoring == Sigmoid {
		if err := checkSigmoidRows("route stats", l, nT, nE); err != nil {
			return err
		}
	} else if err := checkRows("route stats", l, nT, nE, nil); err != nil {
		return err
	}
	ent := make([]float64, nT)
	parallelRows(nT, rowsFor(nE), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			ent[t] = rowEntropy(l[t*nE:(t+1)*nE], cfg.Scoring == Sigmoid)
		}
	})
	sum := 0.0
	for _, h := range ent {
		sum += h
	}
	for e := 0; e < nE; e++ {
		out[e] = float64(pv.Counts[e])
		out[nE+e] = float64(pv.Kept(e))
	}
	out[2*nE] = float64(pv.DroppedSlots())
	out[2*nE+1] = sum / float64(nT)
	return nil
}

// rowEntropy is -sum_e q_e log q_e of the router's distribution q over one token's experts:
// softmax(row), or the sigmoid scores divided by their sum (0 when they sum to 0). Terms with q_e = 0
// are 0. The row is valid (checked by the caller).
func rowEntropy[T float](row []T, sigmoid bool) float64 {
	h := 0.0
	if !sigmoid {
		m, z, _ := softmaxStats(row)
		for _, v := range row {
			if q := math.Exp(float64(v)-m) / z; q > 0 {
				h -= q * math.Log(q)
			}
		}
		return h
	}
	sum := 0.0
	for _, v := range row {
		sum += sigmoid64(float64(v))
	}
	if sum == 0 {
		return 0
	}
	for _, v := range row {
		if q := sigmoid64(float64(v)) / sum; q > 0 {
			h -= q * math.Log(q)
		}
	}
	return h
}
