package ops

import (
	"math"

	"gorgonia.org/tensor"
)

// SwiGLU on the CPU: each element is computed in float64 and rounded once to the tensor's dtype.

func (cpuBackend) SwiGLU(gate, up *tensor.Dense, out *tensor.Dense) error {
	if err := checkElementwise("SwiGLU", gate, up, out); err != nil {
		return err
	}
	if isBF16(gate.Dtype()) {
		return swigluBF16CPU(gate, up, out)
	}
	return byDtype(gate.Dtype(),
		func() error { return swigluCPU[float32](gate, up, out) },
		func() error { return swigluCPU[float64](gate, up, out) })
}

func (cpuBackend) SwiGLUGrad(gate, up, dout *tensor.Dense, dgate, dup *tensor.Dense) error {
	if err := checkElementwise("SwiGLU gradient", gate, up, dout, dgate, dup); err != nil {
		return err
	}
	if isBF16(gate.Dtype()) {
		return swigluGradBF16CPU(gate, up, dout, dgate, dup)
	}
	return byDtype(gate.Dtype(),
		func() error { return swigluGradCPU[float32](gate, up, dout, dgate, dup) },
		func() error { return swigluGradCPU[float64](gate, up, dout, dgate, dup) })
}

// checkElementwise requires tensors of one dtype and one shape.
func checkElementwise(what string, ts ...*tensor.Dense) error {
	for i, t := range ts {
		if t == nil {
			return failf(ErrShape, "%s: operand %d is nil", what, i)
		}
		if !t.Shape().Eq(ts[0].Shape()) {
			return failf(ErrShape, "%s: operand %d has shape %v, operand 0 %v", what, i, t.Shape(), ts[0].Shape())
		}
		if t.Dtype() != ts[0].Dtype() {
			return failf(ErrDtype, "%s: operand %d has dtype %v, operand 0 %v", what, i, t.Dtype(), ts[0].Dtype())
		}
	}
	return nil
}

// sigmoid without overflow: exp is only taken of a non-positive number.
func sigmoid(a float64) float64 {
	if a >= 0 {
		return 1 / (1 + math.Exp(-a))
	}
	e := math.Exp(a)
	return e / (1 + e)
}

func swigluCPU[T float](gate, up, out *tensor.Dense) error {
	g, err := floats[T](gate)
	if err != nil {
		return err
	}
	u, err := floats[T](up)
	if err != nil {
		return err
	}
	o, err := floats[T](out)
	if err != nil {
		return err
	}
	parallelRows(len(o), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			a := float64(g[i])
			o[i] = T(a * sigmoid(a) * float64(u[i]))
		}
	})
	return nil
}

// swigluGradCPU: with s = sigmoid(a), silu(a) = a s and silu'(a) = s (1 + a (1 - s)).
func swigluGradCPU[T float](gate, up, dout, dgate, dup *tensor.Dense) error {
	g, err := floats[T](gate)
	if err != nil {
		return err
	}
	u, err := floats[T](up)
	if err != nil {
		return err
	}
	d, err := floats[T](dout)
	if err != nil {
		return err
	}
	dg, err := floats[T](dgate)
	if err != nil {
		return err
	}
	du, err := floats[T](dup)
	if err != nil {
		return err
	}
	parallelRows(len(d), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			a, dy := float64(g[i]), float64(d[i])
			s := sigmoid(a)
			dg[i] = T(dy * float64(u[i]) * s * (1 + a*(1-s)))
			du[i] = T(dy * a * s)
		}
	})
	return nil
}

// GroupedSwiGLU on the CPU is the unfused reference: the two grouped products, then SwiGLU (gate and
// up nil: temporaries).
func (c cpuBackend) GroupedSwiGLU(x, w1, w3, plan *tensor.Dense, h, gate, up *tensor.Dense) error {
	if x == nil || h == nil {
		return failf(ErrShape, "grouped swiglu: x and h must not be nil")
	}
	var err error
	for _, p := range []**tensor.Dense{&gate, &up} {
		if *p == nil {
			if *p, err = c.New(h.Dtype(), h.Shape()...); err != nil {
				return err
			}
		}
	}
	return groupedSwiGLUComposed(c, x, w1, w3, plan, h, gate, up)
}
