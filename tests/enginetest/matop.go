package enginetest

import (
	"fmt"
	"math"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

func (v *env) testSum(t *testing.T) {
	sumer := v.e.(tensor.Sumer)
	for _, dt := range dtypes {
		shape := tensor.Shape{3, 5, 7}
		h := v.randHost(dt, shape, -2, 2)
		d := v.dev(t, h)
		hv := floatsNoT(h)
		for _, along := range [][]int{nil, {0}, {1}, {2}, {0, 1}, {2, 0}, {1, 2}, {0, 1, 2}} {
			what := fmt.Sprintf("Sum %v along %v", dt, along)
			got, err := call(t, what, func() (tensor.Tensor, error) { return sumer.Sum(d, along...) })
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			gd := got.(*tensor.Dense)
			// Reference: float64 sums in increasing index order; StdEng for the shape.
			want, err := tensor.Sum(clone(h), append([]int(nil), along...)...)
			if err != nil {
				t.Fatalf("%s: StdEng: %v", what, err)
			}
			full := len(along) == 0 || len(along) == 3
			if full {
				if !gd.IsNativelyAccessible() || !gd.Shape().IsScalar() {
					t.Errorf("%s: want a host scalar, got shape %v (host %t)", what, gd.Shape(), gd.IsNativelyAccessible())
					continue
				}
				ref := 0.0
				for _, x := range hv {
					ref += x
				}
				g := floats(t, gd)[0]
				tol := 1e-15 * float64(len(hv)) * 4 // float64 sums in another order
				if dt == tensor.Float32 {
					ref = float64(float32(ref))
					tol = 1.2e-7 // one float32 rounding of nearly the same float64 sum
				}
				if math.Abs(g-ref) > tol*math.Max(1, math.Abs(ref)) {
					t.Errorf("%s: %.17g, want %.17g (float64 sum)", what, g, ref)
				}
				continue
			}
			if !v.b.Owns(gd) {
				t.Errorf("%s: a partial sum must stay on the device", what)
				continue
			}
			tol := 1e-12
			if dt == tensor.Float32 {
				tol = 2e-6 // StdEng sums in float32, the device in float64
			}
			sameResult(t, what, v.host(t, gd), want.(*tensor.Dense), tol)
		}
		for _, bad := range [][]int{{3}, {-1}, {1, 1}} {
			_, err := call(t, "Sum bad axes", func() (tensor.Tensor, error) { return sumer.Sum(d, bad...) })
			wantErr(t, fmt.Sprintf("Sum along %v", bad), err, ops.ErrShape)
		}
	}
	// Exactness of the float64 accumulation for float32 data: 2^24 + 1 + 1 ... is not representable in
	// float32 running sums.
	vals := []float64{1 << 24, 1, 1, 1, 1}
	got, err := sumer.Sum(v.dev(t, hostOf(tensor.Float32, vals, 5)))
	if err != nil {
		t.Fatal(err)
	}
	if g := floats(t, got.(*tensor.Dense))[0]; g != float64(1<<24+4) {
		t.Errorf("float32 full sum = %v, want %v (accumulated in float64)", g, 1<<24+4)
	}
}

func (v *env) testTranspose(t *testing.T) {
	cases := []struct {
		shape tensor.Shape
		axes  []int
	}{
		{tensor.Shape{3, 4}, []int{1, 0}},
		{tensor.Shape{2, 3, 4}, []int{2, 0, 1}},
		{tensor.Shape{2, 3, 4}, []int{1, 0, 2}},
		{tensor.Shape{2, 1, 3, 2}, []int{3, 2, 1, 0}},
	}
	for _, c := range cases {
		for _, dt := range append(dtypes, tensor.Int32) {
			what := fmt.Sprintf("Transpose %v %v %v", dt, c.shape, c.axes)
			var h *tensor.Dense
			if dt == tensor.Int32 {
				vals := make([]int32, c.shape.TotalSize())
				for i := range vals {
					vals[i] = int32(i * 7)
				}
				h = tensor.New(tensor.WithShape(c.shape...), tensor.WithBacking(vals))
			} else {
				h = v.randHost(dt, c.shape, -1, 1)
			}
			d := v.dev(t, h)
			got, err := call(t, what, func() (tensor.Tensor, error) { return tensor.Transpose(d, c.axes...) })
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			want, err := tensor.Transpose(clone(h), c.axes...)
			if err != nil {
				t.Fatal(err)
			}
			sameResult(t, what, v.host(t, got), want.(*tensor.Dense), 0)
			sameResult(t, what+" (input unchanged)", v.host(t, d), h, 0)
		}
	}
}

func (v *env) testConcat(t *testing.T) {
	for _, dt := range dtypes {
		for axis := 0; axis < 3; axis++ {
			what := fmt.Sprintf("Concat %v axis %d", dt, axis)
			s1, s2, s3 := tensor.Shape{2, 3, 4}, tensor.Shape{2, 3, 4}, tensor.Shape{2, 3, 4}
			s2[axis], s3[axis] = 1, 5
			h1, h2, h3 := v.randHost(dt, s1, -1, 1), v.randHost(dt, s2, -1, 1), v.randHost(dt, s3, -1, 1)
			d1, d2, d3 := v.dev(t, h1), v.dev(t, h2), v.dev(t, h3)
			got, err := call(t, what, func() (tensor.Tensor, error) { return tensor.Concat(axis, d1, d2, d3) })
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			want, err := tensor.Concat(axis, clone(h1), clone(h2), clone(h3))
			if err != nil {
				t.Fatal(err)
			}
			sameResult(t, what, v.host(t, got), want.(*tensor.Dense), 0)
		}
	}
	c := v.e.(tensor.Concater)
	a := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 3}, 0, 1))
	b := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{2, 4}, 0, 1))
	_, err := call(t, "Concat mismatched", func() (tensor.Tensor, error) { return c.Concat(a, 0, b) })
	wantErr(t, "Concat of [2,3] and [2,4] along 0", err, ops.ErrShape)
	_, err = call(t, "Concat axis 2", func() (tensor.Tensor, error) { return c.Concat(a, 2, a) })
	wantErr(t, "Concat along axis 2 of matrices", err, ops.ErrShape)
	f := v.dev(t, v.randHost(tensor.Float32, tensor.Shape{2, 3}, 0, 1))
	_, err = call(t, "Concat dtypes", func() (tensor.Tensor, error) { return c.Concat(a, 0, f) })
	wantErr(t, "Concat of float64 and float32", err, ops.ErrDtype)
}

