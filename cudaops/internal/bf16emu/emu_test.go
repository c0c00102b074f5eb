//go:build expertrt_bf16emu

package bf16emu

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand"
	"os"
	"testing"
	"unsafe"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// The emulated kernels of bf16.cu against the CPU reference (ops.CPU()): casts, Add, dispatch and
// combine bit for bit, the weight-gradient dot products within one float32 unit, SwiGLU within one
// bfloat16 unit (or a few float32 units of the terms where silu' cancels). Every case runs on several
// launch shapes (one warp; more warps than rows; several blocks) and on both the vector and the scalar
// paths.

// TestSourceHash fails when bf16.cu, common.cuh or the emulator changed since go generate last ran:
// Go's build cache does not see files outside the package, so the emulated kernels would be stale.
func TestSourceHash(t *testing.T) {
	h := sha256.New()
	for _, f := range []string{"../../bf16.cu", "../../common.cuh", "emu.h", "emu.cc", "kernels.cc"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sourceHash {
		t.Fatalf("the kernel sources changed since the emulator was generated: run go generate -tags expertrt_bf16emu ./cudaops/internal/bf16emu")
	}
}

var launches = []Launch{{1, 32}, {2, 96}}

func bufOf[T any](v []T) Buffer {
	var z T
	b := Alloc(len(v) * int(unsafe.Sizeof(z)))
	copy(unsafe.Slice((*T)(b.P), len(v)), v)
	return b
}

func sliceOf[T any](b Buffer, n int) []T { return unsafe.Slice((*T)(b.P), n) }

func randBF16(rng *rand.Rand, n int) []ops.BF16 {
	v := make([]ops.BF16, n)
	for i := range v {
		v[i] = ops.BF16FromFloat64(rng.NormFloat64() * math.Ldexp(1, rng.Intn(9)-4))
	}
	return v
}

func randF32(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * math.Ldexp(1, rng.Intn(9)-4))
	}
	return v
}

func dense[T any](v []T, shape ...int) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]T(nil), v...)))
}

func sameBits[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] && !(isNaN(got[i]) && isNaN(want[i])) {
			t.Fatalf("%s: element %d: %v, reference %v", what, i, got[i], want[i])
		}
	}
}

func isNaN[T any](v T) bool {
	switch x := any(v).(type) {
	case float32:
		return x != x
	case float64:
		return x != x
	}
	return false
}

func TestCast(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	vals := []float64{0, math.Copysign(0, -1), 1, math.Inf(1), math.Inf(-1), math.NaN(), math.MaxFloat32, 3.4e38, 1e300, 1e-300, 1e-40,
		1 + 3.0/256, math.Nextafter(1+3.0/256, 0), math.Nextafter(1+3.0/256, 2), float64(math.Float32frombits(0x3f808000)),
		// Doubles whose rounding the low word's sticky bit decides (bf16.cu's integer d2bf), and the ends of
		// its range: the smallest normal bfloat16 and below, the largest and what rounds to infinity.
		1 + 0x1p-8, 1 + 0x1p-8 + 0x1p-40, -(1 + 0x1p-8 + 0x1p-52), 1 + 0x1p-8 - 0x1p-52, 1 + 3*0x1p-8 + 0x1p-45,
		0x1p-126, -0x1p-126, 0x1p-126 - 0x1p-180, 0x1p-127 + 0x1p-140, 0x1.fep127, 0x1.ffp127, 0x1.ffp127 - 0x1p80, -0x1.ffp127,
		0x1p128, 0x1p-133, 0x1p-134, 0x1p-134 + 0x1p-200}
	for len(vals) < 1027 {
		vals = append(vals, rng.NormFloat64()*math.Ldexp(1, rng.Intn(80)-40))
	}
	f64 := vals
	f32 := make([]float32, len(vals))
	b16 := make([]ops.BF16, len(vals))
	for i, v := range vals {
		f32[i], b16[i] = float32(v), ops.BF16FromFloat64(v)
	}
	src := map[int]*tensor.Dense{F32: dense(f32, len(vals)), F64: dense(f64, len(vals)), BF16: dense(b16, len(vals))}
	dts := map[int]tensor.Dtype{F32: tensor.Float32, F64: tensor.Float64, BF16: ops.BFloat16}
	for _, p := range [][2]int{{F32, BF16}, {F64, BF16}, {BF16, F32}, {BF16, F64}, {F32, F64}, {F64, F32}} {
		want := tensor.New(tensor.Of(dts[p[1]]), tensor.WithShape(len(vals)))
		if err := ops.CPU().Cast(src[p[0]], want); err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{len(vals), 7, 8, 17} {
			for _, vec := range []bool{false, true} {
				for _, l := range launches {
					what := fmt.Sprintf("cast %d->%d n=%d vec=%t %v", p[0], p[1], n, vec, l)
					in := bufOf(rawOf(src[p[0]])[:n*int(dts[p[0]].Size())])
					out := Alloc(n * int(dts[p[1]].Size()))
					Cast(p[0], p[1], in, out, n, vec, l)
					switch p[1] {
					case F32:
						sameBits(t, what, sliceOf[float32](out, n), want.Data().([]float32)[:n])
					case F64:
						sameBits(t, what, sliceOf[float64](out, n), want.Data().([]float64)[:n])
					case BF16:
						sameBits(t, what, sliceOf[ops.BF16](out, n), want.Data().([]ops.BF16)[:n])
					}
					in.Free()
					out.Free()
				}
			}
		}
	}
}

