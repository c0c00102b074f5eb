package main

import "github.com/expertrt/expertrt-go/ops"

// Minimal byte counts (../shared/notes/moe-routing.md): every input element read once and every
// output element written once; T*K index/plan reads of dispatch and combine are not counted. The
// copy baseline copies `written` bytes, shaped like the op's main output (rows, and the kernel's
// minimum rows per goroutine, so the CPU copy is split over goroutines exactly as the kernel is: the
// CPU dispatch and combine kernels split tokens, so their copies split T rows of K*H or H elements).
// e.es() is the float element size; int32 indices count 4 bytes.

// sizes returns T*H, T*K, T*E as int64 for byte arithmetic.
func (e *env) sizes() (th, tk, te int64) {
	s := e.s
	return int64(s.Tokens) * int64(s.Hidden), int64(s.Tokens) * int64(s.TopK), int64(s.Tokens) * int64(s.Experts)
}

// routeCost: read logits [T,E]; write indices [T,K] int32 and weights [T,K].
func routeCost(e *env) *workload {
	_, tk, te := e.sizes()
	return &workload{read: te * e.es(), written: tk*4 + tk*e.es(),
		copyRows: e.s.Tokens, copyMinRows: minRowsPerWorker(e.s.Experts)}
}

// routeBwdCost: read logits [T,E], indices [T,K] and d weights [T,K]; write d logits [T,E].
func routeBwdCost(e *env) *workload {
	_, tk, te := e.sizes()
	return &workload{read: te*e.es() + tk*4 + tk*e.es(), written: te * e.es(),
		copyRows: e.s.Tokens, copyMinRows: minRowsPerWorker(e.s.Experts)}
}

// planCost: read indices [T,K] int32; write the plan (PlanLen int32). The CPU plan is sequential,
// so its copy baseline is one goroutine.
func planCost(e *env) *workload {
	s := e.s
	_, tk, _ := e.sizes()
	return &workload{read: tk * 4, written: int64(ops.PlanLen(s.Tokens, s.TopK, s.Experts)) * 4,
		copyRows: 1, copyMinRows: 1}
}

// dispatchCost: read x [T,H]; write packed [T*K,H].
func dispatchCost(e *env) *workload {
	th, _, _ := e.sizes()
	k := int64(e.s.TopK)
	return &workload{read: th * e.es(), written: th * k * e.es(),
		copyRows: e.s.Tokens, copyMinRows: minRowsPerWorker(e.s.Hidden * e.s.TopK)}
}

// dispatchBwdCost (unweighted combine): read d packed [T*K,H]; write dx [T,H].
func dispatchBwdCost(e *env) *workload {
	th, _, _ := e.sizes()
	k := int64(e.s.TopK)
	return &workload{read: th * k * e.es(), written: th * e.es(),
		copyRows: e.s.Tokens, copyMinRows: minRowsPerWorker(e.s.Hidden * e.s.TopK)}
}

// combineCost: read expert outputs [T*K,H] and weights [T,K]; write y [T,H].
func combineCost(e *env) *workload {
	th, tk, _ := e.sizes()
	k := int64(e.s.TopK)
	return &workload{read: (th*k + tk) * e.es(), written: th * e.es(),
		copyRows: e.s.Tokens, copyMinRows: minRowsPerWorker(e.s.Hidden * e.s.TopK)}
}

// combineBwdCost: read dy [T,H] and weights [T,K] once, re-read expert outputs [T*K,H] for dw;
// write d expert outputs [T*K,H] and d weights [T,K].
func combineBwdCost(e *env) *workload {
	th, tk, _ := e.sizes()
	k := int64(e.s.TopK)
	return &workload{read: (th + tk + th*k) * e.es(), written: (th*k + tk) * e.es(),
		copyRows: e.s.Tokens, copyMinRows: minRowsPerWorker(e.s.Hidden * e.s.TopK)}
}

// combineBwdXCost (weighted dispatch): read dy [T,H] and weights [T,K]; write d expert outputs [T*K,H].
func combineBwdXCost(e *env) *workload {
	th, tk, _ := e.sizes()
	k := int64(e.s.TopK)
	return &workload{read: (th + tk) * e.es(), written: th * k * e.es(),
		copyRows: e.s.Tokens, copyMinRows: minRowsPerWorker(e.s.Hidden * e.s.TopK)}
}

// combineBwdWCost: read dy [T,H] and expert outputs [T*K,H]; write d weights [T,K]. Its output is
// tiny, so its copy baseline moves the same total bytes instead: a buffer of (read+written)/2.
func combineBwdWCost(e *env) *workload {
	th, tk, _ := e.sizes()
	k := int64(e.s.TopK)
	wl := &workload{read: (th + th*k) * e.es(), written: tk * e.es(),
		copyRows: e.s.Tokens, copyMinRows: minRowsPerWorker(e.s.Hidden * e.s.TopK)}
	wl.copyBytes = (wl.read + wl.written) / 2
	return wl
}

// groupedMMCost: read packed [T*K,H] and W [E,H,F]; write [T*K,F]; 2*T*K*H*F flops.
func groupedMMCost(e *env) *workload {
	s, f := e.s, int64(e.s.ffn())
	n, h, ex := int64(s.Tokens*s.TopK), int64(s.Hidden), int64(s.Experts)
	return &workload{read: (n*h + ex*h*f) * e.es(), written: n * f * e.es(), flops: 2 * n * h * f,
		copyRows: int(n), copyMinRows: minRowsPerWorker(int(f))}
}

// groupedMMBwdCost: read d out [T*K,F], W [E,H,F] and packed [T*K,H]; write d packed [T*K,H] and
// dW [E,H,F]; 4*T*K*H*F flops.
func groupedMMBwdCost(e *env) *workload {
	s, f := e.s, int64(e.s.ffn())
	n, h, ex := int64(s.Tokens*s.TopK), int64(s.Hidden), int64(s.Experts)
	return &workload{read: (n*f + ex*h*f + n*h) * e.es(), written: (n*h + ex*h*f) * e.es(), flops: 4 * n * h * f,
		copyRows: int(n), copyMinRows: minRowsPerWorker(int(h))}
}

// groupedMMBwdXCost: read d out [T*K,F] and W [E,H,F]; write d packed [T*K,H]; 2*T*K*H*F flops.
func groupedMMBwdXCost(e *env) *workload {
	s, f := e.s, int64(e.s.ffn())
	n, h, ex := int64(s.Tokens*s.TopK), int64(s.Hidden), int64(s.Experts)
	return &workload{read: (n*f + ex*h*f) * e.es(), written: n * h * e.es(), flops: 2 * n * h * f,
		copyRows: int(n), copyMinRows: minRowsPerWorker(int(h))}
}

// groupedMMBwdWCost: read packed [T*K,H] and d out [T*K,F]; write dW [E,H,F]; 2*T*K*H*F flops.
func groupedMMBwdWCost(e *env) *workload {
	s, f := e.s, int64(e.s.ffn())
	n, h, ex := int64(s.Tokens*s.TopK), int64(s.Hidden), int64(s.Experts)
	return &workload{read: (n*h + n*f) * e.es(), written: ex * h * f * e.es(), flops: 2 * n * h * f,
		copyRows: int(ex * h), copyMinRows: minRowsPerWorker(int(f))}
}
