//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// The router losses (losses.cu): the load-balancing loss (with an optional token mask) and the z-loss,
// one-element device tensors written without synchronising, and their gradients.

// lblCounts writes C [E+1] int32: C[e] = slots of counted tokens routed to expert e, C[E] = the number
// of counted tokens (all T when mask == 0, else those with mask[t] != 0), from the plan of T tokens,
// K experts per token and E experts. C comes from the allocator; the caller puts it back.
func (d *Device) lblCounts(plan, mask cu.DevicePtr, T, K, E int) (cu.DevicePtr, error) {
	c, err := d.scratch(int64(E+1) * 4)
	if err != nil {
		return 0, err
	}
	counts, offsets, _, slotOf := PlanSections(plan, T, K, E)
	grid := min(E, d.sms*8)
	if err := d.launch("lbl_counts", launchCfg{grid: grid, block: 256}, ptrArg(counts), ptrArg(offsets), ptrArg(slotOf), ptrArg(mask), i32(T), i32(K), i32(E), ptrArg(c)); err != nil {
		d.putScratch(c)
		return 0, err
	}
	return c, nil
}

// LoadBalancingLoss writes loss[0] = coef * E * sum_e (C_e/n) * (sum over counted t of softmax(logits)[t,e])/n
// in the logits' dtype (no synchronisation), over the tokens the mask [T] int32 counts (mask == 0: all;
// see lblCounts). plan is the routing plan of T tokens, K experts per token, E experts.
func (d *Device) LoadBalancingLoss(dt tensor.Dtype, logits, plan, mask, loss cu.DevicePtr, T, K, E int, coef float64) error {
	if err := checkDims("load-balancing loss", T, K, E); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	c, err := d.lblCounts(plan, mask, T, K, E)
	if err != nil {
		return err
	}
	defer d.putScratch(c)
	stats, err := d.scratch(2 * int64(T) * int64(dt.Size()))
	if err != nil {
		return err
	}
	defer d.putScratch(stats)
	pe, err := d.scratch(int64(E) * 8)
	if err != nil {
		return err
	}
	defer d.putScratch(pe)
	m, s := stats, offsetPtr(stats, int64(T)*int64(dt.Size()))
	if err := d.launch("softmax_stats_"+suf, d.warpGrid(T), ptrArg(logits), ptrArg(mask), i32(T), i32(E), ptrArg(m), ptrArg(s), ptrArg(d.fault)); err != nil {
		return err
	}
	grid := min(E, d.sms*8)
	if err := d.launch("col_prob_sum_"+suf, launchCfg{grid: grid, block: 256}, ptrArg(logits), ptrArg(m), ptrArg(s), ptrArg(mask), i32(T), i32(E), ptrArg(pe)); err != nil {
		return err
	}
	return d.launch("lbl_finish_"+suf, launchCfg{grid: 1, block: 32}, ptrArg(pe), ptrArg(c), i32(E), f64(coef), ptrArg(loss))
}

// LoadBalancingLossGrad writes dlogits = scale * g[0] * d(LoadBalancingLoss)/dlogits (g == 0: g[0] = 1);
// rows of tokens the mask leaves out get 0.
func (d *Device) LoadBalancingLossGrad(dt tensor.Dtype, logits, plan, mask, g, dlogits cu.DevicePtr, T, K, E int, scale float64) error {
	if err := checkDims("load-balancing loss grad", T, K, E); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	c, err := d.lblCounts(plan, mask, T, K, E)
	if err != nil {
		return err
	}
	defer d.putScratch(c)
	return d.launch("lbl_grad_"+suf, d.warpGrid(T), ptrArg(logits), ptrArg(c), ptrArg(mask), i32(T), i32(E), f64(scale), ptrArg(g), ptrArg(dlogits), ptrArg(d.fault))
}

// ZLoss writes loss[0] = coef * mean_t logsumexp(logits[t,:])^2 in the logits' dtype (no synchronisation).
func (d *Device) ZLoss(dt tensor.Dtype, logits, loss cu.DevicePtr, T, E int, coef float64) error {
	if err := checkDims("z-loss", T, E); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	sq, err := d.scratch(int64(T) * 8)
	if err != nil {
		return err
	}
	defer d.putScratch(sq)
	if err := d.launch("zloss_rows_"+suf, d.warpGrid(T), ptrArg(logits), i32(T), i32(E), ptrArg(sq), ptrArg(d.fault)); err != nil {
		return err
	}
	return d.launch("scaled_mean_"+suf, launchCfg{grid: 1, block: 256}, ptrArg(sq), i64(int64(T)), f64(coef), ptrArg(loss))
}

