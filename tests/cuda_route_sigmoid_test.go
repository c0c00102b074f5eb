//go:build expertrt_cuda

package tests

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/internal/floats"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// sigmoidRouteCase is one shape and configuration of TestCUDASigmoidRouteShapes.
type sigmoidRouteCase struct {
	T, E    int
	cfg     ops.RouteConfig
	bias    bool
	pattern int // 0: uniform logits; 1: logits and bias on a coarse grid (many ties); 2: saturated (|l| up to 60, so s = 1 or s ~ 0 tie); 3: with -Inf logits
}

func (c sigmoidRouteCase) String() string {
	return fmt.Sprintf("T=%d,E=%d,%v,bias=%t,pattern=%d", c.T, c.E, c.cfg, c.bias, c.pattern)
}

// sigmoidRouteCases: route_sigmoid's register path (E <= 256 with nv = the least multiple... see
// route.cu's sigmoid_regs_per_lane: E not a multiple of 32, every group size, G*P lanes below 32, TG = 1
// and TG = G, K = 1 and K = every kept expert, K = 32) and its shared-memory path (E > 256, K > 32, a
// group size no register count divides), at random and at the edges.
func sigmoidRouteCases(rng *rand.Rand) []sigmoidRouteCase {
	var cs []sigmoidRouteCase
	add := func(T, E, K, G, TG int, renorm bool, scale float64, exclude, bias bool, pattern int) {
		cfg := ops.RouteConfig{K: K, Scoring: ops.Sigmoid, Renormalize: renorm, Scale: scale, Groups: G, TopKGroups: TG}
		if exclude {
			cfg.GroupMask = ops.GroupMaskExclude
		}
		if cfg.Validate(E) != nil {
			return
		}
		cs = append(cs, sigmoidRouteCase{T: T, E: E, cfg: cfg, bias: bias, pattern: pattern})
	}
	// Edges, each with every pattern.
	for p := 0; p < 4; p++ {
		add(64, 256, 8, 8, 4, true, 2.5, false, true, p)  // DeepSeek-V3
		add(64, 256, 8, 8, 4, false, 1, true, false, p)   // exclude mask
		add(64, 256, 32, 8, 8, true, 1, false, true, p)   // TG = G, K = 32 (register path's largest K)
		add(64, 256, 33, 8, 8, true, 1, false, true, p)   // K > 32: shared-memory path
		add(64, 256, 256, 1, 0, true, 1, false, true, p)  // K = E, shared-memory path
		add(64, 32, 32, 1, 0, true, 1, false, true, p)    // K = E = 32, register path
		add(64, 16, 16, 8, 8, true, 1, true, true, p)     // groups of 2, K = E
		add(64, 16, 2, 8, 1, false, 1, false, true, p)    // TG = 1
		add(64, 64, 16, 32, 8, true, 1, false, true, p)   // 32 groups of 2: one lane per group
		add(64, 100, 7, 1, 0, true, 1.5, false, true, p)  // E not a multiple of 32, no groups
		add(64, 100, 7, 4, 2, true, 1, false, true, p)    // group size 25: no nv <= 8 divides it
		add(64, 160, 6, 8, 3, true, 16, false, true, p)   // group size 20, nv = 5, P = 4
		add(64, 96, 6, 3, 2, false, 1, true, true, p)     // group size 32, nv = 4, P = 8
		add(64, 200, 8, 8, 4, true, 1, false, true, p)    // group size 25, nv = 25 > 8: shared path
		add(64, 255, 5, 5, 2, true, 1, false, true, p)    // group size 51, nv = 17 > 8: shared path
		add(64, 384, 8, 1, 0, true, 2.5, false, true, p)  // Kimi-K2's E: shared path
		add(64, 512, 8, 8, 4, true, 2.5, false, true, p)  // shared path
		add(64, 2, 1, 1, 0, false, 1, false, false, p)    // E = 2
		add(64, 3, 3, 1, 0, true, 1, false, true, p)      // E = 3, K = E
		add(64, 240, 8, 120, 60, true, 1, false, true, p) // groups of 2, nv = 8, P = 1... 8 does not divide 2: shared
		add(64, 30, 4, 15, 7, true, 1, true, true, p)     // groups of 2, nv = 1 (E <= 32), P = 2, 30 lanes
		if !testing.Short() {
			add(20000, 256, 8, 8, 4, true, 2.5, false, true, p) // more tokens than warps: the grid-stride loop
		}
		add(3, 256, 8, 8, 4, true, 2.5, false, true, p) // fewer tokens than a block's warps
		add(64, 128, 8, 1, 0, true, 1, false, false, p) // Qwen3-MoE
		add(64, 64, 6, 1, 0, true, 1, false, true, p)   // nv = 2
		add(64, 250, 8, 1, 0, true, 1, false, true, p)  // nv = 8, E not a multiple of 4: scalar loads
		add(64, 252, 8, 1, 0, true, 1, false, true, p)  // nv = 8, last lane 4 experts: vector loads
		add(64, 36, 8, 1, 0, true, 1, false, true, p)   // nv = 2, lanes 18.. empty
		add(64, 256, 8, 2, 1, true, 1, false, true, p)  // group size 128, P = 16
		add(64, 256, 8, 4, 3, true, 1, true, true, p)   // group size 64, P = 8
		add(64, 256, 8, 16, 5, true, 1, false, true, p) // group size 16, P = 2
		add(64, 256, 8, 32, 9, true, 1, false, true, p) // group size 8, P = 1
		add(64, 192, 8, 12, 5, true, 1, false, true, p) // group size 16, nv = 8, P = 2, 24 lanes
		add(64, 224, 8, 7, 3, true, 1, false, true, p)  // group size 32, nv = 8, P = 4, 28 lanes
	}
	// Random shapes.
	experts := []int{2, 4, 6, 8, 12, 16, 20, 24, 31, 32, 33, 40, 48, 60, 63, 64, 72, 96, 100, 120, 128, 144, 160, 192, 200, 224, 240, 250, 256, 300}
	random := 160
	if testing.Short() {
		random = 40
	}
	for n := 0; n < random; n++ {
		E := experts[rng.Intn(len(experts))]
		var divs []int
		for d := 2; d <= E/2; d++ {
			if E%d == 0 {
				divs = append(divs, d)
			}
		}
		G, TG := 0, 0
		if len(divs) > 0 && rng.Intn(4) != 0 {
			G = divs[rng.Intn(len(divs))]
			TG = 1 + rng.Intn(G)
		}
		maxK := E
		if G > 1 {
			maxK = TG * (E / G)
		}
		K := 1 + rng.Intn(min(maxK, 40))
		scale := []float64{0, 1, 2.5}[rng.Intn(3)]
		add(1+rng.Intn(300), E, K, G, TG, rng.Intn(2) == 0, scale, rng.Intn(2) == 0, rng.Intn(3) != 0, rng.Intn(4))
	}
	return cs
}

