package gemmplan

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Mode is the kind of product (see the package doc).
type Mode int

const (
	Dense Mode = iota
	GroupRows
	GroupRed
)

func (m Mode) String() string {
	switch m {
	case Dense:
		return "dense"
	case GroupRows:
		return "grouped rows"
	case GroupRed:
		return "grouped reduction"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Problem is one product over device memory. All matrices are packed row-major: A is [M,K] (or [K,M]
// when TransA; GroupRows: [Rows,K]; GroupRed: [Rows,M]), B is [K,N] (or [N,K] when TransB; GroupRows:
// E of them; GroupRed: [Rows,N]), C is [M,N] (GroupRows: [Rows,N]; GroupRed: [E,M,N]).
type Problem struct {
	Mode   Mode
	Double bool // float64 elements
	// BF16: bfloat16 A and B (float32 accumulation on the bf16 variants, whatever Options.TF32 says);
	// C is bfloat16, rounded once, or float32 (the accumulator unrounded) with OutF32.
	BF16, OutF32   bool
	TransA, TransB bool
	M, N, K        int // GroupRows: M unused; GroupRed: K unused
	E, Rows        int // grouped only
	// Device addresses. Offsets (grouped): E+1 int32 segment offsets; Fault: the device fault word.
	A, B, C, Offsets, Fault uint64
	// SwiGLU (GroupRows, B stored [E,K,N], no TransB, C of the operands' type): C = silu(A·B[e]) ⊙
	// (A·B2[e]) in one launch (the gemm_swiglu kernels), N the features; G and U, when not 0, receive
	// the two products ([Rows,N] each). Planned as a product of 2N columns.
	SwiGLU   bool
	B2, G, U uint64
}

// Target describes the device.
type Target struct {
	SMs     int // multiprocessors
	MaxSmem int // dynamic shared memory a CTA may opt into, bytes
	// SM90a: the device runs sm_90a PTX (compute capability 9.0), so the wgmma variants (Variant.WG)
	// are candidates; elsewhere they are never planned.
	SM90a bool
}

// Options select variants.
type Options struct {
	// TF32 runs float32 products on the TF32 variants.
	TF32 bool
	// Force names a variant that runs every problem of its class (float32, float64, TF32 or bfloat16);
	// problems of other classes are planned as usual. A wgmma variant is forced only where it can run
	// (Target.SM90a, operands it takes: see wgReady); elsewhere the planner chooses.
	Force string
	// Splits, when positive, forces the reduction split of grouped-rows products (float32, float64 and
	// TF32; not bfloat16, not SwiGLU) to this many parts (at most one per BK of K, and as far as the
	// workspace bound allows) instead of the cost model's choice. For tests and benchmarks.
	Splits int
	// StreamK schedules grouped-rows products (float32 and float64 SIMT and TF32 mma.sync variants;
	// not bfloat16, wgmma or SwiGLU; not with Splits) stream-K: data-parallel waves of tiles, then the
	// last partial wave's k-iterations shared equally by all CTAs. Without it the planner chooses
	// stream-K only where skAuto allows it. For tests and benchmarks.
	StreamK bool
}

// Launch is one kernel launch: Args in the kernel's parameter order, one 8-byte slot each (32-bit
// parameters in the low half).
type Launch struct {
	Variant string
	Kernel  string
	Grid    int
	Block   int
	Smem    int
	Args    []uint64
}

// Plan is a planned product. Workspace bytes of device scratch must be passed to Launches (split-K
// partial sums); it is zero when the reduction is not split.
type Plan struct {
	Variant Variant
	// Copies: K-major copies of operands the wgmma tile cannot read in place, made by gemm_transpose
	// into the workspace before the main launch (nil otherwise).
	Copies []Copy
	Splits int // dense or grouped-rows reduction split in this many parts (1: not split)
	// StreamK: a grouped-rows product whose CTAs (CTAs of them, all resident at once) share the
	// tiles' k-iterations equally (gemm_entry's GROUP_ROWS_SK), tiles that straddle two CTAs' ranges
	// summed by gemm_sk_fixup from per-CTA partials; Splits is then 1.
	StreamK   bool
	KChunk    int   // reduction length per split
	Swapped   bool  // dense: computed as Cᵀ = op(B)ᵀ·op(A)ᵀ (small M)
	CTAs      int   // CTAs of the main launch
	Workspace int64 // bytes of scratch: split-K partials, then the Copies
	p         Problem
	k         kernelArgs
	// indices in Copies of A's and B's copies (-1: read in place)
	copyA, copyB int
}

// Copy is one gemm_transpose launch: out[b][c][r] = in[b][r][c] for b < Batch, r < R, c < C, the input
// packed (R x C per batch, StrideIn elements apart), the output at byte Offset of the workspace with rows
// of Ldo elements (a multiple of 4: 16-byte rows) and StrideOut elements per batch.
type Copy struct {
	In                       uint64
	Offset                   int64
	R, C, Batch              int
	Ldo, StrideIn, StrideOut int64
}

// ErrTooLarge: a dimension or leading dimension beyond what the kernels' 32-bit tile offsets and grid
// limits cover.
var ErrTooLarge = errors.New("gemm: problem too large for the kernels")

// kernelArgs are GemmArgs (gemm.cuh) minus the workspace pointer.
type kernelArgs struct {
	A, B, C, offsets, fault                uint64
	lda, ldb, ldcR, ldcC, strideB, strideC int64
	M, N, K, E, rows, mode, splits, kChunk int32
	mTiles, nTiles, flags                  int32
	grid                                   int
	kernel                                 string
	reduceM, reduceN                       int
	reduceC                                uint64
	reduceLdcR, reduceLdcC                 int64
	reduceKernel                           string
	reduceCElem                            int
}

const (
	modeRowsSK = 3 // GEMM_GROUP_ROWS_SK
	// skAutoGain: the stream-K gain over the variant unscheduled that the cost model must promise
	// before the planner chooses it (skAuto).
	skAutoGain = 0.15
	skFixParts = 8 // GEMM_SK_FIX_PARTS: gemm_sk_fixup's CTAs per stream-K CTA
	flagVecC   = 4 // GEMM_VEC_C
	flagSort   = 8 // GEMM_SORT
	sortMax    = 256
	maxGrid    = 1<<31 - 1
	// maxWorkspace bounds the split-K scratch (grouped rows at T=16384, k=2, H=1024 split in 2: 256 MiB).
	maxWorkspace = 512 << 20
	// Grouped rows split K in at most maxRowSplits parts of at least minRowChunk each.
	maxRowSplits = 4
	minRowChunk  = 512
	// splitMargin: a grouped-rows split must promise this fraction less time than no split. The gains
	// come from the last wave's fill, which the cost's estimate of the m-tiles (half a tile per expert)
	// only approximates, and a split adds a partials pass the model prices only roughly. On the H200
	// (bench/RESULTS.md, 2026-12-02) the 5-6 % the model promised for dY·Wᵀ at T=4096 (128x64 in 4
	// splits) was a 1 % loss (fp32) and a 7 % loss (TF32), and no forced split gained more than 2 %; so
	// only a grid that leaves most of the device idle (few rows, long K) is split.
	splitMargin = 0.25
)

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// Make plans p on target t. vs is the variant table (ParseVariants).
func Make(p Problem, t Target, o Options, vs []Variant) (*Plan, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	swap := p.Mode == Dense && p.M < p.N && p.M <= 32
	if swap {
		p = p.swapped()
	}
	class := "f32"
	switch {
	case p.Double:
		class = "f64"
	case p.BF16:
		class = "bf16"
	case o.TF32:
		class = "tf32"
	}
	var cands []Variant
	for _, v := range vs {
		if v.class() != class || v.Smem() > t.MaxSmem || v.WG && (!t.SM90a || !p.wgReady()) {
			continue
		}
		if o.Force != "" && v.Name == o.Force {
			cands = []Variant{v}
			break
		}
		cands = append(cands, v)
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("gemm: no %s variant fits %d bytes of shared memory", class, t.MaxSmem)
	}
	best, bestCost := -1, math.Inf(1)
	cp := p
	if p.SwiGLU {
		cp.N = 2 * p.N // the tiles cover gate and up columns
	}
	for i, v := range cands {
		if c := cost(cp, t, v, o); c < bestCost {
			best, bestCost = i, c
		}
	}
	return build(p, t, cands[best], swap, o)
}

func (p Problem) validate() error {
	if p.M < 0 || p.N < 0 || p.K < 0 || p.E < 0 || p.Rows < 0 {
		return fmt.Errorf("gemm: negative size in %+v", p)
	}
	if p.BF16 && p.Double || p.OutF32 && !p.BF16 {
		return fmt.Errorf("gemm: BF16 excludes Double, OutF32 needs BF16")
	}
	switch p.Mode {
	case Dense:
	case GroupRows:
		if p.TransA {
			return fmt.Errorf("gemm: grouped rows need A stored [Rows,K]")
		}
		if p.E < 1 || p.Rows < 1 {
			return fmt.Errorf("gemm: grouped product needs E >= 1 and Rows >= 1, got %d, %d", p.E, p.Rows)
		}
	case GroupRed:
		if !p.TransA || p.TransB {
			return fmt.Errorf("gemm: grouped reduction needs A stored [Rows,M] and B stored [Rows,N]")
		}
		if p.E < 1 || p.Rows < 1 {
			return fmt.Errorf("gemm: grouped product needs E >= 1 and Rows >= 1, got %d, %d", p.E, p.Rows)
		}
	default:
		return fmt.Errorf("gemm: unknown mode %v", p.Mode)
	}
	if p.SwiGLU && (p.Mode != GroupRows || p.TransB || p.OutF32) {
		return fmt.Errorf("gemm: a SwiGLU product is grouped rows with B stored [E,K,N] and C of the operands' type")
	}
	const lim = math.MaxInt32
	if p.M > lim || p.N > lim || p.K > lim || p.Rows > lim || p.E > lim-1 {
		return fmt.Errorf("%w: dimensions must be below 2^31", ErrTooLarge)
	}
	return nil
}

// swapped is the dense product Cᵀ = op(B)ᵀ·op(A)ᵀ: op(B)ᵀ is B read with the opposite layout flag, and
// likewise A, so only flags and dimensions change (C is then written transposed, see build).
func (p Problem) swapped() Problem {
	q := p
	q.M, q.N = p.N, p.M
	q.A, q.B = p.B, p.A
	q.TransA, q.TransB = !p.TransB, !p.TransA
	return q
}

// layout names the kernel layout of the product: A's layout, then B's ("n" or "t"), as in gemm_nt.
func (p Problem) layout() string {
	l := map[bool]string{false: "n", true: "t"}
	return l[p.TransA] + l[p.TransB]
}

// leading dimensions of the packed operands.
func (p Problem) lda() int {
	if p.TransA {
		return p.M
	}
	return p.K
}
func (p Problem) ldb() int {
	if p.TransB {
		return p.K
	}
	return p.N
}

// wgReady reports whether the wgmma tile can run p: the operands it reads in place (A stored [M,K], B
// stored [N,K]; grouped reductions read both from transposed copies) must be 16-byte aligned with rows
// of a multiple of 4 elements. The wgmma modules have no SwiGLU kernels.
func (p Problem) wgReady() bool {
	if p.Double || p.BF16 || p.SwiGLU {
		return false
	}
	if p.Mode == GroupRed {
		return true
	}
	return (p.TransA || aligned(p.A, p.lda(), 4)) && (!p.TransB || aligned(p.B, p.ldb(), 4))
}

// splitK picks the dense reduction split for variant v: enough CTAs to fill the device when the output
// tiles alone do not, each split at least minChunk long.
func splitK(p Problem, t Target, v Variant) (splits, chunk int) {
	if p.Mode != Dense || p.K == 0 {
		return 1, p.K
	}
	tiles := ceilDiv(p.M, v.BM) * ceilDiv(p.N, v.BN)
	slots := t.SMs * v.MinBlocks
	minChunk := max(4*v.BK, 128)
	if tiles == 0 || tiles >= slots || p.K < 2*minChunk {
		return 1, p.K
	}
	s := min(ceilDiv(slots, tiles), p.K/minChunk)
	if ws := int64(p.M) * int64(p.N) * int64(v.partialBytes()); ws > 0 && int64(s)*ws > maxWorkspace {
		s = int(max(1, maxWorkspace/ws))
	}
	if s < 2 {
		return 1, p.K
	}
	chunk = ceilDiv(ceilDiv(p.K, s), v.BK) * v.BK
	return ceilDiv(p.K, chunk), chunk
}

// splitRows picks the grouped-rows reduction split for variant v: the s in 1..maxRowSplits (each part
// at least minRowChunk long, the partials within maxWorkspace) of least cost (rowsCost; s > 1 only when
// it is splitMargin below s = 1), or o.Splits.
// bfloat16 and SwiGLU products are never split.
func splitRows(p Problem, t Target, v Variant, o Options) (splits, chunk int) {
	if p.Mode != GroupRows || p.BF16 || p.SwiGLU || v.BF16 || p.K == 0 {
		return 1, p.K
	}
	ws := int64(p.Rows) * int64(p.N) * int64(v.partialBytes())
	if o.Splits > 0 {
		s := min(o.Splits, ceilDiv(p.K, v.BK))
		if ws > 0 {
			s = int(min(int64(s), max(1, maxWorkspace/ws)))
		}
		return rowChunk(p.K, v.BK, s)
	}
	best, bestCost := 1, (1-splitMargin)*rowsCost(p, t, v, 1, p.K)
	for s := 2; s <= maxRowSplits && p.K/s >= minRowChunk && int64(s)*ws <= maxWorkspace; s++ {
		s2, chunk := rowChunk(p.K, v.BK, s)
		if s2 != s {
			continue
		}
		if c := rowsCost(p, t, v, s, chunk); c < bestCost {
			best, bestCost = s, c
		}
	}
	return rowChunk(p.K, v.BK, best)
}

// rowsPlan is the schedule of a grouped-rows product on variant v: stream-K over skWorkers CTAs (sk)
// where o.StreamK asks for it and v runs it, or where skAuto allows it and it promises skAutoGain less
// time than v unscheduled; else a reduction split (splitRows). c is the chosen schedule's cost.
func rowsPlan(p Problem, t Target, v Variant, o Options) (splits, chunk int, sk bool, c float64) {
	splits, chunk = splitRows(p, t, v, o)
	c = rowsCost(p, t, v, splits, chunk)
	if !skEligible(p, v, o) {
		return splits, chunk, false, c
	}
	if skc := skCost(p, t, v); o.StreamK || skAuto(p, v) && splits == 1 && skc < (1-skAutoGain)*c {
		return 1, p.K, true, skc
	}
	return splits, chunk, false, c
}

// skAuto: the planner schedules stream-K on its own only float32 SIMT tiles of one CTA per
// multiprocessor, where a last partial wave leaves whole multiprocessors idle. On the H200 (bench/
// RESULTS.md, 2026-12-02) that was f32_256x128x8_rs_s2's dY·Wᵀ at T=4096 (2.24 waves: 1.556 ms against
// 1.700 unscheduled and 1.672-1.721 on 128x64; the model promised 25 %, it gained 8.5 %); tiles of several
// CTAs per multiprocessor (128x64: the hardware fills the last wave with the other CTAs) gained nothing
// or lost up to 15 %, and at T=16384 (8.2 waves) the RS tile lost 1 %: hence skAutoGain.
func skAuto(p Problem, v Variant) bool {
	return !p.Double && !v.TF32 && !v.BF16 && v.MinBlocks == 1
}

// skEligible: stream-K runs grouped rows of the float32/float64 SIMT and TF32 mma.sync variants (the
// modules with the gemm_sk_* kernels), never with a forced split.
func skEligible(p Problem, v Variant, o Options) bool {
	return p.Mode == GroupRows && !p.BF16 && !p.SwiGLU && !v.BF16 && !v.WG && p.K > 0 && o.Splits <= 0
}

// skWorkers is the CTA count of a stream-K launch of v: every multiprocessor's MinBlocks, at most the
// grid of the tile scheduler's bound on the tiles (there is no work for more).
func skWorkers(p Problem, t Target, v Variant) int {
	bound := (ceilDiv(p.Rows, v.BM) + p.E - 1) * ceilDiv(p.N, v.BN)
	return max(1, min(t.SMs*v.MinBlocks, bound))
}

// skCost is rowsCost's estimate for stream-K (it ranks the variants when stream-K is forced): the same
// tiles' work spread evenly over the device (no last wave), plus the partial tiles (about two per CTA,
// written and read once, their C written) and the fix-up launch, in rowsCost's units. It leaves out
// what the H200 showed stream-K to cost: its CTAs work at staggered k offsets in the stream-K tiles
// (less L2 reuse; the 128x64 tile read twice the DRAM bytes) and each piece pays a pipeline fill.
func skCost(p Problem, t Target, v Variant) float64 {
	mt := float64(p.Rows)/float64(v.BM) + 0.5*float64(min(p.E, p.Rows))
	ctas := math.Ceil(mt) * float64(ceilDiv(p.N, v.BN))
	c := ctas / float64(t.SMs) * float64(v.BM*v.BN) * float64(p.K) / v.EffFor(p.layout())
	rate := 1.6e11
	if v.TF32 {
		rate = 3.8e11
	}
	const bw, launch = 4e12, 4e-6
	bytes := 5 * float64(skWorkers(p, t, v)) * float64(v.BM*v.BN) * float64(v.partialBytes())
	return c + (bytes/bw+launch)*rate
}

// rowChunk splits k in s chunks of a multiple of bk (the last one shorter); fewer when rounding leaves
// nothing to the last ones.
func rowChunk(k, bk, s int) (splits, chunk int) {
	if s <= 1 || k == 0 {
		return 1, k
	}
	chunk = ceilDiv(ceilDiv(k, s), bk) * bk
	return ceilDiv(k, chunk), chunk
}

// rowsCost is cost's estimate of a grouped-rows product split in s parts of chunk: the tiles' waves,
// then (s > 1) the reduction, which reads the s partials and writes C (s+1 passes over [Rows,N]) and is
// one more launch. Bytes convert to the cost's units (one multiprocessor's multiply-adds at eff 1) at
// about 4 TB/s against the class's rate per multiprocessor: SIMT float32 about 1.6e11 per second on the
// H200 (its cost reproduces the measured dY·Wᵀ times within 2 %: f32_128x64x16_s3 1.67 ms, unsplit
// f32_256x128x8_rs_s2 2.09 ms at T=4096), TF32 about 3.8e11.
func rowsCost(p Problem, t Target, v Variant, s, chunk int) float64 {
	// Each non-empty segment ends in a partial m-tile: on average half a tile per expert.
	mt := float64(p.Rows)/float64(v.BM) + 0.5*float64(min(p.E, p.Rows))
	ctas := math.Ceil(mt) * float64(ceilDiv(p.N, v.BN)) * float64(s)
	c := tileCost(p, t, v, ctas, float64(chunk))
	if s > 1 {
		rate := 1.6e11
		if v.TF32 {
			rate = 3.8e11
		}
		const bw, launch = 4e12, 4e-6 // bytes per second, seconds
		bytes := float64(s+1) * float64(p.Rows) * float64(p.N) * float64(v.partialBytes())
		c += (bytes/bw + launch) * rate
	}
	return c
}

// partialBytes is the size of a split-K partial sum: float32 for bfloat16 variants (the accumulator),
// else the element.
func (v Variant) partialBytes() int {
	if v.BF16 {
		return 4
	}
	return v.ElemBytes()
}

// cost is the planner's time estimate (arbitrary units): waves of CTAs times the tile work a
// multiprocessor shares among its resident CTAs, over the variant's efficiency.
func cost(p Problem, t Target, v Variant, o Options) float64 {
	var ctas, kLen float64
	switch p.Mode {
	case Dense:
		s, chunk := splitK(p, t, v)
		ctas = float64(ceilDiv(p.M, v.BM) * ceilDiv(p.N, v.BN) * s)
		kLen = float64(chunk)
	case GroupRows:
		_, _, _, c := rowsPlan(p, t, v, o)
		return c
	case GroupRed:
		ctas = float64(p.E * ceilDiv(p.M, v.BM) * ceilDiv(p.N, v.BN))
		kLen = float64(p.Rows) / float64(p.E)
	}
	return tileCost(p, t, v, ctas, kLen)
}

// tileCost is the cost of ctas CTAs of variant v, each over kLen of the reduction, plus the wgmma
// variants' K-major copies.
func tileCost(p Problem, t Target, v Variant, ctas, kLen float64) float64 {
	if ctas == 0 {
		return 0
	}
	extra := 0.0
	if v.WG {
		// The K-major copies read and write the copied operands once. In the cost's units (one
		// multiprocessor's multiply-adds at eff 1, about 3.8e11/s on the H200's TF32 mma.sync tiles)
		// a byte moved at about 4 TB/s (read and write: 2 bytes of traffic) costs about 0.19.
		cs, _, _ := p.wgCopies()
		for _, c := range cs {
			extra += 0.19 * 4 * float64(c.R) * float64(c.C) * float64(c.Batch)
		}
	}
	slots := float64(t.SMs * v.MinBlocks)
	waves := math.Ceil(ctas / slots)
	conc := math.Min(float64(v.MinBlocks), math.Ceil(ctas/float64(t.SMs)))
	return waves*conc*float64(v.BM*v.BN)*math.Max(kLen, 1)/v.EffFor(p.layout()) + extra
}

// wgCopies lists the K-major copies the wgmma tile needs for p (In set, Offset not yet): A stored [K,M]
// (dense TransA; grouped reductions: x [Rows,M]) becomes [M][ldk], B stored [K,N] ([E][K][N] for
// grouped rows; dY [Rows,N] for reductions) becomes [N][ldk] per batch, ldk the reduction length
// rounded up to 4. ia, ib: the indices of A's and B's copies in cs (-1: read in place).
func (p Problem) wgCopies() (cs []Copy, ia, ib int) {
	ia, ib = -1, -1
	ld := int64(roundUp4(p.K))
	kA, kB, batch := p.K, p.K, 1
	if p.Mode == GroupRed {
		ld = int64(roundUp4(p.Rows))
		kA, kB = p.Rows, p.Rows
	}
	if p.Mode == GroupRows {
		batch = p.E
	}
	if p.Mode == GroupRed || p.TransA { // grouped rows take A stored [Rows,K]: never copied
		ia = len(cs)
		cs = append(cs, Copy{In: p.A, R: kA, C: p.M, Batch: 1, Ldo: ld, StrideIn: int64(kA) * int64(p.M), StrideOut: int64(p.M) * ld})
	}
	if p.Mode == GroupRed || !p.TransB {
		ib = len(cs)
		cs = append(cs, Copy{In: p.B, R: kB, C: p.N, Batch: batch, Ldo: ld, StrideIn: int64(kB) * int64(p.N), StrideOut: int64(p.N) * ld})
	}
	return cs, ia, ib
}

func roundUp4(n int) int { return (n + 3) &^ 3 }

// aligned reports whether a packed operand at addr with rows of ld elements is read in 16-byte vectors.
func aligned(addr uint64, ld, elem int) bool {
	return addr%16 == 0 && (ld*elem)%16 == 0
}

func build(p Problem, t Target, v Variant, swap bool, o Options) (*Plan, error) {
	elem := v.ElemBytes()
	cElem := elem // C's element size
	if p.OutF32 {
		cElem = 4
	}
	pl := &Plan{Variant: v, p: p, Splits: 1, KChunk: p.K}
	k := &pl.k
	k.A, k.B, k.C, k.offsets, k.fault = p.A, p.B, p.C, p.Offsets, p.Fault
	lda, ldb := p.lda(), p.ldb()
	k.lda, k.ldb = int64(lda), int64(ldb)
	k.M, k.N, k.K, k.E, k.rows = int32(p.M), int32(p.N), int32(p.K), int32(p.E), int32(p.Rows)
	k.mode = int32(p.Mode)
	k.nTiles = int32(ceilDiv(p.N, v.BN))
	if p.SwiGLU {
		k.nTiles = int32(ceilDiv(p.N, v.BN/2)) // BN/2 features per tile
	}
	// The kernels address a tile's copies with 32-bit offsets: tile extent times ld must stay below 2^31.
	ext := max(v.BM, v.BN, v.BK)
	if int64(ext)*int64(max(lda, ldb)) >= math.MaxInt32 {
		return nil, fmt.Errorf("%w: leading dimension %d times tile extent %d reaches 2^31", ErrTooLarge, max(lda, ldb), ext)
	}

	// wgmma: operands the tile cannot read in place are copied K-major into the workspace (after the
	// split-K partials); the kernel then runs the "nt" product over the copies.
	copyA, copyB := -1, -1
	if v.WG {
		var cs []Copy
		cs, copyA, copyB = p.wgCopies()
		pl.Copies = cs
		if copyA >= 0 {
			lda = int(cs[copyA].Ldo)
		}
		if copyB >= 0 {
			ldb = int(cs[copyB].Ldo)
		}
		k.lda, k.ldb = int64(lda), int64(ldb)
		if int64(ext)*int64(max(lda, ldb)) >= math.MaxInt32 {
			return nil, fmt.Errorf("%w: leading dimension %d times tile extent %d reaches 2^31", ErrTooLarge, max(lda, ldb), ext)
		}
		for _, c := range cs {
			if g := int64(ceilDiv(c.R, 32)) * int64(ceilDiv(c.C, 32)) * int64(c.Batch); g > maxGrid {
				return nil, fmt.Errorf("%w: transposed copy of %d CTAs", ErrTooLarge, g)
			}
		}
	}

	var grid int64
	switch p.Mode {
	case Dense:
		pl.Splits, pl.KChunk = splitK(p, t, v)
		k.splits, k.kChunk = int32(pl.Splits), int32(pl.KChunk)
		k.mTiles = int32(ceilDiv(p.M, v.BM))
		grid = int64(k.mTiles) * int64(k.nTiles) * int64(pl.Splits)
		// C: row-major [M,N]; when swapped, C(m,n) of this problem is the caller's C[n][m].
		k.ldcR, k.ldcC = int64(p.N), 1
		if swap {
			k.ldcR, k.ldcC = 1, int64(p.M)
			pl.Swapped = true
		}
	case GroupRows:
		pl.Splits, pl.KChunk, pl.StreamK, _ = rowsPlan(p, t, v, o)
		k.splits, k.kChunk = int32(pl.Splits), int32(pl.KChunk)
		k.mTiles = int32(ceilDiv(p.Rows, v.BM) + p.E - 1)
		grid = int64(k.mTiles) * int64(k.nTiles) * int64(pl.Splits)
		if pl.StreamK {
			w := skWorkers(p, t, v)
			k.mode, k.splits, k.kChunk = modeRowsSK, int32(w), 0
			grid = int64(w)
			// two BM x BN partial tiles per CTA (its first and its last piece)
			pl.Workspace = int64(w) * 2 * int64(v.BM*v.BN) * int64(v.partialBytes())
		}
		k.ldcR, k.ldcC = int64(p.N), 1
		k.strideB = int64(p.K) * int64(p.N)
		if copyB >= 0 {
			k.strideB = pl.Copies[copyB].StrideOut
		}
	case GroupRed:
		k.splits, k.kChunk = 1, 0
		k.mTiles = int32(ceilDiv(p.M, v.BM))
		grid = int64(p.E) * int64(k.mTiles) * int64(k.nTiles)
		k.ldcR, k.ldcC = int64(p.N), 1
		k.strideC = int64(p.M) * int64(p.N)
		if p.E <= sortMax {
			k.flags |= flagSort
		}
	}
	if grid > maxGrid {
		return nil, fmt.Errorf("%w: %d CTAs", ErrTooLarge, grid)
	}
	k.grid = int(grid)
	pl.CTAs = k.grid

	// Operands copied without transposition use 16-byte copies when all of them allow it.
	directA, directB := p.TransA, !p.TransB // SIMT without KC: shared tiles are k-major
	if v.Direct() {
		directA, directB = true, true // every tile in its operand's layout
	}
	vec := (directA || directB) &&
		(!directA || aligned(p.A, lda, elem)) &&
		(!directB || aligned(p.B, ldb, elem)) &&
		(!p.SwiGLU || aligned(p.B2, ldb, elem))
	k.kernel = "gemm_" + p.layout()
	if p.SwiGLU {
		k.kernel = "gemm_swiglu_nn"
	}
	if vec {
		k.kernel += "_v16"
	}
	if v.WG {
		k.kernel = "gemm_nt_v16" // the only product of the wgmma modules; every operand ready (wgReady, copies)
	}
	if pl.StreamK {
		k.kernel = "gemm_sk_" + strings.TrimPrefix(k.kernel, "gemm_")
	}
	// bfloat16 modules: the _f32 kernels write float32 C, also the split-K partials (float32 even when
	// C is bfloat16: the reduction rounds once).
	if v.BF16 && (p.OutF32 || pl.Splits > 1) {
		k.kernel += "_f32"
	}
	if pl.Splits == 1 && k.ldcC == 1 && aligned(p.C, int(k.ldcR), cElem) &&
		(!p.SwiGLU || (p.G == 0 || aligned(p.G, int(k.ldcR), cElem)) && (p.U == 0 || aligned(p.U, int(k.ldcR), cElem))) {
		k.flags |= flagVecC
	}
	if pl.Splits > 1 && p.Mode == GroupRows {
		// partials [splits][Rows][N]; gemm_reduce_rows sums the rows the offsets cover into C.
		pl.Workspace = int64(pl.Splits) * int64(p.Rows) * int64(p.N) * int64(v.partialBytes())
		k.reduceKernel = "gemm_reduce_rows"
		k.reduceCElem = cElem
		k.reduceM, k.reduceN, k.reduceC = p.Rows, p.N, p.C
		k.reduceLdcR, k.reduceLdcC = k.ldcR, k.ldcC
	} else if pl.Splits > 1 {
		pl.Workspace = int64(pl.Splits) * int64(p.M) * int64(p.N) * int64(v.partialBytes())
		k.reduceKernel = "gemm_reduce"
		if v.BF16 && p.OutF32 {
			k.reduceKernel = "gemm_reduce_f32"
		}
		k.reduceCElem = cElem
		k.reduceM, k.reduceN, k.reduceC = p.M, p.N, p.C
		k.reduceLdcR, k.reduceLdcC = k.ldcR, k.ldcC
	}
	for i := range pl.Copies { // after the partials, 256-byte aligned
		c := &pl.Copies[i]
		pl.Workspace = (pl.Workspace + 255) &^ 255
		c.Offset = pl.Workspace
		pl.Workspace += 4 * c.Ldo * int64(c.C) * int64(c.Batch)
	}
	pl.copyA, pl.copyB = copyA, copyB
	return pl, nil
}

// Launches returns the launches of the plan in order, given the address of Workspace bytes of scratch
// (ignored when Workspace is 0).
func (pl *Plan) Launches(workspace uint64) []Launch {
	k := pl.k
	if k.grid == 0 {
		return nil
	}
	v := pl.Variant
	c, ldcR, ldcC, flags := k.C, k.ldcR, k.ldcC, k.flags
	if pl.Splits > 1 {
		c = workspace // the kernel writes the partials to W; C comes from the reduction
	}
	var ls []Launch
	a, b := k.A, k.B
	for i, cp := range pl.Copies {
		const block = 256
		grid := ceilDiv(cp.R, 32) * ceilDiv(cp.C, 32) * cp.Batch
		out := workspace + uint64(cp.Offset)
		if grid > 0 {
			ls = append(ls, Launch{Variant: v.Name, Kernel: "gemm_transpose", Grid: grid, Block: block,
				Args: []uint64{cp.In, out, u32(int32(cp.R)), u32(int32(cp.C)), uint64(cp.Ldo), uint64(cp.StrideIn), uint64(cp.StrideOut)}})
		}
		switch i {
		case pl.copyA:
			a = out
		case pl.copyB:
			b = out
		}
	}
	args := []uint64{
		a, b, c, workspace, k.offsets, k.fault,
		uint64(k.lda), uint64(k.ldb), uint64(ldcR), uint64(ldcC), uint64(k.strideB), uint64(k.strideC),
		u32(k.M), u32(k.N), u32(k.K), u32(k.E), u32(k.rows), u32(k.mode), u32(k.splits), u32(k.kChunk),
		u32(k.mTiles), u32(k.nTiles), u32(flags),
	}
	if pl.p.SwiGLU {
		args = append(args, pl.p.B2, pl.p.G, pl.p.U)
	}
	ls = append(ls, Launch{Variant: v.Name, Kernel: k.kernel, Grid: k.grid, Block: v.Threads(), Smem: v.Smem(), Args: args})
	if pl.StreamK { // the same arguments: the fix-up recomputes the iteration ranges from the offsets
		ls = append(ls, Launch{Variant: v.Name, Kernel: "gemm_sk_fixup", Grid: k.grid * skFixParts, Block: v.Threads(), Args: args})
	}
	if pl.Splits > 1 {
		// Vectors of 16 bytes of partials; C written in the same number of elements (bfloat16 C: pairs,
		// 4-byte aligned; the alignment test is that of 16-byte vectors of C's elements, which implies it).
		vecLen := 16 / v.partialBytes()
		mn := int64(k.reduceM) * int64(k.reduceN)
		vec := k.reduceLdcC == 1 && k.reduceN%vecLen == 0 && aligned(k.reduceC, int(k.reduceLdcR), k.reduceCElem)
		units := mn
		if vec {
			units = mn / int64(vecLen)
		}
		const block = 256
		grid := int(min((units+block-1)/block, 8*1024))
		args := []uint64{workspace, k.reduceC, u32(k.splits), u32(int32(k.reduceM)), u32(int32(k.reduceN)),
			uint64(k.reduceLdcR), uint64(k.reduceLdcC), u32(b2i(vec))}
		if k.reduceKernel == "gemm_reduce_rows" { // the grid covers every row; the kernel reads which count
			args = []uint64{workspace, k.reduceC, k.offsets, u32(k.splits), u32(int32(k.reduceM)), u32(int32(k.reduceN)),
				u32(k.E), uint64(k.reduceLdcR), uint64(k.reduceLdcC), u32(b2i(vec))}
		}
		ls = append(ls, Launch{Variant: v.Name, Kernel: k.reduceKernel, Grid: max(grid, 1), Block: block, Args: args})
	}
	return ls
}

func u32(v int32) uint64 { return uint64(uint32(v)) }

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}
