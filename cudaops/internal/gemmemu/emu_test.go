//go:build expertrt_gemmemu

package gemmemu

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand"
	"os"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/internal/gemmplan"
	"github.com/expertrt/expertrt-go/internal/bf16"
)

func variants(t testing.TB) []gemmplan.Variant {
	t.Helper()
	src, err := os.ReadFile("../../gemm.variants")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := gemmplan.ParseVariants(string(src))
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// target is a small fake device, so that split-K and multi-wave grids happen at small sizes.
// SM90a: the wgmma variants are planned too (emulated: emu.h).
var target = gemmplan.Target{SMs: 4, MaxSmem: 227 << 10, SM90a: true}

// TestConfigMatches: every variant is compiled into the emulator with the configuration the planner
// computes (threads, shared memory, tile): the emulator and the PTX come from the same flags.
func TestConfigMatches(t *testing.T) {
	vs := variants(t)
	if got := Variants(); len(got) != len(vs) {
		t.Fatalf("emulator has %d variants %v, gemm.variants %d (go generate)", len(got), got, len(vs))
	}
	for _, v := range vs {
		c, err := Config(v.Name)
		if err != nil {
			t.Fatal(err)
		}
		if c != v.Config() {
			t.Errorf("%s: kernel config %v, planner %v", v.Name, c, v.Config())
		}
	}
}

// problem is one test product with host data.
type problem struct {
	gemmplan.Problem
	offsets  []int32 // grouped
	misalign [3]int  // elements by which A, B, C start after a 256-byte boundary
}

func (p problem) String() string {
	s := fmt.Sprintf("%v tA=%t tB=%t M=%d N=%d K=%d", p.Mode, p.TransA, p.TransB, p.M, p.N, p.K)
	if p.BF16 {
		s += fmt.Sprintf(" bf16 outF32=%t", p.OutF32)
	}
	if p.Mode != gemmplan.Dense {
		s += fmt.Sprintf(" E=%d rows=%d", p.E, p.Rows)
	}
	if p.misalign != [3]int{} {
		s += fmt.Sprintf(" misalign=%v", p.misalign)
	}
	return s
}

// sizes of A, B, C in elements.
func (p problem) sizes() (a, b, c int) {
	switch p.Mode {
	case gemmplan.GroupRows:
		return p.Rows * p.K, p.E * p.K * p.N, p.Rows * p.N
	case gemmplan.GroupRed:
		return p.Rows * p.M, p.Rows * p.N, p.E * p.M * p.N
	}
	return p.M * p.K, p.K * p.N, p.M * p.N
}

// reference returns C and, per element, the sum of |a·b| over its terms.
func (p problem) reference(a, b []float64) (c, mag []float64) {
	_, _, nc := p.sizes()
	c, mag = make([]float64, nc), make([]float64, nc)
	dot := func(i int, n int, at func(k int) float64, bt func(k int) float64) {
		var s, m float64
		for k := 0; k < n; k++ {
			s += at(k) * bt(k)
			m += math.Abs(at(k) * bt(k))
		}
		c[i], mag[i] = s, m
	}
	switch p.Mode {
	case gemmplan.Dense:
		for m := 0; m < p.M; m++ {
			for n := 0; n < p.N; n++ {
				dot(m*p.N+n, p.K, func(k int) float64 {
					if p.TransA {
						return a[k*p.M+m]
					}
					return a[m*p.K+k]
				}, func(k int) float64 {
					if p.TransB {
						return b[n*p.K+k]
					}
					return b[k*p.N+n]
				})
			}
		}
	case gemmplan.GroupRows:
		for e := 0; e < p.E; e++ {
			for r := int(p.offsets[e]); r < int(p.offsets[e+1]); r++ {
				for n := 0; n < p.N; n++ {
					dot(r*p.N+n, p.K, func(k int) float64 { return a[r*p.K+k] }, func(k int) float64 {
						if p.TransB {
							return b[e*p.N*p.K+n*p.K+k]
						}
						return b[e*p.K*p.N+k*p.N+n]
					})
				}
			}
		}
	case gemmplan.GroupRed:
		for e := 0; e < p.E; e++ {
			lo, hi := int(p.offsets[e]), int(p.offsets[e+1])
			for m := 0; m < p.M; m++ {
				for n := 0; n < p.N; n++ {
					dot((e*p.M+m)*p.N+n, hi-lo, func(k int) float64 { return a[(lo+k)*p.M+m] },
						func(k int) float64 { return b[(lo+k)*p.N+n] })
				}
			}
		}
	}
	return c, mag
}

const guard = 37 // elements of NaN before and after every output

// operand is one matrix in emulator memory at a chosen misalignment, with guard elements around it.
type operand struct {
	buf      *Buffer
	off, n   int // first element, elements
	elemSize int
}

func newOperand(t testing.TB, n, misalign, elem int) *operand {
	b, err := Alloc((n + 2*guard + misalign) * elem)
	if err != nil {
		t.Fatal(err)
	}
	o := &operand{buf: b, off: guard + misalign, n: n, elemSize: elem}
	o.fillAll(math.NaN())
	return o
}

func (o *operand) addr() uint64 { return o.buf.Addr(o.off * o.elemSize) }

func (o *operand) fillAll(v float64) {
	if o.elemSize == 2 {
		s := o.buf.Uint16s()
		for i := range s {
			s[i] = uint16(bf16.FromFloat64(v))
		}
		return
	}
	if o.elemSize == 4 {
		s := o.buf.Float32s()
		for i := range s {
			s[i] = float32(v)
		}
		return
	}
	s := o.buf.Float64s()
	for i := range s {
		s[i] = v
	}
}

func (o *operand) set(vals []float64) {
	for i, v := range vals {
		if o.elemSize == 2 {
			o.buf.Uint16s()[o.off+i] = uint16(bf16.FromFloat64(v))
		} else if o.elemSize == 4 {
			o.buf.Float32s()[o.off+i] = float32(v)
		} else {
			o.buf.Float64s()[o.off+i] = v
		}
	}
}

// all returns every element of the buffer (guards included).
func (o *operand) all() []float64 {
	var r []float64
	if o.elemSize == 2 {
		for _, v := range o.buf.Uint16s() {
			r = append(r, bf16.BFloat16(v).Float64())
		}
	} else if o.elemSize == 4 {
		for _, v := range o.buf.Float32s() {
			r = append(r, float64(v))
		}
	} else {
		r = append(r, o.buf.Float64s()...)
	}
	return r
}

// result of one run: C's buffer contents (with guards) and the fault word.
type result struct {
	c     []float64
	bits  string
	fault int32
}

// run plans and executes p with the given variant (or auto when force is ""), inputs a, b.
func run(t testing.TB, p problem, a, b []float64, opt gemmplan.Options, mode Mode) (result, *gemmplan.Plan) {
	t.Helper()
	return runOn(t, target, p, a, b, opt, mode)
}

// runOn is run on device tgt (stream-K's CTA count follows its multiprocessors).
func runOn(t testing.TB, tgt gemmplan.Target, p problem, a, b []float64, opt gemmplan.Options, mode Mode) (result, *gemmplan.Plan) {
	t.Helper()
	return runEdited(t, tgt, p, a, b, opt, mode, nil)
}

// runEdited is runOn with the plan's launches passed through edit (when non-nil) before they run.
func runEdited(t testing.TB, tgt gemmplan.Target, p problem, a, b []float64, opt gemmplan.Options, mode Mode, edit func([]gemmplan.Launch) []gemmplan.Launch) (result, *gemmplan.Plan) {
	t.Helper()
	elem, cElem := 4, 4
	switch {
	case p.Double:
		elem, cElem = 8, 8
	case p.BF16:
		elem, cElem = 2, 2
		if p.OutF32 {
			cElem = 4
		}
	}
	na, nb, nc := p.sizes()
	A, B, C := newOperand(t, na, p.misalign[0], elem), newOperand(t, nb, p.misalign[1], elem), newOperand(t, nc, p.misalign[2], cElem)
	defer A.buf.Free()
	defer B.buf.Free()
	defer C.buf.Free()
	A.set(a)
	B.set(b)
	off, err := Alloc(4 * max(len(p.offsets), 1))
	if err != nil {
		t.Fatal(err)
	}
	defer off.Free()
	copy(off.Int32s(), p.offsets)
	fault, err := Alloc(4)
	if err != nil {
		t.Fatal(err)
	}
	defer fault.Free()
	fault.Int32s()[0] = 0
	q := p.Problem
	q.A, q.B, q.C, q.Offsets, q.Fault = A.addr(), B.addr(), C.addr(), off.Addr(0), fault.Addr(0)
	vs := variants(t)
	pl, err := gemmplan.Make(q, tgt, opt, vs)
	if err != nil {
		t.Fatalf("%v: plan: %v", p, err)
	}
	var ws uint64
	if pl.Workspace > 0 {
		w, err := Alloc(int(pl.Workspace))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Free()
		for i := range w.Bytes() {
			w.Bytes()[i] = 0xff
		}
		ws = w.Addr(0)
	}
	ls := pl.Launches(ws)
	if edit != nil {
		ls = edit(ls)
	}
	for _, l := range ls {
		if err := Launch(l, mode); err != nil {
			t.Fatalf("%v (variant %s): %v", p, pl.Variant.Name, err)
		}
	}
	r := result{c: C.all(), fault: fault.Int32s()[0]}
	r.bits = string(C.buf.Bytes())
	return r, pl
}

// randVals returns n values in [-1, 1], exactly representable in the problem's operand type.
func randVals(rng *rand.Rand, n int, p problem) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = 2*rng.Float64() - 1
		switch {
		case p.BF16:
			v[i] = bf16.FromFloat64(v[i]).Float64()
		case !p.Double:
			v[i] = float64(float32(v[i]))
		}
	}
	return v
}