// sigmoidRouteInputs: logits [T,E] and bias [E] (nil without one) of a case, on the host.
func sigmoidRouteInputs(rng *rand.Rand, dt tensor.Dtype, c sigmoidRouteCase) (logits, bias *tensor.Dense) {
	l := make([]float64, c.T*c.E)
	for i := range l {
		switch c.pattern {
		case 0:
			l[i] = 6 * (2*rng.Float64() - 1)
		case 1:
			l[i] = float64(rng.Intn(5)-2) / 2 // equal logits: equal scores, and group scores that tie
		case 2:
			l[i] = 60 * (2*rng.Float64() - 1) // sigmoid rounds to 1 (and, in float32, nearly to 0): ties
		case 3:
			l[i] = 4 * (2*rng.Float64() - 1)
			if rng.Intn(5) == 0 {
				l[i] = math.Inf(-1)
			}
		}
	}
	logits = floats.Dense(dt, l, c.T, c.E)
	if c.bias {
		b := make([]float64, c.E)
		for e := range b {
			if c.pattern == 1 {
				b[e] = float64(rng.Intn(3)) / 4
			} else {
				b[e] = 0.1 * (2*rng.Float64() - 1)
			}
		}
		bias = floats.Dense(dt, b, c.E)
	}
	return logits, bias
}

