//go:build expertrt_cuda

package tests

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// GEMM kernels (cudaops/gemm.cu) against float64 loops: grouped products (forward, both backward
// products of the layer) and the dense MatMul, every tile configuration, odd shapes, empty and
// overloaded experts, misaligned operands, outputs inside NaN guard bands, two runs bitwise equal.
//
// Tolerance (derived, not tuned): each output is a sum of n products computed with one rounding per
// FMA, so |got - exact| <= gamma_{n+s} * sum|a_i b_i| with gamma_k = k u / (1 - k u), u = 2^-24
// (float32) or 2^-53 (float64), s <= 64 the additions of a split reduction; the float64 reference adds
// n 2^-53 sum|a_i b_i|. For float64 and the sizes here this is below 1e-12 relative to sum|a_i b_i|.
// TF32 rounds both inputs to 10 mantissa bits first: + 2^-10 sum|a_i b_i|. The Hopper wgmma tiles give
// the tensor core the float32 bits, of which it uses the tf32 part (truncation: below 2^-10 relative per
// input): + (2^-9 + 2^-19) sum|a_i b_i| on handles that may run them (gemmTF32Bound).

const gemmSplitBound = 64

// gemmOperand is a matrix: its values (float64, rounded to the dtype) and its device copy.
type gemmOperand struct {
	vals []float64
	dev  *tensor.Dense
}

// gemmInput uploads vals (rounded to dt) as a device tensor of the given shape; misaligned puts it one
// element into a larger block, so its address is not 16-byte aligned (the scalar-copy kernels).
func gemmInput(t testing.TB, b *cudaops.Backend, dt tensor.Dtype, vals []float64, misaligned bool, shape ...int) gemmOperand {
	t.Helper()
	n := len(vals)
	off := 0
	if misaligned {
		off = 1
	}
	host := make([]float64, n+off)
	for i, v := range vals {
		if dt == tensor.Float32 {
			vals[i] = float64(float32(v))
		}
		host[off+i] = vals[i]
	}
	var ht *tensor.Dense
	if dt == tensor.Float32 {
		f := make([]float32, len(host))
		for i, v := range host {
			f[i] = float32(v)
		}
		ht = tensor.New(tensor.WithShape(len(host)), tensor.WithBacking(f))
	} else {
		ht = tensor.New(tensor.WithShape(len(host)), tensor.WithBacking(host))
	}
	d, err := b.FromHost(ht)
	if err != nil {
		t.Fatal(err)
	}
	v, err := b.View(d, off, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return gemmOperand{vals: vals, dev: v}
}

func uniform(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = 2*rng.Float64() - 1
	}
	return v
}

func hostFloats(t testing.TB, b *cudaops.Backend, d *tensor.Dense) []float64 {
	t.Helper()
	h, err := b.ToHost(d)
	if err != nil {
		t.Fatal(err)
	}
	switch v := h.Data().(type) {
	case []float32:
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	case []float64:
		return append([]float64(nil), v...)
	}
	t.Fatalf("dtype %v", h.Dtype())
	return nil
}

// gemmRef holds the float64 reference of one product: values and, per element, sum |a_i b_i| and n.
type gemmRef struct {
	want, mag []float64
	terms     []int
}

func (r *gemmRef) add(i int, a, b float64) {
	r.want[i] += a * b
	r.mag[i] += math.Abs(a * b)
	r.terms[i]++
}

func newRef(n int) *gemmRef {
	return &gemmRef{want: make([]float64, n), mag: make([]float64, n), terms: make([]int, n)}
}

// gemmCheck compares got with the reference within the derived bound; returns the norm-relative error.
func gemmCheck(t testing.TB, what string, dt tensor.Dtype, tf32 bool, got []float64, r *gemmRef) float64 {
	t.Helper()
	tb := 0.0
	if tf32 {
		tb = math.Ldexp(1, -10)
	}
	return gemmCheckTF32(t, what, dt, tb, got, r)
}

