//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// The routing plan (plan.cu): one launch with a grid barrier where its grid fits on the device at once
// (plan_onepass), else count, scan and scatter (three launches); the Backend's Plan over it.

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
	if err := checkPlanSize(T, K, E); err != nil {
		return err
	}
	n := T * K
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
	grid, chunk, chunks := multiPassShape(n, E)
	scratch, err := d.scratch(int64(chunks) * int64(E) * 4)
	if err != nil {
		return fmt.Errorf("cudaops: plan scratch: %w", err)
	}
	defer d.putScratch(scratch)
	if err := d.launch("plan_count", grid, ptrArg(idx), i32(n), i32(E), i32(chunk), i32(chunks), ptrArg(scratch), ptrArg(d.fault)); err != nil {
		return err
	}
	if err := d.launch("plan_scan", launchCfg{grid: 1, block: 1024}, ptrArg(scratch), i32(chunks), i32(E), i32(n), ptrArg(counts), ptrArg(offsets)); err != nil {
		return err
	}
	return d.launch("plan_scatter", grid, ptrArg(idx), i32(n), i32(E), i32(chunk), i32(chunks), ptrArg(scratch), ptrArg(rowOf), ptrArg(slotOf))
}

// onePassPlan sizes the one-pass plan for n slots and E experts on this device (onePassShape, with the
// occupancy calculator's blocks per multiprocessor).
func (d *Device) onePassPlan(n, E int) (launchCfg, int, bool, error) {
	return onePassShape(n, E, d.sms, d.maxSmem, d.opts.PlanBlocks, func(block, smem int) (int, error) {
		return d.occupancy("plan_onepass", block, smem)
	})
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

func (b *Backend) Plan(idx *tensor.Dense, numExperts int, plan *tensor.Dense) error {
	const what = "plan"
	T, K, err := dims2(what, "idx", idx)
	if err != nil {
		return err
	}
	if numExperts < 1 {
		return fmt.Errorf("cudaops: plan: number of experts must be >= 1, got %d: %w", numExperts, ops.ErrConfig)
	}
	pi, err := b.buf(what, "idx", idx, tensor.Int32, T, K)
	if err != nil {
		return err
	}
	pp, err := b.buf(what, "plan", plan, tensor.Int32, ops.PlanLen(T, K, numExperts))
	if err != nil {
		return err
	}
	if err := b.dev.Plan(pi, pp, T, K, numExperts); err != nil {
		return err
	}
	return b.faultCheck()
}
