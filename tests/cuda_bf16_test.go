//go:build expertrt_cuda

package tests

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// GPU tests of mixed precision at layer sizes (checks in bf16_parity_test.go). TestCUDAConformance/BF16
// covers every rule of ops.MixedPrecisionBackend at small sizes.

// TestCUDABF16Kernels: bf16.cu against the CPU reference at Mixtral-like sizes (vector paths) and odd
// ones (scalar paths, H not a multiple of 8).
func TestCUDABF16Kernels(t *testing.T) {
	b := cudaBackend(t)
	checkBF16Kernels(t, b, []permShape{{4096, 8, 2, 1024}, {1000, 16, 4, 1030}, {333, 64, 6, 2048}}, 1<<20+5, 8192*1792+3)
}

// TestCUDABF16GEMM: the bfloat16 grouped and dense products at the Mixtral-like shape (H=1024, F=3584,
// E=8, K=2; T=2048 keeps the CPU reference short) and a small-expert one, on the GEMM family's bf16
// tensor-core kernels (Bf16Tile).
func TestCUDABF16GEMM(t *testing.T) {
	checkBF16GEMM(t, cudaBackend(t), []gemmShape{{2048, 1024, 3584, 8, 2}, {512, 2048, 1408, 64, 6}})
}

// TestCUDABF16Training: mixed-precision Adam training of the layer task on the GPU against the CPU.
func TestCUDABF16Training(t *testing.T) { checkBF16Training(t, cudaBackend(t)) }

