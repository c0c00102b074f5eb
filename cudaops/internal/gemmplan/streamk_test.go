package gemmplan

import (
	"strings"
	"testing"
)

// TestPlanStreamK: stream-K where Options.StreamK asks for it, and on its own only where skAuto allows
// it and the gain is large (dY·Wᵀ at T=4096 on the RS tile, measured 8.5 % faster on the H200; not at
// T=16384, not the forward, not the small experts' 128x64 tiles, not TF32 or float64); only for the
// variants and problems that run it (never with a forced split, bfloat16, SwiGLU or the wgmma
// variants), with its launches: gemm_sk_<layout> over the device's
// resident CTAs (at most the tile bound), then gemm_sk_fixup with the same arguments (grid: skFixParts
// CTAs per stream-K CTA), and a
// workspace of two partial tiles per CTA.
func TestPlanStreamK(t *testing.T) {
	vs := loadVariants(t)
	sm90 := h200
	sm90.SM90a = true
	few := Problem{Mode: GroupRows, TransB: true, N: 1024, K: 16384, E: 1, Rows: 128, A: 256, B: 512, C: 1024}
	fwd, dx := mixtral(4096, 1024, 3584, 8, 2)
	_, dx16 := mixtral(16384, 1024, 3584, 8, 2)
	sfwd, sdx := mixtral(4096, 2048, 1408, 64, 6)
	on := Options{StreamK: true}
	for _, c := range []struct {
		name string
		p    Problem
		o    Options
		tgt  Target
		sk   bool
	}{
		{"few rows", few, Options{}, h200, false},
		{"dX T=4096", dx, Options{}, sm90, true},
		{"dX T=4096 TF32", dx, Options{TF32: true}, h200, false},
		{"dX T=16384", dx16, Options{}, h200, false},
		{"forward T=4096", fwd, Options{}, h200, false},
		{"small experts dX", sdx, Options{}, h200, false},
		{"small experts forward", sfwd, Options{}, h200, false},
		{"few rows forced", few, on, h200, true},
		{"dX T=4096 forced", dx, on, sm90, true},
		{"forward forced", fwd, on, h200, true},
		{"forward forced on the RS tile", fwd, Options{StreamK: true, Force: "f32_256x128x8_rs_s2"}, h200, true},
		{"TF32 forced (mma.sync)", dx, Options{StreamK: true, TF32: true}, h200, true},
		{"forced split wins", dx, Options{StreamK: true, Splits: 2}, h200, false},
		{"wgmma forced", dx, Options{StreamK: true, TF32: true, Force: "wg_tf32_128x256x32_s4"}, sm90, false},
		{"float64", Problem{Mode: GroupRows, Double: true, TransB: true, N: 1024, K: 16384, E: 1, Rows: 128, A: 256, B: 512, C: 1024}, on, h200, true},
		{"float64 dX T=4096", Problem{Mode: GroupRows, Double: true, TransB: true, N: 1024, K: 3584, E: 8, Rows: 8192, A: 256, B: 512, C: 1024}, Options{}, h200, false},
		{"bfloat16", Problem{Mode: GroupRows, BF16: true, TransB: true, N: 1024, K: 3584, E: 8, Rows: 8192, A: 256, B: 512, C: 1024}, on, h200, false},
		{"weight gradient", Problem{Mode: GroupRed, TransA: true, M: 1024, N: 3584, E: 8, Rows: 8192, A: 256, B: 512, C: 1024}, on, h200, false},
	} {
		pl, err := Make(c.p, c.tgt, c.o, vs)
		if err != nil {
			t.Fatal(err)
		}
		if c.name == "dX T=4096" && pl.Variant.Name != "f32_256x128x8_rs_s2" {
			t.Errorf("%s: %s, want the RS tile", c.name, pl.Variant.Name)
		}
		if pl.StreamK != c.sk {
			t.Errorf("%s: %s stream-K %t, want %t", c.name, pl.Variant.Name, pl.StreamK, c.sk)
			continue
		}
		if !pl.StreamK {
			for _, l := range pl.Launches(1 << 30) {
				if strings.HasPrefix(l.Kernel, "gemm_sk") {
					t.Errorf("%s: launch %s without stream-K", c.name, l.Kernel)
				}
			}
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
		if fix.Kernel != "gemm_sk_fixup" || fix.Grid != w*skFixParts || fix.Block != v.Threads() || fix.Smem != 0 || len(fix.Args) != len(main.Args) {
			t.Fatalf("%s: fix-up %+v", c.name, fix)
		}
		for i := range main.Args {
			if fix.Args[i] != main.Args[i] {
				t.Errorf("%s: fix-up argument %d = %d, main %d", c.name, i, fix.Args[i], main.Args[i])
			}
		}
	}
}
