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

// planExperts returns E from the plan length for T tokens and K experts per token.
func planExperts(what string, plan *tensor.Dense, T, K int) (int, error) {
	if plan == nil || plan.Shape().Dims() != 1 {
		return 0, fmt.Errorf("cudaops: %s: plan must be a vector: %w", what, ops.ErrShape)
	}
	rest := plan.Shape()[0] - 1 - 2*T*K
	if rest < 2 || rest%2 != 0 {
		return 0, fmt.Errorf("cudaops: %s: plan has %d elements, not 2E+1+2TK for T=%d, K=%d: %w", what, plan.Shape()[0], T, K, ops.ErrShape)
	}
	return rest / 2, nil
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
