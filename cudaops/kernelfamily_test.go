package cudaops

import "testing"

func TestKernelFamily(t *testing.T) {
	for name, want := range map[string]string{
		"combine_bwd_f32_v4":     "combine_bwd",
		"dispatch_f64_v2":        "dispatch",
		"ew_add_f32":             "ew_add",
		"route_weights_grad_f64": "route_weights_grad",
		"plan_scan":              "plan_scan",
		"fill_u64":               "fill",
		"copy2d_u8":              "copy2d",
		"spin_ns":                "spin_ns",
		"f32":                    "f32",
		"norm_scale_finish":      "norm_scale_finish",
		// bf16.cu: the float side of a mixed kernel is part of its instantiation
		"dispatch_bf16_from_f32_v8": "dispatch_bf16_from",
		"combine_bf16_to_bf16":      "combine_bf16_to",
		"cast_f64_bf16":             "cast",
		"ew_add_bf16":               "ew_add",
		"swiglu_grad_bf16":          "swiglu_grad",
	} {
		if got := kernelFamily(name); got != want {
			t.Errorf("kernelFamily(%q) = %q, want %q", name, got, want)
		}
	}
	for _, f := range []string{FamilyMatMul, FamilyGroupedMatMul, FamilyGroupedGradW} {
		if !IsMatMulFamily(f) {
			t.Errorf("%q is not a matmul family", f)
		}
	}
	for _, f := range []string{"swiglu", FamilyCopyDtoD, "dispatch", ""} {
		if IsMatMulFamily(f) {
			t.Errorf("%q counted as a matmul family", f)
		}
	}
}