// check compares C (with guards) with the reference: guards untouched (NaN), every element within the
// error bound of its dot product: fp32 and fp64 |err| <= 1.01*(n+2)*u*sum|a·b| (the worst-case bound of
// a recursive sum of n terms plus the split-K additions, u = 2^-24 or 2^-53; the float64 reference adds
// its own n*2^-53); TF32 adds tf32*sum|a·b| (tf32Term: the rounding of both inputs to 10 mantissa bits,
// 2^-10, or their truncation on the wgmma tiles, 2^-9 + 2^-19). bfloat16
// operands: products exact, float32 accumulation (u = 2^-24), and a bfloat16 C adds its one rounding of
// the float32 result, 2^-8 relative.
func check(t testing.TB, what string, p problem, r result, want, mag []float64, splits int, tf32 float64) {
	t.Helper()
	_, _, nc := p.sizes()
	u := math.Ldexp(1, -24)
	if p.Double {
		u = math.Ldexp(1, -53)
	}
	terms := func(i int) int {
		switch p.Mode {
		case gemmplan.GroupRed:
			e := i / (p.M * p.N)
			return int(p.offsets[e+1] - p.offsets[e])
		}
		return p.K
	}
	off := guard + p.misalign[2]
	bad := 0
	for i, v := range r.c {
		if i < off || i >= off+nc {
			if !math.IsNaN(v) {
				t.Errorf("%s: %v: guard element %d (output [%d,%d)) was written: %v", what, p, i, off, off+nc, v)
				return
			}
			continue
		}
		j := i - off
		if p.dropped(j) {
			if !math.IsNaN(v) {
				t.Errorf("%s: %v: C[%d] (row %d, after offsets[E] = %d) was written: %v", what, p, j, j/p.N, p.offsets[p.E], v)
				return
			}
			continue
		}
		n := float64(terms(j) + splits + 2)
		tol := 1.01*n*u*mag[j] + float64(terms(j))*math.Ldexp(1, -53)*mag[j]
		tol += tf32 * mag[j]
		if p.BF16 && !p.OutF32 {
			tol += math.Ldexp(1, -8) * (math.Abs(want[j]) + tol)
		}
		if !(math.Abs(v-want[j]) <= tol) {
			if bad < 4 {
				t.Errorf("%s: %v: C[%d] = %.17g, want %.17g (tol %.3g)", what, p, j, v, want[j], tol)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %v: %d of %d elements wrong", what, p, bad, nc)
	}
}

// dropped reports whether output element j lies in a row after offsets[E] (grouped rows only): a row a
// capacity limit dropped, which the kernels must leave untouched.
func (p problem) dropped(j int) bool {
	return p.Mode == gemmplan.GroupRows && j/p.N >= int(p.offsets[p.E])
}

// segments returns offsets [E+1] over rows with the given pattern; "capacity" leaves the last quarter
// of the rows outside every segment (offsets[E] < rows).
func segments(rng *rand.Rand, E, rows int, pattern string) []int32 {
	off := make([]int32, E+1)
	switch pattern {
	case "one": // all rows on one expert in the middle
		for e := E/2 + 1; e <= E; e++ {
			off[e] = int32(rows)
		}
	case "skew": // half on expert 0, the rest random with some empty
		cut := make([]int, E-1)
		for i := range cut {
			cut[i] = rows/2 + rng.Intn(rows-rows/2+1)
		}
		sortInts(cut)
		for e := 1; e < E; e++ {
			off[e] = int32(cut[e-1])
		}
		off[E] = int32(rows)
	default: // random cuts (duplicates give empty experts)
		end := rows
		if pattern == "capacity" {
			end = rows - rows/4
		}
		cut := make([]int, E-1)
		for i := range cut {
			cut[i] = rng.Intn(end + 1)
		}
		sortInts(cut)
		for e := 1; e < E; e++ {
			off[e] = int32(cut[e-1])
		}
		off[E] = int32(end)
	}
	return off
}

func sortInts(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// bf16Cases returns the cases with bfloat16 operands, C bfloat16 and float32 alternately (both with
// all, in the long run).
func bf16Cases(rng *rand.Rand, short bool) []problem {
	var ps []problem
	for i, p := range cases(rng, false, short) {
		p.BF16 = true
		if !short {
			ps = append(ps, p)
			p.OutF32 = true
			ps = append(ps, p)
			continue
		}
		p.OutF32 = i%2 == 1
		ps = append(ps, p)
	}
	return ps
}

// casesFor returns the test problems of a variant's class.
func casesFor(rng *rand.Rand, v gemmplan.Variant, short bool) []problem {
	if v.BF16 {
		return bf16Cases(rng, short)
	}
	return cases(rng, v.Double, short)
}

// cases returns the test problems for one element type.
func cases(rng *rand.Rand, double, short bool) []problem {
	var ps []problem
	dense := [][3]int{{1, 1, 1}, {1, 37, 19}, {37, 1, 19}, {130, 70, 45}, {5, 200, 300}, {200, 9, 600}, {66, 131, 0}, {129, 257, 33}, {64, 64, 64}, {3, 4, 1000}}
	if short {
		dense = [][3]int{{1, 37, 19}, {130, 70, 45}, {200, 9, 600}, {66, 131, 0}}
	}
	for _, d := range dense {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			ps = append(ps, problem{Problem: gemmplan.Problem{Mode: gemmplan.Dense, Double: double, TransA: tr[0], TransB: tr[1], M: d[0], N: d[1], K: d[2]}})
		}
	}
	// Aligned (16-byte vector) and misaligned operands of the same shapes.
	for _, mis := range [][3]int{{0, 0, 0}, {1, 0, 0}, {0, 1, 1}} {
		ps = append(ps, problem{Problem: gemmplan.Problem{Mode: gemmplan.Dense, Double: double, M: 96, N: 136, K: 72}, misalign: mis})
		ps = append(ps, problem{Problem: gemmplan.Problem{Mode: gemmplan.Dense, Double: double, TransA: true, TransB: true, M: 96, N: 136, K: 72}, misalign: mis})
		if !short || mis == [3]int{1, 0, 0} {
			// The other two layouts (dY·Wᵀ, both operands k-contiguous, is what the RS tiles transpose
			// through registers; the last k-tile is partial: 72 = 4·16 + 8).
			ps = append(ps, problem{Problem: gemmplan.Problem{Mode: gemmplan.Dense, Double: double, TransB: true, M: 96, N: 136, K: 72}, misalign: mis})
			ps = append(ps, problem{Problem: gemmplan.Problem{Mode: gemmplan.Dense, Double: double, TransA: true, M: 96, N: 136, K: 72}, misalign: mis})
		}
	}
	type grouped struct {
		E, rows, k, n int
		pattern       string
	}
	gs := []grouped{{1, 45, 24, 40, ""}, {3, 200, 33, 20, ""}, {8, 300, 64, 136, "skew"}, {70, 260, 16, 7, ""}, {5, 150, 20, 24, "one"}, {300, 330, 8, 12, ""}, {4, 170, 24, 36, "capacity"}}
	if short {
		gs = []grouped{{3, 200, 33, 20, ""}, {70, 260, 16, 7, ""}, {5, 150, 20, 24, "one"}, {4, 170, 24, 36, "capacity"}}
	}
	for _, g := range gs {
		off := segments(rng, g.E, g.rows, g.pattern)
		for _, tb := range []bool{false, true} {
			ps = append(ps, problem{Problem: gemmplan.Problem{Mode: gemmplan.GroupRows, Double: double, TransB: tb, N: g.n, K: g.k, E: g.E, Rows: g.rows}, offsets: off})
		}
		ps = append(ps, problem{Problem: gemmplan.Problem{Mode: gemmplan.GroupRed, Double: double, TransA: true, M: g.k, N: g.n, E: g.E, Rows: g.rows}, offsets: off})
	}
	return ps
}

// selected reports whether EXPERTRT_GEMMEMU_VARIANTS (comma-separated names or name prefixes; unset:
// every variant) names the variant.
func selected(name string) bool {
	list := os.Getenv("EXPERTRT_GEMMEMU_VARIANTS")
	if list == "" {
		return true
	}
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" && strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// TestKernels runs every variant (or those EXPERTRT_GEMMEMU_VARIANTS selects) on every case against the
// float64 reference, with guards, in both cp.async completion modes and two thread orders, and requires
// bitwise identical results across them.
func TestKernels(t *testing.T) {
	short := testing.Short()
	for _, v := range variants(t) {
		v := v
		if !selected(v.Name) {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(7))
			for i, p := range casesFor(rng, v, short) {
				na, nb, _ := p.sizes()
				a, b := randVals(rng, na, p), randVals(rng, nb, p)
				want, mag := p.reference(a, b)
				opt := gemmplan.Options{Force: v.Name, TF32: v.TF32}
				r0, pl := run(t, p, a, b, opt, Mode{Seed: uint32(i)})
				if pl.Variant.Name != v.Name && v.WG {
					continue // an operand the wgmma tile reads in place has rows of other than 4k elements
				}
				if pl.Variant.Name != v.Name {
					t.Fatalf("%v: planned %s, forced %s", p, pl.Variant.Name, v.Name)
				}
				check(t, v.Name, p, r0, want, mag, pl.Splits, tf32Term(pl.Variant))
				writeDigest(t, v.Name, p, pl.Splits, r0.bits)
				if r0.fault != 0 {
					t.Errorf("%v: fault %d on valid offsets", p, r0.fault)
				}
				if short || i%3 == 0 {
					r1, _ := run(t, p, a, b, opt, Mode{Eager: true, Seed: uint32(i) + 1000})
					if r1.bits != r0.bits {
						t.Errorf("%v: results differ between cp.async modes / thread orders", p)
					}
				}
			}
		})
	}
}

// tf32Term is the TF32 input term of check's bound for variant v (0 unless TF32).
func tf32Term(v gemmplan.Variant) float64 {
	switch {
	case v.WG:
		return math.Ldexp(1, -9) + math.Ldexp(1, -19)
	case v.TF32:
		return math.Ldexp(1, -10)
	}
	return 0
}

// TestAuto runs the planner's own choice (no forced variant) on the cases, fp32, fp64 and TF32.
func TestAuto(t *testing.T) {
	for _, cl := range []struct {
		name               string
		double, tf32, bf16 bool
	}{{"f32", false, false, false}, {"f64", true, false, false}, {"tf32", false, true, false}, {"bf16", false, false, true}} {
		t.Run(cl.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(11))
			used := map[string]bool{}
			ps := cases(rng, cl.double, true)
			if cl.bf16 {
				ps = bf16Cases(rng, true)
			}
			for i, p := range ps {
				na, nb, _ := p.sizes()
				a, b := randVals(rng, na, p), randVals(rng, nb, p)
				want, mag := p.reference(a, b)
				r, pl := run(t, p, a, b, gemmplan.Options{TF32: cl.tf32}, Mode{Seed: uint32(i)})
				check(t, "auto", p, r, want, mag, pl.Splits, tf32Term(pl.Variant))
				used[pl.Variant.Name] = true
			}
			t.Logf("variants chosen: %v", used)
		})
	}
}

