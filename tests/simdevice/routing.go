package simdevice

import (
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// The ops.RoutingBackend kernels: the host kernels on host views of device memory, as in backend.go.

func (b *Backend) RouteIndicesBias(logits, bias *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	return b.call("RouteIndicesBias", []*tensor.Dense{logits, bias, idx}, func(v []*tensor.Dense) error {
		return b.cpu.RouteIndicesBias(v[0], v[1], cfg, v[2])
	})
}

func (b *Backend) CapacityPlan(idx, w *tensor.Dense, numExperts, capacity int, policy ops.DropPolicy, plan *tensor.Dense) error {
	return b.call("CapacityPlan", []*tensor.Dense{idx, w, plan}, func(v []*tensor.Dense) error {
		return b.cpu.CapacityPlan(v[0], v[1], numExperts, capacity, policy, v[2])
	})
}

func (b *Backend) ClearDroppedRows(rows, plan *tensor.Dense) error {
	return b.call("ClearDroppedRows", []*tensor.Dense{rows, plan}, func(v []*tensor.Dense) error {
		return b.cpu.ClearDroppedRows(v[0], v[1])
	})
}

func (b *Backend) UpdateBalanceBias(bias, plan *tensor.Dense, rate float64) error {
	return b.call("UpdateBalanceBias", []*tensor.Dense{bias, plan}, func(v []*tensor.Dense) error {
		return b.cpu.UpdateBalanceBias(v[0], v[1], rate)
	})
}

func (b *Backend) RouteStats(logits, plan *tensor.Dense, cfg ops.RouteConfig, stats *tensor.Dense) error {
	return b.call("RouteStats", []*tensor.Dense{logits, plan, stats}, func(v []*tensor.Dense) error {
		return b.cpu.RouteStats(v[0], v[1], cfg, v[2])
	})
}
