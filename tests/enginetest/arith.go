package enginetest

import (
	"fmt"
	"math"
	"testing"

	"github.com/chewxy/math32"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

type binaryCase struct {
	name string
	dev  func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error)
	std  func(a, b interface{}, o ...tensor.FuncOpt) (tensor.Tensor, error)
}

var binaryCases = []binaryCase{
	{"Add", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Adder).Add(a, b, o...)
	}, tensor.Add},
	{"Sub", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Suber).Sub(a, b, o...)
	}, tensor.Sub},
	{"Mul", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Muler).Mul(a, b, o...)
	}, tensor.Mul},
	{"Div", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Diver).Div(a, b, o...)
	}, tensor.Div},
}

// opts builds the function options of a variant over a given reuse/incr tensor.
func opts(m variant, r tensor.Tensor) []tensor.FuncOpt {
	switch m {
	case unsafeV:
		return []tensor.FuncOpt{tensor.UseUnsafe()}
	case reuseV:
		return []tensor.FuncOpt{tensor.WithReuse(r)}
	case incrV:
		return []tensor.FuncOpt{tensor.WithIncr(r)}
	}
	return nil
}

// checkIdentity checks that the result of a variant is the right tensor.
func checkIdentity(t testing.TB, what string, m variant, got, first, r tensor.Tensor) {
	t.Helper()
	switch m {
	case unsafeV:
		if got != first {
			t.Errorf("%s: UseUnsafe returned a new tensor, want the first operand", what)
		}
	case reuseV, incrV:
		if got != r {
			t.Errorf("%s: result is not the reuse/incr tensor", what)
		}
	default:
		if got == first || got == r {
			t.Errorf("%s: safe call returned an operand", what)
		}
	}
}

func (v *env) testBinary(t *testing.T) {
	for _, c := range binaryCases {
		for _, dt := range dtypes {
			for _, shape := range shapes {
				for _, m := range variants {
					what := fmt.Sprintf("%s %v %v %v", c.name, dt, shape, m)
					ha, hb := v.randHost(dt, shape, -3, 3), v.randHost(dt, shape, 0.5, 2)
					hr := v.randHost(dt, shape, -1, 1)
					da, db, dr := v.dev(t, ha), v.dev(t, hb), v.dev(t, hr)
					want, err := c.std(ha, hb, opts(m, hr)...)
					if err != nil {
						t.Fatalf("%s: StdEng: %v", what, err)
					}
					got, err := call(t, what, func() (tensor.Tensor, error) { return c.dev(v.e, da, db, opts(m, dr)...) })
					if err != nil {
						t.Errorf("%s: %v", what, err)
						continue
					}
					checkIdentity(t, what, m, got, da, dr)
					sameResult(t, what, v.host(t, got), want.(*tensor.Dense), 0)
					if m != unsafeV {
						sameResult(t, what+" (a unchanged)", v.host(t, da), ha, 0)
					}
					sameResult(t, what+" (b unchanged)", v.host(t, db), hb, 0)
				}
			}
		}
	}
	// The tensor package's own entry points route device tensors to the engine.
	ha, hb := v.randHost(tensor.Float32, tensor.Shape{4, 6}, -1, 1), v.randHost(tensor.Float32, tensor.Shape{4, 6}, -1, 1)
	got, err := tensor.Add(v.dev(t, ha), v.dev(t, hb))
	if err != nil {
		t.Fatalf("tensor.Add on device tensors: %v", err)
	}
	want, _ := tensor.Add(ha, hb)
	sameResult(t, "tensor.Add", v.host(t, got), want.(*tensor.Dense), 0)
	// Views with an odd element offset exercise unaligned data.
	for _, dt := range dtypes {
		hbase := v.randHost(dt, tensor.Shape{2 * 1031}, -2, 2)
		base := v.dev(t, hbase)
		for _, off := range []int{1, 3} {
			va, err := v.b.View(base, off, 1031)
			if err != nil {
				t.Fatal(err)
			}
			vb, err := v.b.View(base, off+1000, 1031)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.e.(tensor.Muler).Mul(va, vb)
			if err != nil {
				t.Fatalf("Mul of views: %v", err)
			}
			hv := floats(t, hbase)
			want := make([]float64, 1031)
			for i := range want {
				if dt == tensor.Float32 {
					want[i] = float64(float32(hv[off+i]) * float32(hv[off+1000+i]))
				} else {
					want[i] = hv[off+i] * hv[off+1000+i]
				}
			}
			sameResult(t, fmt.Sprintf("Mul of views at offset %d %v", off, dt), v.host(t, got), hostOf(dt, want, 1031), 0)
		}
	}
}

