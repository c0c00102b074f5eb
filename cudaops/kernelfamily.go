package cudaops

import "strings"

// Kernel families group the launches of a kernel-timing session (Device.StartKernelTiming). This file
// has no build tag, so the naming is tested on any machine.

// Families of the work that is not a kernel of the embedded modules.
const (
	FamilyMatMul        = "matmul"                // ops' dense MatMul (GEMM modules, split-K reduction included)
	FamilyGroupedMatMul = "grouped matmul"        // GroupedMatMul (forward and the transposed product of its backward)
	FamilyGroupedGradW  = "grouped matmul grad W" // GroupedMatMulGradW
	FamilyGroupedSwiGLU = "grouped swiglu"        // GroupedSwiGLU (gate and up products with the SwiGLU epilogue)
	FamilyMemset        = "memset"                // cuMemsetD8/16/32 (zero fills of new tensors)
	FamilyCopyDtoD      = "memcpy DtoD"           // device-to-device copies (the tensor engine's Memcpy, clones)
	FamilyCopyHtoD      = "memcpy HtoD"           // copies from host memory
	FamilyCopyDtoH      = "memcpy DtoH"           // copies to host memory
)

// typeSuffixes are the name parts of the embedded kernels that say which instantiation runs (element
// type, vector width), not what it computes.
var typeSuffixes = map[string]bool{"f32": true, "f64": true, "tf32": true, "bf16": true, "u8": true, "u16": true,
	"u32": true, "u64": true, "i32": true, "v2": true, "v4": true, "v8": true}

// kernelFamily returns the family of an embedded kernel: its name without trailing type and width
// parts ("combine_bwd_f32_v4" -> "combine_bwd", "ew_add_f64" -> "ew_add", "plan_scan" -> "plan_scan").
func kernelFamily(name string) string {
	parts := strings.Split(name, "_")
	n := len(parts)
	for n > 1 && typeSuffixes[parts[n-1]] {
		n--
	}
	return strings.Join(parts[:n], "_")
}

// IsMatMulFamily reports whether a family is one of the matrix products (the GEMM kernels).
func IsMatMulFamily(family string) bool {
	return family == FamilyMatMul || family == FamilyGroupedMatMul || family == FamilyGroupedGradW || family == FamilyGroupedSwiGLU
}