// TestCUDASigmoidRouteShapes compares the GPU's sigmoid router (route_sigmoid: its register path and
// its shared-memory path) with the CPU's on many shapes and configurations, with ties: the indices
// exactly (the fused router and RouteIndicesBias), the fused weights bitwise equal to RouteWeights'
// (route_weights), and within rounding of the CPU's weights (both compute them in double). -test.short
// runs the edge cases and 40 random ones (for the sanitizers).
func TestCUDASigmoidRouteShapes(t *testing.T) {
	b := cudaSyncBackend(t)
	cpu := ops.CPU()
	rng := rand.New(rand.NewSource(7))
	cases := sigmoidRouteCases(rng)
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for n, c := range cases {
			hl, hb := sigmoidRouteInputs(rng, dt, c)
			name := fmt.Sprintf("%v/%d/%v", dt, n, c)
			K := c.cfg.K
			must := func(what string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s: %s: %v", name, what, err)
				}
			}
			// CPU reference.
			cIdx, err := cpu.New(tensor.Int32, c.T, K)
			must("cpu New", err)
			cW, err := cpu.New(dt, c.T, K)
			must("cpu New", err)
			must("cpu RouteIndicesBias", cpu.RouteIndicesBias(hl, hb, c.cfg, cIdx))
			must("cpu RouteWeights", cpu.RouteWeights(hl, cIdx, c.cfg, cW))
			// GPU: fused, indices only, weights of given indices.
			dl, err := b.FromHost(hl)
			must("FromHost", err)
			var db *tensor.Dense
			if hb != nil {
				db, err = b.FromHost(hb)
				must("FromHost", err)
			}
			gIdx, err := b.New(tensor.Int32, c.T, K)
			must("New", err)
			gW, err := b.New(dt, c.T, K)
			must("New", err)
			must("RouteBiased", b.RouteBiased(dl, db, c.cfg, gIdx, gW))
			gIdx2, err := b.New(tensor.Int32, c.T, K)
			must("New", err)
			must("RouteIndicesBias", b.RouteIndicesBias(dl, db, c.cfg, gIdx2))
			gW2, err := b.New(dt, c.T, K)
			must("New", err)
			must("RouteWeights", b.RouteWeights(dl, gIdx, c.cfg, gW2))
			host := func(d *tensor.Dense) *tensor.Dense {
				h, err := b.ToHost(d)
				must("ToHost", err)
				return h
			}
			hIdx, hIdx2, hW, hW2 := host(gIdx), host(gIdx2), host(gW), host(gW2)
			gi, gi2, ci := hIdx.Data().([]int32), hIdx2.Data().([]int32), cIdx.Data().([]int32)
			for i := range ci {
				if gi[i] != ci[i] || gi2[i] != ci[i] {
					t.Errorf("%s: idx[%d,%d]: fused %d, indices-only %d, CPU %d", name, i/K, i%K, gi[i], gi2[i], ci[i])
					break
				}
			}
			if string(rawBytes(hW)) != string(rawBytes(hW2)) {
				t.Errorf("%s: the fused router's weights differ from RouteWeights'", name)
			}
			gw, _ := floats.Of(hW)
			cw, _ := floats.Of(cW)
			tol := 2e-7
			if dt == tensor.Float64 {
				tol = 1e-14
			}
			for i := range cw {
				if e := math.Abs(gw[i]-cw[i]) / math.Max(1, math.Abs(cw[i])); !(e <= tol) {
					t.Errorf("%s: w[%d,%d] = %v, CPU %v", name, i/K, i%K, gw[i], cw[i])
					break
				}
			}
		}
	}
}

// TestCUDASigmoidRouteFaults: a NaN logit or an infinite bias entry is ops.ErrNaN on the GPU (as on the
// CPU) on both of route_sigmoid's paths, and the indices written stay in range.
func TestCUDASigmoidRouteFaults(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for _, c := range []sigmoidRouteCase{
		{T: 40, E: 256, cfg: ops.RouteConfig{K: 8, Scoring: ops.Sigmoid, Renormalize: true, Groups: 8, TopKGroups: 4}, bias: true},
		{T: 40, E: 100, cfg: ops.RouteConfig{K: 7, Scoring: ops.Sigmoid, Renormalize: true}, bias: true},
		{T: 40, E: 200, cfg: ops.RouteConfig{K: 8, Scoring: ops.Sigmoid, Groups: 8, TopKGroups: 4, GroupMask: ops.GroupMaskExclude}, bias: true},
	} {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			for _, what := range []string{"nan-logit", "nan-row", "inf-bias"} {
				t.Run(fmt.Sprintf("%v/%v/%s", dt, c, what), func(t *testing.T) {
					b := cudaSyncBackend(t)
					hl, hb := sigmoidRouteInputs(rng, dt, c)
					lv, _ := floats.Of(hl)
					bv, _ := floats.Of(hb)
					switch what {
					case "nan-logit":
						lv[5*c.E+3] = math.NaN()
					case "nan-row":
						for e := 0; e < c.E; e++ {
							lv[7*c.E+e] = math.NaN()
						}
					case "inf-bias":
						bv[c.E-1] = math.Inf(1)
						bv[0] = math.Inf(-1)
					}
					hl, hb = floats.Dense(dt, lv, c.T, c.E), floats.Dense(dt, bv, c.E)
					dl, err := b.FromHost(hl)
					if err != nil {
						t.Fatal(err)
					}
					db, err := b.FromHost(hb)
					if err != nil {
						t.Fatal(err)
					}
					idx, err := b.New(tensor.Int32, c.T, c.cfg.K)
					if err != nil {
						t.Fatal(err)
					}
					w, err := b.New(dt, c.T, c.cfg.K)
					if err != nil {
						t.Fatal(err)
					}
					err = b.RouteBiased(dl, db, c.cfg, idx, w)
					if !errors.Is(err, ops.ErrNaN) {
						t.Fatalf("got %v, want an error wrapping ErrNaN", err)
					}
					h, err := b.ToHost(idx)
					if err != nil && !errors.Is(err, ops.ErrNaN) {
						t.Fatal(err)
					}
					if h != nil {
						for i, e := range h.Data().([]int32) {
							if e < 0 || int(e) >= c.E {
								t.Fatalf("idx[%d] = %d out of [0,%d)", i, e, c.E)
							}
						}
					}
				})
			}
		}
	}
}
