//go:build expertrt_cuda

package cudaops

import (
	"compress/gzip"
	"embed"
	"errors"
	"fmt"
	"io"
	"time"
	"unsafe"

	"github.com/expertrt/expertrt-go/cudaops/internal/gemmplan"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// The GEMM kernel family (gemm.cu, tile core gemm.cuh): one PTX module per tile configuration of
// gemm.variants, loaded (JIT-compiled by the driver) the first time a product uses it, so a process
// compiles only the configurations it runs. internal/gemmplan picks the configuration and the grid of
// every product from its shape (and the options TF32 and GemmVariant), with no host synchronisation: grouped
// products find their expert segments on the device, from the plan's offsets.

// The PTX of every configuration, gzip-compressed (gen-ptx.sh): about 1 MB each uncompressed.
//
//go:embed ptx/gemm/*.ptx.gz
var gemmPTX embed.FS

//go:embed gemm.variants
var gemmVariantsText string

// gemmState is a Device's GEMM configuration and loaded modules (under the device mutex).
type gemmState struct {
	variants []gemmplan.Variant
	target   gemmplan.Target
	mods     map[string]*gemmModule
}

type gemmModule struct {
	fns      map[string]cu.Function
	smemOpen map[string]bool // kernels whose shared memory was checked against the device (and the opt-in limit raised where needed)
	load     time.Duration   // cuModuleLoadData (the driver's JIT of the PTX, or its cache)
}

// gemmLocked returns the device's GEMM state, creating it on first use.
func (d *Device) gemmLocked() (*gemmState, error) {
	if d.gemm != nil {
		return d.gemm, nil
	}
	vs, err := gemmplan.ParseVariants(gemmVariantsText)
	if err != nil {
		return nil, err
	}
	optin, err := d.dev.Attribute(optinSmemAttr)
	if err != nil {
		return nil, fmt.Errorf("cudaops: reading the opt-in shared memory limit: %w", err)
	}
	// The wgmma modules are sm_90a PTX: the driver compiles them for compute capability 9.0 only, so
	// the planner considers them only there (elsewhere the mma.sync TF32 tiles run).
	sm90a := d.ccMajor == 9 && d.ccMinor == 0
	d.gemm = &gemmState{variants: vs, target: gemmplan.Target{SMs: d.sms, MaxSmem: max(optin, d.maxSmem), SM90a: sm90a}, mods: map[string]*gemmModule{}}
	return d.gemm, nil
}

// GemmVariant describes one tile configuration of the GEMM kernels.
type GemmVariant struct {
	Name string
	// float64 SIMT, float32 TF32 tensor cores, bfloat16 tensor cores (float32 accumulation), or (none)
	// float32 SIMT. WGMMA (with TF32): a Hopper warpgroup-MMA tile, planned only on compute capability
	// 9.0 devices (GemmWGMMA). RS: float32 SIMT tiles that transpose k-contiguous operands through
	// registers (gemm.variants' _rs lines).
	Double, TF32, BF16, WGMMA, RS bool
	BM, BN, BK                    int // block tile
	Threads                       int
}

// GemmVariants lists the tile configurations of the GEMM kernels (gemm.variants), in preference order
// for ties of the planner's cost model.
func (d *Device) GemmVariants() ([]GemmVariant, error) {
	var out []GemmVariant
	err := d.do(func() error {
		st, err := d.gemmLocked()
		if err != nil {
			return err
		}
		for _, v := range st.variants {
			out = append(out, GemmVariant{Name: v.Name, Double: v.Double, TF32: v.TF32, BF16: v.BF16, WGMMA: v.WG, RS: v.RS, BM: v.BM, BN: v.BN, BK: v.BK, Threads: v.Threads()})
		}
		return nil
	})
	return out, err
}

// GemmModuleLoadTimes returns, per GEMM tile configuration loaded so far, how long loading its module
// took (the driver's JIT compilation of the PTX on first use in a process, or a read of the driver's
// compute cache).
func (d *Device) GemmModuleLoadTimes() map[string]time.Duration {
	out := map[string]time.Duration{}
	_ = d.do(func() error {
		if d.gemm != nil {
			for name, m := range d.gemm.mods {
				out[name] = m.load
			}
		}
		return nil
	})
	return out
}

// GemmWGMMA reports whether this device runs the wgmma GEMM variants (compute capability 9.0, sm_90a).
func (d *Device) GemmWGMMA() bool { return d.ccMajor == 9 && d.ccMinor == 0 }

// TF32 reports whether float32 products of this handle use the TF32 kernels (Options.TF32).
func (d *Device) TF32() bool { return d.opts.TF32 }

// gemmVariantNames lists the tile configurations of gemm.variants (nil when the embedded file does not
// parse: Open then reports it on first use).
func gemmVariantNames() []string {
	vs, err := gemmplan.ParseVariants(gemmVariantsText)
	if err != nil {
		return nil
	}
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = v.Name
	}
	return names
}

