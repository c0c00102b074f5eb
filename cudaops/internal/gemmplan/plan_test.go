package gemmplan

import (
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func loadVariants(t *testing.T) []Variant {
	t.Helper()
	src, err := os.ReadFile("../../gemm.variants")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := ParseVariants(string(src))
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

var h200 = Target{SMs: 132, MaxSmem: 227 << 10}

func TestParseVariants(t *testing.T) {
	vs := loadVariants(t)
	classes := map[string]int{}
	for _, v := range vs {
		classes[v.class()]++
		if v.Smem() > h200.MaxSmem {
			t.Errorf("%s needs %d bytes of shared memory", v.Name, v.Smem())
		}
		if v.Threads()%32 != 0 || v.Threads() > 1024 {
			t.Errorf("%s: %d threads", v.Name, v.Threads())
		}
	}
	for _, c := range []string{"f32", "f64", "tf32", "bf16"} {
		if classes[c] == 0 {
			t.Errorf("no %s variant", c)
		}
	}
	// The shared-memory formula mirrors SimtTile::SMEM / Tf32Tile::SMEM.
	v := Variant{BM: 128, BN: 128, BK: 16, Stages: 3, WarpsM: 2, WarpsN: 4, TM: 8, TN: 8}
	if got := v.Smem(); got != 3*16*(132+132)*4 {
		t.Errorf("SIMT smem %d", got)
	}
	v.KC = true // k-contiguous rows of BK+4 are the larger layout here
	if got := v.Smem(); got != 3*2*128*20*4 {
		t.Errorf("SIMT KC smem %d", got)
	}
	v.KC, v.TF32 = false, true // k-contiguous rows of BK+4: 128*20 > 16*136
	if got := v.Smem(); got != 3*2*128*20*4 {
		t.Errorf("TF32 smem %d", got)
	}
	v.BN = 32 // B: k-major rows of BN+8 are the larger: 16*40 > 32*20
	if got := v.Smem(); got != 3*(128*20+16*40)*4 {
		t.Errorf("TF32 BN=32 smem %d", got)
	}
	v = Variant{BM: 128, BN: 64, BK: 32, Stages: 4, WarpsM: 2, WarpsN: 2, BF16: true} // Bf16Tile::SMEM
	if got := v.Smem(); got != 4*(128*40+64*40)*2 {
		t.Errorf("BF16 smem %d", got)
	}
	for _, bad := range []string{
		"x 1 -DGEMM_T=bf16 -DGEMM_TF32=0 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=32 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=2 -DGEMM_STAGES=3 -DGEMM_MINB=2",                // no GEMM_BF16=1
		"x 1 -DGEMM_T=float -DGEMM_TF32=0 -DGEMM_BF16=1 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=32 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=2 -DGEMM_STAGES=3 -DGEMM_MINB=2", // float with BF16
		"x 1 -DGEMM_T=bf16 -DGEMM_TF32=0 -DGEMM_BF16=1 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=16 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=2 -DGEMM_STAGES=3 -DGEMM_MINB=2",  // BK 16
		"x 1 -DGEMM_T=bf16 -DGEMM_TF32=1 -DGEMM_BF16=1 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=32 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=2 -DGEMM_STAGES=3 -DGEMM_MINB=2",  // TF32 and BF16
		"x 1 -DGEMM_T=float",
		"x 0 -DGEMM_T=float -DGEMM_TF32=0 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=8 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=4 -DGEMM_TM=8 -DGEMM_TN=8 -DGEMM_STAGES=3 -DGEMM_MINB=2",
		"x 1 -DGEMM_T=half -DGEMM_TF32=0 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=8 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=4 -DGEMM_TM=8 -DGEMM_TN=8 -DGEMM_STAGES=3 -DGEMM_MINB=2",
		"x 1 -DGEMM_T=float -DGEMM_TF32=0 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=8 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=4 -DGEMM_TM=8 -DGEMM_TN=4 -DGEMM_STAGES=3 -DGEMM_MINB=2",
		"x 1 -DGEMM_T=float -DGEMM_TF32=0 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=12 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=4 -DGEMM_TM=8 -DGEMM_TN=8 -DGEMM_STAGES=3 -DGEMM_MINB=2",
		"x 1 -DGEMM_T=float -DGEMM_TF32=0 -DGEMM_KC=2 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=8 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=4 -DGEMM_TM=8 -DGEMM_TN=8 -DGEMM_STAGES=3 -DGEMM_MINB=2",
		"x 1 -DGEMM_T=float -DGEMM_TF32=0 -DGEMM_KC=1 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=8 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=4 -DGEMM_TM=4 -DGEMM_TN=16 -DGEMM_STAGES=3 -DGEMM_MINB=2",
		"x 1 -DGEMM_T=float -DGEMM_TF32=1 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=8 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=2 -DGEMM_STAGES=3 -DGEMM_MINB=2",
		"x 1 -DGEMM_T=float -DGEMM_TF32=1 -DGEMM_BM=128 -DGEMM_BN=64 -DGEMM_BK=16 -DGEMM_WARPS_M=1 -DGEMM_WARPS_N=8 -DGEMM_STAGES=3 -DGEMM_MINB=2",
		"",
	} {
		if _, err := ParseVariants(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func args(t *testing.T, l Launch) map[string]int64 {
	t.Helper()
	names := []string{"A", "B", "C", "W", "offsets", "fault", "lda", "ldb", "ldcR", "ldcC", "strideB", "strideC",
		"M", "N", "K", "E", "rows", "mode", "splits", "kChunk", "mTiles", "nTiles", "flags"}
	if len(l.Args) != len(names) {
		t.Fatalf("%d args", len(l.Args))
	}
	m := map[string]int64{}
	for i, n := range names {
		if i >= 12 {
			m[n] = int64(int32(uint32(l.Args[i])))
		} else {
			m[n] = int64(l.Args[i])
		}
	}
	return m
}

func TestPlanDense(t *testing.T) {
	vs := loadVariants(t)
	// Large square product: one launch, no split, 16-byte copies on aligned operands.
	p := Problem{Mode: Dense, M: 4096, N: 4096, K: 4096, A: 1 << 20, B: 2 << 20, C: 3 << 20}
	pl, err := Make(p, h200, Options{}, vs)
	if err != nil {
		t.Fatal(err)
	}
	ls := pl.Launches(0)
	if len(ls) != 1 || pl.Splits != 1 || pl.Workspace != 0 || pl.Swapped {
		t.Fatalf("plan %+v launches %d", pl, len(ls))
	}
	a := args(t, ls[0])
	v := pl.Variant
	if ls[0].Grid != (4096/v.BM)*(4096/v.BN) || a["mTiles"]*a["nTiles"] != int64(ls[0].Grid) || a["flags"]&flagVecC == 0 {
		t.Errorf("grid %d args %v", ls[0].Grid, a)
	}
	if !strings.HasSuffix(ls[0].Kernel, "_v16") || ls[0].Kernel[:7] != "gemm_nn" {
		t.Errorf("kernel %s", ls[0].Kernel)
	}
	// Misaligned B: scalar copies; odd N: no vector stores.
	p.B += 4
	p.N = 4095
	pl, _ = Make(p, h200, Options{}, vs)
	ls = pl.Launches(0)
	if ls[0].Kernel != "gemm_nn" || args(t, ls[0])["flags"]&flagVecC != 0 {
		t.Errorf("misaligned: kernel %s flags %d", ls[0].Kernel, args(t, ls[0])["flags"])
	}

	// Router-like: M=4096, N=8 (skinny), K=1024: split-K fills the device.
	pl, err = Make(Problem{Mode: Dense, M: 4096, N: 8, K: 1024, TransB: true}, h200, Options{}, vs)
	if err != nil {
		t.Fatal(err)
	}
	ls = pl.Launches(1 << 30)
	if pl.Splits < 2 || len(ls) != 2 || ls[1].Kernel != "gemm_reduce" || pl.Workspace != int64(pl.Splits)*4096*8*4 {
		t.Errorf("skinny N: %+v, %d launches", pl, len(ls))
	}
	a = args(t, ls[0])
	if a["C"] != 1<<30 || a["W"] != 1<<30 || a["kChunk"]*a["splits"] < 1024 || a["kChunk"]%int64(pl.Variant.BK) != 0 {
		t.Errorf("split args %v", a)
	}
	// dRouter = dlogitsᵀ·x: M=8 < N: computed swapped, C written transposed.
	pl, err = Make(Problem{Mode: Dense, M: 8, N: 1024, K: 16384, TransA: true, A: 16, B: 32, C: 64}, h200, Options{}, vs)
	if err != nil {
		t.Fatal(err)
	}
	ls = pl.Launches(256)
	a = args(t, ls[0])
	if !pl.Swapped || a["M"] != 1024 || a["N"] != 8 || a["A"] != 32 || a["B"] != 16 || ls[0].Kernel[:7] != "gemm_tn" {
		t.Errorf("swap: %+v args %v kernel %s", pl, a, ls[0].Kernel)
	}
	if pl.Splits > 1 {
		r := ls[len(ls)-1].Args
		if r[1] != 64 || r[5] != 1 || r[6] != 1024 {
			t.Errorf("reduce writes C transposed: %v", r)
		}
	}
	// K = 0 still launches (the kernel writes zeros); M = 0 launches nothing.
	pl, _ = Make(Problem{Mode: Dense, M: 10, N: 10, K: 0}, h200, Options{}, vs)
	if len(pl.Launches(0)) != 1 || pl.Splits != 1 {
		t.Errorf("K=0: %+v", pl)
	}
	pl, _ = Make(Problem{Mode: Dense, M: 0, N: 10, K: 5}, h200, Options{}, vs)
	if len(pl.Launches(0)) != 0 {
		t.Errorf("M=0 launches")
	}
}

// TestPlanBF16: bfloat16 operands run on the bf16 variants whatever TF32 says; C bfloat16 takes the
// gemm_xx kernels, float32 C the _f32 ones; split-K partials are float32 (the _f32 kernel, 4-byte
// workspace) reduced by gemm_reduce (into bfloat16) or gemm_reduce_f32; 16-byte copies need rows of 8
// elements.
func TestPlanBF16(t *testing.T) {
	vs := loadVariants(t)
	for _, tf32 := range []bool{false, true} {
		for _, outF32 := range []bool{false, true} {
			p := Problem{Mode: GroupRows, BF16: true, OutF32: outF32, N: 3584, K: 1024, E: 8, Rows: 8192, A: 256, B: 512, C: 1024}
			pl, err := Make(p, h200, Options{TF32: tf32}, vs)
			if err != nil {
				t.Fatal(err)
			}
			ls := pl.Launches(0)
			want := "gemm_nn_v16"
			if outF32 {
				want += "_f32"
			}
			if !pl.Variant.BF16 || len(ls) != 1 || ls[0].Kernel != want {
				t.Errorf("outF32=%t tf32=%t: variant %s kernels %v, want bf16 %s", outF32, tf32, pl.Variant.Name, ls, want)
			}
			if a := args(t, ls[0]); a["flags"]&flagVecC == 0 {
				t.Errorf("aligned C without vector stores")
			}
			// K = 1020: rows of x are not whole 16-byte vectors of bfloat16.
			p.K = 1020
			if pl, _ = Make(p, h200, Options{}, vs); strings.Contains(pl.Launches(0)[0].Kernel, "_v16") {
				t.Errorf("K=1020: %s", pl.Launches(0)[0].Kernel)
			}
			// Router-like dense product: split-K into float32 partials.
			d := Problem{Mode: Dense, BF16: true, OutF32: outF32, M: 4096, N: 8, K: 4096, TransB: true, A: 256, B: 512, C: 1024}
			pl, err = Make(d, h200, Options{}, vs)
			if err != nil {
				t.Fatal(err)
			}
			if pl.Splits < 2 {
				t.Fatalf("no split: %+v", pl)
			}
			ls = pl.Launches(1 << 20)
			red := "gemm_reduce"
			if outF32 {
				red = "gemm_reduce_f32"
			}
			if len(ls) != 2 || !strings.HasSuffix(ls[0].Kernel, "_f32") || ls[1].Kernel != red {
				t.Errorf("split: kernels %s, %s", ls[0].Kernel, ls[1].Kernel)
			}
			if pl.Workspace != int64(pl.Splits)*4096*8*4 {
				t.Errorf("workspace %d for %d splits", pl.Workspace, pl.Splits)
			}
		}
	}
	if _, err := Make(Problem{Mode: Dense, Double: true, BF16: true, M: 1, N: 1, K: 1}, h200, Options{}, vs); err == nil {
		t.Error("Double and BF16 accepted")
	}
	if _, err := Make(Problem{Mode: Dense, OutF32: true, M: 1, N: 1, K: 1}, h200, Options{}, vs); err == nil {
		t.Error("OutF32 without BF16 accepted")
	}
}

func TestPlanGrouped(t *testing.T) {
	vs := loadVariants(t)
	p := Problem{Mode: GroupRows, N: 3584, K: 1024, E: 8, Rows: 8192}
	pl, err := Make(p, h200, Options{}, vs)
	if err != nil {
		t.Fatal(err)
	}
	l := pl.Launches(0)[0]
	a := args(t, l)
	v := pl.Variant
	// Upper bound of the m-tiles over any segmentation: ceil(rows/BM) + E - 1.
	if a["mTiles"] != int64((8192+v.BM-1)/v.BM+7) || int64(l.Grid) != a["mTiles"]*a["nTiles"] || a["strideB"] != 1024*3584 {
		t.Errorf("grouped rows: grid %d args %v", l.Grid, a)
	}
	p = Problem{Mode: GroupRed, TransA: true, M: 1024, N: 3584, E: 8, Rows: 8192}
	pl, err = Make(p, h200, Options{}, vs)
	if err != nil {
		t.Fatal(err)
	}
	l = pl.Launches(0)[0]
	a = args(t, l)
	if l.Kernel[:7] != "gemm_tn" || a["flags"]&flagSort == 0 || a["strideC"] != 1024*3584 || int64(l.Grid) != 8*a["mTiles"]*a["nTiles"] {
		t.Errorf("grouped reduction: %s grid %d args %v", l.Kernel, l.Grid, a)
	}
	p.E = sortMax + 1
	pl, _ = Make(p, h200, Options{}, vs)
	if args(t, pl.Launches(0)[0])["flags"]&flagSort != 0 {
		t.Errorf("sort flag above %d experts", sortMax)
	}
	for _, bad := range []Problem{
		{Mode: GroupRows, TransA: true, N: 4, K: 4, E: 2, Rows: 4},
		{Mode: GroupRed, M: 4, N: 4, E: 2, Rows: 4},
		{Mode: GroupRows, N: 4, K: 4, E: 0, Rows: 4},
		{Mode: Dense, M: -1, N: 4, K: 4},
	} {
		if _, err := Make(bad, h200, Options{}, vs); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	if _, err := Make(Problem{Mode: Dense, M: 8, N: 1 << 26, K: 100}, h200, Options{}, vs); !errors.Is(err, ErrTooLarge) {
		t.Errorf("huge ld: %v", err)
	}
}

func TestPlanOptions(t *testing.T) {
	vs := loadVariants(t)
	p := Problem{Mode: Dense, M: 1000, N: 1000, K: 1000}
	for _, v := range vs {
		p.Double, p.BF16 = v.Double, v.BF16
		tgt := h200
		tgt.SM90a = v.WG // wgmma variants: sm_90a targets only (TestPlanWGMMA)
		pl, err := Make(p, tgt, Options{Force: v.Name, TF32: v.TF32}, vs)
		if err != nil {
			t.Fatal(err)
		}
		if pl.Variant.Name != v.Name {
			t.Errorf("forced %s, got %s", v.Name, pl.Variant.Name)
		}
	}
	// A forced variant of another class does not apply.
	pl, _ := Make(Problem{Mode: Dense, M: 1000, N: 1000, K: 1000, Double: true}, h200, Options{Force: vs[0].Name}, vs)
	if !pl.Variant.Double {
		t.Errorf("float64 problem on %s", pl.Variant.Name)
	}
	pl, _ = Make(Problem{Mode: Dense, M: 1000, N: 1000, K: 1000}, h200, Options{TF32: true}, vs)
	if !pl.Variant.TF32 {
		t.Errorf("TF32 option ignored")
	}
	// Small shared memory: only variants that fit.
	pl, err := Make(Problem{Mode: Dense, M: 1000, N: 1000, K: 1000}, Target{SMs: 10, MaxSmem: 48 << 10}, Options{}, vs)
	if err != nil || pl.Variant.Smem() > 48<<10 {
		t.Errorf("48 KiB device: %v %v", pl, err)
	}
}

// TestCostPrefersFullTiles: large problems go to the most efficient variant; a problem too small to fill
// the device goes to smaller tiles.
func TestCostPrefersFullTiles(t *testing.T) {
	vs := loadVariants(t)
	big, _ := Make(Problem{Mode: GroupRows, N: 3584, K: 1024, E: 8, Rows: 32768}, h200, Options{}, vs)
	small, _ := Make(Problem{Mode: GroupRows, N: 256, K: 1024, E: 8, Rows: 1024}, h200, Options{}, vs)
	if big.Variant.BM*big.Variant.BN <= small.Variant.BM*small.Variant.BN {
		t.Errorf("big problem on %s, small on %s", big.Variant.Name, small.Variant.Name)
	}
}

// TestLayoutEff: an eff column "e,nt=x" gives the products of kernel layout nt (dY·Wᵀ) eff x and every
// other layout e, so a variant (the RS tiles) can be the planner's choice for one layout only; RS lines
// parse as float32 SIMT variants that read every operand in 16-byte units.
func TestLayoutEff(t *testing.T) {
	const flags = " -DGEMM_T=float -DGEMM_TF32=0 -DGEMM_BM=128 -DGEMM_BN=64 -DGEMM_BK=16 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=2 -DGEMM_TM=8 -DGEMM_TN=8 -DGEMM_STAGES=3 -DGEMM_MINB=3"
	vs, err := ParseVariants("kc 1.0 -DGEMM_KC=1" + flags + "\nrs 0.5,nt=1.2,tt=0.9 -DGEMM_KC=0 -DGEMM_RS=1" + flags)
	if err != nil {
		t.Fatal(err)
	}
	if rs := vs[1]; !rs.RS || rs.KC || !rs.Direct() || rs.EffFor("nt") != 1.2 || rs.EffFor("tt") != 0.9 || rs.EffFor("nn") != 0.5 || rs.EffFor("tn") != 0.5 {
		t.Fatalf("rs variant %+v", rs)
	}
	if vs[0].EffFor("nt") != 1.0 || vs[0].RS {
		t.Fatalf("kc variant %+v", vs[0])
	}
	for _, c := range []struct {
		p    Problem
		want string
	}{
		{Problem{Mode: GroupRows, TransB: true, N: 1024, K: 3584, E: 8, Rows: 8192, A: 256, B: 512, C: 1024}, "rs"}, // dX = dY·Wᵀ
		{Problem{Mode: GroupRows, N: 3584, K: 1024, E: 8, Rows: 8192, A: 256, B: 512, C: 1024}, "kc"},               // forward
		{Problem{Mode: GroupRed, TransA: true, M: 1024, N: 3584, E: 8, Rows: 8192, A: 256, B: 512, C: 1024}, "kc"},  // dW
		{Problem{Mode: Dense, TransA: true, TransB: true, M: 4096, N: 4096, K: 4096, A: 256, B: 512, C: 1024}, "kc"},
	} {
		pl, err := Make(c.p, h200, Options{}, vs)
		if err != nil {
			t.Fatal(err)
		}
		if pl.Variant.Name != c.want {
			t.Errorf("%v tA=%t tB=%t: planned %s, want %s", c.p.Mode, c.p.TransA, c.p.TransB, pl.Variant.Name, c.want)
		}
		if k := pl.Launches(0)[0].Kernel; c.want == "rs" && k != "gemm_nt_v16" && k != "gemm_sk_nt_v16" {
			t.Errorf("dX on rs: kernel %s, want gemm_nt_v16 or gemm_sk_nt_v16", k)
		}
	}
	for _, bad := range []string{
		"x 1,nt" + flags, "x 1,nx=2" + flags, "x 1,nt=0" + flags, "x 1,nt=1,nt=2" + flags,
		"x 1 -DGEMM_KC=1 -DGEMM_RS=1" + flags, "x 1 -DGEMM_RS=2" + flags,
		"x 1 -DGEMM_RS=1 -DGEMM_T=double -DGEMM_TF32=0 -DGEMM_BM=128 -DGEMM_BN=64 -DGEMM_BK=8 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=2 -DGEMM_TM=8 -DGEMM_TN=8 -DGEMM_STAGES=3 -DGEMM_MINB=2",
		"x 1 -DGEMM_RS=1 -DGEMM_T=float -DGEMM_TF32=1 -DGEMM_BM=128 -DGEMM_BN=128 -DGEMM_BK=16 -DGEMM_WARPS_M=2 -DGEMM_WARPS_N=2 -DGEMM_STAGES=3 -DGEMM_MINB=2",
	} {
		if _, err := ParseVariants(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestCommittedPTX: every variant has its compressed module under cudaops/ptx/gemm, compiled with the
// configuration the planner assumes (the loader checks the same at run time), and no module is left over.
func TestCommittedPTX(t *testing.T) {
	vs := loadVariants(t)
	files, _ := filepath.Glob("../../ptx/gemm/*.ptx.gz")
	if len(files) != len(vs) {
		t.Errorf("%d modules in ptx/gemm for %d variants (go generate ./cudaops)", len(files), len(vs))
	}
	for _, v := range vs {
		f, err := os.Open("../../ptx/gemm/" + v.Name + ".ptx.gz")
		if err != nil {
			t.Errorf("%v (go generate ./cudaops)", err)
			continue
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		src, err := io.ReadAll(zr)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		got, err := PTXConfig(string(src))
		if err != nil || got != v.Config() {
			t.Errorf("%s: PTX config %v (%v), planner %v", v.Name, got, err, v.Config())
		}
		ks := []string{"gemm_nn", "gemm_nt_v16", "gemm_tn", "gemm_tt_v16", "gemm_reduce"}
		if v.BF16 {
			ks = append(ks, "gemm_nn_f32", "gemm_tt_v16_f32", "gemm_reduce_f32")
		}
		// Header: compute_80 PTX, or, for the wgmma modules (GPU-only: not emulated), nvcc 11.8's
		// compute_90 PTX rewritten to ISA 8.0 for sm_90a by gen-ptx.sh (ptx-sm90a.sh).
		header := []string{"\n.target sm_80\n"}
		if v.WG {
			ks = []string{"gemm_nt_v16", "gemm_reduce", "gemm_transpose"}
			header = []string{"\n.version 8.0\n", "\n.target sm_90a\n", "wgmma.mma_async.sync.aligned.m64n"}
		}
		for _, hd := range header {
			if !strings.Contains(string(src), hd) {
				t.Errorf("%s: PTX lacks %q", v.Name, hd)
			}
		}
		for _, k := range ks {
			if !strings.Contains(string(src), ".entry "+k+"(") {
				t.Errorf("%s: no kernel %s", v.Name, k)
			}
		}
	}
}

// TestPlanWGMMA: the wgmma variants run TF32 products only on sm_90a targets, only where the operands
// they read in place are 16-byte aligned with rows of a multiple of 4 elements; every other layout gets
// K-major copies (gemm_transpose launches before the main one, into the workspace after any split-K
// partials) and the main launch is always gemm_nt_v16 over the copies.
func TestPlanWGMMA(t *testing.T) {
	vs := loadVariants(t)
	var wg Variant
	for _, v := range vs {
		if v.WG {
			wg = v
			break
		}
	}
	if wg.Name == "" {
		t.Fatal("no wgmma variant in gemm.variants")
	}
	sm90 := h200
	sm90.SM90a = true
	const A, B, C = 1 << 20, 2 << 20, 3 << 20
	force := Options{TF32: true, Force: wg.Name}
	// Never on other targets, forced or not; never for float32 without TF32.
	for _, tgt := range []Target{h200, {SMs: 108, MaxSmem: 163 << 10}} {
		pl, err := Make(Problem{Mode: GroupRows, N: 3584, K: 1024, E: 8, Rows: 8192, A: A, B: B, C: C}, tgt, force, vs)
		if err != nil || pl.Variant.WG {
			t.Errorf("non-sm_90a target: %v, %v", pl.Variant.Name, err)
		}
	}
	if pl, _ := Make(Problem{Mode: GroupRows, N: 3584, K: 1024, E: 8, Rows: 8192, A: A, B: B, C: C}, sm90, Options{}, vs); pl.Variant.WG {
		t.Errorf("float32 without TF32 planned on %s", pl.Variant.Name)
	}
	// At the Mixtral expert shape the planner's own TF32 choice on sm_90a is a wgmma tile for all three
	// grouped products and the dense one (their eff outweighs the copies).
	for _, p := range []Problem{
		{Mode: GroupRows, N: 3584, K: 1024, E: 8, Rows: 8192},
		{Mode: GroupRows, N: 1024, K: 3584, E: 8, Rows: 8192, TransB: true},
		{Mode: GroupRed, M: 1024, N: 3584, E: 8, Rows: 8192, TransA: true},
		{Mode: Dense, M: 4096, N: 3584, K: 1024},
	} {
		p.A, p.B, p.C = A, B, C
		pl, err := Make(p, sm90, Options{TF32: true}, vs)
		if err != nil || !pl.Variant.WG {
			t.Errorf("%+v: planned %s (%v), want a wgmma tile", p, pl.Variant.Name, err)
		}
	}
	cases := []struct {
		p      Problem
		wg     bool
		copies [][2]int // R, C of each copy
		lda    int64
		ldb    int64
	}{
		// forward x·W[e], W stored [E,K,N]: W copied per expert to [E][N][K]
		{Problem{Mode: GroupRows, N: 3584, K: 1024, E: 8, Rows: 8192}, true, [][2]int{{1024, 3584}}, 1024, 1024},
		// dX = dY·W[e]ᵀ: both in place
		{Problem{Mode: GroupRows, N: 1024, K: 3584, E: 8, Rows: 8192, TransB: true}, true, nil, 3584, 3584},
		// dW: x and dY copied, rows rounded up to 4
		{Problem{Mode: GroupRed, M: 1024, N: 3584, E: 8, Rows: 8191, TransA: true}, true, [][2]int{{8191, 1024}, {8191, 3584}}, 8192, 8192},
		// dense, both transposed storage orders
		{Problem{Mode: Dense, M: 4096, N: 4096, K: 1027, TransA: true}, true, [][2]int{{1027, 4096}, {1027, 4096}}, 1028, 1028},
		// rows of A not whole 16-byte vectors: not for wgmma
		{Problem{Mode: GroupRows, N: 3584, K: 1023, E: 8, Rows: 8192}, false, nil, 0, 0},
		{Problem{Mode: Dense, M: 4096, N: 4096, K: 1023, TransB: true}, false, nil, 0, 0},
	}
	for _, c := range cases {
		c.p.A, c.p.B, c.p.C, c.p.Offsets, c.p.Fault = A, B, C, 4<<20, 5<<20
		pl, err := Make(c.p, sm90, force, vs)
		if err != nil {
			t.Fatalf("%+v: %v", c.p, err)
		}
		if pl.Variant.WG != c.wg {
			t.Errorf("%+v: planned on %s, want wgmma %t", c.p, pl.Variant.Name, c.wg)
			continue
		}
		if !c.wg {
			continue
		}
		if len(pl.Copies) != len(c.copies) {
			t.Errorf("%+v: copies %+v, want %v", c.p, pl.Copies, c.copies)
			continue
		}
		const ws = 1 << 30
		ls := pl.Launches(ws)
		if len(ls) < len(c.copies)+1 {
			t.Fatalf("%+v: %d launches", c.p, len(ls))
		}
		main := ls[len(c.copies)]
		if main.Kernel != "gemm_nt_v16" || main.Smem != wg.Smem() || main.Block != 256 {
			t.Errorf("%+v: main launch %s block %d smem %d", c.p, main.Kernel, main.Block, main.Smem)
		}
		if int64(main.Args[6]) != c.lda || int64(main.Args[7]) != c.ldb {
			t.Errorf("%+v: lda %d ldb %d, want %d %d", c.p, main.Args[6], main.Args[7], c.lda, c.ldb)
		}
		end := int64(0)
		if pl.Splits > 1 {
			end = int64(pl.Splits) * int64(c.p.M) * int64(c.p.N) * 4
		}
		for i, cp := range pl.Copies {
			l := ls[i]
			if l.Kernel != "gemm_transpose" || cp.R != c.copies[i][0] || cp.C != c.copies[i][1] || cp.Ldo%4 != 0 || cp.Ldo < int64(cp.R) {
				t.Errorf("%+v: copy %d: %s %+v", c.p, i, l.Kernel, cp)
			}
			if cp.Offset < end || cp.Offset%256 != 0 {
				t.Errorf("%+v: copy %d at %d overlaps or misaligned (previous end %d)", c.p, i, cp.Offset, end)
			}
			end = cp.Offset + 4*cp.Ldo*int64(cp.C)*int64(cp.Batch)
			if l.Args[0] != cp.In || l.Args[1] != ws+uint64(cp.Offset) || l.Grid != ((cp.R+31)/32)*((cp.C+31)/32)*cp.Batch {
				t.Errorf("%+v: copy %d launch %+v", c.p, i, l)
			}
		}
		if end > pl.Workspace {
			t.Errorf("%+v: copies end at %d, workspace %d", c.p, end, pl.Workspace)
		}
		// The main launch reads the copies, or the operands in place.
		wantA, wantB := uint64(A), uint64(B)
		if pl.copyA >= 0 {
			wantA = ws + uint64(pl.Copies[pl.copyA].Offset)
		}
		if pl.copyB >= 0 {
			wantB = ws + uint64(pl.Copies[pl.copyB].Offset)
			if c.p.Mode == GroupRows && int64(main.Args[10]) != pl.Copies[pl.copyB].StrideOut {
				t.Errorf("%+v: strideB %d", c.p, main.Args[10])
			}
		}
		if main.Args[0] != wantA || main.Args[1] != wantB {
			t.Errorf("%+v: main reads %#x %#x, want %#x %#x", c.p, main.Args[0], main.Args[1], wantA, wantB)
		}
	}
}