func rawOf(d *tensor.Dense) []byte {
	n := d.Shape().TotalSize() * int(d.Dtype().Size())
	switch v := d.Data().(type) {
	case []float32:
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), n)
	case []float64:
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), n)
	case []ops.BF16:
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), n)
	}
	panic(fmt.Sprintf("rawOf: %T", d.Data()))
}

func TestAdd(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	const n = 1029
	a, b, c := randBF16(rng, n), randBF16(rng, n), randBF16(rng, n)
	want, err := ops.HostEngine().(tensor.Adder).Add(dense(a, n), dense(b, n))
	if err != nil {
		t.Fatal(err)
	}
	acc := dense(c, n)
	if _, err := ops.HostEngine().(tensor.Adder).Add(dense(a, n), dense(b, n), tensor.WithIncr(acc)); err != nil {
		t.Fatal(err)
	}
	for _, vec := range []bool{false, true} {
		for _, l := range launches {
			ab, bb := bufOf(a), bufOf(b)
			out := Alloc(2 * n)
			Add(ab, bb, out, n, false, vec, l)
			sameBits(t, "add", sliceOf[ops.BF16](out, n), want.Data().([]ops.BF16))
			inc := bufOf(c)
			Add(ab, bb, inc, n, true, vec, l)
			sameBits(t, "add incr", sliceOf[ops.BF16](inc, n), acc.Data().([]ops.BF16))
			ab.Free()
			bb.Free()
			out.Free()
			inc.Free()
		}
	}
}

type routing struct {
	T, E, K, H int
	plan       *tensor.Dense
	rowOf      []int32
	kept       []int32 // offsets[E]
}

// newRouting routes T tokens to K of E experts each; capacity > 0 makes a capacity plan that drops the
// slots beyond it (by position).
func newRouting(rng *rand.Rand, T, E, K, H, capacity int) routing {
	idx := make([]int32, T*K)
	for tk := 0; tk < T; tk++ {
		for j, e := range rng.Perm(E)[:K] {
			idx[tk*K+j] = int32(e)
		}
	}
	plan := tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(ops.PlanLen(T, K, E)))
	var err error
	if capacity > 0 {
		w := make([]float32, T*K)
		err = ops.CPU().CapacityPlan(dense(idx, T, K), dense(w, T, K), E, capacity, ops.DropPosition, plan)
	} else {
		err = ops.CPU().Plan(dense(idx, T, K), E, plan)
	}
	if err != nil {
		panic(err)
	}
	p := plan.Data().([]int32)
	return routing{T, E, K, H, plan, p[2*E+1 : 2*E+1+T*K], p[2*E : 2*E+1]}
}

