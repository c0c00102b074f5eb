// Package gemmplan plans the launches of the cudaops GEMM kernel family (cudaops/gemm.cu, gemm.cuh):
// which tile configuration runs a product, how many CTAs, whether the reduction is split (dense and
// grouped-rows products; not bfloat16 or SwiGLU grouped rows), and the kernel arguments in the order the kernels take them. It is plain Go with no driver
// calls, so the planning is tested on any machine; package cudaops executes plans on the GPU and
// package gemmemu (build tag expertrt_gemmemu) on a CPU emulation of the same kernel source.
//
// Shapes (gemm.cuh): C[M,N] = op(A)·op(B) with A stored [M,K] (or [K,M] when TransA) and B stored [K,N]
// (or [N,K] when TransB), all row-major and packed. Three modes:
//   - Dense: one product.
//   - GroupRows: expert segments of rows. Rows rows of A (stored [Rows,K]) and of C ([Rows,N]) are
//     split by the device's offsets [E+1]; segment e is multiplied by B[e] (B stored [E,K,N] or [E,N,K]).
//   - GroupRed: expert segments of the reduction. C[e] = A_eᵀ·B_e ([E,M,N]) with A stored [Rows,M] and
//     B stored [Rows,N]: the weight gradient of GroupRows.
//
// The offsets stay on the device: a plan never needs them, so launching needs no synchronisation.
package gemmplan

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Variant is one tile configuration of gemm.variants (one PTX module).
type Variant struct {
	Name string
	// Eff is the assumed relative speed per FLOP of full tiles (the cost model's weight).
	Eff float64
	// LayoutEff overrides Eff for the products of one kernel layout ("nn", "nt", "tn", "tt": A's layout,
	// then B's, as in the kernel names), written "eff,nt=1.05,nn=0.9" in the eff column.
	LayoutEff map[string]float64
	// Double: float64 elements (else float32). TF32: mma.sync tensor-core tiles (float32 only). BF16:
	// bfloat16 operands on mma.sync m16n8k16 tiles with float32 accumulation (GEMM_T=bf16, GEMM_BF16=1).
	// KC (SIMT): operand tiles keep their global layout in shared memory (k-contiguous for an operand
	// stored k-contiguous), so no copy transposes; TF32 and BF16 tiles always do. WG (with TF32): Hopper
	// warpgroup MMA tiles (GEMM_WGMMA=1, sm_90a PTX, run only on compute capability 9.0: Target.SM90a),
	// which take A stored [M,K] and B stored [N,K] with 16-byte aligned rows (the plan transposes other
	// layouts into scratch first). RS (SIMT float32, without KC): every tile k-major, operands stored
	// k-contiguous transposed through registers from 16-byte loads (SimtTile's RS).
	Double, TF32, BF16, KC, WG, RS bool
	// Block tile, warps, thread tile (SIMT), pipeline depth, and the blocks per multiprocessor the
	// register budget was sized for.
	BM, BN, BK, WarpsM, WarpsN, TM, TN, Stages, MinBlocks int
}

// ElemBytes is the operand element size: 2 (bfloat16), 4 or 8.
func (v Variant) ElemBytes() int {
	switch {
	case v.Double:
		return 8
	case v.BF16:
		return 2
	}
	return 4
}

// Threads per CTA.
func (v Variant) Threads() int { return v.WarpsM * v.WarpsN * 32 }

// Smem is the dynamic shared memory of one CTA in bytes (SimtTile, Tf32Tile, Bf16Tile::SMEM): per stage
// and operand the larger of the two tile layouts (k-major rows of BM or BN + padMN elements,
// k-contiguous rows of BK + padK) when both occur.
func (v Variant) Smem() int {
	if v.WG { // WgTile: 128-byte swizzled rows of BK floats, plus 1024 bytes to align the first stage
		return v.Stages*(v.BM+v.BN)*v.BK*4 + 1024
	}
	stage := func(mn int) int {
		switch {
		case v.TF32:
			return max(mn*(v.BK+4), v.BK*(mn+8))
		case v.BF16:
			return max(mn*(v.BK+8), v.BK*(mn+8))
		case v.KC:
			pad := 16 / v.ElemBytes()
			return max(mn*(v.BK+pad), v.BK*(mn+pad))
		}
		return v.BK * (mn + 16/v.ElemBytes())
	}
	return v.Stages * (stage(v.BM) + stage(v.BN)) * v.ElemBytes()
}

// Direct reports whether the variant reads every operand in 16-byte units (TF32, BF16 and KC variants
// copy no operand transposed; RS variants transpose through registers after 16-byte loads): then any
// operand may take 16-byte copies; otherwise only those stored k-major.
func (v Variant) Direct() bool { return v.TF32 || v.BF16 || v.KC || v.RS }

