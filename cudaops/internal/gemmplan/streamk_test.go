package gemmplan

import (
	"strings"
	"testing"
)

// TestPlanStreamK: the cost model's stream-K choice on the real gemm.variants. Grids whose last wave
// leaves much of the device idle go stream-K (one expert of 128 rows with K = 16384; dY·Wᵀ at the
// Mixtral shape, T=4096, whose tiles are 2.2 waves of the RS tile and 2.75 of 128x64); dY·Wᵀ at
// T=16384 (8 whole waves of the RS tile) and the forward products do not; TF32 on sm_90a keeps the wgmma
// tile (no stream-K module). Forcing follows Options.StreamK where stream-K can run, and never overrides a
// forced split, bfloat16, SwiGLU or the wgmma variants.
func TestPlanStreamK(t *testing.T) {
	vs := loadVariants(t)
	sm90 := h200
	sm90.SM90a = true
	few := Problem{Mode: GroupRows, TransB: true, N: 1024, K: 16384, E: 1, Rows: 128, A: 256, B: 512, C: 1024}
	fwd, dx := mixtral(4096, 1024, 3584, 8, 2)
	fwd16, dx16 := mixtral(16384, 1024, 3584, 8, 2)
	for _, c := range []struct {
		name string
		p    Problem
		o    Options
		tgt  Target
		sk   bool
	}{
		{"few rows", few, Options{}, h200, true},
		{"dX T=4096", dx, Options{}, h200, true},
		{"dX T=4096 sm90a", dx, Options{}, sm90, true},
		{"dX T=16384", dx16, Options{}, h200, false},
		{"forward T=4096", fwd, Options{}, h200, false},
		{"forward T=16384", fwd16, Options{}, h200, false},
		{"dX T=4096 TF32 sm90a", dx, Options{TF32: true}, sm90, false},
		{"dX T=4096 off", dx, Options{StreamK: -1}, h200, false},
		{"forward forced", fwd, Options{StreamK: 1}, h200, true},
		{"forward forced on the RS tile", fwd, Options{StreamK: 1, Force: "f32_256x128x8_rs_s2"}, h200, true},
		{"forced split wins", dx, Options{StreamK: 1, Splits: 2}, h200, false},
		{"wgmma forced", dx, Options{StreamK: 1, TF32: true, Force: "wg_tf32_128x256x32_s4"}, sm90, false},
		{"float64", Problem{Mode: GroupRows, Double: true, TransB: true, N: 1024, K: 16384, E: 1, Rows: 128, A: 256, B: 512, C: 1024}, Options{}, h200, true},
	} {
		pl, err := Make(c.p, c.tgt, c.o, vs)
		if err != nil {
			t.Fatal(err)
		}
		if pl.StreamK != c.sk {
			t.Errorf("%s: %s stream-K %t, want %t", c.name, pl.Variant.Name, pl.StreamK, c.sk)
			continue
		}
		t.Logf("%s: %s stream-K %t, %d CTAs, cost %.4g", c.name, pl.Variant.Name, pl.StreamK, pl.CTAs, cost(c.p, c.tgt, pl.Variant, c.o))
		if !pl.StreamK {
			continue
		}
		v := pl.Variant
		w := min(c.tgt.SMs*v.MinBlocks, (ceilDiv(c.p.Rows, v.BM)+c.p.E-1)*ceilDiv(c.p.N, v.BN))
		if pl.Splits != 1 || pl.CTAs != w || pl.Workspace != int64(w)*2*int64(v.BM*v.BN)*int64(v.ElemBytes()) {
			t.Errorf("%s: %d splits, %d CTAs (want %d), workspace %d", c.name, pl.Splits, pl.CTAs, w, pl.Workspace)
		}
		ls := pl.Launches(1 << 30)
		if len(ls) != 2 {
			t.Fatalf("%s: %d launches, want the main kernel and gemm_sk_fixup", c.name, len(ls))
		}
		main, fix := ls[0], ls[1]
		a := args(t, main)
		if !strings.HasPrefix(main.Kernel, "gemm_sk_n") {
			t.Errorf("%s: main kernel %s", c.name, main.Kernel)
		}
		if a["mode"] != modeRowsSK || a["splits"] != int64(w) || a["W"] != 1<<30 || a["C"] != 1024 || main.Grid != w {
			t.Errorf("%s: main launch %s grid %d args %v", c.name, main.Kernel, main.Grid, a)
		}
		if fix.Kernel != "gemm_sk_fixup" || fix.Grid != w || fix.Block != v.Threads() || fix.Smem != 0 || len(fix.Args) != len(main.Args) {
			t.Fatalf("%s: fix-up %+v", c.name, fix)
		}
		for i := range main.Args {
			if fix.Args[i] != main.Args[i] {
				t.Errorf("%s: fix-up argument %d = %d, main %d", c.name, i, fix.Args[i], main.Args[i])
			}
		}
	}
	// Where stream-K is chosen it promises skMargin less than the best split.
	for _, p := range []Problem{few, dx} {
		pl, _ := Make(p, h200, Options{}, vs)
		s, chunk := splitRows(p, h200, pl.Variant, Options{})
		if sk, split := skCost(p, h200, pl.Variant), rowsCost(p, h200, pl.Variant, s, chunk); !(sk < (1-skMargin)*split) {
			t.Errorf("%v: stream-K cost %.4g, split %.4g", p, sk, split)
		}
	}
}
