package cudaops

import (
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// TestFaultErrorSentinels: a device fault unwraps to the same ops sentinel the CPU backend returns for
// the same condition, and names every code that was raised.
func TestFaultErrorSentinels(t *testing.T) {
	cases := []struct {
		code      uint32
		is, isNot []error
		text      []string
	}{
		{faultExpertRange, []error{ops.ErrExpertIndex}, []error{ops.ErrNaN}, []string{"expert index outside [0, E)"}},
		{faultNonFinite, []error{ops.ErrNaN}, []error{ops.ErrExpertIndex}, []string{"NaN or +Inf, or all -Inf"}},
		{faultExpertRange | faultNonFinite, []error{ops.ErrExpertIndex, ops.ErrNaN}, nil, []string{"expert index", "NaN"}},
		{faultGridBarrier, nil, []error{ops.ErrNaN, ops.ErrExpertIndex}, []string{"grid barrier"}},
		{faultBiasNaN, []error{ops.ErrNaN}, []error{ops.ErrExpertIndex}, []string{"selection bias"}},
		{faultWeightNaN, []error{ops.ErrNaN}, []error{ops.ErrExpertIndex}, []string{"routing weight"}},
		{faultPlanOffsets, []error{ops.ErrShape}, []error{ops.ErrNaN}, []string{"plan offsets"}},
		{faultGemmMode, nil, []error{ops.ErrNaN, ops.ErrShape}, []string{"mode it does not run"}},
		{512, nil, []error{ops.ErrNaN}, []string{"unknown fault code 0x200"}},
	}
	for _, c := range cases {
		err := newFaultError([]KernelFault{{Kernel: "k", Code: c.code}})
		for _, s := range c.is {
			if !errors.Is(err, s) {
				t.Errorf("fault %#x: errors.Is(%v) = false, want true", c.code, s)
			}
		}
		for _, s := range c.isNot {
			if errors.Is(err, s) {
				t.Errorf("fault %#x: errors.Is(%v) = true, want false", c.code, s)
			}
		}
		for _, s := range c.text {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("fault %#x: message %q does not mention %q", c.code, err, s)
			}
		}
	}
}

// TestFaultNamesKernel: every kernel with a fault parameter has its own fault word, distinct from the
// GEMM word and the barrier state; a fault read back from the block names the kernels that raised it,
// with every sentinel of every code.
func TestFaultNamesKernel(t *testing.T) {
	sigs, err := parseKernelSigs(kernelSigs)
	if err != nil {
		t.Fatal(err)
	}
	l := newFaultLayout(sigs)
	seen := map[int64]string{0: gemmKernels}
	withFault := 0
	for _, n := range sigs.names() {
		if sigs[n].fault < 0 {
			if l.wordOffset(n) != 0 {
				t.Errorf("%s has no fault parameter but a fault word at %d", n, l.wordOffset(n))
			}
			continue
		}
		withFault++
		off := l.wordOffset(n)
		if prev, dup := seen[off]; dup {
			t.Errorf("%s and %s share the fault word at %d", n, prev, off)
		}
		seen[off] = n
		if off <= 0 || off+4 > l.barrierOffset() || off%4 != 0 {
			t.Errorf("%s: fault word at %d, barrier at %d", n, off, l.barrierOffset())
		}
	}
	if withFault < 20 || l.words() != withFault+1 {
		t.Errorf("%d kernels with a fault parameter, %d words", withFault, l.words())
	}
	if l.barrierOffset()%128 != 0 || l.bytes() != l.barrierOffset()+128 {
		t.Errorf("barrier at %d, block of %d bytes", l.barrierOffset(), l.bytes())
	}

	ws := make([]uint32, l.words())
	if err := l.decode(ws); err != nil {
		t.Fatalf("clear block: %v", err)
	}
	ws[l.wordOffset("route_weights_f32")/4] = faultExpertRange
	ws[l.wordOffset("plan_onepass")/4] = faultExpertRange | faultGridBarrier
	ws[l.wordOffset("zloss_rows_f64")/4] = faultNonFinite
	ws[0] = faultPlanOffsets
	err = l.decode(ws)
	var fe *FaultError
	if !errors.As(err, &fe) {
		t.Fatalf("decode: %v", err)
	}
	for _, s := range []error{ops.ErrExpertIndex, ops.ErrNaN, ops.ErrShape} {
		if !errors.Is(err, s) {
			t.Errorf("errors.Is(%v) = false", s)
		}
	}
	if errors.Is(err, ops.ErrLabel) {
		t.Errorf("errors.Is(ErrLabel) = true")
	}
	for _, w := range []string{"in route_weights_f32: an expert index", "in plan_onepass: an expert index", "grid barrier",
		"in zloss_rows_f64: a router logits row", "in " + gemmKernels + ": a grouped matmul got plan offsets"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("message does not say %q:\n%v", w, err)
		}
	}
	got := fe.Faults()
	if len(got) != 4 || got[0] != (KernelFault{gemmKernels, faultPlanOffsets}) {
		t.Errorf("faults %v", got)
	}
}

