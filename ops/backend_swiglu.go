package ops

import "gorgonia.org/tensor"

// GroupedSwiGLUBackend is implemented by backends that compute an expert FFN's gated activation in one
// fused kernel (the CPU reference and cudaops, whose GEMM applies the activation in its epilogue).
// GroupedSwiGLU falls back to two GroupedMatMul and a SwiGLU on backends without it.
type GroupedSwiGLUBackend interface {
	// GroupedSwiGLU writes h[r] = silu(x[r]·w1[e]) ⊙ (x[r]·w3[e]) for every row r of expert e's segment
	// (x [N,In], w1 and w3 [E,In,F], h [N,F], one dtype), and the two products into gate and up ([N,F];
	// nil: not kept) — each bit for bit what GroupedMatMul writes, and h what SwiGLU computes from them.
	// Rows from the plan's offsets[E] on (dropped by a capacity) are left as GroupedMatMul leaves them.
	GroupedSwiGLU(x, w1, w3, plan *tensor.Dense, h, gate, up *tensor.Dense) error
}

// groupedSwiGLUComposed is GroupedSwiGLU from a backend's GroupedMatMul and SwiGLU (the CPU reference,
// and the fallback for backends without the fused kernel). gate and up are required here.
func groupedSwiGLUComposed(b Backend, x, w1, w3, plan, h, gate, up *tensor.Dense) error {
	if err := b.GroupedMatMul(x, w1, plan, false, gate); err != nil {
		return err
	}
	if err := b.GroupedMatMul(x, w3, plan, false, up); err != nil {
		return err
	}
	return b.SwiGLU(gate, up, h)
}
