package cudaops

import (
	"errors"
	"fmt"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// TestGrids: the grid-striding launches cover every item with one block at least and at most 8
// resident blocks per multiprocessor; vector launches count 16-byte vectors; reductions split into a
// number of parts fixed by the size alone.
func TestGrids(t *testing.T) {
	for _, sms := range []int{1, 108, 132} {
		for _, items := range []int{0, 1, 7, 8, 9, 100000, 1 << 30} {
			g := warpGridFor(sms, items)
			if g.block != 256 || g.grid < 1 || g.grid > max(sms*8, 1) || (g.grid < sms*8 && g.grid*8 < items) {
				t.Errorf("warpGridFor(%d, %d) = %+v", sms, items, g)
			}
			f := flatGridFor(sms, int64(items))
			if f.block != 256 || f.grid < 1 || f.grid > max(sms*8, 1) || (f.grid < sms*8 && f.grid*256 < items) {
				t.Errorf("flatGridFor(%d, %d) = %+v", sms, items, f)
			}
		}
	}
	for _, c := range []struct {
		n    int64
		vec  bool
		dt   tensor.Dtype
		want int64
	}{{10, false, tensor.Float32, 10}, {10, true, tensor.Float32, 3}, {8, true, tensor.Float32, 2}, {9, true, tensor.Float64, 5}, {0, true, tensor.Float64, 0}} {
		if got := vecItems(c.n, c.vec, c.dt); got != c.want {
			t.Errorf("vecItems(%d, %t, %v) = %d, want %d", c.n, c.vec, c.dt, got, c.want)
		}
	}
	for _, c := range []struct {
		n, per, maxP int64
		want         int
	}{{0, 2048, 256, 1}, {1, 2048, 256, 1}, {2048, 2048, 256, 1}, {2049, 2048, 256, 2}, {1 << 40, 2048, 256, 256}} {
		if got := reductionParts(c.n, c.per, c.maxP); got != c.want {
			t.Errorf("reductionParts(%d, %d, %d) = %d, want %d", c.n, c.per, c.maxP, got, c.want)
		}
	}
}

// TestSigmoidLaunch: route_sigmoid's blocks hold each warp's (E + G) scores and G flags within 48 KiB
// and the device's limit, with as many warps (up to 8) as fit; too many experts are ErrUnsupported.
func TestSigmoidLaunch(t *testing.T) {
	g, err := sigmoidLaunchFor(tensor.Float32, 4096, 256, 8, 132, 48<<10)
	if err != nil || g != (launchCfg{grid: 512, block: 256, smem: 8 * ((256+8)*4 + 8*4)}) {
		t.Errorf("DeepSeek-V3 shape: %+v, %v", g, err)
	}
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for _, E := range []int{1, 8, 256, 1024, 3000, 6000, 12000} {
			for _, G := range []int{0, 1, 8} {
				for _, maxSmem := range []int{16 << 10, 48 << 10} {
					g, err := sigmoidLaunchFor(dt, 1000, E, G, 132, maxSmem)
					GG := G
					if GG <= 1 {
						GG = 0
					}
					per := (E+GG)*int(dt.Size()) + GG*4
					if per > min(48<<10, maxSmem) {
						if !errors.Is(err, ops.ErrUnsupported) {
							t.Errorf("%v E=%d G=%d smem %d: %+v, %v, want ErrUnsupported", dt, E, G, maxSmem, g, err)
						}
						continue
					}
					w := g.block / 32
					if err != nil || g.smem != w*per || g.smem > min(48<<10, maxSmem) || w < 1 || w > 8 ||
						(w < 8 && 2*w*per <= min(48<<10, maxSmem)) || g.grid != (1000+w-1)/w {
						t.Errorf("%v E=%d G=%d smem %d: %+v, %v", dt, E, G, maxSmem, g, err)
					}
				}
			}
		}
	}
	if g, err := sigmoidLaunchFor(tensor.Float32, 1<<20, 64, 0, 10, 48<<10); err != nil || g.grid != 160 {
		t.Errorf("grid cap: %+v, %v (want 16 blocks per multiprocessor)", g, err)
	}
}

