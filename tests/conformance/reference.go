package conformance

import (
	"math"

	"github.com/expertrt/expertrt-go/ops"
)

// The reference: naive float64 loops written straight from the definitions in ops/backend.go,
// ops/config.go and ops/plan_layout.go, sharing no code with any backend. Matrices are row-major slices.

// refTopK returns the k indices of the largest entries of row in decreasing order, ties to the lower
// index (a selection by strict '>' scanning indices upwards).
func refTopK(row []float64, k int) []int32 {
	used := make([]bool, len(row))
	idx := make([]int32, 0, k)
	for j := 0; j < k; j++ {
		best := -1
		for e := range row {
			if used[e] {
				continue
			}
			if best < 0 || row[e] > row[best] {
				best = e
			}
		}
		used[best] = true
		idx = append(idx, int32(best))
	}
	return idx
}

func refSoftmax(row []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range row {
		m = math.Max(m, v)
	}
	out := make([]float64, len(row))
	var s float64
	for i, v := range row {
		out[i] = math.Exp(v - m)
		s += out[i]
	}
	for i := range out {
		out[i] /= s
	}
	return out
}

func refLogSumExp(row []float64) float64 {
	m := math.Inf(-1)
	for _, v := range row {
		m = math.Max(m, v)
	}
	var s float64
	for _, v := range row {
		s += math.Exp(v - m)
	}
	return m + math.Log(s)
}

// refRouteIndices: logits [T,E] -> idx [T,K]. Softmax is monotone, so selecting on logits equals
// selecting on probabilities whenever no two probabilities of a row round to the same value (the suite's
// random logits keep a gap; tie cases use exactly equal logits).
func refRouteIndices(logits []float64, T, E, K int) []int32 {
	idx := make([]int32, 0, T*K)
	for t := 0; t < T; t++ {
		idx = append(idx, refTopK(logits[t*E:(t+1)*E], K)...)
	}
	return idx
}

// refRouteWeights: w[t,j] for the given indices.
func refRouteWeights(logits []float64, idx []int32, T, E, K int, cfg ops.RouteConfig) []float64 {
	w := make([]float64, T*K)
	for t := 0; t < T; t++ {
		row := logits[t*E : (t+1)*E]
		if cfg.Scoring == ops.SoftmaxTopK {
			p := refSoftmax(row)
			var s float64
			for j := 0; j < K; j++ {
				w[t*K+j] = p[idx[t*K+j]]
				s += w[t*K+j]
			}
			if cfg.Renormalize {
				for j := 0; j < K; j++ {
					w[t*K+j] /= s
				}
			}
		} else {
			sel := make([]float64, K)
			for j := 0; j < K; j++ {
				sel[j] = row[idx[t*K+j]]
			}
			q := refSoftmax(sel)
			copy(w[t*K:(t+1)*K], q)
		}
	}
	return w
}

// refRouteWeightsGrad: dlogits[t,e] = sum_j dw[t,j] * J[j][e], with the Jacobian J = dw/dlogits written
// out explicitly.
func refRouteWeightsGrad(logits []float64, idx []int32, dw []float64, T, E, K int, cfg ops.RouteConfig) []float64 {
	dl := make([]float64, T*E)
	for t := 0; t < T; t++ {
		row := logits[t*E : (t+1)*E]
		J := make([][]float64, K)
		for j := range J {
			J[j] = make([]float64, E)
		}
		ix := idx[t*K : (t+1)*K]
		if cfg.Scoring == ops.SoftmaxTopK && !cfg.Renormalize {
			// w_j = p_{i_j};  dp_i/dl_e = p_i (delta_ie - p_e)
			p := refSoftmax(row)
			for j := 0; j < K; j++ {
				for e := 0; e < E; e++ {
					d := 0.0
					if int(ix[j]) == e {
						d = 1
					}
					J[j][e] = p[ix[j]] * (d - p[e])
				}
			}
		} else {
			// w_j = q_j = exp(l_{i_j}) / sum_m exp(l_{i_m}) (renormalised softmax equals the softmax over
			// the selected logits);  dq_j/dl_{i_m} = q_j (delta_jm - q_m), zero for unselected experts.
			sel := make([]float64, K)
			for j := 0; j < K; j++ {
				sel[j] = row[ix[j]]
			}
			q := refSoftmax(sel)
			for j := 0; j < K; j++ {
				for m := 0; m < K; m++ {
					d := 0.0
					if j == m {
						d = 1
					}
					J[j][ix[m]] += q[j] * (d - q[m])
				}
			}
		}
		for e := 0; e < E; e++ {
			var s float64
			for j := 0; j < K; j++ {
				s += dw[t*K+j] * J[j][e]
			}
			dl[t*E+e] = s
		}
	}
	return dl
}