// EffFor is the eff of the variant for products of kernel layout lay ("nn", "nt", "tn" or "tt").
func (v Variant) EffFor(lay string) float64 {
	if e, ok := v.LayoutEff[lay]; ok {
		return e
	}
	return v.Eff
}

// ModuleKind is 2 for wgmma (sm_90a) modules, 1 for mma.sync TF32 ones, else 0: gemm_config[7].
func (v Variant) ModuleKind() int32 {
	switch {
	case v.WG:
		return 2
	case v.TF32:
		return 1
	}
	return 0
}

// Config is the kernel module's gemm_config[8] for this variant: threads, dynamic shared bytes, BM, BN,
// BK, stages, element bytes (2 for bfloat16), ModuleKind (0, 1 TF32, 2 wgmma). The loader checks the PTX
// against it.
func (v Variant) Config() [8]int32 {
	return [8]int32{int32(v.Threads()), int32(v.Smem()), int32(v.BM), int32(v.BN), int32(v.BK), int32(v.Stages), int32(v.ElemBytes()), v.ModuleKind()}
}

// class names the problems a variant can run: "f32", "f64", "tf32" or "bf16".
func (v Variant) class() string {
	switch {
	case v.BF16:
		return "bf16"
	case v.TF32:
		return "tf32"
	case v.Double:
		return "f64"
	}
	return "f32"
}

// ParseVariants reads gemm.variants: lines "name eff -DGEMM_KEY=value ...", # comments.
func ParseVariants(text string) ([]Variant, error) {
	var vs []Variant
	seen := map[string]bool{}
	for ln, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			return nil, fmt.Errorf("gemm.variants:%d: want name, eff and flags", ln+1)
		}
		v := Variant{Name: f[0]}
		var err error
		effs := strings.Split(f[1], ",")
		if v.Eff, err = strconv.ParseFloat(effs[0], 64); err != nil || v.Eff <= 0 {
			return nil, fmt.Errorf("gemm.variants:%d: eff %q is not a positive number", ln+1, effs[0])
		}
		for _, le := range effs[1:] {
			lay, val, ok := strings.Cut(le, "=")
			e, err := strconv.ParseFloat(val, 64)
			if !ok || (lay != "nn" && lay != "nt" && lay != "tn" && lay != "tt") || err != nil || e <= 0 {
				return nil, fmt.Errorf("gemm.variants:%d: layout eff %q is not nn|nt|tn|tt=positive number", ln+1, le)
			}
			if v.LayoutEff == nil {
				v.LayoutEff = map[string]float64{}
			}
			if _, dup := v.LayoutEff[lay]; dup {
				return nil, fmt.Errorf("gemm.variants:%d: layout eff %s given twice", ln+1, lay)
			}
			v.LayoutEff[lay] = e
		}
		got := map[string]string{}
		for _, fl := range f[2:] {
			kv, ok := strings.CutPrefix(fl, "-DGEMM_")
			k, val, ok2 := strings.Cut(kv, "=")
			if !ok || !ok2 {
				return nil, fmt.Errorf("gemm.variants:%d: flag %q is not -DGEMM_KEY=value", ln+1, fl)
			}
			got[k] = val
		}
		switch got["KC"] {
		case "", "0":
		case "1":
			v.KC = true
		default:
			return nil, fmt.Errorf("gemm.variants:%d: GEMM_KC=%q, want 0 or 1", ln+1, got["KC"])
		}
		switch got["RS"] {
		case "", "0":
		case "1":
			v.RS = true
		default:
			return nil, fmt.Errorf("gemm.variants:%d: GEMM_RS=%q, want 0 or 1", ln+1, got["RS"])
		}
		ints := map[string]*int{"BM": &v.BM, "BN": &v.BN, "BK": &v.BK, "WARPS_M": &v.WarpsM, "WARPS_N": &v.WarpsN,
			"STAGES": &v.Stages, "MINB": &v.MinBlocks, "TM": &v.TM, "TN": &v.TN}
		for k, dst := range ints {
			s, ok := got[k]
			if !ok {
				if (k == "TM" || k == "TN") && (got["TF32"] == "1" || got["BF16"] == "1") {
					continue
				}
				return nil, fmt.Errorf("gemm.variants:%d: %s lacks -DGEMM_%s", ln+1, v.Name, k)
			}
			if *dst, err = strconv.Atoi(s); err != nil || *dst <= 0 {
				return nil, fmt.Errorf("gemm.variants:%d: GEMM_%s=%q is not a positive integer", ln+1, k, s)
			}
		}
		switch got["T"] {
		case "float":
		case "double":
			v.Double = true
		case "bf16":
			v.BF16 = true
		default:
			return nil, fmt.Errorf("gemm.variants:%d: GEMM_T=%q, want float, double or bf16", ln+1, got["T"])
		}
		if bf := got["BF16"] == "1"; bf != v.BF16 || (got["BF16"] != "" && got["BF16"] != "0" && got["BF16"] != "1") {
			return nil, fmt.Errorf("gemm.variants:%d: GEMM_BF16=%q with GEMM_T=%s: bf16 elements need GEMM_BF16=1 and nothing else does", ln+1, got["BF16"], got["T"])
		}
		switch got["TF32"] {
		case "0":
		case "1":
			v.TF32 = true
		default:
			return nil, fmt.Errorf("gemm.variants:%d: GEMM_TF32=%q, want 0 or 1", ln+1, got["TF32"])
		}
		switch got["WGMMA"] {
		case "", "0":
		case "1":
			v.WG = true
		default:
			return nil, fmt.Errorf("gemm.variants:%d: GEMM_WGMMA=%q, want 0 or 1", ln+1, got["WGMMA"])
		}
		if err := v.check(); err != nil {
			return nil, fmt.Errorf("gemm.variants:%d: %s: %w", ln+1, v.Name, err)
		}
		if seen[v.Name] {
			return nil, fmt.Errorf("gemm.variants:%d: %s defined twice", ln+1, v.Name)
		}
		seen[v.Name] = true
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("gemm.variants: no variants")
	}
	return vs, nil
}