// permShapes: vector (H % 8 == 0) and scalar paths, more warps than tokens, and rows long enough that
// every lane runs every unrolled chunk and the loop's remainder (H=1040: 130 vector chunks; H=300: 300
// scalar ones).
var permShapes = []struct{ T, E, K, H int }{{9, 4, 2, 16}, {7, 5, 3, 13}, {40, 8, 2, 24}, {3, 6, 4, 8}, {5, 3, 1, 1},
	{5, 4, 2, 1040}, {4, 3, 2, 300}}

func TestDispatchCombine(t *testing.T) {
	for si, s := range permShapes {
		for _, capacity := range []int{0, max(1, s.T*s.K/s.E-1)} {
			testDispatchCombine(t, si, s.T, s.E, s.K, s.H, capacity)
		}
	}
}

// testDispatchCombine runs the permutations of one shape and plan (dropless, or a capacity).
func testDispatchCombine(t *testing.T, si, T, E, K, H, capacity int) {
	s := struct{ T, E, K, H int }{T, E, K, H}
	{
		rng := rand.New(rand.NewSource(int64(10 + si)))
		r := newRouting(rng, s.T, s.E, s.K, s.H, capacity)
		if capacity > 0 && int(r.kept[0]) == s.T*s.K {
			t.Fatalf("capacity %d drops nothing for T=%d E=%d K=%d", capacity, s.T, s.E, s.K)
		}
		kept := bufOf(r.kept)
		n := s.T * s.K
		x16, x32, ye := randBF16(rng, s.T*s.H), randF32(rng, s.T*s.H), randBF16(rng, n*s.H)
		w := randF32(rng, n)
		rowOf := bufOf(r.rowOf)
		for _, vec := range []bool{false, true} {
			if vec && s.H%8 != 0 {
				continue
			}
			for _, l := range launches {
				name := fmt.Sprintf("T=%d E=%d K=%d H=%d capacity=%d vec=%t %v", s.T, s.E, s.K, s.H, capacity, vec, l)
				for _, f32 := range []bool{false, true} {
					for _, weighted := range []bool{false, true} {
						var xs *tensor.Dense
						var xb Buffer
						if f32 {
							xs, xb = dense(x32, s.T, s.H), bufOf(x32)
						} else {
							xs, xb = dense(x16, s.T, s.H), bufOf(x16)
						}
						var wt *tensor.Dense
						var wb Buffer
						if weighted {
							wt, wb = dense(w, s.T, s.K), bufOf(w)
						}
						want := tensor.New(tensor.Of(ops.BFloat16), tensor.WithShape(n, s.H))
						if err := ops.CPU().Dispatch(xs, wt, r.plan, want); err != nil {
							t.Fatal(err)
						}
						for _, keep := range []bool{false, true} {
							out := Alloc(2 * n * s.H)
							Dispatch(f32, vec, xb, wb, rowOf, kept, out, s.T, s.K, s.H, keep, l)
							sameBits(t, fmt.Sprintf("dispatch f32=%t weighted=%t %s", f32, weighted, name), sliceOf[ops.BF16](out, n*s.H), want.Data().([]ops.BF16))
							out.Free()
						}
						xb.Free()
						if weighted {
							wb.Free()
						}
					}
				}
				yb := bufOf(ye)
				for _, f32 := range []bool{false, true} {
					for _, weighted := range []bool{false, true} {
						var wt *tensor.Dense
						var wb Buffer
						if weighted {
							wt, wb = dense(w, s.T, s.K), bufOf(w)
						}
						dt := ops.BFloat16
						if f32 {
							dt = tensor.Float32
						}
						want := tensor.New(tensor.Of(dt), tensor.WithShape(s.T, s.H))
						if err := ops.CPU().Combine(dense(ye, n, s.H), wt, r.plan, want); err != nil {
							t.Fatal(err)
						}
						out := Alloc(int(dt.Size()) * s.T * s.H)
						Combine(f32, vec, yb, wb, rowOf, kept, out, s.T, s.K, s.H, l)
						what := fmt.Sprintf("combine f32=%t weighted=%t %s", f32, weighted, name)
						if f32 {
							sameBits(t, what, sliceOf[float32](out, s.T*s.H), want.Data().([]float32))
						} else {
							sameBits(t, what, sliceOf[ops.BF16](out, s.T*s.H), want.Data().([]ops.BF16))
						}
						out.Free()
						if weighted {
							wb.Free()
						}
					}
				}
				// Weight gradients: double sums in another order, one float32 unit apart at most.
				for _, f32 := range []bool{false, true} {
					var dy *tensor.Dense
					var db Buffer
					if f32 {
						dy, db = dense(x32, s.T, s.H), bufOf(x32)
					} else {
						dy, db = dense(x16, s.T, s.H), bufOf(x16)
					}
					want := tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(s.T, s.K))
					if err := ops.CPU().CombineGradWeights(dy, dense(ye, n, s.H), r.plan, want); err != nil {
						t.Fatal(err)
					}
					out := Alloc(4 * n)
					GradW(f32, vec, db, yb, rowOf, kept, out, s.T, s.K, s.H, l)
					got := sliceOf[float32](out, n)
					for i, v := range want.Data().([]float32) {
						if d := math.Abs(float64(got[i] - v)); d > 0x1p-23*math.Abs(float64(v))+1e-30 {
							t.Fatalf("gradw f32=%t %s: element %d: %v, reference %v", f32, name, i, got[i], v)
						}
					}
					out.Free()
					db.Free()
				}
				yb.Free()
			}
		}
		rowOf.Free()
		kept.Free()
	}
}