// gemmModuleLocked loads the PTX module of a variant on first use and checks that the module was compiled
// with the configuration the planner assumes (the gemm_config table in the PTX).
func (d *Device) gemmModuleLocked(st *gemmState, v gemmplan.Variant) (*gemmModule, error) {
	if m, ok := st.mods[v.Name]; ok {
		return m, nil
	}
	src, err := gemmModulePTX(v.Name)
	if err != nil {
		return nil, err
	}
	if err := checkGemmConfig(string(src), v); err != nil {
		return nil, err
	}
	if err := checkGemmModule(v, string(src)); err != nil {
		return nil, fmt.Errorf("cudaops: GEMM module %s: %w", v.Name, err)
	}
	start := time.Now()
	mod, err := cu.LoadData(string(src))
	if err != nil {
		return nil, fmt.Errorf("cudaops: loading GEMM module %s (PTX JIT): %w", v.Name, err)
	}
	m := &gemmModule{fns: map[string]cu.Function{}, smemOpen: map[string]bool{}, load: time.Since(start)}
	for _, name := range entryRE.FindAllStringSubmatch(string(src), -1) {
		fn, err := mod.Function(name[1])
		if err != nil {
			return nil, fmt.Errorf("cudaops: GEMM module %s: kernel %s: %w", v.Name, name[1], err)
		}
		m.fns[name[1]] = fn
	}
	st.mods[v.Name] = m
	return m, nil
}

// gemmModulePTX returns the decompressed PTX of a configuration.
func gemmModulePTX(name string) ([]byte, error) {
	f, err := gemmPTX.Open("ptx/gemm/" + name + ".ptx.gz")
	if err != nil {
		return nil, fmt.Errorf("cudaops: GEMM variant %s has no embedded PTX (go generate ./cudaops): %w", name, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("cudaops: GEMM variant %s: %w", name, err)
	}
	src, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("cudaops: GEMM variant %s: decompressing PTX: %w", name, err)
	}
	return src, nil
}

// checkGemmConfig compares the module's gemm_config with the variant.
func checkGemmConfig(ptx string, v gemmplan.Variant) error {
	got, err := gemmplan.PTXConfig(ptx)
	if err != nil {
		return fmt.Errorf("cudaops: GEMM module %s: %w", v.Name, err)
	}
	if got != v.Config() {
		return fmt.Errorf("cudaops: GEMM module %s was compiled as %v, gemm.variants says %v (go generate ./cudaops)", v.Name, got, v.Config())
	}
	return nil
}

// runGemm plans p and issues its launches on the stream (split-K scratch from the caching allocator).
func (d *Device) runGemm(what string, p gemmplan.Problem) error {
	var plan *gemmplan.Plan
	var v gemmplan.Variant
	err := d.do(func() error {
		st, err := d.gemmLocked()
		if err != nil {
			return err
		}
		if plan, err = gemmplan.Make(p, st.target, gemmplan.Options{TF32: d.opts.TF32, Force: d.opts.GemmVariant, Splits: d.opts.GemmSplits, StreamK: d.opts.GemmStreamK}, st.variants); err != nil {
			return err
		}
		v = plan.Variant
		_, err = d.gemmModuleLocked(st, v)
		return err
	})
	if err != nil {
		if errors.Is(err, gemmplan.ErrTooLarge) {
			return fmt.Errorf("cudaops: %s: %w: %v", what, ops.ErrUnsupported, err)
		}
		return fmt.Errorf("cudaops: %s: %w", what, err)
	}
	var ws cu.DevicePtr
	if plan.Workspace > 0 {
		if ws, err = d.scratch(plan.Workspace); err != nil {
			return fmt.Errorf("cudaops: %s: split-K scratch: %w", what, err)
		}
		defer d.putScratch(ws)
	}
	for _, l := range plan.Launches(uint64(ws)) {
		if err := d.do(func() error { return d.timedLocked(what, func() error { return d.gemmLaunchLocked(l) }) }); err != nil {
			return fmt.Errorf("cudaops: %s: %w", what, err)
		}
	}
	return nil
}

