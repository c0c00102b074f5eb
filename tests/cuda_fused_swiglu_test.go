//go:build expertrt_cuda

package tests

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// TestCUDAGroupedSwiGLU: the fused kernel (gemm_swiglu, every configuration of the class and the
// planner's choice; float32 SIMT and TF32, float64) against the unfused path on the same device: the
// kept products equal GroupedMatMul's bit for bit (the same per-element accumulation order), h equals
// SwiGLU of them within two float32 ulps (float64: 1e-15) and is counted bit for bit (logged), guards
// around h, gate and up untouched, rows after offsets[E] unwritten, h the same bits with and without the
// kept products and across runs.
func TestCUDAGroupedSwiGLU(t *testing.T) {
	b := cudaBackend(t)
	for _, k := range []struct {
		dt   tensor.Dtype
		tf32 bool
	}{{tensor.Float32, false}, {tensor.Float32, true}, {tensor.Float64, false}} {
		t.Run(fmt.Sprintf("%v/tf32=%t", k.dt, k.tf32), func(t *testing.T) {
			// The wgmma modules have no SwiGLU kernels: with one forced, the fused product runs on the
			// planner's mma.sync tile while GroupedMatMul runs on the forced wgmma tile, so the bitwise
			// comparison of the kept products does not apply (TestCUDAGemmWGMMA covers those tiles).
			noWG := func(v cudaops.GemmVariant) bool { return !v.WGMMA }
			forEachVariantWhere(t, b, k.dt == tensor.Float64, k.tf32, noWG, func(t *testing.T, b *cudaops.Backend) {
				for i, c := range swigluGPUCases() {
					runGroupedSwiGLU(t, b, k.dt, c, int64(i+1))
				}
			})
		})
	}
}

func swigluGPUCases() []groupedCase {
	cs := []groupedCase{
		{E: 4, N: 129, In: 33, Out: 45, pattern: "random"},
		{E: 8, N: 300, In: 64, Out: 136, pattern: "half"},
		{E: 5, N: 150, In: 20, Out: 24, pattern: "one"},
		{E: 4, N: 170, In: 24, Out: 36, pattern: "capacity"},
		{E: 8, N: 600, In: 128, Out: 200, pattern: "random", misaligned: true},
		{E: 70, N: 260, In: 16, Out: 7, pattern: "random"},
	}
	if testing.Short() {
		return cs[:4]
	}
	return cs
}

func runGroupedSwiGLU(t *testing.T, b *cudaops.Backend, dt tensor.Dtype, c groupedCase, seed int64) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	off := segmentOffsetsFor(rng, c.E, c.N, c.pattern)
	x := gemmInput(t, b, dt, uniform(rng, c.N*c.In), c.misaligned, c.N, c.In)
	w1v := uniform(rng, c.E*c.In*c.Out)
	for i := range w1v {
		w1v[i] *= 4 // gate values reach both tails of the sigmoid
	}
	w1 := gemmInput(t, b, dt, w1v, c.misaligned, c.E, c.In, c.Out)
	w3 := gemmInput(t, b, dt, uniform(rng, c.E*c.In*c.Out), c.misaligned, c.E, c.In, c.Out)
	plan := gemmPlan(t, b, off, c.N)
	shape := []int{c.N, c.Out}
	what := fmt.Sprintf("%v %v", dt, c)

	// The unfused path: two grouped products and SwiGLU.
	gate := guarded(t, b, what+" gate", dt, shape, func(out *tensor.Dense) error { return b.GroupedMatMul(x.dev, w1.dev, plan, false, out) })
	up := guarded(t, b, what+" up", dt, shape, func(out *tensor.Dense) error { return b.GroupedMatMul(x.dev, w3.dev, plan, false, out) })

	guard := deviceGuard(b)
	runFused := func(keep bool) (h, g, u []float64, hraw string) {
		outs := make([]*tensor.Dense, 3)
		intact := make([]func() error, 3)
		for i := range outs {
			var err error
			if outs[i], intact[i], err = guard(dt, shape...); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		if keep {
			err = b.GroupedSwiGLU(x.dev, w1.dev, w3.dev, plan, outs[0], outs[1], outs[2])
		} else {
			err = b.GroupedSwiGLU(x.dev, w1.dev, w3.dev, plan, outs[0], nil, nil)
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := b.Synchronize(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for i, f := range intact {
			if err := f(); err != nil {
				t.Fatalf("%s: output %d: %v", what, i, err)
			}
		}
		hh, err := b.ToHost(outs[0])
		if err != nil {
			t.Fatal(err)
		}
		return hostFloats(t, b, outs[0]), hostFloats(t, b, outs[1]), hostFloats(t, b, outs[2]), string(hh.Raw)
	}
	h, g, u, hraw := runFused(true)
	kept := int(off[c.E]) * c.Out // rows after offsets[E] are written by neither path
	for name, p := range map[string][2][]float64{"gate": {g, gate}, "up": {u, up}} {
		for i := 0; i < kept; i++ {
			if math.Float64bits(p[0][i]) != math.Float64bits(p[1][i]) {
				t.Fatalf("%s: fused %s[%d] = %v, GroupedMatMul %v", what, name, i, p[0][i], p[1][i])
			}
		}
	}
	// SwiGLU of the products on the device, as the unfused layer runs it.
	gd, ud := devFrom(t, b, dt, gate, shape), devFrom(t, b, dt, up, shape)
	href := guarded(t, b, what+" swiglu", dt, shape, func(out *tensor.Dense) error { return b.SwiGLU(gd, ud, out) })
	ulp := math.Ldexp(1, -23)
	if dt == tensor.Float64 {
		ulp = 1e-15
	}
	diff := 0
	for i := 0; i < kept; i++ {
		if math.Float64bits(h[i]) != math.Float64bits(href[i]) {
			diff++
		}
		if !(math.Abs(h[i]-href[i]) <= 2*ulp*math.Abs(href[i])) {
			t.Fatalf("%s: h[%d] = %v, SwiGLU of the products %v (gate %v, up %v)", what, i, h[i], href[i], gate[i], up[i])
		}
	}
	t.Logf("%s: h differs from the unfused SwiGLU in %d of %d elements (bits)", what, diff, kept)
	if h2, _, _, raw := runFused(false); raw != hraw {
		t.Fatalf("%s: h without the kept products differs bitwise (%v vs %v first)", what, h2[0], h[0])
	}
	if _, _, _, raw := runFused(true); raw != hraw {
		t.Fatalf("%s: a second run differs bitwise", what)
	}
}

// devFrom copies host values to a new device tensor of dtype dt.
func devFrom(t testing.TB, b *cudaops.Backend, dt tensor.Dtype, vals []float64, shape []int) *tensor.Dense {
	t.Helper()
	var ht *tensor.Dense
	if dt == tensor.Float32 {
		f := make([]float32, len(vals))
		for i, v := range vals {
			f[i] = float32(v)
		}
		ht = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
	} else {
		ht = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), vals...)))
	}
	d, err := b.FromHost(ht)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCUDAGroupedSwiGLUValidation: the fused kernel's errors name the problem and wrap the sentinels.
