package cudaops

import (
	"fmt"
	"math"
	"strings"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Device faults: kernels OR fault codes into a device word that the host reads at the next
// synchronisation. This file has no build tag (no driver calls), so its logic is tested on any machine.

// Fault codes, mirroring FAULT_* in common.cuh.
const (
	faultExpertRange = 1
	faultGridBarrier = 2
	faultNonFinite   = 4
	faultLabelRange  = 8
	faultGradNaN     = 16
	faultPlanOffsets = 32 // GEMM_FAULT_OFFSETS in gemm.cuh
)

// faultError is a device fault: its message lists every fault code raised, and it unwraps to the ops
// sentinel of each (errors.Is(err, ops.ErrExpertIndex), ops.ErrNaN), the same sentinels the CPU
// backend returns for the same inputs.
type faultError struct {
	msg  string
	errs []error
}

func (e *faultError) Error() string   { return e.msg }
func (e *faultError) Unwrap() []error { return e.errs }

func newFaultError(f uint32) error {
	var msgs []string
	var errs []error
	if f&faultExpertRange != 0 {
		msgs = append(msgs, "an expert index outside [0, E) reached a kernel (Plan, RouteWeights or RouteWeightsGrad); the indices were clamped and the results are invalid")
		errs = append(errs, ops.ErrExpertIndex)
	}
	if f&faultNonFinite != 0 {
		msgs = append(msgs, "a router logits row with a NaN or +Inf, or all -Inf, reached a kernel (route or a router loss); its softmax is undefined and the results are invalid")
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
	if f&faultGridBarrier != 0 {
		msgs = append(msgs, "a grid barrier of the one-pass plan timed out (its blocks were not all resident); the plan is invalid (SetPlanMode(PlanMultiLaunch) avoids it)")
	}
	if rest := f &^ (faultExpertRange | faultNonFinite | faultGridBarrier | faultLabelRange | faultGradNaN | faultPlanOffsets); rest != 0 {
		msgs = append(msgs, fmt.Sprintf("unknown fault code %#x", rest))
	}
	return &faultError{msg: "cudaops: device fault: " + strings.Join(msgs, "; "), errs: errs}
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
