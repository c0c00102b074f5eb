// Package moe builds Mixture-of-Experts layers from the routing ops of package ops inside a Gorgonia
// expression graph.
//
// A Layer holds the router weight Router [E,H] (HF's gate.weight layout: logits = x · Router^T) and
// SwiGLU expert weights W1, W3 [E,H,F] and W2 [E,F,H], stored input-major (y = x · W, the transpose of
// HF's per-expert [out,in] matrices). Forward on x [T,H] computes
//
//	logits = x · Router^T                          [T,E]
//	routing = ops.Route(logits, top-k, scoring)    indices, weights [T,K], plan
//	p = ops.Dispatch(x)                            [T*K,H]  expert-major
//	h = silu(p · W1[e]) * (p · W3[e])              [T*K,F]  per expert segment (ops.GroupedMatMul)
//	o = h · W2[e]                                  [T*K,H]
//	y = ops.Combine(o, weights)                    [T,H]
//
// plus the load-balancing aux loss and router z-loss as scalar nodes when their coefficients are > 0.
// Every node is differentiable back to x, Router, W1, W2 and W3 with G.Grad; train with a TapeMachine
// and any Gorgonia solver (or on a LispMachine made by ops.NewLispMachine, without G.Grad). Dtypes:
// float32 or float64 (Config.Dtype; unset means float32).
//
// x may also be [B,S,H]: the layer routes the B*S tokens and Y has x's shape. ForwardMasked takes a token
// mask that leaves padding out of the load-balancing loss. Output.Cost(task) adds the router losses to a
// task loss such as MSE(Y, target); Output.Read keeps the forward values of Y and the routing plan for
// reading after a run with a backward pass (which reuses forward buffers for gradients).
package moe
