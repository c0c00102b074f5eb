//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// The ops.RoutingBackend methods: operands validated as in backend.go, kernels launched on the stream
// without waiting (the option SyncChecks makes the data-validating ones report at once).

func (b *Backend) CapacityPlan(idx, w *tensor.Dense, numExperts, capacity int, policy ops.DropPolicy, plan *tensor.Dense) error {
	const what = "capacity plan"
	T, K, err := dims2(what, "idx", idx)
	if err != nil {
		return err
	}
	if numExperts < 1 || capacity < 1 {
		return fmt.Errorf("cudaops: %s: need E >= 1 and capacity >= 1, got %d and %d: %w", what, numExperts, capacity, ops.ErrConfig)
	}
	pi, err := b.buf(what, "idx", idx, tensor.Int32, T, K)
	if err != nil {
		return err
	}
	pp, err := b.buf(what, "plan", plan, tensor.Int32, ops.PlanLen(T, K, numExperts))
	if err != nil {
		return err
	}
	dt := tensor.Float32 // the position policy reads no weights
	var pw cu.DevicePtr
	switch policy {
	case ops.DropPosition:
	case ops.DropProbs:
		if dt, err = floatDtype(what, w); err != nil {
			return err
		}
		if pw, err = b.buf(what, "w", w, dt, T, K); err != nil {
			return err
		}
	default:
		return fmt.Errorf("cudaops: %s: unknown drop policy %d: %w", what, int(policy), ops.ErrConfig)
	}
	if err := b.dev.CapacityPlan(dt, pi, pw, pp, T, K, numExperts, capacity, policy == ops.DropProbs); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) ClearDroppedRows(rows, plan *tensor.Dense) error {
	const what = "clear dropped rows"
	dt, err := floatDtype(what, rows)
	if err != nil {
		return err
	}
	N, W, err := dims2(what, "rows", rows)
	if err != nil {
		return err
	}
	pr, err := b.buf(what, "rows", rows, dt, N, W)
	if err != nil {
		return err
	}
	E, err := planExperts(what, plan, N, 1)
	if err != nil {
		return err
	}
	pp, err := b.buf(what, "plan", plan, tensor.Int32, 2*E+1+2*N)
	if err != nil {
		return err
	}
	return b.dev.ClearDroppedRows(pr, offsetPtr(pp, int64(2*E)*4), N, W, int(dt.Size()))
}

func (b *Backend) UpdateBalanceBias(bias, plan *tensor.Dense, rate float64) error {
	const what = "balance bias"
	dt, err := floatDtype(what, bias)
	if err != nil {
		return err
	}
	if bias.Shape().Dims() != 1 || plan == nil || plan.Shape().Dims() != 1 {
		return fmt.Errorf("cudaops: %s: bias and plan must be vectors: %w", what, ops.ErrShape)
	}
	if rate != rate || rate-rate != 0 {
		return fmt.Errorf("cudaops: %s: rate must be finite, got %v: %w", what, rate, ops.ErrConfig)
	}
	E := bias.Shape()[0]
	slots := plan.Shape()[0] - 2*E - 1
	if E < 1 || slots < 2 || slots%2 != 0 {
		return fmt.Errorf("cudaops: %s: a plan of %d elements does not fit E = %d: %w", what, plan.Shape()[0], E, ops.ErrShape)
	}
	pb, err := b.buf(what, "bias", bias, dt, E)
	if err != nil {
		return err
	}
	pp, err := b.buf(what, "plan", plan, tensor.Int32)
	if err != nil {
		return err
	}
	return b.dev.BalanceBias(dt, pb, pp, E, slots/2, rate)
}

func (b *Backend) RouteStats(logits, plan *tensor.Dense, cfg ops.RouteConfig, stats *tensor.Dense) error {
	const what = "route stats"
	dt, pl, pp, _, T, K, E, err := b.lossArgs(what, logits, plan, nil)
	if err != nil {
		return err
	}
	if plan == nil {
		return fmt.Errorf("cudaops: %s: plan is nil: %w", what, ops.ErrShape)
	}
	ps, err := b.buf(what, "stats", stats, tensor.Float64, ops.RouteStatsLen(E))
	if err != nil {
		return err
	}
	if err := b.dev.RouteStats(dt, pl, pp, ps, T, K, E, cfg.Scoring == ops.Sigmoid); err != nil {
		return err
	}
	return b.faultCheck()
}

var _ ops.RoutingBackend = (*Backend)(nil)