// TestRouteWeightsSmem: route_weights_grad's float section starts 8-byte aligned after the indices.
func TestRouteWeightsSmem(t *testing.T) {
	for _, K := range []int{1, 2, 3, 8} {
		if got := routeWeightsSmem(256, K); got != 8*K*4 {
			t.Errorf("routeWeightsSmem(256, %d) = %d", K, got)
		}
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			ints := (8*K + 1) &^ 1 * 4
			if got := routeWeightsGradSmem(256, K, dt); got != ints+8*K*int(dt.Size()) || ints%8 != 0 || ints < 8*K*4 {
				t.Errorf("routeWeightsGradSmem(256, %d, %v) = %d", K, dt, got)
			}
		}
	}
}

// TestPlanShapes: the plan's size limits, the one-pass plan's tiling (every slot covered, every block
// resident, few cells to read after the barrier, the preferred block count when it suffices) and the
// three-launch plan's chunks.
func TestPlanShapes(t *testing.T) {
	for _, c := range []struct {
		T, K, E int
		want    error
	}{{1 << 29, 2, 8, nil}, {1<<29 + 1, 2, 8, ops.ErrShape}, {8, 2, 12288, nil}, {8, 2, 12289, ops.ErrUnsupported}} {
		if err := checkPlanSize(c.T, c.K, c.E); !errors.Is(err, c.want) && !(err == nil && c.want == nil) {
			t.Errorf("checkPlanSize(%d, %d, %d) = %v, want %v", c.T, c.K, c.E, err, c.want)
		}
	}
	// An occupancy calculator: 2048 threads and 228 KiB of shared memory per multiprocessor.
	perSM := func(block, smem int) (int, error) { return min(2048/block, (228<<10)/(smem+128+1024)), nil }
	for _, sms := range []int{8, 132} {
		for _, n := range []int{1, 100, 8192, 32768, 131072, 1 << 20, 1 << 24} {
			for _, E := range []int{1, 16, 64, 256, 1024, 2000, 3000} {
				for _, prefer := range []int{0, 4} {
					g, r, ok, err := onePassShape(n, E, sms, 48<<10, prefer, perSM)
					if err != nil {
						t.Fatal(err)
					}
					name := fmt.Sprintf("sms=%d n=%d E=%d prefer=%d", sms, n, E, prefer)
					if !ok {
						if E <= 256 && n <= 32768 {
							t.Errorf("%s: no one-pass plan", name)
						}
						continue
					}
					w := g.block / 32
					per, _ := perSM(g.block, g.smem)
					if g.grid*w*32*r < n || (g.grid-1)*w*32*r >= n || g.grid > per*sms || g.grid*E > onePassMaxCells ||
						r < 1 || r > onePassMaxRounds || g.smem != (w+2)*E*4 || g.smem+128 > 48<<10 || w < 4 || w > onePassMaxWarps {
						t.Errorf("%s: %+v rounds %d", name, g, r)
					}
				}
			}
		}
	}
	if g, r, ok, _ := onePassShape(8192, 16, 132, 48<<10, 0, perSM); !ok || g.grid != 16 || r != 1 || g.block != 512 {
		t.Errorf("n=8192 E=16: %+v rounds %d ok %t, want 16 blocks of 16 warps, one round", g, r, ok)
	}
	if g, r, ok, _ := onePassShape(8192, 16, 132, 48<<10, 4, perSM); !ok || g.grid != 4 || r != 4 {
		t.Errorf("n=8192 E=16 prefer 4 blocks: %+v rounds %d ok %t", g, r, ok)
	}
	if _, _, ok, _ := onePassShape(100, 3000, 132, 48<<10, 0, perSM); ok {
		t.Errorf("E=3000: one-pass counters cannot fit 48 KiB")
	}
	if _, _, ok, _ := onePassShape(100, 16, 132, 1024, 0, perSM); ok {
		t.Errorf("a device with 1 KiB of shared memory per block got a one-pass plan")
	}
	boom := errors.New("occupancy")
	if _, _, _, err := onePassShape(100, 16, 132, 48<<10, 0, func(int, int) (int, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Errorf("the occupancy error was not returned: %v", err)
	}
	for _, n := range []int{1, 255, 256, 257, 100000, 1 << 30} {
		for _, E := range []int{1, 64, 1024, 12288} {
			g, chunk, chunks := multiPassShape(n, E)
			wpb := g.block / 32
			if chunk%256 != 0 || chunk < 256 || chunks*chunk < n || (chunks-1)*chunk >= n || chunks > 129 ||
				g.smem != wpb*E*4 || g.smem > 48<<10 || g.grid*wpb < chunks || (g.grid-1)*wpb >= chunks {
				t.Errorf("multiPassShape(%d, %d) = %+v chunk %d chunks %d", n, E, g, chunk, chunks)
			}
		}
	}
}
