package main

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
)

// The experts' gate and up projections with their SwiGLU, unfused (two grouped products and the
// elementwise SwiGLU, what the layer runs by default) and fused (ops.GroupedSwiGLUBackend: one grouped
// GEMM launch with the activation in its epilogue, the products kept for the backward as the training
// graph keeps them). Registered for every device but not portable: a backend without the fused kernel
// reports ops.ErrUnsupported for the fused op.
func init() {
	addOp("swiglu-ffn", "packed [T*k,H] x W1, W3 [E,H,F] -> gate, up [T*k,F] (two grouped products), h = SwiGLU(gate, up)", prepareSwiGLUFFN)
	addOp("swiglu-ffn-fused", "the same in one grouped GEMM launch with the SwiGLU epilogue (h, gate and up written)", prepareSwiGLUFFNFused)
}

func prepareSwiGLUFFN(e *env) (*workload, error) { return swigluFFN(e, false) }

func prepareSwiGLUFFNFused(e *env) (*workload, error) { return swigluFFN(e, true) }

func swigluFFN(e *env, fused bool) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s, f := e.s, e.s.ffn()
	n := s.Tokens * s.TopK
	xp, err := e.named("packed", n, s.Hidden)
	if err != nil {
		return nil, err
	}
	w1, err := e.named("W", s.Experts, s.Hidden, f)
	if err != nil {
		return nil, err
	}
	w3, err := e.named("W3", s.Experts, s.Hidden, f)
	if err != nil {
		return nil, err
	}
	h, err := e.out(n, f)
	if err != nil {
		return nil, err
	}
	g, err := e.out(n, f)
	if err != nil {
		return nil, err
	}
	u, err := e.out(n, f)
	if err != nil {
		return nil, err
	}
	// Both read x and the two weights and write h, gate and up; the unfused op also writes and reads
	// the products once more between its launches.
	nn, hh, ex, ff := int64(n), int64(s.Hidden), int64(s.Experts), int64(f)
	wl := &workload{read: (nn*hh + 2*ex*hh*ff) * e.es(), written: 3 * nn * ff * e.es(), flops: 4 * nn * hh * ff,
		copyRows: n, copyMinRows: minRowsPerWorker(f)}
	if !fused {
		wl.read += 2 * nn * ff * e.es()
		wl.run = func() error {
			if err := e.b.GroupedMatMul(xp, w1, e.plan, false, g); err != nil {
				return err
			}
			if err := e.b.GroupedMatMul(xp, w3, e.plan, false, u); err != nil {
				return err
			}
			return e.b.SwiGLU(g, u, h)
		}
		return wl, nil
	}
	fb, ok := e.b.(ops.GroupedSwiGLUBackend)
	if !ok {
		return nil, fmt.Errorf("swiglu-ffn-fused: backend %s has no fused GroupedSwiGLU: %w", e.b.Name(), ops.ErrUnsupported)
	}
	wl.run = func() error { return fb.GroupedSwiGLU(xp, w1, w3, e.plan, h, g, u) }
	return wl, nil
}
