//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"unsafe"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// Typed launchers over raw device addresses. Each checks its sizes and picks the kernel variant (dtype,
// 16-byte vector or scalar) before launching; all launch on the device's stream without waiting.
// Tensor-level validation (ownership, dtypes, shapes) is done by the Backend before these are called.

func suffix(dt tensor.Dtype) (string, error) {
	switch dt {
	case tensor.Float32:
		return "f32", nil
	case tensor.Float64:
		return "f64", nil
	}
	return "", fmt.Errorf("cudaops: unsupported dtype %v (want float32 or float64): %w", dt, ops.ErrDtype)
}

func offsetPtr(p cu.DevicePtr, bytes int64) cu.DevicePtr {
	return cu.DevicePtr(uintptr(p) + uintptr(bytes))
}

// rowKernel picks the vector variant of a row kernel when every row starts 16-byte aligned: returns
// the kernel name and the row length in vectors.
func rowKernel(base string, dt tensor.Dtype, h int, ptrs ...cu.DevicePtr) (string, int, error) {
	suf, err := suffix(dt)
	if err != nil {
		return "", 0, err
	}
	vw := 16 / int(dt.Size())
	aligned := h%vw == 0
	for _, p := range ptrs {
		if p != 0 && uintptr(p)%16 != 0 {
			aligned = false
		}
	}
	if !aligned {
		return base + "_" + suf, h, nil
	}
	if dt == tensor.Float32 {
		return base + "_f32_v4", h / 4, nil
	}
	return base + "_f64_v2", h / 2, nil
}

func checkDims(what string, dims ...int) error {
	for _, v := range dims {
		if v <= 0 || v > 1<<31-1 {
			return fmt.Errorf("cudaops: %s: dimensions must be in [1, 2^31), got %v: %w", what, dims, ops.ErrShape)
		}
	}
	return nil
}

