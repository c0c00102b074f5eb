package cudaops

import (
	"compress/gzip"
	"io"
	"os"
	"testing"

	"github.com/expertrt/expertrt-go/cudaops/internal/gemmplan"
)

func gemmVariantsFile(t *testing.T) []gemmplan.Variant {
	t.Helper()
	b, err := os.ReadFile("gemm.variants")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := gemmplan.ParseVariants(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestGemmSigsMatchCommittedPTX: every committed GEMM module has exactly the declared kernels with the
// declared parameter lists (what the loader checks on a GPU).
func TestGemmSigsMatchCommittedPTX(t *testing.T) {
	for _, v := range gemmVariantsFile(t) {
		f, err := os.Open("ptx/gemm/" + v.Name + ".ptx.gz")
		if err != nil {
			t.Fatalf("%v (go generate ./cudaops)", err)
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
		if err := checkGemmModule(v, string(src)); err != nil {
			t.Errorf("%s: %v", v.Name, err)
		}
	}
}

// TestGemmLaunchesMatchSigs: every launch the planner writes (each class, each mode, split-K, swapped,
// bfloat16 and float32 outputs) names a declared kernel of its module and passes one argument per
// declared parameter.
func TestGemmLaunchesMatchSigs(t *testing.T) {
	vs := gemmVariantsFile(t)
	target := gemmplan.Target{SMs: 132, MaxSmem: 227 << 10, SM90a: true} // every variant, wgmma included
	var probs []gemmplan.Problem
	for _, kind := range []struct{ double, bf16, outF32 bool }{{false, false, false}, {true, false, false}, {false, true, false}, {false, true, true}} {
		base := gemmplan.Problem{Double: kind.double, BF16: kind.bf16, OutF32: kind.outF32, A: 256, B: 512, C: 1024, Offsets: 2048, Fault: 4096}
		for _, p := range []gemmplan.Problem{
			{Mode: gemmplan.Dense, M: 4096, N: 3584, K: 1024},
			{Mode: gemmplan.Dense, M: 8, N: 1024, K: 4096, TransA: true},            // swapped, split
			{Mode: gemmplan.Dense, M: 1024, N: 8, K: 4096, TransB: true},            // split
			{Mode: gemmplan.Dense, M: 33, N: 45, K: 97, TransA: true, TransB: true}, // element copies
			{Mode: gemmplan.GroupRows, N: 3584, K: 1024, E: 8, Rows: 8192},
			{Mode: gemmplan.GroupRows, N: 1024, K: 3584, E: 8, Rows: 8192, TransB: true},
			{Mode: gemmplan.GroupRed, M: 1024, N: 3584, E: 8, Rows: 8192, TransA: true},
			{Mode: gemmplan.GroupRows, N: 3584, K: 1024, E: 8, Rows: 8192, SwiGLU: true, B2: 8192, G: 16384},
			{Mode: gemmplan.GroupRows, N: 35, K: 97, E: 3, Rows: 50, SwiGLU: true, B2: 8192, U: 16384}, // element copies
		} {
			if p.SwiGLU && base.OutF32 {
				continue // SwiGLU products write the operands' type
			}
			p.Double, p.BF16, p.OutF32 = base.Double, base.BF16, base.OutF32
			p.A, p.B, p.C, p.Offsets, p.Fault = base.A, base.B, base.C, base.Offsets, base.Fault
			probs = append(probs, p)
		}
	}
	for _, v := range vs {
		sigs, err := gemmSigs(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range probs {
			o := gemmplan.Options{Force: v.Name, TF32: v.TF32}
			pl, err := gemmplan.Make(p, target, o, vs)
			if err != nil {
				t.Fatalf("%s %+v: %v", v.Name, p, err)
			}
			if pl.Variant.Name != v.Name {
				continue // another class
			}
			for _, l := range pl.Launches(8192) {
				sig, ok := sigs[l.Kernel]
				if !ok {
					t.Errorf("%s: launch of undeclared kernel %s", v.Name, l.Kernel)
					continue
				}
				if len(l.Args) != len(sig.params) {
					t.Errorf("%s: %s gets %d arguments, declared %d", v.Name, l.Kernel, len(l.Args), len(sig.params))
				}
			}
		}
	}
}
