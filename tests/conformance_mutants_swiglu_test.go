package tests

import (
	"gorgonia.org/tensor"
)

// Every mutant has the fused GroupedSwiGLU of ops.GroupedSwiGLUBackend, composed from its own
// GroupedMatMul and SwiGLU (so the suite's GroupedSwiGLU case runs on every mutant), with these bugs:
//
//	gswiglu-swaps-gate-up    h = silu(up)·gate
//	gswiglu-gate-unwritten   the kept gate product is not written
//	gswiglu-last-feature     h's last feature is left at zero
func init() {
	mutants = append(mutants, "gswiglu-swaps-gate-up", "gswiglu-gate-unwritten", "gswiglu-last-feature")
}

func (m *mutant) GroupedSwiGLU(x, w1, w3, plan *tensor.Dense, h, gate, up *tensor.Dense) error {
	g, u := gate, up
	var err error
	if g == nil || m.kind == "gswiglu-gate-unwritten" {
		if g, err = m.Backend.New(h.Dtype(), h.Shape()...); err != nil {
			return err
		}
	}
	if u == nil {
		if u, err = m.Backend.New(h.Dtype(), h.Shape()...); err != nil {
			return err
		}
	}
	if err := m.GroupedMatMul(x, w1, plan, false, g); err != nil {
		return err
	}
	if err := m.GroupedMatMul(x, w3, plan, false, u); err != nil {
		return err
	}
	if m.kind == "gswiglu-swaps-gate-up" {
		g, u = u, g
	}
	if err := m.SwiGLU(g, u, h); err != nil {
		return err
	}
	if m.kind == "gswiglu-last-feature" && h.Shape().TotalSize() > 0 {
		f := h.Shape()[1]
		for r := 0; r < h.Shape()[0]; r++ {
			setF64(h, r*f+f-1, 0)
		}
	}
	return nil
}
