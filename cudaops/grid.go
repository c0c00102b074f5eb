package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Launch shapes: grid and block sizes and shared memory of every launcher, from the problem's sizes
// and the device's (multiprocessors, shared memory per block). Pure arithmetic, no build tag: CPU CI
// tests it.

// launchCfg is a 1-D launch.
type launchCfg struct {
	grid, block, smem int
}

// warpGridFor sizes a grid-striding launch of one warp per item on a device of sms multiprocessors:
// blocks of 256 threads (8 warps), enough blocks for every item up to 8 resident blocks per
// multiprocessor.
func warpGridFor(sms, items int) launchCfg {
	const block = 256
	blocks := (items + 7) / 8
	if maxBlocks := sms * 8; blocks > maxBlocks {
		blocks = maxBlocks
	}
	if blocks < 1 {
		blocks = 1
	}
	return launchCfg{grid: blocks, block: block}
}

// flatGridFor sizes a grid-striding elementwise launch over n items.
func flatGridFor(sms int, n int64) launchCfg {
	const block = 256
	blocks := (n + block - 1) / block
	if maxBlocks := int64(sms * 8); blocks > maxBlocks {
		blocks = maxBlocks
	}
	if blocks < 1 {
		blocks = 1
	}
	return launchCfg{grid: int(blocks), block: block}
}

// vecItems is the number of items of an elementwise launch over n elements of dt, moved 16 bytes at a
// time when vec.
func vecItems(n int64, vec bool, dt tensor.Dtype) int64 {
	if vec {
		w := int64(16 / dt.Size())
		n = (n + w - 1) / w
	}
	return n
}

// reductionParts is the number of partial sums of a reduction over n elements: fixed by n alone, so the
// summation order does not depend on the GPU.
func reductionParts(n int64, perPart int64, maxParts int64) int {
	p := (n + perPart - 1) / perPart
	if p < 1 {
		p = 1
	}
	if p > maxParts {
		p = maxParts
	}
	return int(p)
}

// sigmoidLaunchFor sizes route_sigmoid: warps per block (at most 8) such that each warp's selection
// values and group scores ((E + G) values of dt, G kept flags; G = 0 without groups) fit 48 KiB per
// block and the device's maxSmem, grid capped at 16 blocks per multiprocessor.
func sigmoidLaunchFor(dt tensor.Dtype, T, E, G, sms, maxSmem int) (launchCfg, error) {
	if G <= 1 {
		G = 0
	}
	per := (E+G)*int(dt.Size()) + G*4
	limit := min(48*1024, maxSmem)
	w := 8
	for w > 1 && w*per > limit {
		w /= 2
	}
	if w*per > limit {
		return launchCfg{}, fmt.Errorf("cudaops: sigmoid route: E=%d experts need %d bytes of shared memory per token, more than a block has: %w", E, per, ops.ErrUnsupported)
	}
	blocks := (T + w - 1) / w
	if maxBlocks := sms * 16; blocks > maxBlocks {
		blocks = maxBlocks
	}
	return launchCfg{grid: max(blocks, 1), block: 32 * w, smem: w * per}, nil
}

// routeWeightsSmem is the dynamic shared memory of route_weights (each warp's K expert indices).
func routeWeightsSmem(block, K int) int { return block / 32 * K * 4 }

// routeWeightsGradSmem is that of route_weights_grad: each warp's K indices (the int section padded to
// 8 bytes), then its K weights of dt.
func routeWeightsGradSmem(block, K int, dt tensor.Dtype) int {
	warps := block / 32
	return (warps*K+1)&^1*4 + warps*K*int(dt.Size())
}

// checkPlanSize refuses plans the kernels cannot build: more than 2^30 slots (T*K), or more experts
// than the shared-memory counters hold (E*4 bytes within 48 KiB).
func checkPlanSize(T, K, E int) error {
	if int64(T)*int64(K) > 1<<30 {
		return fmt.Errorf("cudaops: plan: T*K=%d too large (at most 2^30 on the GPU): %w", int64(T)*int64(K), ops.ErrShape)
	}
	if E*4 > 48*1024 {
		return fmt.Errorf("cudaops: plan: E=%d experts exceed the shared-memory counters (max %d): %w", E, 48*1024/4, ops.ErrUnsupported)
	}
	return nil
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

// onePassShape sizes the one-pass plan for n slots and E experts: the launch, the rounds per warp
// tile, and whether it applies (every block of the grid must be resident at once for its grid barrier:
// the grid is at most the multiprocessors times the blocks the occupancy calculator, perSM, allows per
// multiprocessor). preferBlocks overrides onePassPreferBlocks when > 0.
func onePassShape(n, E, sms, maxSmem, preferBlocks int, perSM func(block, smem int) (int, error)) (launchCfg, int, bool, error) {
	const static = 128 // plan_onepass's own shared memory (block_exclusive_scan)
	w := onePassMaxWarps
	for w > 4 && (w+2)*E*4+static > 48*1024 {
		w /= 2
	}
	smem := (w + 2) * E * 4
	if smem+static > 48*1024 || smem+static > maxSmem {
		return launchCfg{}, 0, false, nil
	}
	per, err := perSM(w*32, smem)
	if err != nil {
		return launchCfg{}, 0, false, err
	}
	maxBlocks := per * sms
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
	if preferBlocks > 0 {
		prefer = preferBlocks
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

// multiPassShape sizes the three-launch plan for n slots and E experts: chunks of whole rounds (32
// lanes * 8 slots, see plan.cu), at most ~128 of them so that the scan over chunks stays short, and
// the count/scatter launch of wpb warps per block (each warp's E counters in shared memory); n >= 1.
func multiPassShape(n, E int) (grid launchCfg, chunk, chunks int) {
	wpb := 8
	for wpb > 1 && wpb*E*4 > 48*1024 {
		wpb /= 2
	}
	const round = 32 * 8
	rounds := (n + round - 1) / round
	chunk = (rounds + 127) / 128 * round
	chunks = (n + chunk - 1) / chunk
	return launchCfg{grid: (chunks + wpb - 1) / wpb, block: wpb * 32, smem: wpb * E * 4}, chunk, chunks
}
