package gemmplan

import "testing"

// mixtral returns the grouped-rows products of one MoE layer's experts at T tokens (rows = T·k): the
// forward x·W1 ([Rows,H]·[H,F]) and dX = dY·W1ᵀ ([Rows,F]·[F,H], W1 stored [E,H,F]: TransB).
func mixtral(T, H, F, E, k int) (fwd, dx Problem) {
	fwd = Problem{Mode: GroupRows, N: F, K: H, E: E, Rows: T * k, A: 256, B: 512, C: 1024}
	dx = Problem{Mode: GroupRows, TransB: true, N: H, K: F, E: E, Rows: T * k, A: 256, B: 512, C: 1024}
	return fwd, dx
}

// TestPlanGroupedSplit: the cost model's grouped-rows splits on the real gemm.variants. A grid that
// leaves most of the device idle (one expert of 128 rows, K = 16384) is split and promises less time than
// the best unsplit plan; the Mixtral shapes (H=1024, F=3584, E=8, k=2: dX = dY·Wᵀ at T=4096, where a
// split measured slower on the H200, the forward products, dX at T=16384) and the small-expert shape
// (H=2048, F=1408, E=64, k=6) are not split; nor are the weight gradients (grouped reductions),
// bfloat16 and SwiGLU products, even with Options.Splits.
func TestPlanGroupedSplit(t *testing.T) {
	vs := loadVariants(t)
	sm90 := h200
	sm90.SM90a = true
	for _, o := range []Options{{}, {TF32: true}} {
		for _, tgt := range []Target{h200, sm90} {
			fwd, dx := mixtral(4096, 1024, 3584, 8, 2)
			few := Problem{Mode: GroupRows, TransB: true, N: 1024, K: 16384, E: 1, Rows: 128, A: 256, B: 512, C: 1024}
			pl, err := Make(few, tgt, o, vs)
			if err != nil {
				t.Fatal(err)
			}
			unsplit, err := Make(few, tgt, Options{TF32: o.TF32, Splits: 1}, vs)
			if err != nil {
				t.Fatal(err)
			}
			if pl.Splits < 2 || unsplit.Splits != 1 {
				t.Errorf("tf32=%t sm90a=%t 128 rows, K=16384: %s split %d (forced 1: %d)", o.TF32, tgt.SM90a, pl.Variant.Name, pl.Splits, unsplit.Splits)
			}
			c, cu := cost(few, tgt, pl.Variant, o), cost(few, tgt, unsplit.Variant, Options{TF32: o.TF32, Splits: 1})
			if !(c < (1-splitMargin)*cu) {
				t.Errorf("128 rows, K=16384: split cost %.4g, unsplit %.4g", c, cu)
			}
			t.Logf("tf32=%t sm90a=%t 128 rows, K=16384: %s, %d splits of %d (cost %.4g; unsplit %s %.4g)", o.TF32, tgt.SM90a, pl.Variant.Name, pl.Splits, pl.KChunk, c, unsplit.Variant.Name, cu)
			fwd16, dx16 := mixtral(16384, 1024, 3584, 8, 2)
			sfwd, sdx := mixtral(4096, 2048, 1408, 64, 6)
			for _, c := range []struct {
				name string
				p    Problem
			}{{"forward T=4096", fwd}, {"dX T=4096", dx}, {"forward T=16384", fwd16}, {"dX T=16384", dx16}, {"small experts forward", sfwd}, {"small experts dX", sdx}} {
				pl, err := Make(c.p, tgt, o, vs)
				if err != nil {
					t.Fatal(err)
				}
				if pl.Splits != 1 {
					t.Errorf("tf32=%t sm90a=%t %s: %s split %d", o.TF32, tgt.SM90a, c.name, pl.Variant.Name, pl.Splits)
				}
			}
			if o.TF32 {
				continue
			}
			// fp32 at T=16384: the RS tile, unsplit (its 1056 CTAs are 8 whole waves).
			pl, _ = Make(dx16, tgt, o, vs)
			if pl.Variant.Name != "f32_256x128x8_rs_s2" {
				t.Errorf("dX T=16384 on %s", pl.Variant.Name)
			}
		}
	}
	// Never split nor stream-K: weight gradients, bfloat16, SwiGLU (also when forced).
	dw := Problem{Mode: GroupRed, TransA: true, M: 1024, N: 3584, E: 8, Rows: 8192, A: 256, B: 512, C: 1024}
	_, dx := mixtral(4096, 1024, 3584, 8, 2)
	bf := dx
	bf.BF16 = true
	sw := Problem{Mode: GroupRows, SwiGLU: true, N: 3584, K: 1024, E: 8, Rows: 8192, A: 256, B: 512, B2: 768, C: 1024}
	for _, p := range []Problem{dw, bf, sw} {
		for _, o := range []Options{{}, {Splits: 2}, {StreamK: true}} {
			pl, err := Make(p, h200, o, vs)
			if err != nil {
				t.Fatal(err)
			}
			if pl.Splits != 1 || pl.StreamK || pl.Workspace != 0 || len(pl.Launches(1<<30)) != 1 {
				t.Errorf("%v bf16=%t swiglu=%t (forced %d): %d splits, workspace %d", p.Mode, p.BF16, p.SwiGLU, o.Splits, pl.Splits, pl.Workspace)
			}
		}
	}
}