// check mirrors the static_asserts of gemm.cuh that the planner relies on.
func (v Variant) check() error {
	wm, wn := v.BM/v.WarpsM, v.BN/v.WarpsN
	if v.BM%v.WarpsM != 0 || v.BN%v.WarpsN != 0 || v.BK%8 != 0 || v.Stages < 2 {
		return fmt.Errorf("block tile %dx%dx%d does not split over %dx%d warps (BK multiple of 8, stages >= 2)", v.BM, v.BN, v.BK, v.WarpsM, v.WarpsN)
	}
	if v.BF16 {
		if v.TF32 || v.KC || v.RS || wm%16 != 0 || wn%16 != 0 || v.BK%32 != 0 || v.BM%16 != 0 || v.BN%16 != 0 {
			return fmt.Errorf("BF16 needs GEMM_TF32=0, no KC, BK a multiple of 32 and warp tiles of 16x16 multiples, got %dx%dx%d warps %dx%d", v.BM, v.BN, v.BK, wm, wn)
		}
		return nil
	}
	if v.WG {
		if !v.TF32 || v.Double || v.KC || v.BM != 128 || v.BK != 32 || (v.BN != 128 && v.BN != 256) || v.Threads() != 256 || v.Stages < 3 {
			return fmt.Errorf("WGMMA needs TF32 float tiles of 128 x 128 or 128 x 256 x 32, 256 threads and at least 3 stages, got %dx%dx%d, %d threads, %d stages", v.BM, v.BN, v.BK, v.Threads(), v.Stages)
		}
		return nil
	}
	if v.TF32 {
		if v.Double || v.KC || v.RS || wm%16 != 0 || wn%16 != 0 || v.BK%16 != 0 || v.BM%32 != 0 || v.BN%32 != 0 {
			return fmt.Errorf("TF32 needs float, BM and BN multiples of 32, BK of 16 and warp tiles of 16x16 multiples, got %dx%dx%d warps %dx%d", v.BM, v.BN, v.BK, wm, wn)
		}
		return nil
	}
	if v.RS && (v.Double || v.KC || v.BM%32 != 0 || v.BN%32 != 0) {
		return fmt.Errorf("RS needs float, no KC, and BM, BN multiples of 32 (k-major rows of 4 words mod 32)")
	}
	if v.TM%4 != 0 || v.TN%4 != 0 || wm%v.TM != 0 || wn%v.TN != 0 || (wm/v.TM)*(wn/v.TN) != 32 {
		return fmt.Errorf("warp tile %dx%d is not 32 thread tiles of %dx%d", wm, wn, v.TM, v.TN)
	}
	if v.KC && (wm/v.TM > 8 || wn/v.TN > 8) {
		return fmt.Errorf("k-contiguous tiles need lane grids of at most 8x8, got %dx%d", wm/v.TM, wn/v.TN)
	}
	return nil
}

var ptxConfigRE = regexp.MustCompile(`gemm_config\[32\] = \{([0-9, ]+)\}`)

// PTXConfig reads gemm_config[8] (8 little-endian int32, see gemm.cu) from a module's PTX text.
func PTXConfig(ptx string) ([8]int32, error) {
	var got [8]int32
	mt := ptxConfigRE.FindStringSubmatch(ptx)
	if mt == nil {
		return got, fmt.Errorf("no gemm_config in the PTX")
	}
	var b []byte
	for _, f := range strings.Split(mt[1], ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 || v > 255 {
			return got, fmt.Errorf("bad gemm_config byte %q", f)
		}
		b = append(b, byte(v))
	}
	if len(b) != 32 {
		return got, fmt.Errorf("gemm_config has %d bytes, want 32", len(b))
	}
	for i := range got {
		got[i] = int32(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return got, nil
}
