// Package moe builds Mixture-of-Experts layers from the routing ops of package ops inside a Gorgonia
// expression graph.
//
// A Layer holds the router weight Router [E,H] (HF's gate.weight layout: logits = x · Router^T) and
// SwiGLU expert weights W1, W3 [E,H,F] and W2 [E,F,H], stored input-major (y = x · W, the transpose of
// HF's per-expert [out,in] matrices). Forward on x [T,H] computes
//
//	logits = ops.MatMul(x, Router, ᵀ)              [T,E]
//	routing = ops.Route(logits, top-k, scoring)    indices, weights [T,K], plan
//	p = ops.Dispatch(x)                            [T*K,H]  expert-major
//	h = ops.SwiGLU(p · W1[e], p · W3[e])           [T*K,F]  per expert segment (ops.GroupedMatMul)
//	o = h · W2[e]                                  [T*K,H]
//	y = ops.Combine(o, weights)                    [T,H]
//
// plus the load-balancing aux loss and router z-loss as scalar nodes when their coefficients are > 0.
// Every node is differentiable back to x, Router, W1, W2 and W3 with G.Grad; train with a TapeMachine
// (or on a LispMachine made by ops.NewLispMachine, without G.Grad, CPU only). Dtypes: float32 or float64
// (Config.Dtype; unset means float32).
//
// x may also be [B,S,H]: the layer routes the B*S tokens and Y has x's shape. ForwardMasked takes a token
// mask that leaves padding out of the load-balancing loss. Output.Cost(task) adds the router losses to a
// task loss such as ops.MSELoss(Y, target); Output.Read keeps the forward values of Y and the routing plan
// for reading after a run with a backward pass (which reuses forward buffers for gradients).
//
// The layer is made of this project's ops only, so the same graph runs on every backend: on the CPU with
// any Gorgonia machine and solver, on a device when Config.Backend places the parameters there. Train on
// any backend with ops.Trainer and ops.Adam (or ops.SGD), a loss such as ops.MSELoss or
// ops.SoftmaxCrossEntropy, and the layer's router losses:
//
//	cfg.Backend = dev                      // e.g. ops.LookupBackend("cuda")
//	layer, _ := moe.NewLayer(g, cfg)       // weights made on the host, copied to dev
//	out, _ := layer.Forward(x)
//	mse, _ := ops.MSELoss(out.Y, target)
//	cost, _ := out.Cost(mse)               // task loss + router losses (ops.AddLosses)
//	adam, _ := ops.NewAdam(ops.DefaultAdam(1e-3))
//	tr, _ := ops.NewTrainer(cost, layer.Params(), adam, dev)
//	loss, err := tr.StepLoss(ops.Feeds{x: xb, target: yb}) // host batches, copied to dev
package moe
