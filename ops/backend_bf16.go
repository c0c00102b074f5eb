package ops

import "gorgonia.org/tensor"

// MixedPrecisionBackend is the bfloat16 part of the kernel contract (see BFloat16): the Cast kernel, and
// the dtype rules under which the kernels of Backend and TrainingBackend take bfloat16 operands. In
// every rule arithmetic is float32 or wider and each result is rounded once to its dtype (round to
// nearest even); operands of other combinations are errors (ErrDtype).
//
//   - Dispatch(x, w, plan, out): x float32 or bfloat16 with out bfloat16 (float32 rows are packed
//     straight into bfloat16), w nil or float32. Unweighted rows of bfloat16 x are copied bit for bit;
//     weighted rows (the combine backward) are w·x rounded once.
//   - Combine(ye, w, plan, out): ye bfloat16, out bfloat16 or float32, w nil or float32; each token's K
//     terms are summed in increasing j in float32 or wider, then rounded once.
//   - CombineGradWeights(dy, ye, plan, dw): ye bfloat16, dy bfloat16 or float32, dw float32; dot
//     products accumulated in float32 or wider. (CombineBackwarder is not used for bfloat16: its two
//     outputs have different dtypes.)
//   - GroupedMatMul(x, w, plan, transposeW, out) and MatMul(a, b, transA, transB, out): both operands
//     bfloat16, float32 accumulation (the GPU: bf16 tensor cores, mma.sync m16n8k16), out bfloat16 or
//     float32 (the float32 accumulator unrounded).
//   - GroupedMatMulGradW(x, dy, plan, dW): x and dy bfloat16, float32 accumulation, dW float32 (the
//     gradient of a float32 master weight cast to bfloat16: never rounded to bfloat16) or bfloat16.
//   - SwiGLU(gate, up, out) and SwiGLUGrad(gate, up, dout, dgate, dup): all bfloat16.
//   - Routing (RouteIndices, RouteWeights, RouteWeightsGrad), the losses, GradNormScale and the
//     optimizer steps take no bfloat16 (router logits, routing weights, losses and master weights are
//     float32 in mixed precision).
//
// The tensor engine of a device backend (TensorEngineProvider) adds bfloat16 tensors (tensor's Adder),
// each sum rounded once, as HostEngine does on the host.
type MixedPrecisionBackend interface {
	// Cast writes dst = src converted to dst's dtype, elementwise; src and dst are float32, float64 or
	// bfloat16 tensors of this backend with equal element counts. Widening is exact; narrowing rounds
	// once to nearest even (float64 to bfloat16 directly), NaN stays NaN, overflow gives ±Inf. Equal
	// dtypes copy.
	Cast(src, dst *tensor.Dense) error
}
