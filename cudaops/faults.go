package cudaops

import (
	"fmt"
	"math"
	"strings"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Device faults: kernels OR fault codes into their own word of the device's fault block, which the host
// reads at the next synchronisation. This file has no build tag (no driver calls), so its logic is
// tested on any machine.

// Fault codes, mirroring FAULT_* in common.cuh.
const (
	faultExpertRange = 1
	faultGridBarrier = 2
	faultNonFinite   = 4
	faultLabelRange  = 8
	faultGradNaN     = 16
	faultPlanOffsets = 32 // GEMM_FAULT_OFFSETS in gemm.cuh
	faultBiasNaN     = 64
	faultWeightNaN   = 128
	faultGemmMode    = 256 // GEMM_FAULT_MODE in gemm.cuh
)

// FaultError is a device fault: the kernels that raised it (one per kernel; every code it raised) in
// its message, unwrapping to the ops sentinel of each code (errors.Is(err, ops.ErrExpertIndex),
// ops.ErrNaN, ...), the same sentinels the CPU backend returns for the same inputs.
type FaultError struct {
	faults []KernelFault
	msg    string
	errs   []error
}

// KernelFault is the fault word one kernel raised: its name and the FAULT_* bits it set.
type KernelFault struct {
	Kernel string // the kernel's name ("route_weights_f32"); gemmKernels for the GEMM kernels
	Code   uint32
}

// gemmKernels names the fault word of the GEMM kernels (gemm.cu), which take the fault block's address.
const gemmKernels = "the GEMM kernels (grouped matmul)"

func (e *FaultError) Error() string   { return e.msg }
func (e *FaultError) Unwrap() []error { return e.errs }

// Faults returns the kernels that raised the fault with their codes, in slot order.
func (e *FaultError) Faults() []KernelFault { return append([]KernelFault(nil), e.faults...) }

// newFaultError describes the faults of one or more kernels (codes != 0).
func newFaultError(faults []KernelFault) *FaultError {
	e := &FaultError{faults: faults}
	var parts []string
	for _, f := range faults {
		msgs, errs := faultMessages(f.Code)
		parts = append(parts, "in "+f.Kernel+": "+strings.Join(msgs, "; "))
		e.errs = append(e.errs, errs...)
	}
	e.msg = "cudaops: device fault " + strings.Join(parts, "; ")
	return e
}

// faultMessages explains every bit of a fault word and returns the sentinel of each.
func faultMessages(f uint32) ([]string, []error) {
	var msgs []string
	var errs []error
	if f&faultExpertRange != 0 {
		msgs = append(msgs, "an expert index outside [0, E) reached a kernel (Plan, RouteWeights or RouteWeightsGrad); the indices were clamped and the results are invalid")
		errs = append(errs, ops.ErrExpertIndex)
	}
	if f&faultNonFinite != 0 {
		msgs = append(msgs, "a router logits row with a NaN or +Inf, or all -Inf, reached a kernel (route, routing stats or a router loss); its softmax (sigmoid scoring: a NaN, its sigmoid) is undefined and the results are invalid")
		errs = append(errs, ops.ErrNaN)
	}
	if f&faultLabelRange != 0 {
		msgs = append(msgs, "a class label outside [0, C) and not -1 reached SoftmaxCrossEntropy or its gradient; the row was ignored and the loss is invalid")
		errs = append(errs, ops.ErrLabel)
	}
	if f&faultGradNaN != 0 {
		msgs = append(msgs, "a NaN or infinite gradient reached GradNormScale; the clipping factor is NaN and the optimizer step was skipped")
		errs = append(errs, ops.ErrNaN)
	}
	if f&faultPlanOffsets != 0 {
		msgs = append(msgs, "a grouped matmul got plan offsets that are not segments of its rows (offsets[0] = 0, non-decreasing, offsets[E] <= rows); its output is invalid")
		errs = append(errs, ops.ErrShape)
	}
	if f&faultBiasNaN != 0 {
		msgs = append(msgs, "a selection bias with a NaN or infinite entry reached the sigmoid router; the indices are invalid")
		errs = append(errs, ops.ErrNaN)
	}
	if f&faultWeightNaN != 0 {
		msgs = append(msgs, "a NaN routing weight reached a capacity plan with the probs drop policy; the plan is invalid")
		errs = append(errs, ops.ErrNaN)
	}
	if f&faultGemmMode != 0 {
		msgs = append(msgs, "a GEMM kernel was launched in a mode it does not run (stream-K on a kernel without it, or the reverse: a planner bug); its output is invalid")
	}
	if f&faultGridBarrier != 0 {
		msgs = append(msgs, "a grid barrier of the one-pass plan timed out (its blocks were not all resident); the plan is invalid (the three-launch plan, PlanMultiLaunch, avoids it)")
	}
	if rest := f &^ (faultExpertRange | faultNonFinite | faultGridBarrier | faultLabelRange | faultGradNaN | faultPlanOffsets | faultBiasNaN | faultWeightNaN | faultGemmMode); rest != 0 {
		msgs = append(msgs, fmt.Sprintf("unknown fault code %#x", rest))
	}
	return msgs, errs
}

// faultLayout is the device's fault block: one uint32 fault word per kernel that takes a fault
// parameter (the kernel's slot, which the launch passes as its fault pointer, so a raised code names
// its kernel), word 0 for the GEMM kernels, then the grid-barrier state of the one-pass plan (two
// uint32: count and generation) on its own 128-byte line.
type faultLayout struct {
	kernels []string // slot -> kernel; slot 0 is gemmKernels
	slot    map[string]int
}

func newFaultLayout(sigs sigTable) faultLayout {
	l := faultLayout{kernels: []string{gemmKernels}, slot: map[string]int{}}
	for _, n := range sigs.names() {
		if sigs[n].fault >= 0 {
			l.slot[n] = len(l.kernels)
			l.kernels = append(l.kernels, n)
		}
	}
	return l
}

// words is the number of fault words.
func (l faultLayout) words() int { return len(l.kernels) }

// wordOffset is the byte offset of a kernel's fault word (0, the GEMM word, for kernels without a slot).
func (l faultLayout) wordOffset(kernel string) int64 { return int64(l.slot[kernel]) * 4 }

// barrierOffset is the byte offset of the grid-barrier state.
func (l faultLayout) barrierOffset() int64 { return (int64(l.words())*4 + 127) / 128 * 128 }

// bytes is the size of the block.
func (l faultLayout) bytes() int64 { return l.barrierOffset() + 128 }

// decode returns the fault of the words read from the block (nil when none is set).
func (l faultLayout) decode(ws []uint32) error {
	var faults []KernelFault
	for i, w := range ws {
		if w == 0 {
			continue
		}
		name := fmt.Sprintf("fault word %d", i)
		if i < len(l.kernels) {
			name = l.kernels[i]
		}
		faults = append(faults, KernelFault{Kernel: name, Code: w})
	}
	if len(faults) == 0 {
		return nil
	}
	return newFaultError(faults)
}

// checkBytes refuses shapes with a negative dimension or whose byte count overflows an int64
// (ops.ErrShape), before any allocation.
func checkBytes(dt tensor.Dtype, shape []int) error {
	n := int64(max(int(dt.Size()), 1))
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("cudaops: negative dimension in shape %v: %w", shape, ops.ErrShape)
		}
		if d != 0 && n > math.MaxInt64/int64(d) {
			return fmt.Errorf("cudaops: shape %v of %v overflows a byte count: %w", shape, dt, ops.ErrShape)
		}
		n *= int64(d)
	}
	return nil
}