func TestSwiGLU(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	const n = 2053
	g, u, d := randBF16(rng, n), randBF16(rng, n), randBF16(rng, n)
	g[0], g[1], g[2] = ops.BF16FromFloat64(-1.2734375), 0, ops.BF16FromFloat64(-30)
	wantOut := tensor.New(tensor.Of(ops.BFloat16), tensor.WithShape(n))
	wantG := tensor.New(tensor.Of(ops.BFloat16), tensor.WithShape(n))
	wantU := tensor.New(tensor.Of(ops.BFloat16), tensor.WithShape(n))
	if err := ops.CPU().SwiGLU(dense(g, n), dense(u, n), wantOut); err != nil {
		t.Fatal(err)
	}
	if err := ops.CPU().SwiGLUGrad(dense(g, n), dense(u, n), dense(d, n), wantG, wantU); err != nil {
		t.Fatal(err)
	}
	near := func(what string, got, want []ops.BF16, scale func(i int) float64) {
		t.Helper()
		for i := range want {
			if diff := math.Abs(got[i].Float64() - want[i].Float64()); diff > 0x1p-7*math.Abs(want[i].Float64())+0x1p-20*scale(i)+0x1p-133 {
				t.Fatalf("%s: element %d: %v, reference %v", what, i, got[i], want[i])
			}
		}
	}
	abs := func(v []ops.BF16, i int) float64 { return math.Abs(v[i].Float64()) }
	for _, vec := range []bool{false, true} {
		for _, l := range launches {
			gb, ub, dbuf := bufOf(g), bufOf(u), bufOf(d)
			out, dg, du := Alloc(2*n), Alloc(2*n), Alloc(2*n)
			SwiGLU(gb, ub, out, n, vec, l)
			SwiGLUGrad(gb, ub, dbuf, dg, du, n, vec, l)
			near("swiglu", sliceOf[ops.BF16](out, n), wantOut.Data().([]ops.BF16), func(i int) float64 { return abs(g, i) * abs(u, i) })
			near("swiglu dgate", sliceOf[ops.BF16](dg, n), wantG.Data().([]ops.BF16), func(i int) float64 { return abs(d, i) * abs(u, i) * (1 + abs(g, i)) })
			near("swiglu dup", sliceOf[ops.BF16](du, n), wantU.Data().([]ops.BF16), func(i int) float64 { return abs(d, i) * abs(g, i) })
			for _, b := range []Buffer{gb, ub, dbuf, out, dg, du} {
				b.Free()
			}
		}
	}
}
