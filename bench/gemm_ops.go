package main

// Dense matrix products (ops.TrainingBackend.MatMul): the router's three products and one large
// product. Registered for every device but not portable (see portableOps): backends whose MatMul is not
// implemented report ops.ErrUnsupported.
func init() {
	addOp("matmul", "router logits: x [T,H] · Wgᵀ (Wg [E,H]) -> [T,E]", prepareMatMul)
	addOp("matmul-bwd", "router backward: dx = dlogits · Wg [T,H] and dWg = dlogitsᵀ · x [E,H]", prepareMatMulBwd)
	addOp("matmul-dense", "large dense product x [T,H] · W [H,F] -> [T,F]", prepareMatMulDense)
}

// peakFP32 is the fp32 (FFMA, no tensor cores) peak of an H100 SXM / H200 in FLOP/s, the reference of
// the reports' percentage.
const peakFP32 = 66.9e12

func prepareMatMul(e *env) (*workload, error) {
	s := e.s
	x, err := e.named("x", s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	wg, err := e.named("Wg", s.Experts, s.Hidden)
	if err != nil {
		return nil, err
	}
	logits, err := e.out(s.Tokens, s.Experts)
	if err != nil {
		return nil, err
	}
	t, h, ex := int64(s.Tokens), int64(s.Hidden), int64(s.Experts)
	wl := &workload{read: (t*h + ex*h) * e.es(), written: t * ex * e.es(), flops: 2 * t * h * ex,
		copyRows: s.Tokens, copyMinRows: minRowsPerWorker(s.Experts)}
	wl.copyBytes = (wl.read + wl.written) / 2
	wl.run = func() error { return e.b.MatMul(x, wg, false, true, logits) }
	return wl, nil
}

func prepareMatMulBwd(e *env) (*workload, error) {
	s := e.s
	x, err := e.named("x", s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	wg, err := e.named("Wg", s.Experts, s.Hidden)
	if err != nil {
		return nil, err
	}
	dl, err := e.named("dlogits", s.Tokens, s.Experts)
	if err != nil {
		return nil, err
	}
	dx, err := e.out(s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	dwg, err := e.out(s.Experts, s.Hidden)
	if err != nil {
		return nil, err
	}
	t, h, ex := int64(s.Tokens), int64(s.Hidden), int64(s.Experts)
	wl := &workload{read: (2*t*ex + ex*h + t*h) * e.es(), written: (t*h + ex*h) * e.es(), flops: 4 * t * h * ex,
		copyRows: s.Tokens, copyMinRows: minRowsPerWorker(s.Hidden)}
	wl.run = func() error {
		if err := e.b.MatMul(dl, wg, false, false, dx); err != nil {
			return err
		}
		return e.b.MatMul(dl, x, true, false, dwg)
	}
	return wl, nil
}

func prepareMatMulDense(e *env) (*workload, error) {
	s, f := e.s, e.s.ffn()
	x, err := e.named("x", s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	w, err := e.named("Wdense", s.Hidden, f)
	if err != nil {
		return nil, err
	}
	y, err := e.alloc(s.Dtype, s.Tokens, f)
	if err != nil {
		return nil, err
	}
	t, h, ff := int64(s.Tokens), int64(s.Hidden), int64(f)
	wl := &workload{read: (t*h + h*ff) * e.es(), written: t * ff * e.es(), flops: 2 * t * h * ff,
		copyRows: s.Tokens, copyMinRows: minRowsPerWorker(f)}
	wl.run = func() error { return e.b.MatMul(x, w, false, false, y) }
	return wl, nil
}