// TestCUDABF16PermuteSpecials: the vector permutations' fast paths (bf16.cu, "bfloat16 pairs") hand
// zeros, subnormals, tiny and huge products and sums to the double path; this feeds them such values
// (no infinities or NaNs: the GPU's NaNs are canonical) and products and sums at bfloat16 rounding ties,
// and requires the CPU reference's bits (dispatch, combine) or one float32 unit (weight gradients).
// cudaops/internal/bf16emu's TestPermuteSpecials runs the same constructions with NaNs and infinities.
func TestCUDABF16PermuteSpecials(t *testing.T) {
	b := cudaBackend(t)
	bf := ops.BFloat16
	bits := func(u uint16) float64 { return float64(math.Float32frombits(uint32(u) << 16)) }
	pool := []uint16{0x0000, 0x8000, 0x0001, 0x807f, 0x0040, 0x007f, 0x0080, 0x8080, 0x7f7f, 0xff7f, 0x3f80, 0xbf80,
		0x3f81, 0x3f7f, 0x1f80, 0x6000, 0x2000, 0x0c80, 0x0480, 0x7000}
	wpool := []float64{0, math.Copysign(0, -1), 1, 1 + 1.0/256, 1 + 1.0/256 + 0x1p-23, 1 + 1.0/256 - 0x1p-23, 0.5 + 1.0/512,
		1e-40, 0x1p-100, 0x1p-126, 3e38, 0x1p100, 0.75}
	for _, c := range []permShape{{2048, 8, 2, 1024}, {300, 16, 4, 1032}, {129, 64, 1, 2048}} {
		name := fmt.Sprintf("T=%d,E=%d,K=%d,H=%d", c.T, c.E, c.K, c.H)
		rng := rand.New(rand.NewSource(int64(c.T)))
		idx := make([]int32, c.T*c.K)
		for tk := 0; tk < c.T; tk++ {
			for j, e := range rng.Perm(c.E)[:c.K] {
				idx[tk*c.K+j] = int32(e)
			}
		}
		plan := tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(ops.PlanLen(c.T, c.K, c.E)))
		if err := ops.CPU().Plan(tensor.New(tensor.WithShape(c.T, c.K), tensor.WithBacking(idx)), c.E, plan); err != nil {
			t.Fatal(err)
		}
		n := c.T * c.K
		draw := func(m int) []float64 {
			v := randRows(rng, m)
			for i := range v {
				if rng.Intn(3) == 0 {
					v[i] = bits(pool[rng.Intn(len(pool))])
				}
			}
			return v
		}
		x, ye, w := draw(c.T*c.H), draw(n*c.H), make([]float64, n)
		for i := range w {
			if w[i] = rng.NormFloat64(); rng.Intn(2) == 0 {
				w[i] = wpool[rng.Intn(len(wpool))]
			}
		}
		// Products at a tie decided by the float32 remainder (odd tokens, slot 0: just above 257/258 times
		// 1 + 2^-7) or beyond it (every fourth token, slot 1: 32264 * 2^-149 times 1 + 2^-6 is the
		// subnormal tie 2^-134 plus 2^-152); sums of a tie and a tiny value (even tokens' rows).
		up := float64(math.Nextafter32(float32(257.0/258.0), 2))
		rowOf := plan.Data().([]int32)[2*c.E+1:]
		for tk := 0; tk < c.T; tk++ {
			switch {
			case tk%2 == 1:
				w[tk*c.K] = up
				for h := 0; h < c.H; h += 2 {
					x[tk*c.H+h] = bits([]uint16{0x3f81, 0xbf81}[(h/2)%2])
				}
				if tk%4 == 3 && c.K >= 2 {
					w[tk*c.K+1] = float64(math.Float32frombits(32264))
					for h := 1; h < c.H; h += 2 {
						x[tk*c.H+h] = bits(0x3f82)
					}
				}
			case tk%4 == 2 && c.K >= 2:
				// dy = x: zeros and negative subnormals against rows of 2^97 (the weight gradient's fast
				// path takes normal numbers only).
				for h := 0; h < c.H; h++ {
					x[tk*c.H+h] = bits([]uint16{0x0000, 0x8001}[h%2])
				}
				for j := 0; j < c.K; j++ {
					row := int(rowOf[tk*c.K+j])
					for h := 0; h < c.H; h++ {
						ye[row*c.H+h] = bits(0x7000)
					}
				}
			case c.K >= 2:
				w[tk*c.K] = 1 + 1.0/256
				r0, r1 := int(rowOf[tk*c.K]), int(rowOf[tk*c.K+1])
				for h := 0; h < c.H; h++ {
					ye[r0*c.H+h], ye[r1*c.H+h] = 1, bits([]uint16{0x1f80, 0x2b80, 0xab80}[h%3])
				}
			}
		}
		x16, ye16, w32 := bf16Host(bf, x, c.T, c.H), bf16Host(bf, ye, n, c.H), bf16Host(tensor.Float32, w, c.T, c.K)
		for _, wt := range []*tensor.Dense{nil, w32} {
			cpu, gpu := bothBackends(t, b, bf, []int{n, c.H}, []*tensor.Dense{x16, wt, plan}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
				return be.Dispatch(in[0], in[1], in[2], out)
			})
			sameRaw(t, fmt.Sprintf("Dispatch (weighted=%t) %s", wt != nil, name), cpu, gpu)
			for _, outDt := range []tensor.Dtype{bf, tensor.Float32} {
				cpu, gpu := bothBackends(t, b, outDt, []int{c.T, c.H}, []*tensor.Dense{ye16, wt, plan}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
					return be.Combine(in[0], in[1], in[2], out)
				})
				sameRaw(t, fmt.Sprintf("Combine into %v (weighted=%t) %s", outDt, wt != nil, name), cpu, gpu)
			}
		}
		cpu, gpu := bothBackends(t, b, tensor.Float32, []int{c.T, c.K}, []*tensor.Dense{x16, ye16, plan}, func(be ops.Backend, in []*tensor.Dense, out *tensor.Dense) error {
			return be.CombineGradWeights(in[0], in[1], in[2], out)
		})
		// The CPU sums each dot product in element order, the GPU per lane and then across the warp: both
		// in float64, so they may differ by the summation error bound (H-1)·2^-53·Σ|dy·ye| before the one
		// rounding to float32. That bound matters only where huge terms (the pool's ±3.4e38 on both
		// sides) cancel; everywhere else it is far below one float32 unit.
		cv, gv := cpu.Data().([]float32), gpu.Data().([]float32)
		dyH, yeH := x16.Data().([]ops.BF16), ye16.Data().([]ops.BF16)
		for i := range cv {
			tk, r := i/c.K, int(rowOf[i])
			sumAbs := 0.0
			for h := 0; h < c.H; h++ {
				sumAbs += math.Abs(dyH[tk*c.H+h].Float64() * yeH[r*c.H+h].Float64())
			}
			tol := 0x1p-23*math.Abs(float64(cv[i])) + float64(c.H)*0x1p-52*sumAbs + 1e-30
			// A float64 sum beyond the float32 range rounds to an infinity: compare an infinity as the
			// largest float32 of its sign, the nearest value that can round to it.
			fin := func(v float32) float64 {
				return math.Max(-math.MaxFloat32, math.Min(math.MaxFloat32, float64(v)))
			}
			if d := math.Abs(fin(cv[i]) - fin(gv[i])); d > tol {
				t.Errorf("CombineGradWeights %s: element %d: CPU %v, GPU %v (tolerance %.3g)", name, i, cv[i], gv[i], tol)
				break
			}
		}
	}
}