func TestCUDAGroupedSwiGLUValidation(t *testing.T) {
	b := cudaBackend(t)
	mk := func(dt tensor.Dtype, shape ...int) *tensor.Dense {
		d, err := b.New(dt, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	x, w, h := mk(tensor.Float32, 8, 4), mk(tensor.Float32, 2, 4, 6), mk(tensor.Float32, 8, 6)
	plan := gemmPlan(t, b, []int32{0, 4, 8}, 8)
	for _, c := range []struct {
		name     string
		run      func() error
		sentinel error
	}{
		{"w3 shape", func() error { return b.GroupedSwiGLU(x, w, mk(tensor.Float32, 2, 4, 5), plan, h, nil, nil) }, ops.ErrShape},
		{"h shape", func() error { return b.GroupedSwiGLU(x, w, w, plan, mk(tensor.Float32, 8, 5), nil, nil) }, ops.ErrShape},
		{"gate dtype", func() error { return b.GroupedSwiGLU(x, w, w, plan, h, mk(tensor.Float64, 8, 6), nil) }, ops.ErrDtype},
		{"x dtype", func() error { return b.GroupedSwiGLU(mk(tensor.Int32, 8, 4), w, w, plan, h, nil, nil) }, ops.ErrDtype},
		{"In", func() error { return b.GroupedSwiGLU(mk(tensor.Float32, 8, 3), w, w, plan, h, nil, nil) }, ops.ErrShape},
		{"gate overlaps x", func() error {
			base := mk(tensor.Float32, 100)
			xs, err := b.View(base, 0, 8, 4)
			if err != nil {
				return err
			}
			g, err := b.View(base, 16, 8, 6)
			if err != nil {
				return err
			}
			return b.GroupedSwiGLU(xs, w, w, plan, h, g, nil)
		}, ops.ErrUnsupported},
		{"plan", func() error { return b.GroupedSwiGLU(x, w, w, mk(tensor.Int32, 3), h, nil, nil) }, ops.ErrShape},
	} {
		err := c.run()
		if err == nil || !errors.Is(err, c.sentinel) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.sentinel)
		}
	}
}

// TestCUDASwiGLUFusedLayer: the layer with Config.FusedSwiGLU on the GPU (one gemm_swiglu launch for the
// gate and up products) gives the unfused layer's cost, output and gradients: the products are the same
// bits, h may differ from the elementwise SwiGLU kernel's in the last bit (logged per tensor), so the
// tolerances are normwise: float32 1e-5, float64 1e-12, mixed bfloat16 1e-2 (one bfloat16 rounding of h).
func TestCUDASwiGLUFusedLayer(t *testing.T) {
	checkFusedSwiGLULayer(t, cudaBackend(t), func(dt tensor.Dtype) float64 {
		switch dt {
		case tensor.Float64:
			return 1e-12
		case ops.BFloat16:
			return 1e-2
		}
		return 1e-5
	}, []fusedCase{
		{dt: tensor.Float32, tokens: 97, hidden: 33, ffn: 45, exps: 5},
		{dt: tensor.Float32, tokens: 1024, hidden: 256, ffn: 512, exps: 8},
		{dt: tensor.Float32, tokens: 512, hidden: 64, ffn: 128, exps: 8, capacity: 100},
		{dt: tensor.Float64, tokens: 256, hidden: 64, ffn: 96, exps: 4},
		{dt: ops.BFloat16, tokens: 1024, hidden: 256, ffn: 512, exps: 8},
	})
}