type scalarCase struct {
	name string
	dev  func(e tensor.Engine, a tensor.Tensor, s interface{}, left bool, o ...tensor.FuncOpt) (tensor.Tensor, error)
	std  func(e tensor.StdEng, a tensor.Tensor, s interface{}, left bool, o ...tensor.FuncOpt) (tensor.Tensor, error)
}

var scalarCases = []scalarCase{
	{"AddScalar", func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Adder).AddScalar(a, s, l, o...)
	}, tensor.StdEng.AddScalar},
	{"SubScalar", func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Suber).SubScalar(a, s, l, o...)
	}, tensor.StdEng.SubScalar},
	{"MulScalar", func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Muler).MulScalar(a, s, l, o...)
	}, tensor.StdEng.MulScalar},
	{"DivScalar", func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Diver).DivScalar(a, s, l, o...)
	}, tensor.StdEng.DivScalar},
}

func scalarOf(dt tensor.Dtype, x float64) interface{} {
	if dt == tensor.Float32 {
		return float32(x)
	}
	return x
}

func (v *env) testScalar(t *testing.T) {
	for _, c := range scalarCases {
		for _, dt := range dtypes {
			for _, shape := range shapes[:3] {
				for _, left := range []bool{true, false} {
					for _, m := range variants {
						for _, form := range []string{"go", "host tensor", "device tensor"} {
							what := fmt.Sprintf("%s %v %v left=%t %v scalar=%s", c.name, dt, shape, left, m, form)
							ha, hr := v.randHost(dt, shape, 0.5, 3), v.randHost(dt, shape, -1, 1)
							sv := scalarOf(dt, 1.75)
							da, dr := v.dev(t, ha), v.dev(t, hr)
							var s interface{} = sv
							switch form {
							case "host tensor":
								s = tensor.New(tensor.FromScalar(sv))
							case "device tensor":
								s = v.dev(t, tensor.New(tensor.WithShape(1), tensor.WithBacking(hostOf(dt, []float64{1.75}, 1).Data())))
							}
							// StdEng leaves a scalar-on-the-left reuse result as documented only for the
							// vector path; compare with a plain Go computation of s op t instead.
							want := v.scalarWant(c.name, dt, ha, 1.75, left, m, hr)
							got, err := call(t, what, func() (tensor.Tensor, error) { return c.dev(v.e, da, s, left, opts(m, dr)...) })
							if err != nil {
								t.Errorf("%s: %v", what, err)
								continue
							}
							checkIdentity(t, what, m, got, da, dr)
							sameResult(t, what, v.host(t, got), want, 0)
							if left && m != reuseV {
								// Cross-check the vector path against StdEng itself.
								hs, hrs := clone(ha), clone(hr)
								w2, err := c.std(tensor.StdEng{}, hs, sv, left, opts(m, hrs)...)
								if err != nil {
									t.Fatalf("%s: StdEng: %v", what, err)
								}
								sameResult(t, what+" vs StdEng", v.host(t, got), w2.(*tensor.Dense), 0)
							}
						}
					}
				}
			}
		}
	}
	// Errors: a scalar of the wrong dtype, a scalar tensor with more than one element.
	da := v.dev(t, v.randHost(tensor.Float32, tensor.Shape{5}, -1, 1))
	_, err := call(t, "AddScalar float64 on float32", func() (tensor.Tensor, error) {
		return v.e.(tensor.Adder).AddScalar(da, 2.0, true)
	})
	wantErr(t, "AddScalar float64 on float32", err, ops.ErrDtype)
	_, err = call(t, "AddScalar two-element scalar", func() (tensor.Tensor, error) {
		return v.e.(tensor.Adder).AddScalar(da, v.dev(t, hostOf(tensor.Float32, []float64{1, 2}, 2)), true)
	})
	wantErr(t, "AddScalar two-element scalar", err, ops.ErrShape)
}

