package conformance

import (
	"math"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// References for the routing policies beyond dropless softmax routing, written from the definitions in
// ops/config.go (Sigmoid), ops/backend_routing.go and ops/plan_layout.go, sharing no code with any
// backend. dt is the dtype the selection values are rounded to (transformers computes them in float32).

// refLogistic is 1/(1+exp(-x)), the expression the backends round to the selection dtype.
func refLogistic(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// rnd rounds v to dt's precision.
func rnd(dt tensor.Dtype, v float64) float64 {
	if dt == tensor.Float32 {
		return float64(float32(v))
	}
	return v
}

// refSigmoidChoice returns the masked selection values of one token: c = s + bias in dt, dropped
// groups' values replaced by 0 or -Inf.
func refSigmoidChoice(dt tensor.Dtype, row, bias []float64, cfg ops.RouteConfig) []float64 {
	E := len(row)
	c := make([]float64, E)
	for e, v := range row {
		c[e] = rnd(dt, refLogistic(v))
		if bias != nil {
			c[e] = rnd(dt, c[e]+bias[e])
		}
	}
	if cfg.Groups <= 1 {
		return c
	}
	gs := E / cfg.Groups
	score := make([]float64, cfg.Groups)
	for g := range score {
		top := refTopK(c[g*gs:(g+1)*gs], 2)
		score[g] = rnd(dt, c[g*gs+int(top[0])]+c[g*gs+int(top[1])])
	}
	kept := make([]bool, cfg.Groups)
	for _, g := range refTopK(score, cfg.TopKGroups) {
		kept[g] = true
	}
	for g := range kept {
		if kept[g] {
			continue
		}
		for e := g * gs; e < (g+1)*gs; e++ {
			if cfg.GroupMask == ops.GroupMaskExclude {
				c[e] = math.Inf(-1)
			} else {
				c[e] = 0
			}
		}
	}
	return c
}

// refPolicyIndices: the chosen experts under cfg (any scoring; bias only for Sigmoid).
func refPolicyIndices(dt tensor.Dtype, logits, bias []float64, T, E int, cfg ops.RouteConfig) []int32 {
	if cfg.Scoring != ops.Sigmoid {
		return refRouteIndices(logits, T, E, cfg.K)
	}
	idx := make([]int32, 0, T*cfg.K)
	for t := 0; t < T; t++ {
		idx = append(idx, refTopK(refSigmoidChoice(dt, logits[t*E:(t+1)*E], bias, cfg), cfg.K)...)
	}
	return idx
}

func refScale(cfg ops.RouteConfig) float64 {
	if cfg.Scale == 0 {
		return 1
	}
	return cfg.Scale
}

// refPolicyWeights: w[t,j] of the given indices under cfg, times the scale.
func refPolicyWeights(logits []float64, idx []int32, T, E, K int, cfg ops.RouteConfig) []float64 {
	c := refScale(cfg)
	if cfg.Scoring != ops.Sigmoid {
		w := refRouteWeights(logits, idx, T, E, K, cfg)
		for i := range w {
			w[i] *= c
		}
		return w
	}
	w := make([]float64, T*K)
	for t := 0; t < T; t++ {
		var sum float64
		for j := 0; j < K; j++ {
			w[t*K+j] = refLogistic(logits[t*E+int(idx[t*K+j])])
			sum += w[t*K+j]
		}
		for j := 0; j < K; j++ {
			if cfg.Renormalize {
				w[t*K+j] /= sum + 1e-20
			}
			w[t*K+j] *= c
		}
	}
	return w
}

// refPolicyWeightsGrad: dlogits = sum_j dw[t,j] * dw_j/dlogits with the Jacobian written out.
func refPolicyWeightsGrad(logits []float64, idx []int32, dw []float64, T, E, K int, cfg ops.RouteConfig) []float64 {
	c := refScale(cfg)
	if cfg.Scoring != ops.Sigmoid {
		g := make([]float64, len(dw))
		for i := range dw {
			g[i] = c * dw[i]
		}
		return refRouteWeightsGrad(logits, idx, g, T, E, K, cfg)
	}
	dl := make([]float64, T*E)
	for t := 0; t < T; t++ {
		ix := idx[t*K : (t+1)*K]
		s := make([]float64, K)
		var sum float64
		for j := range s {
			s[j] = refLogistic(logits[t*E+int(ix[j])])
			sum += s[j]
		}
		D := sum + 1e-20
		// J[j][m] = dw_j / ds_m; ds_m/dl_{i_m} = s_m (1 - s_m).
		for j := 0; j < K; j++ {
			for m := 0; m < K; m++ {
				var J float64
				switch {
				case !cfg.Renormalize && j == m:
					J = c
				case cfg.Renormalize:
					d := 0.0
					if j == m {
						d = 1
					}
					J = c * (d/D - s[j]/(D*D))
				}
				dl[t*E+int(ix[m])] += dw[t*K+j] * J * s[m] * (1 - s[m])
			}
		}
	}
	return dl
}

// refCapacityPlan: per expert, its slots in slot order; the kept ones are the first C (position) or
// the C of largest weight, picked one at a time, ties to the lower slot (probs); kept rows in slot
// order per expert, then the dropped rows expert by expert in slot order.
func refCapacityPlan(idx []int32, w []float64, T, K, E, C int, policy ops.DropPolicy) []int32 {
	n := T * K
	counts := make([]int32, E)
	keptN := make([]int32, E)
	kept := make([]bool, n)
	for e := 0; e < E; e++ {
		var slots []int
		for s := 0; s < n; s++ {
			if int(idx[s]) == e {
				slots = append(slots, s)
			}
		}
		counts[e] = int32(len(slots))
		if policy == ops.DropPosition {
			for i, s := range slots {
				kept[s] = i < C
			}
		} else {
			taken := map[int]bool{}
			for c := 0; c < C && c < len(slots); c++ {
				best := -1
				for _, s := range slots {
					if !taken[s] && (best < 0 || w[s] > w[best]) {
						best = s
					}
				}
				taken[best] = true
				kept[best] = true
			}
		}
		for _, s := range slots {
			if kept[s] {
				keptN[e]++
			}
		}
	}
	offsets := make([]int32, E+1)
	for e := 0; e < E; e++ {
		offsets[e+1] = offsets[e] + keptN[e]
	}
	rowOf := make([]int32, n)
	slotOf := make([]int32, n)
	r := 0
	for pass := 0; pass < 2; pass++ { // kept rows first, then dropped rows
		for e := 0; e < E; e++ {
			for s := 0; s < n; s++ {
				if int(idx[s]) == e && kept[s] == (pass == 0) {
					rowOf[s], slotOf[r] = int32(r), int32(s)
					r++
				}
			}
		}
	}
	plan := append([]int32{}, counts...)
	plan = append(plan, offsets...)
	plan = append(plan, rowOf...)
	return append(plan, slotOf...)
}

// refBalanceBias: bias[e] + rate * sign(T*K/E - counts[e]), rounded to dt.
func refBalanceBias(dt tensor.Dtype, bias []float64, counts []int32, T, K int, rate float64) []float64 {
	E := len(bias)
	out := make([]float64, E)
	mean := float64(T*K) / float64(E)
	for e := range bias {
		d := 0.0
		switch {
		case mean > float64(counts[e]):
			d = rate
		case mean < float64(counts[e]):
			d = -rate
		}
		out[e] = rnd(dt, bias[e]+d)
	}
	return out
}

// refRouteStats: routed counts | kept counts | dropped | mean entropy.
func refRouteStats(logits []float64, pv ops.PlanView, T, E int, sigmoid bool) []float64 {
	out := make([]float64, 2*E+2)
	for e := 0; e < E; e++ {
		out[e] = float64(pv.Counts[e])
		out[E+e] = float64(pv.Offsets[e+1] - pv.Offsets[e])
	}
	out[2*E] = float64(T*pv.K) - float64(pv.Offsets[E])
	var h float64
	for t := 0; t < T; t++ {
		row := logits[t*E : (t+1)*E]
		var q []float64
		if sigmoid {
			q = make([]float64, E)
			var sum float64
			for e, v := range row {
				q[e] = refLogistic(v)
				sum += q[e]
			}
			for e := range q {
				if sum > 0 {
					q[e] /= sum
				} else {
					q[e] = 0
				}
			}
		} else {
			q = refSoftmax(row)
		}
		for _, p := range q {
			if p > 0 {
				h -= p * math.Log(p)
			}
		}
	}
	out[2*E+1] = h / float64(T)
	return out
}