// ZLossGrad writes dlogits = scale * g[0] * d(ZLoss)/dlogits (g == 0: g[0] = 1).
func (d *Device) ZLossGrad(dt tensor.Dtype, logits, g, dlogits cu.DevicePtr, T, E int, scale float64) error {
	if err := checkDims("z-loss grad", T, E); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	return d.launch("zloss_grad_"+suf, d.warpGrid(T), ptrArg(logits), i32(T), i32(E), f64(scale), ptrArg(g), ptrArg(dlogits), ptrArg(d.fault))
}

// lossArgs validates logits [T,E], and (when plan is non-nil) a plan of T tokens over E experts with
// K >= 1 experts per token and an optional token mask [T] int32.
func (b *Backend) lossArgs(what string, logits, plan, mask *tensor.Dense) (dt tensor.Dtype, pl, pp, pm cu.DevicePtr, T, K, E int, err error) {
	if dt, err = floatDtype(what, logits); err != nil {
		return
	}
	if T, E, err = dims2(what, "logits", logits); err != nil {
		return
	}
	if pl, err = b.buf(what, "logits", logits, dt, T, E); err != nil {
		return
	}
	if plan == nil {
		return
	}
	if plan.Shape().Dims() != 1 || plan.Shape()[0] < 2*E+1 || (plan.Shape()[0]-2*E-1)%(2*T) != 0 || plan.Shape()[0] == 2*E+1 {
		err = fmt.Errorf("cudaops: %s: plan of shape %v is not a plan for T=%d, E=%d: %w", what, plan.Shape(), T, E, ops.ErrShape)
		return
	}
	K = (plan.Shape()[0] - 2*E - 1) / (2 * T)
	if pp, err = b.buf(what, "plan", plan, tensor.Int32); err != nil {
		return
	}
	if mask != nil {
		pm, err = b.buf(what, "mask", mask, tensor.Int32, T)
	}
	return
}

func (b *Backend) LoadBalancingLoss(logits, plan, mask *tensor.Dense, coef float64, loss *tensor.Dense) error {
	const what = "load-balancing loss"
	if plan == nil {
		return fmt.Errorf("cudaops: %s: plan is nil: %w", what, ops.ErrShape)
	}
	dt, pl, pp, pm, T, K, E, err := b.lossArgs(what, logits, plan, mask)
	if err != nil {
		return err
	}
	po, err := b.scalarArg(what, "loss", loss, dt, false)
	if err != nil {
		return err
	}
	if err := b.dev.LoadBalancingLoss(dt, pl, pp, pm, po, T, K, E, coef); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) LoadBalancingLossGrad(logits, plan, mask *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	const what = "load-balancing loss grad"
	if plan == nil {
		return fmt.Errorf("cudaops: %s: plan is nil: %w", what, ops.ErrShape)
	}
	dt, pl, pp, pm, T, K, E, err := b.lossArgs(what, logits, plan, mask)
	if err != nil {
		return err
	}
	pg, err := b.scalarArg(what, "upstream gradient", g, dt, true)
	if err != nil {
		return err
	}
	pd, err := b.buf(what, "dlogits", dlogits, dt, T, E)
	if err != nil {
		return err
	}
	if err := b.dev.LoadBalancingLossGrad(dt, pl, pp, pm, pg, pd, T, K, E, scale); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) ZLoss(logits *tensor.Dense, coef float64, loss *tensor.Dense) error {
	const what = "z-loss"
	dt, pl, _, _, T, _, E, err := b.lossArgs(what, logits, nil, nil)
	if err != nil {
		return err
	}
	po, err := b.scalarArg(what, "loss", loss, dt, false)
	if err != nil {
		return err
	}
	if err := b.dev.ZLoss(dt, pl, po, T, E, coef); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) ZLossGrad(logits *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	const what = "z-loss grad"
	dt, pl, _, _, T, _, E, err := b.lossArgs(what, logits, nil, nil)
	if err != nil {
		return err
	}
	pg, err := b.scalarArg(what, "upstream gradient", g, dt, true)
	if err != nil {
		return err
	}
	pd, err := b.buf(what, "dlogits", dlogits, dt, T, E)
	if err != nil {
		return err
	}
	if err := b.dev.ZLossGrad(dt, pl, pg, pd, T, E, scale); err != nil {
		return err
	}
	return b.faultCheck()
}