// scalarWant computes t op s (or s op t) in Go with the variant's output rule.
func (v *env) scalarWant(op string, dt tensor.Dtype, a *tensor.Dense, s float64, left bool, m variant, r *tensor.Dense) *tensor.Dense {
	av, rv := floatsNoT(a), floatsNoT(r)
	out := make([]float64, len(av))
	for i, x := range av {
		p, q := x, s
		if !left {
			p, q = s, x
		}
		var y float64
		if dt == tensor.Float32 {
			p32, q32 := float32(p), float32(q)
			var y32 float32
			switch op {
			case "AddScalar":
				y32 = p32 + q32
			case "SubScalar":
				y32 = p32 - q32
			case "MulScalar":
				y32 = p32 * q32
			case "DivScalar":
				y32 = p32 / q32
			}
			if m == incrV {
				y32 = float32(rv[i]) + y32
			}
			y = float64(y32)
		} else {
			switch op {
			case "AddScalar":
				y = p + q
			case "SubScalar":
				y = p - q
			case "MulScalar":
				y = p * q
			case "DivScalar":
				y = p / q
			}
			if m == incrV {
				y = rv[i] + y
			}
		}
		out[i] = y
	}
	return hostOf(dt, out, a.Shape()...)
}

type unaryCase struct {
	name   string
	dev    func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error)
	std    func(e tensor.StdEng, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error)
	lo, hi float64
	exact  bool // correctly rounded (or exact) on every device
}

var unaryCases = []unaryCase{
	{"Neg", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Neger).Neg(a, o...)
	}, tensor.StdEng.Neg, -3, 3, true},
	{"Inv", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Inver).Inv(a, o...)
	}, tensor.StdEng.Inv, 0.25, 4, true},
	{"Square", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Squarer).Square(a, o...)
	}, tensor.StdEng.Square, -3, 3, true},
	{"Cube", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Cuber).Cube(a, o...)
	}, tensor.StdEng.Cube, -3, 3, true},
	{"Exp", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Exper).Exp(a, o...)
	}, tensor.StdEng.Exp, -5, 5, false},
	{"Tanh", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Tanher).Tanh(a, o...)
	}, tensor.StdEng.Tanh, -4, 4, false},
	{"Log", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Loger).Log(a, o...)
	}, tensor.StdEng.Log, 0.01, 10, false},
	{"Log2", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Log2er).Log2(a, o...)
	}, tensor.StdEng.Log2, 0.01, 10, false},
	{"Log10", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Log10er).Log10(a, o...)
	}, tensor.StdEng.Log10, 0.01, 10, false},
	{"Sqrt", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Sqrter).Sqrt(a, o...)
	}, tensor.StdEng.Sqrt, 0, 10, true},
	{"Cbrt", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Cbrter).Cbrt(a, o...)
	}, tensor.StdEng.Cbrt, -8, 8, false},
	{"InvSqrt", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.InvSqrter).InvSqrt(a, o...)
	}, tensor.StdEng.InvSqrt, 0.1, 10, true},
	{"Abs", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Abser).Abs(a, o...)
	}, tensor.StdEng.Abs, -3, 3, true},
	{"Sign", func(e tensor.Engine, a tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Signer).Sign(a, o...)
	}, tensor.StdEng.Sign, -3, 3, true},
}