// refPlan builds the plan vector: counts, offsets (exclusive scan), rowOf, slotOf; rows of one expert
// in increasing slot order. Indices must be in range.
func refPlan(idx []int32, T, K, E int) []int32 {
	n := T * K
	counts := make([]int32, E)
	for _, e := range idx {
		counts[e]++
	}
	offsets := make([]int32, E+1)
	for e := 0; e < E; e++ {
		offsets[e+1] = offsets[e] + counts[e]
	}
	rowOf := make([]int32, n)
	slotOf := make([]int32, n)
	r := 0
	for e := 0; e < E; e++ {
		for s := 0; s < n; s++ {
			if int(idx[s]) == e {
				rowOf[s] = int32(r)
				slotOf[r] = int32(s)
				r++
			}
		}
	}
	plan := append([]int32{}, counts...)
	plan = append(plan, offsets...)
	plan = append(plan, rowOf...)
	return append(plan, slotOf...)
}

// refDispatch: out[r] = scale(s) * x[s/K], s = slotOf[r]; scale = w[s] or 1; rows of dropped slots
// (r >= offsets[E]) are zero.
func refDispatch(x, w []float64, pv ops.PlanView, H int) []float64 {
	n := pv.T * pv.K
	out := make([]float64, n*H)
	for r := 0; r < int(pv.Offsets[pv.E]); r++ {
		s := int(pv.SlotOf[r])
		scale := 1.0
		if w != nil {
			scale = w[s]
		}
		for h := 0; h < H; h++ {
			out[r*H+h] = scale * x[(s/pv.K)*H+h]
		}
	}
	return out
}

// refCombine: out[t] = sum_{j ascending} scale(t,j) * ye[rowOf[t*K+j]] over the kept slots
// (rowOf < offsets[E]).
func refCombine(ye, w []float64, pv ops.PlanView, H int) []float64 {
	out := make([]float64, pv.T*H)
	for t := 0; t < pv.T; t++ {
		for h := 0; h < H; h++ {
			var s float64
			for j := 0; j < pv.K; j++ {
				if pv.RowOf[t*pv.K+j] >= pv.Offsets[pv.E] {
					continue
				}
				scale := 1.0
				if w != nil {
					scale = w[t*pv.K+j]
				}
				s += scale * ye[int(pv.RowOf[t*pv.K+j])*H+h]
			}
			out[t*H+h] = s
		}
	}
	return out
}

// refCombineGradWeights: dw[t,j] = <dy[t], ye[rowOf[t*K+j]]> (0 for dropped slots); also returns the
// magnitude scale.
func refCombineGradWeights(dy, ye []float64, pv ops.PlanView, H int) (dw, scale []float64) {
	n := pv.T * pv.K
	dw = make([]float64, n)
	scale = make([]float64, n)
	for s := 0; s < n; s++ {
		r := int(pv.RowOf[s])
		if r >= int(pv.Offsets[pv.E]) {
			continue
		}
		t := s / pv.K
		for h := 0; h < H; h++ {
			dw[s] += dy[t*H+h] * ye[r*H+h]
			scale[s] += math.Abs(dy[t*H+h] * ye[r*H+h])
		}
	}
	return dw, scale
}

// refGroupedMatMul: out[r] = x[r] . W[e] (W[e] stored [In,Out], or [Out,In] when transposed) for r in
// expert e's segment, zero for rows past offsets[E] (of n rows); also the magnitude scale of each
// output element.
func refGroupedMatMul(x, w []float64, offsets []int32, E, In, Out int, transposeW bool) (out, scale []float64) {
	n := len(x) / In
	out = make([]float64, n*Out)
	scale = make([]float64, n*Out)
	for e := 0; e < E; e++ {
		for r := int(offsets[e]); r < int(offsets[e+1]); r++ {
			for o := 0; o < Out; o++ {
				var s, a float64
				for i := 0; i < In; i++ {
					var wv float64
					if transposeW {
						wv = w[e*Out*In+o*In+i]
					} else {
						wv = w[e*In*Out+i*Out+o]
					}
					s += x[r*In+i] * wv
					a += math.Abs(x[r*In+i] * wv)
				}
				out[r*Out+o] = s
				scale[r*Out+o] = a
			}
		}
	}
	return out, scale
}

// refGroupedMatMulGradW: dW[e][i][o] = sum_{r in segment e} x[r,i] * dy[r,o] (zero for empty experts).
func refGroupedMatMulGradW(x, dy []float64, offsets []int32, E, In, Out int) (dW, scale []float64) {
	dW = make([]float64, E*In*Out)
	scale = make([]float64, E*In*Out)
	for e := 0; e < E; e++ {
		for r := int(offsets[e]); r < int(offsets[e+1]); r++ {
			for i := 0; i < In; i++ {
				for o := 0; o < Out; o++ {
					dW[e*In*Out+i*Out+o] += x[r*In+i] * dy[r*Out+o]
					scale[e*In*Out+i*Out+o] += math.Abs(x[r*In+i] * dy[r*Out+o])
				}
			}
		}
	}
	return dW, scale
}

