package ops

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Argument checks of the training ops; every error wraps ErrShape or ErrDtype.

// needNode validates a node at graph-build time: non-nil, the given rank (-1: any rank >= 1 is
// accepted by the caller's own check) and dtype (anyFloat: float32 or float64).
func needNode(op, name string, n *G.Node, rank int, dt tensor.Dtype) error {
	if n == nil {
		return errorf("%s: %s is nil: %w", op, name, ErrShape)
	}
	if got := n.Shape().Dims(); rank >= 0 && got != rank {
		return errorf("%s: %s must have rank %d, got shape %v: %w", op, name, rank, n.Shape(), ErrShape)
	}
	return dtypeIs(op, name, n.Dtype(), dt)
}

func dtypeIs(op, name string, got, want tensor.Dtype) error {
	switch {
	case want.Type == nil && got != tensor.Float32 && got != tensor.Float64:
		return errorf("%s: %s must be float32 or float64, got %v: %w", op, name, got, ErrDtype)
	case want.Type != nil && got != want:
		return errorf("%s: %s must be %v, got %v: %w", op, name, want, got, ErrDtype)
	}
	return nil
}

// denseArg checks a run-time value: a *tensor.Dense of the dtype and shape (nil shape: any shape;
// -1 entries: any size).
func denseArg(op, name string, v G.Value, dt tensor.Dtype, shape tensor.Shape) (*tensor.Dense, error) {
	d, ok := v.(*tensor.Dense)
	if !ok || d == nil {
		return nil, errorf("%s: %s must be a *tensor.Dense, got %T: %w", op, name, v, ErrDtype)
	}
	if err := dtypeIs(op, name, d.Dtype(), dt); err != nil {
		return nil, err
	}
	if shape == nil {
		return d, nil
	}
	s := d.Shape()
	ok = len(s) == len(shape)
	for i := 0; ok && i < len(shape); i++ {
		ok = shape[i] < 0 || s[i] == shape[i]
	}
	if !ok {
		return nil, errorf("%s: %s has shape %v, want %v (-1: any): %w", op, name, s, shape, ErrShape)
	}
	return d, nil
}

// ownerOf is backendOf with the mixed-backends error wrapped in ErrMixedBackends.
func ownerOf(op string, ts ...*tensor.Dense) (Backend, error) {
	b, err := backendOf(ts...)
	if err != nil {
		return nil, errorf("%s: %v: %w", op, err, ErrMixedBackends)
	}
	return b, nil
}