func (v *env) testUnary(t *testing.T) {
	for _, c := range unaryCases {
		for _, dt := range dtypes {
			for _, shape := range shapes {
				for _, m := range variants {
					what := fmt.Sprintf("%s %v %v %v", c.name, dt, shape, m)
					ha, hr := v.randHost(dt, shape, c.lo, c.hi), v.randHost(dt, shape, -1, 1)
					if c.name == "Sign" && shape.TotalSize() > 3 {
						zeroSome(ha)
					}
					da, dr := v.dev(t, ha), v.dev(t, hr)
					want, err := c.std(tensor.StdEng{}, clone(ha), opts(m, clone(hr))...)
					if err != nil {
						t.Fatalf("%s: StdEng: %v", what, err)
					}
					got, err := call(t, what, func() (tensor.Tensor, error) { return c.dev(v.e, da, opts(m, dr)...) })
					if err != nil {
						t.Errorf("%s: %v", what, err)
						continue
					}
					checkIdentity(t, what, m, got, da, dr)
					tol := v.tol(dt)
					if c.exact {
						tol = 0
					}
					if m == incrV && tol > 0 {
						tol *= 4 // the sum r + f(a) rounds once more near cancellation
					}
					sameResult(t, what, v.host(t, got), want.(*tensor.Dense), tol)
				}
			}
		}
	}
}

// zeroSome sets a few elements to +0 and -0 (for Sign).
func zeroSome(h *tensor.Dense) {
	switch d := h.Data().(type) {
	case []float64:
		d[0], d[1] = 0, math.Copysign(0, -1)
	case []float32:
		d[0], d[1] = 0, math32.Copysign(0, -1)
	}
}

// mapFuncs are functions Map must recognise, with the dtype they apply to and an input range.
var mapFuncs = []struct {
	name   string
	fn     interface{}
	lo, hi float64
	exact  bool
}{
	{"math.Sin", math.Sin, -3, 3, false},
	{"math.Cos", math.Cos, -3, 3, false},
	{"math.Log1p", math.Log1p, -0.5, 3, false},
	{"math.Expm1", math.Expm1, -2, 2, false},
	{"math.Ceil", math.Ceil, -3, 3, true},
	{"math.Floor", math.Floor, -3, 3, true},
	{"math.Exp", math.Exp, -3, 3, false},
	{"math.Sqrt", math.Sqrt, 0, 9, true},
	{"math.Abs", math.Abs, -3, 3, true},
	{"math32.Sin", math32.Sin, -3, 3, false},
	{"math32.Cos", math32.Cos, -3, 3, false},
	{"math32.Log1p", math32.Log1p, -0.5, 3, false},
	{"math32.Expm1", math32.Expm1, -2, 2, false},
	{"math32.Ceil", math32.Ceil, -3, 3, true},
	{"math32.Floor", math32.Floor, -3, 3, true},
	{"math32.Tanh", math32.Tanh, -3, 3, false},
	{"math32.Log", math32.Log, 0.1, 9, false},
}

func (v *env) testMap(t *testing.T) {
	mapper := v.e.(tensor.Mapper)
	for _, f := range mapFuncs {
		dt := tensor.Float64
		if _, ok := f.fn.(func(float32) float32); ok {
			dt = tensor.Float32
		}
		for _, m := range variants {
			what := fmt.Sprintf("Map %s %v", f.name, m)
			ha, hr := v.randHost(dt, tensor.Shape{3, 37}, f.lo, f.hi), v.randHost(dt, tensor.Shape{3, 37}, -1, 1)
			da, dr := v.dev(t, ha), v.dev(t, hr)
			got, err := call(t, what, func() (tensor.Tensor, error) { return mapper.Map(f.fn, da, opts(m, dr)...) })
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			checkIdentity(t, what, m, got, da, dr)
			// The meaning of Map: out = fn(a), or r + fn(a) with WithIncr.
			want := clone(ha)
			if _, err := want.Apply(f.fn, tensor.UseUnsafe()); err != nil {
				t.Fatal(err)
			}
			if m == incrV {
				if _, err := tensor.Add(want, hr, tensor.UseUnsafe()); err != nil {
					t.Fatal(err)
				}
			}
			tol := v.tol(dt)
			if f.exact {
				tol = 0
			} else if m == incrV {
				tol *= 4
			}
			sameResult(t, what, v.host(t, got), want, tol)
		}
	}
	// Functions without a device kernel and functions of the wrong element type are refused.
	d64 := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{4}, -1, 1))
	_, err := call(t, "Map closure", func() (tensor.Tensor, error) {
		return mapper.Map(func(x float64) float64 { return 2 * x }, d64)
	})
	wantErr(t, "Map of a closure", err, ops.ErrUnsupported)
	_, err = call(t, "Map float32 function on float64", func() (tensor.Tensor, error) { return mapper.Map(math32.Sin, d64) })
	wantErr(t, "Map of a float32 function on a float64 tensor", err, ops.ErrDtype)
	_, err = call(t, "Map nil", func() (tensor.Tensor, error) { return mapper.Map(nil, d64) })
	wantErr(t, "Map of nil", err, ops.ErrUnsupported)
}