// devMem is a tensor.Memory over a tensor's data (the engine takes tagged device addresses as they are).
type devMem struct{ p, n uintptr }

func (m devMem) Uintptr() uintptr { return m.p }
func (m devMem) MemSize() uintptr { return m.n }

func memOf(t *tensor.Dense) devMem {
	return devMem{t.Uintptr(), uintptr(t.Shape().TotalSize() * int(t.Dtype().Size()))}
}

func (v *env) testMemory(t *testing.T) {
	// Memset with every supported value type, checked on the host.
	d := v.dev(t, v.randHost(tensor.Float32, tensor.Shape{9}, 0, 1))
	if err := v.e.Memset(memOf(d), float32(2.5)); err != nil {
		t.Fatal(err)
	}
	sameResult(t, "Memset float32", v.host(t, d), hostOf(tensor.Float32, []float64{2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5}, 9), 0)
	d64 := v.dev(t, v.randHost(tensor.Float64, tensor.Shape{5}, 0, 1))
	if err := v.e.Memset(memOf(d64), -1.25); err != nil {
		t.Fatal(err)
	}
	sameResult(t, "Memset float64", v.host(t, d64), hostOf(tensor.Float64, []float64{-1.25, -1.25, -1.25, -1.25, -1.25}, 5), 0)
	if err := v.e.Memset(memOf(d64), float32(1)); err != nil {
		t.Fatal(err) // 40 bytes of a 4-byte pattern is fine
	}
	if err := v.e.Memset(memOf(d), 1.0); err == nil {
		t.Errorf("Memset of 36 bytes with an 8-byte value: no error")
	}
	v.e.Memclr(memOf(d))
	sameResult(t, "Memclr", v.host(t, d), hostOf(tensor.Float32, make([]float64, 9), 9), 0)

	// Memcpy in every direction.
	h := v.randHost(tensor.Float64, tensor.Shape{6}, -1, 1)
	dst := v.dev(t, hostOf(tensor.Float64, make([]float64, 6), 6))
	if err := v.e.Memcpy(memOf(dst), memOf(h)); err != nil {
		t.Fatalf("Memcpy host to device: %v", err)
	}
	sameResult(t, "Memcpy host to device", v.host(t, dst), h, 0)
	dst2 := v.dev(t, hostOf(tensor.Float64, make([]float64, 6), 6))
	if err := v.e.Memcpy(memOf(dst2), memOf(dst)); err != nil {
		t.Fatalf("Memcpy device to device: %v", err)
	}
	sameResult(t, "Memcpy device to device", v.host(t, dst2), h, 0)
	back := hostOf(tensor.Float64, make([]float64, 6), 6)
	if err := v.e.Memcpy(memOf(back), memOf(dst2)); err != nil {
		t.Fatalf("Memcpy device to host: %v", err)
	}
	sameResult(t, "Memcpy device to host", back, h, 0)
	if err := v.e.Memcpy(memOf(back), memOf(d)); err == nil {
		t.Errorf("Memcpy of different sizes: no error")
	}

	// Alloc/Free, and the engine through tensor.New and Clone.
	m, err := v.e.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.e.Free(m, 64); err != nil {
		t.Errorf("Free: %v", err)
	}
	if err := v.e.Free(m, 64); err == nil {
		t.Errorf("second Free of the same memory: no error")
	}
	nd := tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(2, 3), tensor.WithEngine(v.e))
	if !v.b.Owns(nd) || nd.IsNativelyAccessible() {
		t.Errorf("tensor.New with the engine: not a device tensor")
	}
	src := v.dev(t, v.randHost(tensor.Float32, tensor.Shape{2, 3}, 0, 1))
	cl := src.Clone().(*tensor.Dense)
	if !v.b.Owns(cl) {
		t.Errorf("Clone of a device tensor is not on the device")
	}
	sameResult(t, "Clone", v.host(t, cl), v.host(t, src), 0)
	if _, err := v.e.Accessible(m); err == nil {
		t.Errorf("Accessible: no error")
	}
}

func (v *env) testDeterminism(t *testing.T) {
	for _, dt := range dtypes {
		h := v.randHost(dt, tensor.Shape{64, 513}, -3, 3)
		run := func() []float64 {
			d := v.dev(t, h)
			s, err := v.e.(tensor.Sumer).Sum(d, 0)
			if err != nil {
				t.Fatal(err)
			}
			e, err := v.e.(tensor.Exper).Exp(d)
			if err != nil {
				t.Fatal(err)
			}
			full, err := v.e.(tensor.Sumer).Sum(e)
			if err != nil {
				t.Fatal(err)
			}
			return append(floats(t, v.host(t, s)), floats(t, full.(*tensor.Dense))...)
		}
		a, b := run(), run()
		for i := range a {
			if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
				t.Errorf("%v: element %d differs between runs: %v vs %v", dt, i, a[i], b[i])
				break
			}
		}
	}
}