// gemmLaunchLocked issues one planned launch on the stream (raising the kernel's shared memory limit
// first when it needs more than the default 48 KiB).
func (d *Device) gemmLaunchLocked(l gemmplan.Launch) error {
	m, ok := d.gemm.mods[l.Variant]
	if !ok {
		return fmt.Errorf("GEMM module %s is not loaded", l.Variant)
	}
	fn, ok := m.fns[l.Kernel]
	if !ok {
		return fmt.Errorf("GEMM module %s has no kernel %s", l.Variant, l.Kernel)
	}
	if !m.smemOpen[l.Kernel] {
		// The 48 KiB default bounds static plus dynamic shared memory together: a kernel whose dynamic
		// part is exactly 48 KiB (f32_128x128x8_w4_s4) still needs the opt-in for its static scheduler
		// buffer, else the launch fails with InvalidValue.
		static, err := fn.Attribute(cu.SharedSizeBytes)
		if err != nil {
			return fmt.Errorf("kernel %s/%s: static shared memory: %w", l.Variant, l.Kernel, err)
		}
		if l.Smem+static > d.gemm.target.MaxSmem {
			return fmt.Errorf("kernel %s/%s needs %d bytes of shared memory (%d dynamic), the device allows %d", l.Variant, l.Kernel, l.Smem+static, l.Smem, d.gemm.target.MaxSmem)
		}
		if l.Smem+static > 48<<10 {
			if err := setMaxDynamicSmem(fn, l.Smem); err != nil {
				return fmt.Errorf("kernel %s/%s: %w", l.Variant, l.Kernel, err)
			}
		}
		m.smemOpen[l.Kernel] = true
	}
	if cap(d.slots) < len(l.Args) {
		d.slots = make([]uint64, len(l.Args))
	}
	slots := d.slots[:len(l.Args)]
	params := make([]unsafe.Pointer, len(l.Args))
	for i, a := range l.Args {
		slots[i] = a
		params[i] = unsafe.Pointer(&slots[i])
	}
	if err := fn.Launch(l.Grid, 1, 1, l.Block, 1, 1, l.Smem, d.stream, params); err != nil {
		return fmt.Errorf("launching %s/%s grid=%d block=%d smem=%d: %w", l.Variant, l.Kernel, l.Grid, l.Block, l.Smem, err)
	}
	return nil
}

// gemmKinds returns the Problem fields of operand dtype in and output dtype out (validated by the
// Backend: float32 or float64 for both, or bfloat16 operands with a bfloat16 or float32 output).
func gemmKinds(in, out tensor.Dtype) (double, bf16, outF32 bool, err error) {
	switch {
	case in == ops.BFloat16 && (out == ops.BFloat16 || out == tensor.Float32):
		return false, true, out == tensor.Float32, nil
	case in == out:
		if _, err := suffix(in); err != nil {
			return false, false, false, err
		}
		return in == tensor.Float64, false, false, nil
	}
	return false, false, false, fmt.Errorf("cudaops: GEMM of %v operands into %v: %w", in, out, ops.ErrDtype)
}

// GroupedMatMul writes out[r] = x[r]·W[e] for the rows r of every expert e's segment
// [offsets[e], offsets[e+1]) (x [N,In], W [E,In,Out], or [E,Out,In] read transposed when transposeW;
// out [N,Out]; offsets: E+1 int32 on the device, never read by the host). Valid offsets start at 0,
// never decrease and end at offsets[E] <= N: the rows from offsets[E] on (rows a capacity limit
// dropped) are neither read nor written. Other offsets raise a device fault (reported at the next
// synchronisation); rows outside every segment are then left unwritten, and no tile reads or writes
// outside the buffers. dt is the dtype of x and W, odt that of out: equal float32 or float64, or
// bfloat16 operands with out bfloat16 or float32.
func (d *Device) GroupedMatMul(dt, odt tensor.Dtype, x, w, offsets, out cu.DevicePtr, E, N, In, Out int, transposeW bool) error {
	if err := groupedDims("grouped matmul", E, N, In, Out); err != nil {
		return err
	}
	double, bf, outF32, err := gemmKinds(dt, odt)
	if err != nil {
		return err
	}
	return d.runGemm(FamilyGroupedMatMul, gemmplan.Problem{Mode: gemmplan.GroupRows, Double: double, BF16: bf, OutF32: outF32,
		TransB: transposeW, N: Out, K: In, E: E, Rows: N, A: uint64(x), B: uint64(w), C: uint64(out),
		Offsets: uint64(offsets), Fault: uint64(d.fault)})
}

