package devengine

import (
	"fmt"
	"reflect"
	"runtime"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// mapped names the Go functions Map runs as device kernels, by their runtime name: the functions
// Gorgonia applies through Map when the engine has no interface for them (sigmoid, softplus, log1p,
// expm1, sin, cos, ceil, floor), Gorgonia's own forms of the others, and the math / math32 functions.
var mapped = func() map[string]UnaryOp {
	m := map[string]UnaryOp{}
	g := "gorgonia.org/gorgonia."
	for name, op := range map[string]UnaryOp{
		"_sigmoid": USigmoid, "_softplus": USoftplus, "_sign": USignBit, "_square": USquare, "_cube": UCube,
		"_neg": UNeg, "_inverse": UInv, "_inverseSqrt": UInvSqrt, "_tanh": UTanh,
	} {
		m[g+name+"f32"] = op
		m[g+name+"f64"] = op
	}
	for name, op := range map[string]UnaryOp{
		"Abs": UAbs, "Ceil": UCeil, "Floor": UFloor, "Sin": USin, "Cos": UCos, "Exp": UExp, "Expm1": UExpm1,
		"Log": ULog, "Log1p": ULog1p, "Log2": ULog2, "Log10": ULog10, "Sqrt": USqrt, "Cbrt": UCbrt, "Tanh": UTanh,
	} {
		m["math."+name] = op
		m["github.com/chewxy/math32."+name] = op
	}
	return m
}()

// MappedFunc reports which device function Map runs for fn, by fn's runtime name.
func MappedFunc(fn interface{}) (UnaryOp, string, bool) {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return 0, "", false
	}
	f := runtime.FuncForPC(v.Pointer())
	if f == nil {
		return 0, "", false
	}
	op, ok := mapped[f.Name()]
	return op, f.Name(), ok
}

// Map applies fn elementwise (tensor's Mapper) when fn is one of the functions it recognises (see the
// package documentation) and has the tensor's element type (func(float32) float32 or
// func(float64) float64); any other function is refused with an error wrapping ops.ErrUnsupported, since
// a Go function cannot run on device memory. Options as for the unary methods: the result is fn(a)
// written into a new tensor, the reuse tensor, or a (UseUnsafe), or added into the incr tensor. (StdEng's
// Map with a reuse tensor maps the reuse tensor's previous contents instead; this engine maps a.)
func (e *Engine) Map(fn interface{}, a tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	const what = "Map"
	op, name, ok := MappedFunc(fn)
	if !ok {
		if name == "" {
			name = fmt.Sprintf("a %T", fn)
		}
		return nil, e.errorf("%s: %s has no device kernel (only Gorgonia's and math's elementwise functions are recognised): %w", what, name, ops.ErrUnsupported)
	}
	ad, ok := a.(*tensor.Dense)
	if !ok || ad == nil {
		return nil, e.errorf("%s: want a *tensor.Dense, got %T: %w", what, a, ops.ErrUnsupported)
	}
	var want interface{}
	switch ad.Dtype() {
	case tensor.Float32:
		want = func(float32) float32 { return 0 }
	case tensor.Float64:
		want = func(float64) float64 { return 0 }
	default:
		return nil, e.errorf("%s: dtype %v, want float32 or float64: %w", what, ad.Dtype(), ops.ErrDtype)
	}
	if reflect.TypeOf(fn) != reflect.TypeOf(want) {
		return nil, e.errorf("%s: %s has type %T, a %v tensor needs %T: %w", what, name, fn, ad.Dtype(), want, ops.ErrDtype)
	}
	return e.unary(op, a, opts)
}

var _ tensor.Mapper = (*Engine)(nil)