type cmpCase struct {
	name string
	dev  func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error)
	devS func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error)
	std  func(a, b interface{}, o ...tensor.FuncOpt) (tensor.Tensor, error)
	ref  func(x, y float64) bool
}

var cmpCases = []cmpCase{
	{"Gt", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Gter).Gt(a, b, o...)
	}, func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Gter).GtScalar(a, s, l, o...)
	}, tensor.Gt, func(x, y float64) bool { return x > y }},
	{"Gte", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Gteer).Gte(a, b, o...)
	}, func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Gteer).GteScalar(a, s, l, o...)
	}, tensor.Gte, func(x, y float64) bool { return x >= y }},
	{"Lt", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Lter).Lt(a, b, o...)
	}, func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Lter).LtScalar(a, s, l, o...)
	}, tensor.Lt, func(x, y float64) bool { return x < y }},
	{"Lte", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Lteer).Lte(a, b, o...)
	}, func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.Lteer).LteScalar(a, s, l, o...)
	}, tensor.Lte, func(x, y float64) bool { return x <= y }},
	{"ElEq", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.ElEqer).ElEq(a, b, o...)
	}, func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.ElEqer).EqScalar(a, s, l, o...)
	}, tensor.ElEq, func(x, y float64) bool { return x == y }},
	{"ElNe", func(e tensor.Engine, a, b tensor.Tensor, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.ElEqer).ElNe(a, b, o...)
	}, func(e tensor.Engine, a tensor.Tensor, s interface{}, l bool, o ...tensor.FuncOpt) (tensor.Tensor, error) {
		return e.(tensor.ElEqer).NeScalar(a, s, l, o...)
	}, tensor.ElNe, func(x, y float64) bool { return x != y }},
}

// gridValues are small integers (many ties) so equality and the boundary cases are exercised.
func (v *env) gridHost(dt tensor.Dtype, shape tensor.Shape) *tensor.Dense {
	vals := make([]float64, shape.TotalSize())
	for i := range vals {
		vals[i] = float64(v.rng.Intn(5)) - 2
	}
	return hostOf(dt, vals, shape...)
}

func cmpWant(ref func(x, y float64) bool, av, bv []float64, dt tensor.Dtype, boolOut bool, shape tensor.Shape) *tensor.Dense {
	if boolOut {
		out := make([]bool, len(av))
		for i := range av {
			out[i] = ref(av[i], bv[i])
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(out))
	}
	out := make([]float64, len(av))
	for i := range av {
		if ref(av[i], bv[i]) {
			out[i] = 1
		}
	}
	return hostOf(dt, out, shape...)
}