// TestBadOffsets: offsets that are not segments of [0, rows) (offsets[0] != 0, decreasing, negative,
// offsets[E] > rows) raise the fault word and never move a tile outside its buffers (guards intact).
// offsets[E] < rows is valid (the "capacity" cases of TestKernels).
func TestBadOffsets(t *testing.T) {
	vs := variants(t)
	opts := []gemmplan.Options{{Force: vs[0].Name}}
	for _, v := range vs {
		if v.WG { // a wgmma tile too (its grouped reductions read transposed copies, segments as k-ranges)
			opts = append(opts, gemmplan.Options{Force: v.Name, TF32: true})
			break
		}
	}
	rng := rand.New(rand.NewSource(3))
	for _, off := range [][]int32{{0, 50, 20, 60}, {0, 10, 30, 70}, {5, 10, 20, 60}, {-3, 10, 20, 60}, {0, 10, 20, 1 << 30}} {
		for _, mode := range []gemmplan.Mode{gemmplan.GroupRows, gemmplan.GroupRed} {
			p := problem{Problem: gemmplan.Problem{Mode: mode, E: 3, Rows: 60, K: 12, N: 10, M: 12, TransA: mode == gemmplan.GroupRed}, offsets: off}
			na, nb, nc := p.sizes()
			a, b := randVals(rng, na, p), randVals(rng, nb, p)
			for _, opt := range opts {
				r, pl := run(t, p, a, b, opt, Mode{Seed: 1})
				if r.fault != 32 {
					t.Errorf("%s %v offsets %v: fault word %d, want 32 (GEMM_FAULT_OFFSETS)", pl.Variant.Name, mode, off, r.fault)
				}
				for i, v := range r.c {
					inside := i >= guard && i < guard+nc
					if !inside && !math.IsNaN(v) {
						t.Errorf("%s %v offsets %v: guard %d written", pl.Variant.Name, mode, off, i)
						break
					}
				}
			}
		}
	}
}

// TestGenerated: the emulator was compiled from the current kernel sources (go generate writes their hash
// into the translation units, which is what makes Go rebuild them) and matches gemm.variants.
func TestGenerated(t *testing.T) {
	h := sha256.New()
	for _, f := range []string{"../../gemm.cu", "../../gemm.cuh", "../../gemm_wgmma.cuh", "../../gemm.variants", "emu.h", "emu.cc"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sourceHash {
		t.Fatalf("kernel sources changed since the emulator was generated: run go generate -tags expertrt_gemmemu ./cudaops/internal/gemmemu")
	}
	for _, v := range variants(t) {
		src, err := os.ReadFile("v_" + v.Name + ".cc")
		if err != nil {
			t.Fatalf("%v (go generate -tags expertrt_gemmemu ./cudaops/internal/gemmemu)", err)
		}
		if !strings.Contains(string(src), fmt.Sprintf("#define GEMM_BM %d\n", v.BM)) {
			t.Errorf("v_%s.cc is stale", v.Name)
		}
	}
}
