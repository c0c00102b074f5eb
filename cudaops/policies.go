//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// Typed launchers of the routing-policy kernels (policies.cu: capacity plans, dropped rows, the
// balancing bias, routing statistics; the sigmoid router is route.go's). As in kernels.go they check
// sizes and launch without waiting.

// CapacityPlan builds the capacity plan (ops.RoutingBackend.CapacityPlan) of idx [T,K] over E experts
// into plan, keeping at most capacity slots per expert: a dropless plan into scratch (Plan), then
// cap_offsets and cap_scatter (policies.cu). w [T,K] of dtype dt ranks the slots when probs (else 0).
// No host synchronisation; NaN weights raise a device fault (ops.ErrNaN).
func (d *Device) CapacityPlan(dt tensor.Dtype, idx, w, plan cu.DevicePtr, T, K, E, capacity int, probs bool) error {
	if err := checkDims("capacity plan", T, K, E, capacity); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	if probs && w == 0 {
		return fmt.Errorf("cudaops: capacity plan: the probs policy needs weights: %w", ops.ErrShape)
	}
	n := ops.PlanLen(T, K, E)
	dl, err := d.scratch(int64(n) * 4)
	if err != nil {
		return fmt.Errorf("cudaops: capacity plan scratch: %w", err)
	}
	defer d.putScratch(dl)
	dbase, err := d.scratch(int64(E) * 4)
	if err != nil {
		return fmt.Errorf("cudaops: capacity plan scratch: %w", err)
	}
	defer d.putScratch(dbase)
	if err := d.Plan(idx, dl, T, K, E); err != nil {
		return err
	}
	dlCounts, dlOffsets, _, dlSlotOf := PlanSections(dl, T, K, E)
	counts, offsets, rowOf, slotOf := PlanSections(plan, T, K, E)
	if err := d.launch("cap_offsets", launchCfg{grid: 1, block: 1024}, ptrArg(dlCounts), i32(E), i32(capacity), ptrArg(counts), ptrArg(offsets), ptrArg(dbase)); err != nil {
		return err
	}
	if !probs {
		w = 0
	}
	grid := min(E, d.sms*4)
	return d.launch("cap_scatter_"+suf, launchCfg{grid: grid, block: 256}, ptrArg(dlOffsets), ptrArg(dlSlotOf), ptrArg(w), i32(E), i32(capacity),
		i32(b2i(probs)), ptrArg(offsets), ptrArg(dbase), ptrArg(rowOf), ptrArg(slotOf), ptrArg(d.fault))
}

// ClearDroppedRows zeroes the rows [*kept, N) of rows [N,W] (elements of elemSize bytes, 4 or 8; kept
// points at a plan's offsets[E]).
func (d *Device) ClearDroppedRows(rows, kept cu.DevicePtr, N, W, elemSize int) error {
	if err := checkDims("clear dropped rows", N, W); err != nil {
		return err
	}
	if elemSize != 4 && elemSize != 8 {
		return fmt.Errorf("cudaops: clear dropped rows: element size %d: %w", elemSize, ops.ErrDtype)
	}
	words := int64(W) * int64(elemSize) / 4
	return d.launch("clear_rows", d.flatGrid(int64(N)*words), ptrArg(rows), ptrArg(kept), i64(int64(N)), i64(words))
}

// BalanceBias applies bias[e] += rate * sign(slots/E - counts[e]) in place (bias [E] of dt, counts the
// plan's routed counts).
func (d *Device) BalanceBias(dt tensor.Dtype, bias, counts cu.DevicePtr, E, slots int, rate float64) error {
	if err := checkDims("balance bias", E, slots); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	return d.launch("balance_bias_"+suf, d.flatGrid(int64(E)), ptrArg(bias), ptrArg(counts), i32(E), i64(int64(slots)), f64(rate))
}

// RouteStats writes the routing diagnostics (ops.RouteStatsLen(E) float64 values: routed counts, kept
// counts, dropped slots, mean entropy) of logits [T,E] and the plan of T tokens, K experts per token.
func (d *Device) RouteStats(dt tensor.Dtype, logits, plan, stats cu.DevicePtr, T, K, E int, sigmoid bool) error {
	if err := checkDims("route stats", T, K, E); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	counts, offsets, _, _ := PlanSections(plan, T, K, E)
	if err := d.launch("route_stats_counts", d.flatGrid(int64(E)), ptrArg(counts), ptrArg(offsets), i32(E), i64(int64(T)*int64(K)), ptrArg(stats)); err != nil {
		return err
	}
	ent, err := d.scratch(int64(T) * 8)
	if err != nil {
		return err
	}
	defer d.putScratch(ent)
	if err := d.launch("row_entropy_"+suf, d.warpGrid(T), ptrArg(logits), i32(T), i32(E), i32(b2i(sigmoid)), ptrArg(ent), ptrArg(d.fault)); err != nil {
		return err
	}
	return d.launch("scaled_mean_f64", launchCfg{grid: 1, block: 256}, ptrArg(ent), i64(int64(T)), f64(1), ptrArg(offsetPtr(stats, int64(2*E+1)*8)))
}