func (v *env) testCompare(t *testing.T) {
	type mode struct {
		name    string
		boolOut bool
		opts    func(r tensor.Tensor) []tensor.FuncOpt
		reuse   string // "", "bool", "same"
	}
	modes := []mode{
		{"bool", true, func(tensor.Tensor) []tensor.FuncOpt { return nil }, ""},
		{"same", false, func(tensor.Tensor) []tensor.FuncOpt { return []tensor.FuncOpt{tensor.AsSameType()} }, ""},
		{"unsafe", false, func(tensor.Tensor) []tensor.FuncOpt { return []tensor.FuncOpt{tensor.UseUnsafe()} }, ""},
		{"reuse bool", true, func(r tensor.Tensor) []tensor.FuncOpt { return []tensor.FuncOpt{tensor.WithReuse(r)} }, "bool"},
		{"reuse same", false, func(r tensor.Tensor) []tensor.FuncOpt {
			return []tensor.FuncOpt{tensor.WithReuse(r), tensor.AsSameType()}
		}, "same"},
	}
	for _, c := range cmpCases {
		for _, dt := range dtypes {
			shape := tensor.Shape{3, 7}
			for _, md := range modes {
				ha, hb := v.gridHost(dt, shape), v.gridHost(dt, shape)
				av, bv := floatsNoT(ha), floatsNoT(hb)
				newReuse := func() *tensor.Dense {
					switch md.reuse {
					case "bool":
						r, err := v.b.FromHost(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(make([]bool, shape.TotalSize()))))
						if err != nil {
							t.Fatal(err)
						}
						return r
					case "same":
						return v.dev(t, v.randHost(dt, shape, -1, 1))
					}
					return nil
				}
				// tensor ⊙ tensor, and StdEng on the same data.
				what := fmt.Sprintf("%s %v %s", c.name, dt, md.name)
				da, db := v.dev(t, ha), v.dev(t, hb)
				r := newReuse()
				var ropt tensor.Tensor
				if r != nil {
					ropt = r
				}
				got, err := call(t, what, func() (tensor.Tensor, error) { return c.dev(v.e, da, db, md.opts(ropt)...) })
				if err != nil {
					t.Errorf("%s: %v", what, err)
					continue
				}
				want := cmpWant(c.ref, av, bv, dt, md.boolOut, shape)
				sameResult(t, what, v.host(t, got), want, 0)
				if md.reuse == "" {
					sw, err := c.std(clone(ha), clone(hb), md.opts(nil)...)
					if err != nil {
						t.Fatalf("%s: StdEng: %v", what, err)
					}
					sameResult(t, what+" vs StdEng", v.host(t, got), sw.(*tensor.Dense), 0)
				}
				if md.name == "unsafe" && got != da {
					t.Errorf("%s: UseUnsafe did not write into the first operand", what)
				}
				// tensor ⊙ scalar on both sides.
				for _, left := range []bool{true, false} {
					what := fmt.Sprintf("%sScalar %v %s left=%t", c.name, dt, md.name, left)
					da := v.dev(t, ha)
					r := newReuse()
					var ropt tensor.Tensor
					if r != nil {
						ropt = r
					}
					got, err := call(t, what, func() (tensor.Tensor, error) {
						return c.devS(v.e, da, scalarOf(dt, 0), left, md.opts(ropt)...)
					})
					if err != nil {
						t.Errorf("%s: %v", what, err)
						continue
					}
					zeros := make([]float64, len(av))
					x, y := av, zeros
					if !left {
						x, y = zeros, av
					}
					sameResult(t, what, v.host(t, got), cmpWant(c.ref, x, y, dt, md.boolOut, shape), 0)
				}
			}
		}
	}
	// A reuse tensor of the wrong dtype is refused.
	da := v.dev(t, v.gridHost(tensor.Float64, tensor.Shape{4}))
	r32 := v.dev(t, v.randHost(tensor.Float32, tensor.Shape{4}, 0, 1))
	_, err := call(t, "Gt reuse float32 for float64", func() (tensor.Tensor, error) {
		return v.e.(tensor.Gter).Gt(da, da, tensor.WithReuse(r32))
	})
	wantErr(t, "Gt with a float32 reuse tensor for float64 operands", err, ops.ErrDtype)
}