// Route runs the fused router on logits [T,E]: idx [T,K] (int32) gets the K best experts (ties to the
// lower index); w [T,K] (may be 0) gets their weights, times scale. full selects the softmax over all E
// experts (SoftmaxTopK without renormalisation) instead of the softmax over the K selected logits. Rows
// with a NaN or +Inf logit, or all -Inf, raise a device fault (ops.ErrNaN at the next synchronisation).
func (d *Device) Route(dt tensor.Dtype, logits, idx, w cu.DevicePtr, T, E, K int, full bool, scale float64) error {
	if err := checkDims("route", T, E, K); err != nil {
		return err
	}
	if K > E {
		return fmt.Errorf("cudaops: route: K=%d > E=%d: %w", K, E, ops.ErrConfig)
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	return d.launch("route_"+suf, d.warpGrid(T), ptrArg(logits), ptrArg(idx), ptrArg(w), i32(T), i32(E), i32(K), i32(b2i(full)), f64(scale), ptrArg(d.fault))
}

// Weight modes of the route_weights kernels (route.cu).
const (
	modeFullSoftmax = 0 // SoftmaxTopK without renormalisation
	modeKSoftmax    = 1 // renormalised SoftmaxTopK, TopKSoftmax
	modeSigmoid     = 2
	modeSigmoidNorm = 3
)

// weightMode is the route_weights mode of cfg.
func weightMode(cfg ops.RouteConfig) int {
	switch {
	case cfg.Scoring == ops.Sigmoid && cfg.Renormalize:
		return modeSigmoidNorm
	case cfg.Scoring == ops.Sigmoid:
		return modeSigmoid
	case cfg.EffectiveRenormalize():
		return modeKSoftmax
	}
	return modeFullSoftmax
}

// RouteWeights writes w [T,K] for given experts idx [T,K] (validated on the device: see Synchronize),
// mode as weightMode, times scale.
func (d *Device) RouteWeights(dt tensor.Dtype, logits, idx, w cu.DevicePtr, T, E, K, mode int, scale float64) error {
	if err := checkDims("route weights", T, E, K); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	cfg := d.warpGrid(T)
	cfg.smem = cfg.block / 32 * K * 4
	return d.launch("route_weights_"+suf, cfg, ptrArg(logits), ptrArg(idx), ptrArg(w), i32(T), i32(E), i32(K), i32(mode), f64(scale), ptrArg(d.fault))
}

// RouteWeightsGrad writes dlogits [T,E] = d(sum dw*w)/dlogits (mode and scale as in RouteWeights).
func (d *Device) RouteWeightsGrad(dt tensor.Dtype, logits, idx, dw, dlogits cu.DevicePtr, T, E, K, mode int, scale float64) error {
	if err := checkDims("route weights grad", T, E, K); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	cfg := d.warpGrid(T)
	warps := cfg.block / 32
	cfg.smem = (warps*K+1)&^1*4 + warps*K*int(dt.Size())
	return d.launch("route_weights_grad_"+suf, cfg, ptrArg(logits), ptrArg(idx), ptrArg(dw), ptrArg(dlogits), i32(T), i32(E), i32(K), i32(mode), f64(scale), ptrArg(d.fault))
}

// PlanSections returns the device addresses of the plan's sections (ops/plan_layout.go).
func PlanSections(plan cu.DevicePtr, T, K, E int) (counts, offsets, rowOf, slotOf cu.DevicePtr) {
	counts = plan
	offsets = offsetPtr(plan, int64(E)*4)
	rowOf = offsetPtr(plan, int64(2*E+1)*4)
	slotOf = offsetPtr(rowOf, int64(T)*int64(K)*4)
	return
}

// Plan builds the routing plan of idx [T,K] over E experts into plan [2E+1+2TK] (int32), on the device
// with no host synchronisation: one launch (plan_onepass) when a grid for it fits on the device at once
// (onePassPlan), else three launches (plan_count, plan_scan, plan_scatter). Scratch memory comes from
// the caching allocator. Both paths give the same plan.
func (d *Device) Plan(idx, plan cu.DevicePtr, T, K, E int) error {
	if err := checkDims("plan", T, K, E); err != nil {
		return err
	}
	n := T * K
	if int64(T)*int64(K) > 1<<30 {
		return fmt.Errorf("cudaops: plan: T*K=%d too large (at most 2^30 on the GPU): %w", int64(T)*int64(K), ops.ErrShape)
	}
	if E*4 > 48*1024 {
		return fmt.Errorf("cudaops: plan: E=%d experts exceed the shared-memory counters (max %d): %w", E, 48*1024/4, ops.ErrUnsupported)
	}
	counts, offsets, rowOf, slotOf := PlanSections(plan, T, K, E)
	if d.opts.PlanMode != PlanMultiLaunch {
		cfg, rounds, ok, err := d.onePassPlan(n, E)
		if err != nil {
			return err
		}
		if ok {
			scratch, err := d.scratch(int64(cfg.grid) * int64(E) * 4)
			if err != nil {
				return fmt.Errorf("cudaops: plan scratch: %w", err)
			}
			defer d.putScratch(scratch)
			return d.launch("plan_onepass", cfg, ptrArg(idx), i32(n), i32(E), i32(rounds), ptrArg(scratch),
				ptrArg(counts), ptrArg(offsets), ptrArg(rowOf), ptrArg(slotOf), ptrArg(d.fault), ptrArg(d.barrier()))
		}
	}
	wpb := 8
	for wpb > 1 && wpb*E*4 > 48*1024 {
		wpb /= 2
	}
	// Chunks of whole rounds (32 lanes * 8 slots, see plan.cu), at most ~128 of them so that the scan
	// over chunks stays short.
	const round = 32 * 8
	rounds := (n + round - 1) / round
	chunk := (rounds + 127) / 128 * round
	chunks := (n + chunk - 1) / chunk
	scratch, err := d.scratch(int64(chunks) * int64(E) * 4)
	if err != nil {
		return fmt.Errorf("cudaops: plan scratch: %w", err)
	}
	defer d.putScratch(scratch)
	grid := launchCfg{grid: (chunks + wpb - 1) / wpb, block: wpb * 32, smem: wpb * E * 4}
	if err := d.launch("plan_count", grid, ptrArg(idx), i32(n), i32(E), i32(chunk), i32(chunks), ptrArg(scratch), ptrArg(d.fault)); err != nil {
		return err
	}
	if err := d.launch("plan_scan", launchCfg{grid: 1, block: 1024}, ptrArg(scratch), i32(chunks), i32(E), i32(n), ptrArg(counts), ptrArg(offsets)); err != nil {
		return err
	}
	return d.launch("plan_scatter", grid, ptrArg(idx), i32(n), i32(E), i32(chunk), i32(chunks), ptrArg(scratch), ptrArg(rowOf), ptrArg(slotOf))
}

// One-pass plan limits: warps per block at most onePassMaxWarps (fewer when E is large), tiles of 32 *
// rounds slots with rounds <= onePassMaxRounds (ONEPASS_MAX_ROUNDS in plan.cu), preferably at most
// onePassPreferBlocks blocks (fewer arrivals at the barrier, less to read after it), never more blocks
// than are resident at once, and at most onePassMaxCells per-block counts to read after the barrier.
const (
	onePassMaxWarps     = 16
	onePassMaxRounds    = 8
	onePassPreferBlocks = 64
	onePassMaxCells     = 8192
)

// onePassPlan sizes the one-pass plan for n slots and E experts: the launch, the rounds per warp tile,
// and whether it applies (every block of the grid must be resident at once for its grid barrier: the
// grid is at most the multiprocessors times the blocks the occupancy calculator allows per
// multiprocessor).
func (d *Device) onePassPlan(n, E int) (launchCfg, int, bool, error) {
	const static = 128 // plan_onepass's own shared memory (block_exclusive_scan)
	w := onePassMaxWarps
	for w > 4 && (w+2)*E*4+static > 48*1024 {
		w /= 2
	}
	smem := (w + 2) * E * 4
	if smem+static > 48*1024 || smem+static > d.maxSmem {
		return launchCfg{}, 0, false, nil
	}
	perSM, err := d.occupancy("plan_onepass", w*32, smem)
	if err != nil {
		return launchCfg{}, 0, false, err
	}
	maxBlocks := perSM * d.sms
	pick := func(limit int) (int, int) {
		for r := 1; r <= onePassMaxRounds; r++ {
			g := (n + w*32*r - 1) / (w * 32 * r)
			if g <= limit && g <= maxBlocks && int64(g)*int64(E) <= onePassMaxCells {
				return g, r
			}
		}
		return 0, 0
	}
	prefer := onePassPreferBlocks
	if d.opts.PlanBlocks > 0 {
		prefer = d.opts.PlanBlocks
	}
	g, r := pick(prefer)
	if g == 0 {
		g, r = pick(maxBlocks)
	}
	if g == 0 {
		return launchCfg{}, 0, false, nil
	}
	return launchCfg{grid: g, block: w * 32, smem: smem}, r, true, nil
}

// occupancy returns how many blocks of kernel name (block threads, smem dynamic shared bytes) fit on
// one multiprocessor at once, cached per configuration.
func (d *Device) occupancy(name string, block, smem int) (int, error) {
	key := occKey{name, block, smem}
	var n int
	err := d.do(func() error {
		if v, ok := d.occ[key]; ok {
			n = v
			return nil
		}
		fn, ok := d.fns[name]
		if !ok {
			return fmt.Errorf("cudaops: kernel %s is not in the embedded PTX", name)
		}
		v, err := fn.MaxActiveBlocksPerMultiProcessor(block, int64(smem))
		if err != nil {
			return fmt.Errorf("cudaops: occupancy of %s: %w", name, err)
		}
		if d.occ == nil {
			d.occ = map[occKey]int{}
		}
		d.occ[key] = v
		n = v
		return nil
	})
	return n, err
}

type occKey struct {
	name        string
	block, smem int
}

// Dispatch writes out[rowOf[t*K+j]] = scale * x[t] (x [T,H], out [T*K,H]); scale = w[t,j] or 1 (w == 0).
// kept points at the plan's offsets[E]: slots with rowOf >= *kept (a capacity plan's dropped slots) get
// a zero row. The output rows are written with plain stores (they stay in L2 for the next kernel) unless
// the handle's option StreamingDispatchStores.
func (d *Device) Dispatch(dt tensor.Dtype, x, w, rowOf, kept, out cu.DevicePtr, T, K, H int) error {
	if err := checkDims("dispatch", T, K, H); err != nil {
		return err
	}
	name, nv, err := rowKernel("dispatch", dt, H, x, out)
	if err != nil {
		return err
	}
	return d.launch(name, d.warpGrid(T), ptrArg(x), ptrArg(w), ptrArg(rowOf), ptrArg(kept), ptrArg(out), i32(T), i32(K), i32(nv), i32(b2i(!d.opts.StreamingDispatchStores)))
}

// Combine writes out[t] = sum_j scale * ye[rowOf[t*K+j]] in increasing j over the kept slots
// (rowOf < *kept) (ye [T*K,H], out [T,H]).
func (d *Device) Combine(dt tensor.Dtype, ye, w, rowOf, kept, out cu.DevicePtr, T, K, H int) error {
	if err := checkDims("combine", T, K, H); err != nil {
		return err
	}
	name, nv, err := rowKernel("combine", dt, H, ye, out)
	if err != nil {
		return err
	}
	return d.launch(name, d.warpGrid(T), ptrArg(ye), ptrArg(w), ptrArg(rowOf), ptrArg(kept), ptrArg(out), i32(T), i32(K), i32(nv))
}

// CombineBackward writes dw[t,j] = <dy[t], ye[rowOf[t*K+j]]> and, when dye != 0, also
// dye[rowOf[t*K+j]] = w[t,j] * dy[t] in the same pass (the fused combine backward); dropped slots
// (rowOf >= *kept) get dw = 0 and a zero dye row.
func (d *Device) CombineBackward(dt tensor.Dtype, dy, ye, w, rowOf, kept, dw, dye cu.DevicePtr, T, K, H int) error {
	if err := checkDims("combine backward", T, K, H); err != nil {
		return err
	}
	if dye != 0 && w == 0 {
		return fmt.Errorf("cudaops: combine backward: dye needs the weights w")
	}
	name, nv, err := rowKernel("combine_bwd", dt, H, dy, ye, dye)
	if err != nil {
		return err
	}
	return d.launch(name, d.warpGrid(T), ptrArg(dy), ptrArg(ye), ptrArg(w), ptrArg(rowOf), ptrArg(kept), ptrArg(dw), ptrArg(dye), i32(T), i32(K), i32(nv))
}

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

// fill writes n values of width bytes (1, 2, 4 or 8) with the given bit pattern.
func (d *Device) fill(p cu.DevicePtr, n, width int64, bits uint64) error {
	if n == 0 {
		return nil
	}
	switch width {
	case 1:
		return d.do(func() error {
			return d.timedLocked(FamilyMemset, func() error { return cu.MemsetD8Async(p, byte(bits), n, d.stream) })
		})
	case 2:
		return d.do(func() error {
			return d.timedLocked(FamilyMemset, func() error { return cu.MemsetD16Async(p, uint16(bits), n, d.stream) })
		})
	case 4:
		return d.do(func() error {
			return d.timedLocked(FamilyMemset, func() error { return cu.MemsetD32Async(p, uint(uint32(bits)), n, d.stream) })
		})
	case 8:
		return d.launch("fill_u64", d.flatGrid(n), ptrArg(p), i64(n), u64(bits))
	}
	return fmt.Errorf("cudaops: fill: unsupported width %d", width)
}

func (d *Device) copyHtoD(dst cu.DevicePtr, src unsafe.Pointer, n int64) error {
	if n == 0 {
		return nil
	}
	return d.do(func() error {
		if err := d.timedLocked(FamilyCopyHtoD, func() error { return cu.MemcpyHtoDAsync(dst, src, n, d.stream) }); err != nil {
			return fmt.Errorf("cudaops: copy %d bytes host->device: %w", n, err)
		}
		// Pageable source: wait so that the Go memory may change as soon as we return.
		if err := d.streamSyncLocked(); err != nil {
			return fmt.Errorf("cudaops: copy %d bytes host->device: %w", n, err)
		}
		return nil
	})
}

// copyDtoH waits for the stream (all earlier kernels), copies, and reports pending device faults.
func (d *Device) copyDtoH(dst unsafe.Pointer, src cu.DevicePtr, n int64) error {
	return d.do(func() error {
		if n > 0 {
			d.waits.reads.Add(1)
			if err := d.timedLocked(FamilyCopyDtoH, func() error { return cu.MemcpyDtoHAsync(dst, src, n, d.stream) }); err != nil {
				return fmt.Errorf("cudaops: copy %d bytes device->host: %w", n, err)
			}
		}
		if err := d.streamSyncLocked(); err != nil {
			return fmt.Errorf("cudaops: copy %d bytes device->host: %w", n, err)
		}
		return d.checkFaultLocked()
	})
}

func (d *Device) copyDtoD(dst, src cu.DevicePtr, n int64) error {
	if n == 0 {
		return nil
	}
	return d.do(func() error {
		if err := d.timedLocked(FamilyCopyDtoD, func() error { return cu.MemcpyDtoDAsync(dst, src, n, d.stream) }); err != nil {
			return fmt.Errorf("cudaops: copy %d bytes device->device: %w", n, err)
		}
		return nil
	})
}

// CopyDtoD issues a device-to-device copy of n bytes on the stream (the bandwidth baseline).
func (d *Device) CopyDtoD(dst, src cu.DevicePtr, n int64) error { return d.copyDtoD(dst, src, n) }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