// gemmTF32Bound is the TF32 input term of the bound for products on backend b (0: TF32 off): the
// rounding bound 2^-10, or the truncation bound of the wgmma tiles where the planner may choose them
// (a compute capability 9.0 device, TF32 on, a wgmma variant forced or none).
func gemmTF32Bound(t testing.TB, b *cudaops.Backend, tf32 bool) float64 {
	t.Helper()
	if !tf32 {
		return 0
	}
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	if !d.GemmWGMMA() {
		return math.Ldexp(1, -10)
	}
	force := d.Options().GemmVariant
	if force == "" {
		return math.Ldexp(1, -9) + math.Ldexp(1, -19)
	}
	vs, err := d.GemmVariants()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Name == force && v.WGMMA {
			return math.Ldexp(1, -9) + math.Ldexp(1, -19)
		}
	}
	return math.Ldexp(1, -10)
}

// gemmCheckTF32 is gemmCheck with tf32Term sum|a_i b_i| added to the bound (see gemmTF32Bound).
func gemmCheckTF32(t testing.TB, what string, dt tensor.Dtype, tf32Term float64, got []float64, r *gemmRef) float64 {
	t.Helper()
	u := math.Ldexp(1, -24)
	if dt == tensor.Float64 {
		u = math.Ldexp(1, -53)
	}
	var num, den float64
	bad := 0
	for i, g := range got {
		n := float64(r.terms[i] + gemmSplitBound + 2)
		tol := 1.01*n*u*r.mag[i] + float64(r.terms[i])*math.Ldexp(1, -53)*r.mag[i]
		tol += tf32Term * r.mag[i]
		d := g - r.want[i]
		num += d * d
		den += r.want[i] * r.want[i]
		if !(math.Abs(d) <= tol) {
			if bad < 3 {
				t.Errorf("%s: element %d = %.17g, want %.17g (|diff| %.3g > %.3g)", what, i, g, r.want[i], math.Abs(d), tol)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements outside the bound", what, bad, len(got))
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// guarded runs f twice into fresh NaN-guarded outputs, checks the guards and bitwise equality, and
// returns the first output.
func guarded(t testing.TB, b *cudaops.Backend, what string, dt tensor.Dtype, shape []int, f func(out *tensor.Dense) error) []float64 {
	t.Helper()
	var first []float64
	var firstBits string
	for run := 0; run < 2; run++ {
		out, intact, err := deviceGuard(b)(dt, shape...)
		if err != nil {
			t.Fatal(err)
		}
		if err := f(out); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := b.Synchronize(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := intact(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		h, err := b.ToHost(out)
		if err != nil {
			t.Fatal(err)
		}
		if run == 0 {
			first, firstBits = hostFloats(t, b, out), string(h.Raw)
		} else if string(h.Raw) != firstBits {
			t.Fatalf("%s: second run differs bitwise", what)
		}
	}
	return first
}

// segmentOffsets returns E+1 offsets over n rows: "random" cuts (some experts empty), "one" (every row
// on one expert), "half" (expert E/3 gets half the rows), "capacity" (random cuts of the first 3/4 of
// the rows: offsets[E] < n, the rest dropped), "tails" (expert e has gemmTailRows[e%6] rows past a
// multiple of 256, the largest m-tile, so that every configuration's last m-tiles have few valid rows;
// the rest of the n rows on the last expert).
func segmentOffsetsFor(rng *rand.Rand, E, n int, pattern string) []int32 {
	off := make([]int32, E+1)
	switch pattern {
	case "tails":
		for e := 0; e < E; e++ {
			size := gemmTailRows[e%len(gemmTailRows)] + e%3*256
			if e == E-1 || int(off[e])+size > n {
				size = n - int(off[e])
			}
			off[e+1] = off[e] + int32(size)
		}
		return off
	case "one":
		for e := E/2 + 1; e <= E; e++ {
			off[e] = int32(n)
		}
		return off
	case "half":
		sizes := make([]int, E)
		big := E / 3
		sizes[big] = n / 2
		if E == 1 {
			sizes[0] = n
		}
		rest := n - n/2
		for e, j := 0, 0; e < E && E > 1; e++ {
			if e == big {
				continue
			}
			sizes[e] = rest / (E - 1)
			if j < rest%(E-1) {
				sizes[e]++
			}
			j++
		}
		for e := 0; e < E; e++ {
			off[e+1] = off[e] + int32(sizes[e])
		}
		return off
	}
	end := n
	if pattern == "capacity" {
		end = n - n/4
	}
	cuts := make([]int, E-1)
	for i := range cuts {
		cuts[i] = rng.Intn(end + 1)
	}
	for i := 1; i < len(cuts); i++ {
		for j := i; j > 0 && cuts[j] < cuts[j-1]; j-- {
			cuts[j], cuts[j-1] = cuts[j-1], cuts[j]
		}
	}
	for e := 1; e < E; e++ {
		off[e] = int32(cuts[e-1])
	}
	off[E] = int32(end)
	return off
}

// gemmPlan uploads a plan tensor [2E+1+2N] whose offsets section is off (the other sections unused by
// the grouped products).
func gemmPlan(t testing.TB, b *cudaops.Backend, off []int32, N int) *tensor.Dense {
	t.Helper()
	E := len(off) - 1
	p := make([]int32, ops.PlanLen(N, 1, E))
	for e := 0; e < E; e++ {
		p[e] = off[e+1] - off[e]
	}
	copy(p[E:], off)
	d, err := b.FromHost(tensor.New(tensor.WithShape(len(p)), tensor.WithBacking(p)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// gemmTailRows: valid rows of the last m-tile in the "tails" cases (one; around the 64-row warp tiles
// of the 4x2-warp SIMT tiles, whose warps past the last row skip their multiplications; past half and
// one short of a 256-row tile).
var gemmTailRows = []int{1, 63, 64, 65, 129, 255}

type groupedCase struct {
	E, N, In, Out int
	pattern       string
	misaligned    bool
}

func (c groupedCase) String() string {
	return fmt.Sprintf("E=%d,N=%d,In=%d,Out=%d,%s,misaligned=%t", c.E, c.N, c.In, c.Out, c.pattern, c.misaligned)
}

// runGrouped checks the layer's three grouped products: out = x·W[e] (both storage orders of W),
// dX = dY·W[e]ᵀ, and dW[e] = x_eᵀ·dY_e; also against the CPU backend.
func runGrouped(t *testing.T, b *cudaops.Backend, dt tensor.Dtype, tf32 bool, c groupedCase, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	off := segmentOffsetsFor(rng, c.E, c.N, c.pattern)
	plan := gemmPlan(t, b, off, c.N)
	x := gemmInput(t, b, dt, uniform(rng, c.N*c.In), c.misaligned, c.N, c.In)
	dy := gemmInput(t, b, dt, uniform(rng, c.N*c.Out), false, c.N, c.Out)
	for _, tr := range []bool{false, true} {
		wshape := []int{c.E, c.In, c.Out}
		if tr {
			wshape = []int{c.E, c.Out, c.In}
		}
		w := gemmInput(t, b, dt, uniform(rng, c.E*c.In*c.Out), c.misaligned && tr, wshape...)
		wAt := func(e, i, o int) float64 {
			if tr {
				return w.vals[(e*c.Out+o)*c.In+i]
			}
			return w.vals[(e*c.In+i)*c.Out+o]
		}
		// Forward.
		ref := newRef(c.N * c.Out)
		for e := 0; e < c.E; e++ {
			for r := int(off[e]); r < int(off[e+1]); r++ {
				for o := 0; o < c.Out; o++ {
					for i := 0; i < c.In; i++ {
						ref.add(r*c.Out+o, x.vals[r*c.In+i], wAt(e, i, o))
					}
				}
			}
		}
		what := fmt.Sprintf("%v GroupedMatMul(transposeW=%t) %v", dt, tr, c)
		got := guarded(t, b, what, dt, []int{c.N, c.Out}, func(out *tensor.Dense) error { return b.GroupedMatMul(x.dev, w.dev, plan, tr, out) })
		got, ref = droppedRows(t, what, got, ref, c.Out, int(off[c.E]))
		gemmCheckTF32(t, what, dt, gemmTF32Bound(t, b, tf32), got, ref)
		if !tf32 && int(off[c.E]) == c.N {
			cpuCompare(t, what, dt, got, ref, func() (*tensor.Dense, error) {
				out := tensor.New(tensor.Of(dt), tensor.WithShape(c.N, c.Out))
				return out, ops.CPU().GroupedMatMul(hostOf(t, b, x.dev), hostOf(t, b, w.dev), hostOf(t, b, plan), tr, out)
			})
		}
		// dX = dY · W[e]ᵀ: the same kernel with the other storage order of W.
		ref = newRef(c.N * c.In)
		for e := 0; e < c.E; e++ {
			for r := int(off[e]); r < int(off[e+1]); r++ {
				for i := 0; i < c.In; i++ {
					for o := 0; o < c.Out; o++ {
						ref.add(r*c.In+i, dy.vals[r*c.Out+o], wAt(e, i, o))
					}
				}
			}
		}
		what = fmt.Sprintf("%v GroupedMatMul dX (W stored transposed=%t) %v", dt, tr, c)
		got = guarded(t, b, what, dt, []int{c.N, c.In}, func(out *tensor.Dense) error { return b.GroupedMatMul(dy.dev, w.dev, plan, !tr, out) })
		got, ref = droppedRows(t, what, got, ref, c.In, int(off[c.E]))
		gemmCheckTF32(t, what, dt, gemmTF32Bound(t, b, tf32), got, ref)
	}
	// dW[e] = x_eᵀ · dY_e (and the transposed storage's dW = dY_eᵀ · x_e).
	for _, swap := range []bool{false, true} {
		a, bb, P, Q := x, dy, c.In, c.Out
		if swap {
			a, bb, P, Q = dy, x, c.Out, c.In
		}
		ref := newRef(c.E * P * Q)
		for e := 0; e < c.E; e++ {
			for r := int(off[e]); r < int(off[e+1]); r++ {
				for p := 0; p < P; p++ {
					for q := 0; q < Q; q++ {
						ref.add((e*P+p)*Q+q, a.vals[r*P+p], bb.vals[r*Q+q])
					}
				}
			}
		}
		what := fmt.Sprintf("%v GroupedMatMulGradW(swap=%t) %v", dt, swap, c)
		got := guarded(t, b, what, dt, []int{c.E, P, Q}, func(out *tensor.Dense) error { return b.GroupedMatMulGradW(a.dev, bb.dev, plan, out) })
		gemmCheckTF32(t, what, dt, gemmTF32Bound(t, b, tf32), got, ref)
		if !tf32 && int(off[c.E]) == c.N {
			cpuCompare(t, what, dt, got, ref, func() (*tensor.Dense, error) {
				out := tensor.New(tensor.Of(dt), tensor.WithShape(c.E, P, Q))
				return out, ops.CPU().GroupedMatMulGradW(hostOf(t, b, a.dev), hostOf(t, b, bb.dev), hostOf(t, b, plan), out)
			})
		}
	}
}

// droppedRows checks that the rows from end on (after offsets[E]: dropped by a capacity limit) of a
// grouped product's output are untouched (still the guard's NaN) and returns the output and reference
// without them.
func droppedRows(t *testing.T, what string, got []float64, ref *gemmRef, width, end int) ([]float64, *gemmRef) {
	t.Helper()
	for i := end * width; i < len(got); i++ {
		if !math.IsNaN(got[i]) {
			t.Errorf("%s: element %d (row %d, after offsets[E] = %d) was written: %v", what, i, i/width, end, got[i])
			break
		}
	}
	n := end * width
	return got[:n], &gemmRef{want: ref.want[:n], mag: ref.mag[:n], terms: ref.terms[:n]}
}

func hostOf(t testing.TB, b *cudaops.Backend, d *tensor.Dense) *tensor.Dense {
	t.Helper()
	h, err := b.ToHost(d)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// cpuCompare: the CPU backend (gonum) meets the same bound, so GPU and CPU differ by at most twice it.
func cpuCompare(t *testing.T, what string, dt tensor.Dtype, got []float64, ref *gemmRef, cpu func() (*tensor.Dense, error)) {
	t.Helper()
	out, err := cpu()
	if err != nil {
		t.Fatalf("%s on the CPU: %v", what, err)
	}
	var c []float64
	switch v := out.Data().(type) {
	case []float32:
		for _, x := range v {
			c = append(c, float64(x))
		}
	case []float64:
		c = v
	}
	twice := &gemmRef{want: c, mag: make([]float64, len(c)), terms: ref.terms}
	for i := range c {
		twice.mag[i] = 2 * ref.mag[i]
	}
	gemmCheck(t, what+" vs CPU backend", dt, false, got, twice)
}

// TestCUDAGemmBF16: the bfloat16 products (grouped forward, transposed, weight gradient, router matmul;
// bfloat16 and float32 outputs) against the CPU on every bf16 tile configuration forced, at odd shapes
// (H, F not multiples of 8: the element-copy kernels; 4 experts: multi-tile segments) and aligned ones
// (16-byte copies; 70 experts with the split-K router product). -test.short: the first two shapes. The
// layer-size shapes are TestCUDABF16GEMM's.
func TestCUDAGemmBF16(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	vs, err := d.GemmVariants()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{""}
	for _, v := range vs {
		if v.BF16 {
			names = append(names, v.Name)
		}
	}
	if len(names) == 1 {
		t.Fatal("no bf16 GEMM configurations in gemm.variants")
	}
	shapes := []gemmShape{{T: 97, H: 33, F: 45, E: 4, K: 2}, {T: 200, H: 136, F: 72, E: 8, K: 2}, {T: 64, H: 256, F: 96, E: 70, K: 6}}
	if testing.Short() {
		shapes = shapes[:2]
	}
	for _, n := range names {
		h, err := d.With(cudaops.WithGemmVariant(n))
		if err != nil {
			t.Fatal(err)
		}
		label := n
		if label == "" {
			label = "auto"
		}
		t.Run(label, func(t *testing.T) { checkBF16GEMM(t, cudaops.NewBackend(h), shapes) })
	}
}

// forEachVariant runs f as subtest "auto" (the planner's choice) and then once per variant of the class
// forced (subtests named after the variants; -test.short shortens the case lists, not this), each with
// a backend over a handle of b's device with those options (TF32 as given).
func forEachVariant(t *testing.T, b *cudaops.Backend, double, tf32 bool, f func(t *testing.T, b *cudaops.Backend)) {
	forEachVariantWhere(t, b, double, tf32, func(cudaops.GemmVariant) bool { return true }, f)
}

// forEachVariantWhere is forEachVariant over the configurations keep accepts (and the planner's choice).
func forEachVariantWhere(t *testing.T, b *cudaops.Backend, double, tf32 bool, keep func(cudaops.GemmVariant) bool, f func(t *testing.T, b *cudaops.Backend)) {
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	vs, err := d.GemmVariants()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{""}
	for _, v := range vs {
		if v.Double == double && v.TF32 == tf32 && !v.BF16 && keep(v) {
			names = append(names, v.Name)
		}
	}
	for _, n := range names {
		h, err := d.With(cudaops.WithTF32(tf32), cudaops.WithGemmVariant(n))
		if err != nil {
			t.Fatal(err)
		}
		label := n
		if label == "" {
			label = "auto"
		}
		t.Run(label, func(t *testing.T) { f(t, cudaops.NewBackend(h)) })
	}
}

func groupedCases() []groupedCase {
	cs := []groupedCase{
		{E: 1, N: 45, In: 24, Out: 40, pattern: "random"},
		{E: 4, N: 129, In: 33, Out: 7, pattern: "random"},   // N < 8, K not a multiple of the tile
		{E: 8, N: 300, In: 64, Out: 136, pattern: "half"},   // one expert gets half the rows
		{E: 6, N: 150, In: 20, Out: 24, pattern: "one"},     // all rows on one expert, the rest empty
		{E: 70, N: 520, In: 40, Out: 36, pattern: "random"}, // E > 64, many empty experts
		{E: 300, N: 330, In: 8, Out: 12, pattern: "random"}, // E above the sorted-order limit
		{E: 5, N: 1, In: 17, Out: 9, pattern: "random"},     // one row
		{E: 3, N: 200, In: 128, Out: 128, misaligned: true, pattern: "random"},
		{E: 5, N: 170, In: 40, Out: 72, pattern: "capacity"}, // offsets[E] < N: the last rows dropped
		{E: 7, N: 2200, In: 44, Out: 136, pattern: "tails"},  // last m-tiles of 1 to 255 valid rows
	}
	if testing.Short() {
		cs = []groupedCase{cs[1], cs[2], cs[3], cs[4], cs[7], cs[8], cs[9]}
	}
	return cs
}

// TestCUDAGemmGrouped: grouped forward, dX and dW against float64 loops and the CPU backend, fp32 and
// fp64, every tile configuration.
func TestCUDAGemmGrouped(t *testing.T) {
	b := cudaBackend(t)
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		t.Run(dt.String(), func(t *testing.T) {
			forEachVariant(t, b, dt == tensor.Float64, false, func(t *testing.T, b *cudaops.Backend) {
				for i, c := range groupedCases() {
					runGrouped(t, b, dt, false, c, int64(i))
				}
			})
		})
	}
}

type denseCase struct {
	M, N, K    int
	misaligned bool
}

func denseCases() []denseCase {
	// K = 0 last: a refusal there (a zero-size operand) stops the subtest, and must not hide the others.
	cs := []denseCase{
		{1, 1, 1, false}, {1, 37, 19, false}, {37, 1, 19, false}, {130, 70, 45, false}, {5, 200, 300, false},
		{200, 9, 600, false}, {129, 257, 33, true}, {3, 4, 1000, false},
		{512, 8, 256, false},  // router logits x·Wgᵀ (split reduction)
		{8, 256, 2048, false}, // router weight gradient dlogitsᵀ·x (transposed, split)
		{2048, 64, 8, false},  // router input gradient dlogits·Wg (K = E)
		{257, 255, 260, true},
		{66, 131, 0, false},
	}
	if testing.Short() {
		cs = []denseCase{{1, 37, 19, false}, {130, 70, 45, false}, {200, 9, 600, false}, {8, 256, 2048, false}, {129, 257, 33, true}, {66, 131, 0, false}}
	}
	return cs
}

func runDense(t *testing.T, b *cudaops.Backend, dt tensor.Dtype, tf32 bool, c denseCase, tA, tB bool, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	ashape, bshape := []int{c.M, c.K}, []int{c.K, c.N}
	if tA {
		ashape = []int{c.K, c.M}
	}
	if tB {
		bshape = []int{c.N, c.K}
	}
	a := gemmInput(t, b, dt, uniform(rng, c.M*c.K), c.misaligned, ashape...)
	bm := gemmInput(t, b, dt, uniform(rng, c.K*c.N), false, bshape...)
	ref := newRef(c.M * c.N)
	for m := 0; m < c.M; m++ {
		for n := 0; n < c.N; n++ {
			for k := 0; k < c.K; k++ {
				av, bv := a.vals[m*c.K+k], bm.vals[k*c.N+n]
				if tA {
					av = a.vals[k*c.M+m]
				}
				if tB {
					bv = bm.vals[n*c.K+k]
				}
				ref.add(m*c.N+n, av, bv)
			}
		}
	}
	what := fmt.Sprintf("%v MatMul(transA=%t, transB=%t) M=%d N=%d K=%d misaligned=%t", dt, tA, tB, c.M, c.N, c.K, c.misaligned)
	got := guarded(t, b, what, dt, []int{c.M, c.N}, func(out *tensor.Dense) error { return b.MatMul(a.dev, bm.dev, tA, tB, out) })
	gemmCheckTF32(t, what, dt, gemmTF32Bound(t, b, tf32), got, ref)
}

// TestCUDAGemmDense: MatMul in all four transpose combinations against float64 loops, including the
// router's shapes (skinny N, long reductions split over K, K = E), M = 1, K = 0 and misaligned inputs.
func TestCUDAGemmDense(t *testing.T) {
	b := cudaBackend(t)
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		t.Run(dt.String(), func(t *testing.T) {
			forEachVariant(t, b, dt == tensor.Float64, false, func(t *testing.T, b *cudaops.Backend) {
				for i, c := range denseCases() {
					for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
						runDense(t, b, dt, false, c, tr[0], tr[1], int64(i))
					}
				}
			})
		})
	}
}

// TestCUDAGemmTF32: the TF32 kernels within the TF32 bound, and their accuracy against float64 (logged
// for docs/gemm.md: norm-relative error of a product of uniform [-1,1) inputs).
func TestCUDAGemmTF32(t *testing.T) {
	b := cudaBackend(t)
	d, _ := b.Device()
	forEachVariant(t, b, false, true, func(t *testing.T, b *cudaops.Backend) {
		for i, c := range groupedCases() {
			runGrouped(t, b, tensor.Float32, true, c, int64(i))
		}
		for i, c := range denseCases() {
			runDense(t, b, tensor.Float32, true, c, i%2 == 0, i%3 == 0, int64(i))
		}
	})
	// Accuracy at a layer-like shape: TF32 vs float32 FFMA, both against float64.
	rng := rand.New(rand.NewSource(5))
	const M, N, K = 512, 512, 1024
	a := gemmInput(t, b, tensor.Float32, uniform(rng, M*K), false, M, K)
	bm := gemmInput(t, b, tensor.Float32, uniform(rng, K*N), false, K, N)
	ref := newRef(M * N)
	for m := 0; m < M; m++ {
		for k := 0; k < K; k++ {
			for n := 0; n < N; n++ {
				ref.add(m*N+n, a.vals[m*K+k], bm.vals[k*N+n])
			}
		}
	}
	for _, tf := range []bool{false, true} {
		h, err := d.With(cudaops.WithTF32(tf))
		if err != nil {
			t.Fatal(err)
		}
		b := cudaops.NewBackend(h)
		got := guarded(t, b, "accuracy", tensor.Float32, []int{M, N}, func(out *tensor.Dense) error { return b.MatMul(a.dev, bm.dev, false, false, out) })
		rel := gemmCheckTF32(t, fmt.Sprintf("accuracy tf32=%t", tf), tensor.Float32, gemmTF32Bound(t, b, tf), got, ref)
		maxRel := 0.0
		for i, g := range got {
			maxRel = math.Max(maxRel, math.Abs(g-ref.want[i])/ref.mag[i])
		}
		t.Logf("gemm-accuracy tf32=%t M=N=%d K=%d: ||C-C64||/||C64|| = %.3g, max |err|/sum|ab| = %.3g", tf, M, K, rel, maxRel)
	}
}

// TestCUDAGemmBadOffsets: offsets that are not segments of the rows (offsets[0] != 0, decreasing,
// negative, offsets[E] > rows) raise a device fault at the next synchronisation, and the kernels stay
// inside their buffers. offsets[E] < rows is valid (the "capacity" case of TestCUDAGemmGrouped).
func TestCUDAGemmBadOffsets(t *testing.T) {
	b := cudaBackend(t)
	rng := rand.New(rand.NewSource(9))
	x := gemmInput(t, b, tensor.Float32, uniform(rng, 60*12), false, 60, 12)
	w := gemmInput(t, b, tensor.Float32, uniform(rng, 3*12*10), false, 3, 12, 10)
	for _, off := range [][]int32{{0, 50, 20, 60}, {0, 10, 30, 70}, {5, 10, 20, 60}, {-3, 10, 20, 60}} {
		plan := gemmPlan(t, b, off, 60)
		out, intact, err := deviceGuard(b)(tensor.Float32, 60, 10)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.GroupedMatMul(x.dev, w.dev, plan, false, out); err != nil {
			t.Fatal(err)
		}
		err = b.Synchronize()
		if err == nil || !strings.Contains(err.Error(), "offsets") {
			t.Errorf("offsets %v: Synchronize = %v, want the plan-offsets fault", off, err)
		}
		if err := intact(); err != nil {
			t.Errorf("offsets %v: %v", off, err)
		}
		dW, intact, err := deviceGuard(b)(tensor.Float32, 3, 12, 10)
		if err != nil {
			t.Fatal(err)
		}
		dy := gemmInput(t, b, tensor.Float32, uniform(rng, 60*10), false, 60, 10)
		if err := b.GroupedMatMulGradW(x.dev, dy.dev, plan, dW); err != nil {
			t.Fatal(err)
		}
		if err := b.Synchronize(); err == nil {
			t.Errorf("offsets %v: grad W: no fault", off)
		}
		if err := intact(); err != nil {
			t.Errorf("offsets %v: grad W: %v", off, err)
		}
	}
}

// TestCUDAGemmValidation: invalid operands are refused with the sentinel errors, before any launch.
func TestCUDAGemmValidation(t *testing.T) {
	b := cudaBackend(t)
	rng := rand.New(rand.NewSource(1))
	f32 := func(shape ...int) *tensor.Dense {
		n := 1
		for _, s := range shape {
			n *= s
		}
		return gemmInput(t, b, tensor.Float32, uniform(rng, n), false, shape...).dev
	}
	f64 := func(shape ...int) *tensor.Dense {
		n := 1
		for _, s := range shape {
			n *= s
		}
		return gemmInput(t, b, tensor.Float64, uniform(rng, n), false, shape...).dev
	}
	plan := gemmPlan(t, b, []int32{0, 3, 6}, 6)
	a, bm := f32(4, 5), f32(5, 3)
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"matmul K mismatch", b.MatMul(a, f32(4, 3), false, false, f32(4, 3)), ops.ErrShape},
		{"matmul out shape", b.MatMul(a, bm, false, false, f32(3, 4)), ops.ErrShape},
		{"matmul dtype", b.MatMul(a, f64(5, 3), false, false, f32(4, 3)), ops.ErrDtype},
		{"matmul rank", b.MatMul(f32(20), bm, false, false, f32(4, 3)), ops.ErrShape},
		{"matmul nil out", b.MatMul(f32(4, 4), f32(4, 4), false, false, nil), ops.ErrShape},
		{"grouped W rank", b.GroupedMatMul(f32(6, 5), f32(5, 3), plan, false, f32(6, 3)), ops.ErrShape},
		{"grouped In mismatch", b.GroupedMatMul(f32(6, 5), f32(2, 4, 3), plan, false, f32(6, 3)), ops.ErrShape},
		{"grouped out shape", b.GroupedMatMul(f32(6, 5), f32(2, 5, 3), plan, false, f32(6, 4)), ops.ErrShape},
		{"grouped plan length", b.GroupedMatMul(f32(5, 5), f32(2, 5, 3), plan, false, f32(5, 3)), ops.ErrShape},
		{"grouped dtype", b.GroupedMatMul(f32(6, 5), f64(2, 5, 3), plan, false, f32(6, 3)), ops.ErrDtype},
		{"grad W shape", b.GroupedMatMulGradW(f32(6, 5), f32(6, 3), plan, f32(2, 3, 5)), ops.ErrShape},
		{"grad W rows", b.GroupedMatMulGradW(f32(6, 5), f32(5, 3), plan, f32(2, 5, 3)), ops.ErrShape},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
	// An output that aliases an input.
	sq := f32(4, 4)
	if err := b.MatMul(sq, f32(4, 4), false, false, sq); !errors.Is(err, ops.ErrUnsupported) {
		t.Errorf("in-place matmul: %v", err)
	}
	if err := b.Synchronize(); err != nil {
		t.Fatal(err)
	}
}

// TestCUDAGemmModules logs how long loading each GEMM module took (run after the other GEMM tests: the
// driver's JIT on first use, which every process pays once per configuration it uses).
func TestCUDAGemmModules(t *testing.T) {
	b := cudaBackend(t)
	d, _ := b.Device()
	for name, dur := range d.GemmModuleLoadTimes() {
		t.Logf("gemm-jit %s %.0f ms", name, dur.Seconds()*1e3)
	}
}