// TestFaultCodesMatchKernels: the Go fault codes mirror the FAULT_* definitions the kernels use.
func TestFaultCodesMatchKernels(t *testing.T) {
	src, err := os.ReadFile("common.cuh")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{"FAULT_EXPERT_RANGE": faultExpertRange, "FAULT_GRID_BARRIER": faultGridBarrier, "FAULT_NONFINITE": faultNonFinite, "FAULT_LABEL_RANGE": faultLabelRange, "FAULT_GRAD_NONFINITE": faultGradNaN, "FAULT_BIAS_NONFINITE": faultBiasNaN, "FAULT_WEIGHT_NAN": faultWeightNaN}
	found := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#define (FAULT_[A-Z_]+) (\d+)u`).FindAllStringSubmatch(string(src), -1) {
		v, _ := strconv.ParseUint(m[2], 10, 32)
		w, ok := want[m[1]]
		if !ok {
			t.Errorf("common.cuh defines %s = %d, which cudaops does not map to an error", m[1], v)
			continue
		}
		found[m[1]] = true
		if uint32(v) != w {
			t.Errorf("%s = %d in common.cuh, %d in faults.go", m[1], v, w)
		}
	}
	for name := range want {
		if !found[name] {
			t.Errorf("%s is not defined in common.cuh", name)
		}
	}
	// Codes of one kernel family, defined in its own file (gemm.cuh does not include common.cuh).
	for file, codes := range map[string]map[string]uint32{
		"gemm.cuh": {"GEMM_FAULT_OFFSETS": faultPlanOffsets, "GEMM_FAULT_MODE": faultGemmMode},
	} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for name, w := range codes {
			m := regexp.MustCompile(`(?m)^#define ` + name + ` (\d+)u`).FindStringSubmatch(string(src))
			if m == nil {
				t.Errorf("%s is not defined in %s", name, file)
				continue
			}
			if v, _ := strconv.ParseUint(m[1], 10, 32); uint32(v) != w {
				t.Errorf("%s = %d in %s, %d in faults.go", name, v, file, w)
			}
		}
	}
}

// TestCheckBytes: shapes whose byte count overflows are refused before any allocation.
func TestCheckBytes(t *testing.T) {
	for _, c := range []struct {
		shape []int
		ok    bool
	}{
		{[]int{4096, 4096}, true},
		{[]int{0, 1 << 62}, true},
		{[]int{1 << 30, 1 << 30}, true},     // 2^62 bytes
		{[]int{1 << 30, 1 << 30, 2}, false}, // 2^63 bytes
		{[]int{1 << 31, 1 << 31}, false},
		{[]int{1 << 62, 2}, false},
		{[]int{3, -1}, false},
	} {
		err := checkBytes(tensor.Float32, c.shape)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ops.ErrShape)) {
			t.Errorf("checkBytes(float32, %v) = %v", c.shape, err)
		}
	}
}