// TestPlanGroupedSplitLaunches: a forced split writes the partials and sums them with gemm_reduce_rows:
// grid, chunk, workspace (wgmma: the copies after the partials), the reduction's arguments; the
// workspace bound limits the split.
func TestPlanGroupedSplitLaunches(t *testing.T) {
	vs := loadVariants(t)
	p := Problem{Mode: GroupRows, TransB: true, N: 1000, K: 332, E: 5, Rows: 777, A: 256, B: 512, C: 1024, Offsets: 2048}
	for _, c := range []struct {
		variant     string
		tf32, sm90a bool
		s, want     int
	}{{"f32_128x64x16_s3", false, false, 3, 3}, {"f32_256x128x8_rs_s2", false, false, 2, 2}, {"f32_128x64x16_s3", false, false, 64, 21}, {"wg_tf32_128x256x32_s4", true, true, 4, 4}} {
		tgt := h200
		tgt.SM90a = c.sm90a
		pl, err := Make(p, tgt, Options{Force: c.variant, TF32: c.tf32, Splits: c.s}, vs)
		if err != nil {
			t.Fatal(err)
		}
		v := pl.Variant
		if v.Name != c.variant || pl.Splits != c.want || pl.KChunk%v.BK != 0 || (pl.Splits-1)*pl.KChunk >= p.K || pl.Splits*pl.KChunk < p.K {
			t.Fatalf("%s forced %d: %s %d splits of %d", c.variant, c.s, v.Name, pl.Splits, pl.KChunk)
		}
		ls := pl.Launches(1 << 30)
		main, red := ls[len(ls)-2], ls[len(ls)-1]
		a := args(t, main)
		if a["splits"] != int64(pl.Splits) || a["kChunk"] != int64(pl.KChunk) || int64(main.Grid) != a["mTiles"]*a["nTiles"]*int64(pl.Splits) ||
			a["W"] != 1<<30 || a["C"] != 1<<30 || a["flags"]&flagVecC != 0 {
			t.Errorf("%s: main launch %s grid %d args %v", c.variant, main.Kernel, main.Grid, a)
		}
		part := int64(pl.Splits) * int64(p.Rows) * int64(p.N) * 4
		if len(pl.Copies) > 0 && pl.Copies[0].Offset < part || len(pl.Copies) == 0 && pl.Workspace != part {
			t.Errorf("%s: workspace %d, copies %+v, partials %d bytes", c.variant, pl.Workspace, pl.Copies, part)
		}
		want := []uint64{1 << 30, 1024, 2048, uint64(pl.Splits), uint64(p.Rows), uint64(p.N), uint64(p.E), uint64(p.N), 1, 1}
		if red.Kernel != "gemm_reduce_rows" || len(red.Args) != len(want) || red.Block != 256 || red.Grid < 1 {
			t.Fatalf("%s: reduction %+v", c.variant, red)
		}
		for i := range want {
			if red.Args[i] != want[i] {
				t.Errorf("%s: reduction argument %d = %d, want %d", c.variant, i, red.Args[i], want[i])
			}
		}
	}
	// Odd N: the scalar reduction.
	q := p
	q.N = 999
	pl, _ := Make(q, h200, Options{Force: "f32_128x64x16_s3", Splits: 2}, vs)
	if red := pl.Launches(1 << 30)[1]; red.Args[9] != 0 {
		t.Errorf("N=999: vector reduction")
	}
	// The workspace bound: 4 splits of [65536, 1024] float32 partials (256 MiB each) do not fit 512 MiB.
	big := Problem{Mode: GroupRows, TransB: true, N: 1024, K: 3584, E: 8, Rows: 65536, A: 256, B: 512, C: 1024}
	pl, _ = Make(big, h200, Options{Force: "f32_128x64x16_s3", Splits: 4}, vs)
	if pl.Splits != 2 || pl.Workspace > maxWorkspace {
		t.Errorf("rows 65536 forced 4: %d splits, workspace %d", pl.Splits, pl.Workspace)
	}
}
