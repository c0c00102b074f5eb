package floats

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestRoundTrips(t *testing.T) {
	vals := []float64{1.5, -2, math.Copysign(0, -1), 1e-40}
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		d := Dense(dt, vals, 2, 2)
		if d.Dtype() != dt || !d.Shape().Eq(tensor.Shape{2, 2}) {
			t.Fatalf("Dense(%v) gave %v %v", dt, d.Dtype(), d.Shape())
		}
		got, err := Of(d)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			want := v
			if dt == tensor.Float32 {
				want = float64(float32(v))
			}
			if math.Float64bits(got[i]) != math.Float64bits(want) {
				t.Errorf("%v element %d: %v, want %v", dt, i, got[i], want)
			}
		}
	}
	for _, v := range []any{G.NewF64(2.5), G.NewF32(2.5), tensor.New(tensor.FromScalar(2.5))} {
		if s, err := Scalar(v); err != nil || s != 2.5 {
			t.Errorf("Scalar(%T) = %v, %v", v, s, err)
		}
	}
	for _, v := range []any{tensor.New(tensor.WithShape(2), tensor.WithBacking([]int32{1, 2})), "x", Dense(tensor.Float64, []float64{1, 2}, 2)} {
		if _, err := Scalar(v); err == nil {
			t.Errorf("Scalar(%v) succeeded", v)
		}
	}
}
