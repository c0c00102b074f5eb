package moe

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The halves of Forward as building blocks for layers that place the router and the experts
// differently (expert parallelism, package moe/ep): the router projection, routing and dispatch of the
// tokens, and the SwiGLU experts over expert-major rows with the grouped product supplied by the caller.

// GroupedMatMulFunc multiplies expert-major rows x [N,In] by their experts' matrices w [E,In,Out] over
// segments the function knows (ops.GroupedMatMul over a routing plan, or a rank's local plan).
type GroupedMatMulFunc func(x, w *G.Node) (*G.Node, error)

// RouterLogits returns x · routerᵀ: x [T,H], router [E,H] (HF's gate.weight layout) -> logits [T,E],
// through ops.MatMul (runs on every backend). With bfloat16 involved (mixed precision) the logits are
// float32: a float32 router multiplies x widened to float32 (exactly); a bfloat16 router multiplies x
// as bfloat16 on the bfloat16 GEMM with its float32 accumulator as the result (ops.MatMulTo).
func RouterLogits(x, router *G.Node) (*G.Node, error) {
	var logits *G.Node
	var err error
	switch {
	case router.Dtype() == ops.BFloat16:
		logits, err = ops.MatMulTo(x, router, false, true, tensor.Float32)
	case x.Dtype() == ops.BFloat16:
		if x, err = ops.Cast(x, router.Dtype()); err == nil {
			logits, err = ops.MatMul(x, router, false, true)
		}
	default:
		logits, err = ops.MatMul(x, router, false, true)
	}
	if err != nil {
		return nil, fmt.Errorf("moe: router logits: %w", err)
	}
	return logits, nil
}

// RouteTokens is the token side of a layer: logits = RouterLogits(x, router) [T,E], the routing of
// ops.RouteBiased(logits, bias, cfg) (bias [E] is the optional selection bias of Sigmoid scoring; nil
// routes as ops.Route), and x's rows packed expert-major by ops.Dispatch [T*K,H] (under a capacity, the
// rows of dropped slots are zero).
func RouteTokens(x, router, bias *G.Node, cfg ops.RouteConfig) (logits *G.Node, r *ops.Routing, packed *G.Node, err error) {
	return RouteTokensTo(x, router, bias, cfg, x.Dtype())
}

// RouteTokensTo is RouteTokens with the packed rows in dtype rows (ops.DispatchTo: x's dtype, or
// bfloat16 for float32 x, the mixed-precision layer's expert rows).
func RouteTokensTo(x, router, bias *G.Node, cfg ops.RouteConfig, rows tensor.Dtype) (logits *G.Node, r *ops.Routing, packed *G.Node, err error) {
	if logits, err = RouterLogits(x, router); err != nil {
		return nil, nil, nil, err
	}
	if r, err = ops.RouteBiased(logits, bias, cfg); err != nil {
		return nil, nil, nil, err
	}
	if packed, err = ops.DispatchTo(x, r, rows); err != nil {
		return nil, nil, nil, err
	}
	return logits, r, packed, nil
}

// ExpertFFN applies SwiGLU experts to expert-major rows x [N,H]:
//
//	silu(mm(x, w1)) * mm(x, w3)  [N,F] (ops.SwiGLU, fused),  then  mm(·, w2)  [N,H]
//
// with w1, w3 [E,H,F] and w2 [E,F,H] (input-major) and mm the grouped product over the caller's
// segments. Forward uses it with mm = ops.GroupedMatMul over the layer's routing.
func ExpertFFN(x, w1, w3, w2 *G.Node, mm GroupedMatMulFunc) (*G.Node, error) {
	gate, err := mm(x, w1)
	if err != nil {
		return nil, err
	}
	up, err := mm(x, w3)
	if err != nil {
		return nil, err
	}
	hidden, err := ops.SwiGLU(gate, up)
	if err != nil {
		return nil, fmt.Errorf("moe: swiglu: %w", err)
	}
	return mm(hidden, w2)
}

// ExpertFFNFused is ExpertFFN with the gate and up products and their SwiGLU in one ops.GroupedSwiGLU
// over the routing r (Config.FusedSwiGLU): the same values and gradients, one GEMM launch instead of
// two and an elementwise pass on backends with the fused kernel. mm multiplies by w2.
func ExpertFFNFused(x, w1, w3, w2 *G.Node, r *ops.Routing, mm GroupedMatMulFunc) (*G.Node, error) {
	hidden, err := ops.GroupedSwiGLU(x, w1, w3, r)
	if err != nil {
		return nil, fmt.Errorf("moe: grouped swiglu: %w", err)
	}
	return mm(hidden, w2)
}
