package ops

import (
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Float reads a scalar value as a float64: a Gorgonia scalar (*G.F32, *G.F64), a one-element host tensor,
// or a one-element tensor of a registered backend, which is copied to the host with that backend's
// ToHost (on an asynchronous device this waits for the queued work and reports pending device faults:
// it is the optional loss read of a training step). Loss nodes of this package hold a host scalar on the
// CPU and a one-element device tensor on a device, so Float(loss.Value()) works on every backend.
func Float(v G.Value) (float64, error) {
	switch s := v.(type) {
	case nil:
		return math.NaN(), failf(ErrShape, "Float: no value (has the graph run?)")
	case *G.F64:
		return float64(*s), nil
	case *G.F32:
		return float64(*s), nil
	case *tensor.Dense:
		if s == nil || s.Shape().TotalSize() != 1 {
			return math.NaN(), failf(ErrShape, "Float: want one element, got a tensor of shape %v", shapeOrNil(s))
		}
		if s.Dtype() != tensor.Float32 && s.Dtype() != tensor.Float64 {
			return math.NaN(), failf(ErrDtype, "Float: want a float, got %v", s.Dtype())
		}
		h := s
		if b, err := BackendFor(s); err != nil {
			return math.NaN(), failf(ErrMixedBackends, "Float: %v", err)
		} else if b.Name() != CPU().Name() {
			if h, err = b.ToHost(s); err != nil {
				return math.NaN(), errorf("Float: reading a %s scalar: %w", b.Name(), err)
			}
		} else if !s.IsNativelyAccessible() {
			return math.NaN(), failf(ErrUnsupported, "Float: the tensor's memory is not readable by the host and no registered backend owns it")
		}
		return scalarOf(h)
	}
	return math.NaN(), failf(ErrDtype, "Float: want a scalar value, got %T", v)
}
