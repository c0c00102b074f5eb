package cudaops

import (
	"fmt"
	"strings"

	"github.com/expertrt/expertrt-go/ops"
)

// Device options: fixed when a device is opened (Open, OpenDefault) or a handle is derived from it
// (Device.With), so no setter changes a device that other goroutines use. This file has no build tag.

// PlanMode selects the plan kernels (Options.PlanMode).
type PlanMode int

const (
	// PlanAuto (the default) uses the one-launch plan where it fits, else the three-launch plan.
	PlanAuto PlanMode = iota
	// PlanMultiLaunch always uses the three-launch plan (for tests and comparisons).
	PlanMultiLaunch
)

func (m PlanMode) String() string {
	switch m {
	case PlanAuto:
		return "auto"
	case PlanMultiLaunch:
		return "multi-launch"
	}
	return fmt.Sprintf("PlanMode(%d)", int(m))
}

// Options are the settings of a device handle. The zero value is the default of every field.
type Options struct {
	// PlanMode selects the plan kernels; both modes build the same plan.
	PlanMode PlanMode
	// PlanBlocks is the block count the one-pass plan prefers (0: the default, 64): its tiles grow
	// until the grid has at most that many blocks. For tuning; the plan is the same.
	PlanBlocks int
	// StreamingDispatchStores makes Dispatch write its output with streaming (evict-first) stores
	// instead of plain ones (for comparisons: plain stores let the consumer of the packed rows find
	// part of them in L2).
	StreamingDispatchStores bool
	// SyncChecks makes the backend's kernels that validate data (the route kernels, Plan, the capacity
	// plan and the router losses) synchronise and return device faults (out-of-range expert indices,
	// non-finite logits) from the call itself. Off by default: the plan is then built without any host
	// synchronisation and faults surface at the next synchronising call.
	SyncChecks bool
	// TF32 selects the TF32 tensor-core kernels (mma.sync m16n8k8, inputs rounded to 10 mantissa bits,
	// float32 accumulation) for float32 products: MatMul, GroupedMatMul and GroupedMatMulGradW. Off by
	// default: results are then full float32 (FFMA). With TF32 each product's error grows to about
	// 2^-11 relative to the sum of the magnitudes of its terms (docs/gemm.md). float64 products are not
	// affected.
	TF32 bool
	// GemmVariant makes every product of the variant's class (float32 SIMT, float64, or TF32) run on
	// the named tile configuration of gemm.variants (Device.GemmVariants) instead of the planner's
	// choice; "" is the planner's choice. For benchmarks and tests: every configuration computes the
	// same products (bitwise equal within a class only when the reduction split is equal too).
	GemmVariant string
	// GemmSplits, when positive, splits the reduction of every grouped-rows product (GroupedMatMul;
	// float32, float64 and TF32; not bfloat16, not the SwiGLU products) in this many parts (at most
	// one per k-tile, as the workspace bound allows) instead of the planner's choice; 0 is the
	// planner's choice. For benchmarks and tests: results are bitwise equal only between equal splits.
	GemmSplits int
	// GemmStreamK schedules every grouped-rows product (float32 SIMT, float64 and TF32 mma.sync; not
	// bfloat16, wgmma or SwiGLU; not with GemmSplits) stream-K: the device's resident CTAs run the tiles
	// in data-parallel waves, then share the last partial wave's k-iterations equally; a second launch
	// sums the tiles two or more CTAs share. Without it the planner uses stream-K only for float32 tiles
	// of one CTA per multiprocessor whose last wave would leave much of the device idle (dY·Wᵀ at the
	// Mixtral shape, T=4096: 8.5 % faster on the H200; elsewhere it measured no gain). For benchmarks
	// and tests. Results are deterministic on a device (the ranges follow its multiprocessor count) and
	// bitwise equal to the unscheduled product only on tiles one CTA covers.
	GemmStreamK bool
}

// Option sets one field of Options.
type Option func(*Options)

// WithPlanMode sets Options.PlanMode.
func WithPlanMode(m PlanMode) Option { return func(o *Options) { o.PlanMode = m } }

// WithPlanBlocks sets Options.PlanBlocks.
func WithPlanBlocks(n int) Option { return func(o *Options) { o.PlanBlocks = n } }

// WithStreamingDispatchStores sets Options.StreamingDispatchStores.
func WithStreamingDispatchStores(on bool) Option {
	return func(o *Options) { o.StreamingDispatchStores = on }
}

// WithSyncChecks sets Options.SyncChecks.
func WithSyncChecks(on bool) Option { return func(o *Options) { o.SyncChecks = on } }

// WithTF32 sets Options.TF32.
func WithTF32(on bool) Option { return func(o *Options) { o.TF32 = on } }

// WithGemmVariant sets Options.GemmVariant ("" restores the planner's choice).
func WithGemmVariant(name string) Option { return func(o *Options) { o.GemmVariant = name } }

// WithGemmSplits sets Options.GemmSplits (0 restores the planner's choice).
func WithGemmSplits(n int) Option { return func(o *Options) { o.GemmSplits = n } }

// WithGemmStreamK sets Options.GemmStreamK.
func WithGemmStreamK(on bool) Option { return func(o *Options) { o.GemmStreamK = on } }

// WithOptions replaces every field with those of opts.
func WithOptions(opts Options) Option { return func(o *Options) { *o = opts } }

// apply returns base with opts applied in order, validated (ops.ErrConfig). gemmVariants lists the
// valid GemmVariant names.
func (base Options) apply(gemmVariants []string, opts ...Option) (Options, error) {
	o := base
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	if o.PlanMode != PlanAuto && o.PlanMode != PlanMultiLaunch {
		return o, fmt.Errorf("cudaops: options: unknown plan mode %d: %w", int(o.PlanMode), ops.ErrConfig)
	}
	if o.PlanBlocks < 0 {
		return o, fmt.Errorf("cudaops: options: PlanBlocks %d must be >= 0: %w", o.PlanBlocks, ops.ErrConfig)
	}
	if o.GemmSplits < 0 || o.GemmSplits > 64 {
		return o, fmt.Errorf("cudaops: options: GemmSplits %d must be in [0, 64]: %w", o.GemmSplits, ops.ErrConfig)
	}
	if o.GemmVariant != "" {
		found := false
		for _, v := range gemmVariants {
			found = found || v == o.GemmVariant
		}
		if !found {
			return o, fmt.Errorf("cudaops: options: no GEMM variant %q (gemm.variants: %s): %w", o.GemmVariant, strings.Join(gemmVariants, ", "), ops.ErrConfig)
		}
	}
	return o, nil
}

// String lists the fields that differ from the defaults ("defaults" when none does).
func (o Options) String() string {
	var parts []string
	if o.PlanMode != PlanAuto {
		parts = append(parts, "plan "+o.PlanMode.String())
	}
	if o.PlanBlocks != 0 {
		parts = append(parts, fmt.Sprintf("plan blocks %d", o.PlanBlocks))
	}
	if o.StreamingDispatchStores {
		parts = append(parts, "streaming dispatch stores")
	}
	if o.SyncChecks {
		parts = append(parts, "sync checks")
	}
	if o.TF32 {
		parts = append(parts, "tf32")
	}
	if o.GemmVariant != "" {
		parts = append(parts, "gemm "+o.GemmVariant)
	}
	if o.GemmSplits != 0 {
		parts = append(parts, fmt.Sprintf("gemm splits %d", o.GemmSplits))
	}
	if o.GemmStreamK {
		parts = append(parts, "gemm stream-K")
	}
	if len(parts) == 0 {
		return "defaults"
	}
	return strings.Join(parts, ", ")
}
