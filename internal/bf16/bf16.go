// Package bf16 is the module's one bfloat16 element type and its conversions.
//
// A bfloat16 is the upper half of an IEEE binary32: 1 sign bit, 8 exponent bits (the float32 range,
// subnormals, infinities and NaN included) and 7 stored mantissa bits (8 significant bits, unit
// roundoff 2^-8). BFloat16 holds the bit pattern as a named uint16, which gorgonia.org/tensor handles as
// 2-byte elements (creation, copies, views, reshapes, transposes, concatenation) and Gorgonia graphs
// carry as a dtype of their own; the arithmetic is this module's (package ops and its backends).
//
// Conversions:
//   - widening (Float32, Float64) is exact;
//   - FromFloat32 rounds to the nearest bfloat16, ties to even; values at or beyond the midpoint
//     between the largest finite bfloat16 and 2^128 become ±Inf; NaN stays NaN (its sign and upper
//     payload bits kept, the quiet bit set);
//   - FromFloat64 rounds the float64 value once to the nearest bfloat16, ties to even (not through
//     float32, which would round twice and be one bfloat16 step off just above and below ties); NaN
//     becomes the quiet NaN of its sign.
//
// The conversions are tested over all 2^32 float32 inputs and against exact arithmetic for float64.
package bf16

import (
	"math"
	"reflect"
	"strconv"

	"gorgonia.org/tensor"
)

// BFloat16 is a bfloat16 value, stored as its bit pattern.
type BFloat16 uint16

// Dtype is the tensor dtype of BFloat16 elements. It is registered with gorgonia.org/tensor's list of
// dtypes (tensor.Register) but deliberately in none of its type classes (numbers, floats, ordered):
// tensor's own arithmetic kernels are closed type switches without a bfloat16 case, and membership
// would turn their clean "unsupported dtype" errors into wrong paths.
var Dtype = tensor.Dtype{Type: reflect.TypeOf(BFloat16(0))}

func init() { tensor.Register(Dtype) }

// Special values.
const (
	PosInf  BFloat16 = 0x7f80
	NegInf  BFloat16 = 0xff80
	NaN     BFloat16 = 0x7fc0 // the canonical quiet NaN
	MaxBF16 BFloat16 = 0x7f7f // the largest finite value, (2 - 2^-7) * 2^127
	One     BFloat16 = 0x3f80
)

// FromFloat32 rounds f to the nearest bfloat16, ties to even.
func FromFloat32(f float32) BFloat16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN: keep sign and payload, set the quiet bit
		return BFloat16(u>>16 | 0x0040)
	}
	// Adding 0x7fff plus the lowest kept bit rounds the magnitude to nearest, ties to even; a carry
	// out of the mantissa steps the exponent (the largest finite values round up to Inf).
	u += 0x7fff + (u>>16)&1
	return BFloat16(u >> 16)
}

// FromFloat64 rounds f to the nearest bfloat16, ties to even, with a single rounding: f is first
// rounded to float32 with round-to-odd (truncated toward zero, lowest bit set when inexact), which keeps
// the information a second rounding needs as long as the intermediate format has at least two more
// bits than the target (float32 has 16 more than bfloat16, in the subnormal range too), then rounded
// to nearest even by FromFloat32.
func FromFloat64(f float64) BFloat16 {
	if f != f {
		return BFloat16(uint16(math.Float64bits(f)>>48)&0x8000) | NaN
	}
	r := float32(f)
	if g := float64(r); g != f {
		u := math.Float32bits(r)
		if math.Abs(g) > math.Abs(f) {
			u-- // r was rounded away from zero (possibly to Inf): one float32 step back toward zero
		}
		r = math.Float32frombits(u | 1)
	}
	return FromFloat32(r)
}

// Float32 widens b exactly.
func (b BFloat16) Float32() float32 { return math.Float32frombits(uint32(b) << 16) }

// Float64 widens b exactly.
func (b BFloat16) Float64() float64 { return float64(b.Float32()) }

// IsNaN reports whether b is a NaN.
func (b BFloat16) IsNaN() bool { return b&0x7fff > 0x7f80 }

// IsInf reports whether b is an infinity.
func (b BFloat16) IsInf() bool { return b&0x7fff == 0x7f80 }

// String formats the value (shortest decimal that reads back to the same bfloat16 through float32).
func (b BFloat16) String() string {
	return strconv.FormatFloat(float64(b.Float32()), 'g', shortestDigits(b), 32)
}

// shortestDigits returns the fewest significant decimal digits (at most 9) that round-trip b.
func shortestDigits(b BFloat16) int {
	if b.IsNaN() || b.IsInf() {
		return -1
	}
	f := float64(b.Float32())
	for p := 1; p < 9; p++ {
		s := strconv.FormatFloat(f, 'g', p, 32)
		if v, err := strconv.ParseFloat(s, 32); err == nil && FromFloat32(float32(v)) == b {
			return p
		}
	}
	return -1
}

// FromFloat32s converts a slice (rounding each element once).
func FromFloat32s(f []float32) []BFloat16 {
	out := make([]BFloat16, len(f))
	for i, v := range f {
		out[i] = FromFloat32(v)
	}
	return out
}

// FromFloat64s converts a slice (rounding each element once).
func FromFloat64s(f []float64) []BFloat16 {
	out := make([]BFloat16, len(f))
	for i, v := range f {
		out[i] = FromFloat64(v)
	}
	return out
}

// Float32s widens a slice.
func Float32s(b []BFloat16) []float32 {
	out := make([]float32, len(b))
	for i, v := range b {
		out[i] = v.Float32()
	}
	return out
}

// Float64s widens a slice.
func Float64s(b []BFloat16) []float64 {
	out := make([]float64, len(b))
	for i, v := range b {
		out[i] = v.Float64()
	}
	return out
}