// GroupedMatMulGradW writes dW[e] = x_eᵀ·dy_e, the reduction over the rows of expert e's segment (x
// [N,In], dy [N,Out], dW [E,In,Out]; an empty segment gives zeros; rows from offsets[E] on take no
// part, offsets as for GroupedMatMul). Each element is one thread's sum in row order: deterministic, no
// atomics. Dtypes as for GroupedMatMul (bfloat16 x and dy: dW float32, the master weight's gradient,
// or bfloat16).
func (d *Device) GroupedMatMulGradW(dt, odt tensor.Dtype, x, dy, offsets, dW cu.DevicePtr, E, N, In, Out int) error {
	if err := groupedDims("grouped matmul grad W", E, N, In, Out); err != nil {
		return err
	}
	double, bf, outF32, err := gemmKinds(dt, odt)
	if err != nil {
		return err
	}
	return d.runGemm(FamilyGroupedGradW, gemmplan.Problem{Mode: gemmplan.GroupRed, Double: double, BF16: bf, OutF32: outF32,
		TransA: true, M: In, N: Out, E: E, Rows: N, A: uint64(x), B: uint64(dy), C: uint64(dW),
		Offsets: uint64(offsets), Fault: uint64(d.fault)})
}

// MatMul writes out [M,N] = op(a)·op(b), a [M,K] (or [K,M] when transA), b [K,N] (or [N,K] when transB),
// all packed row-major. K = 0 writes zeros. Small grids split the reduction over K into parts summed in
// a fixed order afterwards (deterministic; bfloat16 outputs: float32 partial sums, rounded once). Dtypes
// as for GroupedMatMul.
func (d *Device) MatMul(dt, odt tensor.Dtype, a, b, out cu.DevicePtr, M, N, K int, transA, transB bool) error {
	if M < 0 || N < 0 || K < 0 {
		return fmt.Errorf("cudaops: matmul: negative dimension in M=%d N=%d K=%d: %w", M, N, K, ops.ErrShape)
	}
	double, bf, outF32, err := gemmKinds(dt, odt)
	if err != nil {
		return err
	}
	if M == 0 || N == 0 {
		return nil
	}
	return d.runGemm(FamilyMatMul, gemmplan.Problem{Mode: gemmplan.Dense, Double: double, BF16: bf, OutF32: outF32,
		TransA: transA, TransB: transB, M: M, N: N, K: K, A: uint64(a), B: uint64(b), C: uint64(out)})
}

// groupedDims checks E >= 1 experts over N >= 1 rows; In or Out may be 0 (empty or zero products).
func groupedDims(what string, E, N, In, Out int) error {
	if E < 1 || N < 1 || In < 0 || Out < 0 || E > 1<<31-2 || N > 1<<31-1 || In > 1<<31-1 || Out > 1<<31-1 {
		return fmt.Errorf("cudaops: %s: E=%d, N=%d, In=%d, Out=%d: want E, N >= 1 and sizes below 2^31: %w", what, E, N, In, Out, ops.ErrShape)
	}
	return nil
}

// GroupedSwiGLU writes h[r] = silu(x[r]·W1[e]) ⊙ (x[r]·W3[e]) for the rows r of every expert e's segment,
// in one launch whose epilogue applies the activation (x [N,In], W1 and W3 [E,In,F], h [N,F]); g and u,
// when not 0, receive the two products ([N,F] each: the SwiGLU backward reads them). Offsets as for
// GroupedMatMul. dt is the dtype of every operand: float32, float64 or bfloat16 (float32 accumulation;
// the products are rounded to bfloat16 before the activation, as the unfused graph stores them, and h
// once). Each product equals GroupedMatMul's bit for bit (the same per-element accumulation order).
func (d *Device) GroupedSwiGLU(dt tensor.Dtype, x, w1, w3, offsets, h, g, u cu.DevicePtr, E, N, In, F int) error {
	if err := groupedDims("grouped swiglu", E, N, In, F); err != nil {
		return err
	}
	double, bf, _, err := gemmKinds(dt, dt)
	if err != nil {
		return err
	}
	return d.runGemm(FamilyGroupedSwiGLU, gemmplan.Problem{Mode: gemmplan.GroupRows, Double: double, BF16: bf,
		N: F, K: In, E: E, Rows: N, A: uint64(x), B: uint64(w1), C: uint64(h), Offsets: uint64(offsets), Fault: uint64(d.fault),
		SwiGLU: true, B2: uint64(w3), G: uint64(g), U: uint64(u)})
}
