package tests

import (
	"math"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Bugs of the routing policies (sigmoid scoring, groups, scale, capacity, balancing, diagnostics). The
// suite's Policies cases must catch each (TestConformanceCatchesMutants runs them on that subtree).
var policyMutants = []string{
	"sigmoid-bias-ignored", "sigmoid-groups-ignored", "group-mask-swapped", "sigmoid-accepts-nan-bias",
	"sigmoid-renorm-ignored", "scale-ignored", "route-grad-ignores-scale", "sigmoid-grad-ignores-renorm",
	"capacity-ignored", "capacity-keeps-last", "capacity-probs-ties-high", "dispatch-copies-dropped",
	"combine-adds-dropped", "cgw-dropped-nonzero", "clear-dropped-noop", "bias-update-sign-flipped",
	"stats-kept-as-routed", "stats-entropy-bits", "lbl-counts-kept-only",
}

// keepAllRows returns a copy of a host plan of n rows that claims every row is kept (offsets[E] = n):
// a kernel given it treats dropped slots as kept.
func keepAllRows(plan *tensor.Dense, n int) *tensor.Dense {
	p := append([]int32(nil), plan.Data().([]int32)...)
	e := (len(p) - 1 - 2*n) / 2
	p[2*e] = int32(n)
	return tensor.New(tensor.WithShape(plan.Shape()...), tensor.WithBacking(p))
}

// keptCounts returns a copy of a host plan whose counts are the kept counts (the slots a capacity
// dropped no longer count as routed).
func keptCounts(plan *tensor.Dense, e int) *tensor.Dense {
	p := append([]int32(nil), plan.Data().([]int32)...)
	for i := 0; i < e; i++ {
		p[i] = p[e+i+1] - p[e+i]
	}
	return tensor.New(tensor.WithShape(plan.Shape()...), tensor.WithBacking(p))
}

func (m *mutant) policyWeightsConfig(cfg ops.RouteConfig) ops.RouteConfig {
	switch {
	case m.kind == "sigmoid-renorm-ignored" && cfg.Scoring == ops.Sigmoid:
		cfg.Renormalize = false
	case m.kind == "scale-ignored":
		cfg.Scale = 0
	}
	return cfg
}

func (m *mutant) policyGradConfig(cfg ops.RouteConfig) ops.RouteConfig {
	switch {
	case m.kind == "route-grad-ignores-scale":
		cfg.Scale = 0
	case m.kind == "sigmoid-grad-ignores-renorm" && cfg.Scoring == ops.Sigmoid:
		cfg.Renormalize = false
	}
	return cfg
}

func (m *mutant) RouteIndicesBias(logits, bias *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	switch m.kind {
	case "sigmoid-bias-ignored":
		bias = nil
	case "sigmoid-groups-ignored":
		cfg.Groups, cfg.TopKGroups = 0, 0
	case "group-mask-swapped":
		cfg.GroupMask = 1 - cfg.GroupMask
	case "sigmoid-accepts-nan-bias": // non-finite bias entries silently become 0
		if bias != nil {
			v := toF64(bias)
			for i := range v {
				if math.IsNaN(v[i]) || math.IsInf(v[i], 0) {
					v[i] = 0
				}
			}
			bias = fromF64(bias.Dtype(), v, bias.Shape())
		}
	}
	return m.Backend.RouteIndicesBias(logits, bias, cfg, idx)
}

func (m *mutant) CapacityPlan(idx, w *tensor.Dense, numExperts, capacity int, policy ops.DropPolicy, plan *tensor.Dense) error {
	n := idx.Shape().TotalSize()
	switch {
	case m.kind == "capacity-ignored":
		return m.Backend.Plan(idx, numExperts, plan)
	case m.kind == "capacity-keeps-last" && policy == ops.DropPosition: // the last slots keep their place
		rank := make([]float64, n)
		for s := range rank {
			rank[s] = float64(s)
		}
		return m.Backend.CapacityPlan(idx, fromF64(tensor.Float64, rank, idx.Shape()), numExperts, capacity, ops.DropProbs, plan)
	case m.kind == "capacity-probs-ties-high" && policy == ops.DropProbs: // equal weights: the higher slot wins
		v := toF64(w)
		for s := range v {
			v[s] += float64(s) * 1e-300
			if v[s] == toF64(w)[s] && s > 0 {
				v[s] = math.Nextafter(v[s], math.Inf(1))
			}
		}
		return m.Backend.CapacityPlan(idx, fromF64(tensor.Float64, v, w.Shape()), numExperts, capacity, policy, plan)
	}
	return m.Backend.CapacityPlan(idx, w, numExperts, capacity, policy, plan)
}

func (m *mutant) ClearDroppedRows(rows, plan *tensor.Dense) error {
	if m.kind == "clear-dropped-noop" {
		return nil
	}
	return m.Backend.ClearDroppedRows(rows, plan)
}

func (m *mutant) UpdateBalanceBias(bias, plan *tensor.Dense, rate float64) error {
	if m.kind == "bias-update-sign-flipped" {
		rate = -rate
	}
	return m.Backend.UpdateBalanceBias(bias, plan, rate)
}

func (m *mutant) RouteStats(logits, plan *tensor.Dense, cfg ops.RouteConfig, stats *tensor.Dense) error {
	if err := m.Backend.RouteStats(logits, plan, cfg, stats); err != nil {
		return err
	}
	v := stats.Data().([]float64)
	e := (len(v) - 2) / 2
	switch m.kind {
	case "stats-kept-as-routed":
		copy(v[e:2*e], v[:e])
	case "stats-entropy-bits":
		v[2*e+1] /= math.Ln2
	}
	return nil
}
