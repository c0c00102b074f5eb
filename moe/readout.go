package moe

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// MSE returns mean((y - target)^2) over all elements as a scalar node (y and target share shape and dtype).
func MSE(y, target *G.Node) (*G.Node, error) {
	if y == nil || target == nil || !y.Shape().Eq(target.Shape()) {
		return nil, fmt.Errorf("moe: MSE needs y and target of one shape, got %v and %v: %w", shapeOf(y), shapeOf(target), ops.ErrShape)
	}
	if y.Dtype() != target.Dtype() {
		return nil, fmt.Errorf("moe: MSE: y is %v, target %q is %v: %w", y.Dtype(), target.Name(), target.Dtype(), ops.ErrDtype)
	}
	return ops.MSELoss(y, target)
}

// Readout receives forward values of a layer during every RunAll, for reading after it. After a run
// with a backward pass, out.Y.Value() is not the layer output: Gorgonia reuses the buffers of forward
// values for gradients (out.Y then holds dCost/dY). Readout's values are copies taken in the forward
// pass (G.Read) and stay valid until the next RunAll; on a device backend run by ops.Runner or
// ops.Trainer, until the run's memory step ends: read them in the run's callback (Trainer.StepThen).
type Readout struct {
	Y     G.Value // layer output, the input's shape
	Plan  G.Value // routing plan (ops.PlanView layout): per-expert counts first
	Stats G.Value // routing diagnostics (ops.RoutingStatsOf; read them with RoutingStats)

	experts, slots, tokens, k int
}

// Read adds G.Read nodes for the layer output, the routing plan and the routing diagnostics to the
// graph and returns where their values arrive. Call it before G.Grad (and before creating the machine).
func (o *Output) Read() *Readout {
	r := &Readout{experts: o.Routing.E, slots: o.Routing.T * o.Routing.K(), tokens: o.Routing.T, k: o.Routing.K()}
	G.Read(o.Y, &r.Y)
	G.Read(o.Routing.Plan, &r.Plan)
	if stats, err := ops.RoutingStatsOf(o.Routing); err == nil {
		G.Read(stats, &r.Stats)
	}
	return r
}

// RoutingStats returns the last run's routing diagnostics: per-expert counts and shares, max/mean
// load, coefficient of variation, dropped slots, mean router entropy (a device read synchronises).
func (r *Readout) RoutingStats() (ops.RoutingStats, error) {
	if r.Stats == nil {
		return ops.RoutingStats{}, fmt.Errorf("moe: no routing diagnostics were read yet (run the machine first): %w", ops.ErrConfig)
	}
	return ops.ReadRoutingStats(r.Stats, r.tokens, r.k)
}

// ExpertLoad returns the share of the last run's routed slots (T*K, padding tokens included) that went
// to each expert; the shares sum to 1.
func (r *Readout) ExpertLoad() ([]float64, error) {
	p, ok := r.Plan.(*tensor.Dense)
	if !ok || p == nil {
		return nil, fmt.Errorf("moe: no routing plan was read yet (run the machine first): %w", ops.ErrConfig)
	}
	if !p.IsNativelyAccessible() {
		b, err := ops.BackendFor(p)
		if err != nil {
			return nil, err
		}
		if p, err = b.ToHost(p); err != nil {
			return nil, err
		}
	}
	counts, ok := p.Data().([]int32)
	if !ok || len(counts) < r.experts {
		return nil, fmt.Errorf("moe: the plan value holds %T, not an int32 plan: %w", p.Data(), ops.ErrDtype)
	}
	load := make([]float64, r.experts)
	for e := range load {
		load[e] = float64(counts[e]) / float64(r.slots)
	}
	return load, nil
}
