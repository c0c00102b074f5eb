// Package floats converts between host tensors of the float dtypes of this module (float32, float64,
// bfloat16) and float64 slices: the one place for the []float32/[]float64/[]bf16.BFloat16 type switches
// that helpers, examples and tests need.
package floats

import (
	"fmt"

	"github.com/expertrt/expertrt-go/internal/bf16"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Of returns a float64 copy of the elements of v: a host *tensor.Dense of float32, float64 or bfloat16
// (widened exactly; a one-element tensor may hold a bare scalar), or a Gorgonia scalar (*G.F32, *G.F64).
func Of(v any) ([]float64, error) {
	switch x := v.(type) {
	case *G.F64:
		return []float64{float64(*x)}, nil
	case *G.F32:
		return []float64{float64(*x)}, nil
	case *tensor.Dense:
		if x == nil || !x.IsNativelyAccessible() {
			return nil, fmt.Errorf("floats: not a host tensor: %v", v)
		}
		switch d := x.Data().(type) {
		case []float64:
			return append([]float64(nil), d...), nil
		case []float32:
			out := make([]float64, len(d))
			for i, f := range d {
				out[i] = float64(f)
			}
			return out, nil
		case []bf16.BFloat16:
			return bf16.Float64s(d), nil
		case float64:
			return []float64{d}, nil
		case float32:
			return []float64{float64(d)}, nil
		case bf16.BFloat16:
			return []float64{d.Float64()}, nil
		}
		return nil, fmt.Errorf("floats: tensor of dtype %v, want float32, float64 or bfloat16", x.Dtype())
	}
	return nil, fmt.Errorf("floats: %T is neither a float tensor nor a float scalar", v)
}

// Scalar returns the single element of v (as Of accepts it).
func Scalar(v any) (float64, error) {
	f, err := Of(v)
	if err != nil {
		return 0, err
	}
	if len(f) != 1 {
		return 0, fmt.Errorf("floats: want one element, got %d", len(f))
	}
	return f[0], nil
}

// Dense returns a new host tensor of dtype dt (tensor.Float32: vals rounded to float32; bfloat16: vals
// rounded once to bfloat16; otherwise float64) and the given shape holding a copy of vals.
func Dense(dt tensor.Dtype, vals []float64, shape ...int) *tensor.Dense {
	if dt == bf16.Dtype {
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(bf16.FromFloat64s(vals)))
	}
	if dt == tensor.Float32 {
		f := make([]float32, len(vals))
		for i, v := range vals {
			f[i] = float32(v)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), vals...)))
}