// refLoadBalancingLoss: E * sum_e (counts[e]/T) * mean_t softmax(logits)[t,e].
func refLoadBalancingLoss(logits []float64, counts []int32, T, E int) float64 {
	P := make([]float64, E)
	for t := 0; t < T; t++ {
		p := refSoftmax(logits[t*E : (t+1)*E])
		for e := range p {
			P[e] += p[e] / float64(T)
		}
	}
	var s float64
	for e := 0; e < E; e++ {
		s += float64(counts[e]) / float64(T) * P[e]
	}
	return float64(E) * s
}

// refLoadBalancingLossGrad: scale * dLBL/dlogits; counts are constants, so
// dLBL/dl[t,e'] = (E/T) * sum_e (counts[e]/T) * p[t,e] * (delta_ee' - p[t,e']).
func refLoadBalancingLossGrad(logits []float64, counts []int32, T, E int, scale float64) []float64 {
	dl := make([]float64, T*E)
	for t := 0; t < T; t++ {
		p := refSoftmax(logits[t*E : (t+1)*E])
		for e2 := 0; e2 < E; e2++ {
			var s float64
			for e := 0; e < E; e++ {
				d := 0.0
				if e == e2 {
					d = 1
				}
				s += float64(counts[e]) / float64(T) * p[e] * (d - p[e2])
			}
			dl[t*E+e2] = scale * float64(E) / float64(T) * s
		}
	}
	return dl
}

// refZLoss: mean_t logsumexp(logits[t,:])^2.
func refZLoss(logits []float64, T, E int) float64 {
	var s float64
	for t := 0; t < T; t++ {
		l := refLogSumExp(logits[t*E : (t+1)*E])
		s += l * l
	}
	return s / float64(T)
}

// refZLossGrad: scale * (2/T) * lse_t * softmax(logits[t])_e.
func refZLossGrad(logits []float64, T, E int, scale float64) []float64 {
	dl := make([]float64, T*E)
	for t := 0; t < T; t++ {
		row := logits[t*E : (t+1)*E]
		l := refLogSumExp(row)
		p := refSoftmax(row)
		for e := 0; e < E; e++ {
			dl[t*E+e] = scale * 2 / float64(T) * l * p[e]
		}
	}
	return dl
}

// refMaskedCounts: C[e] = slots of counted tokens (mask[t] != 0) routed to e, and n, the counted
// tokens; a nil mask counts every token.
func refMaskedCounts(idx []int32, mask []int32, T, K, E int) ([]float64, int) {
	C := make([]float64, E)
	n := 0
	for t := 0; t < T; t++ {
		if mask != nil && mask[t] == 0 {
			continue
		}
		n++
		for j := 0; j < K; j++ {
			C[idx[t*K+j]]++
		}
	}
	return C, n
}

// refLoadBalancingLossMasked: E * sum_e (C[e]/n) * (sum over counted t of softmax(logits)[t,e])/n
// (transformers' load_balancing_loss_func with an attention mask); 0 when no token is counted.
func refLoadBalancingLossMasked(logits []float64, idx, mask []int32, T, K, E int) float64 {
	C, n := refMaskedCounts(idx, mask, T, K, E)
	if n == 0 {
		return 0
	}
	P := make([]float64, E)
	for t := 0; t < T; t++ {
		if mask[t] == 0 {
			continue
		}
		p := refSoftmax(logits[t*E : (t+1)*E])
		for e := range p {
			P[e] += p[e] / float64(n)
		}
	}
	var s float64
	for e := 0; e < E; e++ {
		s += C[e] / float64(n) * P[e]
	}
	return float64(E) * s
}

// refLoadBalancingLossMaskedGrad: scale * d(refLoadBalancingLossMasked)/dlogits (0 for masked rows).
func refLoadBalancingLossMaskedGrad(logits []float64, idx, mask []int32, T, K, E int, scale float64) []float64 {
	C, n := refMaskedCounts(idx, mask, T, K, E)
	dl := make([]float64, T*E)
	if n == 0 {
		return dl
	}
	for t := 0; t < T; t++ {
		if mask[t] == 0 {
			continue
		}
		p := refSoftmax(logits[t*E : (t+1)*E])
		for e2 := 0; e2 < E; e2++ {
			var s float64
			for e := 0; e < E; e++ {
				d := 0.0
				if e == e2 {
					d = 1
				}
				s += C[e] / float64(n) * p[e] * (d - p[e2])
			}
			dl[t*E+e2] = scale * float64(E) / float64(n) * s
		}
	}
	return dl
}
