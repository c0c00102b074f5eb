package tests

// Parity of the mixtral-layer forward and grad subcommands with Hugging Face transformers'
// MixtralSparseMoeBlock. The fixtures in fixtures/mixtral_*/ come from fixtures/gen_mixtral_fixtures.py
// (torch 2.11, transformers 5.17, float64 on the CPU):
//
//   - expected.safetensors is the transformers module itself. Its router computes the softmax, top-k
//     and renormalisation in float32 even for float64 inputs, so it is only float32-accurate.
//   - expected_exact.safetensors is a plain float64 torch implementation of the same formula (softmax
//     in float64), checked by the generator to match the module to float32 accuracy.
//
// The tests build the real command once and run it on the fixture files, so they exercise the exact
// code path a user runs: flags, safetensors reading, HF name mapping, the Gorgonia graph (G.Grad and a
// TapeMachine), and writing.

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/expertrt/expertrt-go/moe/hf"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// TestMain removes the command built by mixtralLayerBin once all tests of the package are done.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// mixtralLayerBin builds ./examples/mixtral-layer once per test binary, or returns the prebuilt command
// named by $EXPERTRT_MIXTRAL_LAYER_BIN (for hosts without a Go toolchain, e.g. a GPU host running a
// cross-built test binary).
func mixtralLayerBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("EXPERTRT_MIXTRAL_LAYER_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mixtral-layer-bin")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		binPath = filepath.Join(dir, "mixtral-layer")
		cmd := exec.Command("go", "build", "-o", binPath, "./examples/mixtral-layer")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// runLayer runs the command and returns its stderr and exit error.
func runLayer(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(mixtralLayerBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

type fixtureCase struct {
	dir    string
	prefix string
	topK   string
}

var fixtureCases = []fixtureCase{
	{"fixtures/mixtral_e4k2", "", "2"},
	{"fixtures/mixtral_e8k3", "model.layers.3.", "3"},
}

func readAll(t *testing.T, path string) map[string][]float64 {
	t.Helper()
	f, err := hf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]float64{}
	for _, n := range f.Names() {
		v, _, err := f.ReadFloat64(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = v
	}
	return out
}

// compare checks got against want element-wise: |got-want| <= atol + rtol*|want|, and reports the
// largest violation ratio per tensor. names restricts the comparison (all of want when nil).
func compare(t *testing.T, label string, got, want map[string][]float64, names []string, rtol, atol float64) {
	t.Helper()
	if names == nil {
		for n := range want {
			names = append(names, n)
		}
	}
	worst, worstName := 0.0, ""
	for _, n := range names {
		g, ok := got[n]
		if !ok {
			t.Errorf("%s: result lacks %q", label, n)
			continue
		}
		w := want[n]
		if len(g) != len(w) {
			t.Errorf("%s: %q has %d values, want %d", label, n, len(g), len(w))
			continue
		}
		for i := range w {
			d := math.Abs(g[i] - w[i])
			r := 0.0
			if d > 0 {
				r = d / (atol + rtol*math.Abs(w[i]))
			}
			if math.IsNaN(d) || r > 1 {
				t.Errorf("%s: %q[%d] = %.10g, want %.10g (tolerance %g rel + %g abs)", label, n, i, g[i], w[i], rtol, atol)
				break
			}
			if r > worst {
				worst, worstName = r, n
			}
		}
	}
	t.Logf("%s: worst error %.3g of the tolerance (%s)", label, worst, worstName)
}

// parityDevice is the -device the parity test passes to the command: $EXPERTRT_PARITY_DEVICE, default cpu
// (on a GPU host: cuda, with a command built with -tags expertrt_cuda).
func parityDevice() string {
	if d := os.Getenv("EXPERTRT_PARITY_DEVICE"); d != "" {
		return d
	}
	return "cpu"
}

func TestHFParityForwardAndGrad(t *testing.T) {
	t.Logf("-device %s", parityDevice())
	for _, fc := range fixtureCases {
		t.Run(filepath.Base(fc.dir), func(t *testing.T) {
			exact := readAll(t, filepath.Join(fc.dir, "expected_exact.safetensors"))
			module := readAll(t, filepath.Join(fc.dir, "expected.safetensors"))
			out := t.TempDir()
			for _, dtype := range []string{"float64", "float32"} {
				for _, cmd := range []string{"forward", "grad"} {
					path := filepath.Join(out, cmd+"-"+dtype+".safetensors")
					stderr, err := runLayer(t, cmd, "-weights", filepath.Join(fc.dir, "weights.safetensors"),
						"-input", filepath.Join(fc.dir, "input.safetensors"), "-out", path,
						"-prefix", fc.prefix, "-top-k", fc.topK, "-dtype", dtype, "-device", parityDevice())
					if err != nil {
						t.Fatalf("%s %s: %v\n%s", cmd, dtype, err, stderr)
					}
					got := readAll(t, path)
					var names []string
					if cmd == "forward" {
						names = []string{"output", "router_logits"}
						if len(got) != 2 {
							t.Errorf("forward wrote %d tensors, want 2", len(got))
						}
					} else if len(got) != len(exact) {
						t.Errorf("grad wrote %d tensors, want %d", len(got), len(exact))
					}
					label := cmd + " " + dtype
					if dtype == "float64" {
						compare(t, label+" vs float64 formula", got, exact, names, 1e-10, 1e-12)
						// transformers itself routes in float32.
						compare(t, label+" vs transformers", got, module, names, 1e-4, 1e-5)
					} else {
						compare(t, label+" vs float64 formula", got, exact, names, 1e-4, 1e-5)
						compare(t, label+" vs transformers", got, module, names, 1e-4, 1e-5)
					}
				}
			}
		})
	}
}

// TestHFBF16Weights runs the forward pass on the bfloat16 copy of the fixture weights (written by
// torch). Widened to float64 they must give bit for bit the result of an F64 file holding the same
// weights rounded to bfloat16 here, and stay within bfloat16 accuracy of the float64 reference.
func TestHFBF16Weights(t *testing.T) {
	dir := "fixtures/mixtral_e4k2"
	tmp := t.TempDir()
	src, err := hf.Open(filepath.Join(dir, "weights.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var rounded []hf.Tensor
	for _, n := range src.Names() {
		v, s, _ := src.ReadFloat64(n)
		for i := range v {
			v[i] = float64(hf.BF16ToFloat32(hf.Float32ToBF16(float32(v[i]))))
		}
		rounded = append(rounded, hf.Tensor{Name: n, Shape: s, Values: v, DType: hf.F64})
	}
	src.Close()
	roundedPath := filepath.Join(tmp, "rounded.safetensors")
	if err := hf.WriteFile(roundedPath, rounded, nil); err != nil {
		t.Fatal(err)
	}
	results := map[string]map[string][]float64{}
	for name, weights := range map[string]string{"bf16": filepath.Join(dir, "weights_bf16.safetensors"), "rounded": roundedPath} {
		out := filepath.Join(tmp, name+"-out.safetensors")
		stderr, err := runLayer(t, "grad", "-weights", weights, "-input", filepath.Join(dir, "input.safetensors"),
			"-out", out, "-dtype", "float64")
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, stderr)
		}
		results[name] = readAll(t, out)
	}
	compare(t, "bf16 file vs rounded F64 file", results["bf16"], results["rounded"], nil, 0, 0)
	exact := readAll(t, filepath.Join(dir, "expected_exact.safetensors"))
	compare(t, "bf16 weights vs float64 reference", results["bf16"], exact, []string{"output", "router_logits"}, 3e-2, 3e-2)
}

func TestHFSubcommandErrors(t *testing.T) {
	dir := "fixtures/mixtral_e4k2"
	tmp := t.TempDir()
	w := filepath.Join(dir, "weights.safetensors")
	in := filepath.Join(dir, "input.safetensors")
	out := filepath.Join(tmp, "out.safetensors")

	// Truncated weights.
	b, err := os.ReadFile(w)
	if err != nil {
		t.Fatal(err)
	}
	trunc := filepath.Join(tmp, "trunc.safetensors")
	os.WriteFile(trunc, b[:len(b)-100], 0o644)
	headerOnly := filepath.Join(tmp, "hdr.safetensors")
	os.WriteFile(headerOnly, b[:20], 0o644)

	// Weights missing one tensor, and with a wrongly shaped one.
	src, err := hf.Open(w)
	if err != nil {
		t.Fatal(err)
	}
	var all []hf.Tensor
	for _, n := range src.Names() {
		v, s, _ := src.ReadFloat64(n)
		all = append(all, hf.Tensor{Name: n, Shape: s, Values: v, DType: hf.F64})
	}
	src.Close()
	write := func(name string, ts []hf.Tensor) string {
		p := filepath.Join(tmp, name)
		if err := hf.WriteFile(p, ts, nil); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var missing, reshaped []hf.Tensor
	for _, x := range all {
		if x.Name != "block_sparse_moe.experts.1.w2.weight" {
			missing = append(missing, x)
		}
		if x.Name == "block_sparse_moe.experts.3.w1.weight" {
			x.Shape = []int{x.Shape[1], x.Shape[0]}
		}
		reshaped = append(reshaped, x)
	}
	missingW := write("missing.safetensors", missing)
	reshapedW := write("reshaped.safetensors", reshaped)
	xOnly := write("xonly.safetensors", []hf.Tensor{{Name: "hidden_states", Shape: []int{3, 12}, Values: make([]float64, 36), DType: hf.F64}})
	badH := write("badh.safetensors", []hf.Tensor{{Name: "hidden_states", Shape: []int{3, 11}, Values: make([]float64, 33), DType: hf.F64}})
	badGrad := write("badgrad.safetensors", []hf.Tensor{
		{Name: "hidden_states", Shape: []int{3, 12}, Values: make([]float64, 36), DType: hf.F64},
		{Name: "grad_output", Shape: []int{2, 12}, Values: make([]float64, 24), DType: hf.F64}})

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"truncated weights", []string{"forward", "-weights", trunc, "-input", in, "-out", out}, "truncated"},
		{"header-only weights", []string{"forward", "-weights", headerOnly, "-input", in, "-out", out}, "truncated"},
		{"missing tensor", []string{"grad", "-weights", missingW, "-input", in, "-out", out}, `missing tensor "block_sparse_moe.experts.1.w2.weight"`},
		{"wrong shape", []string{"forward", "-weights", reshapedW, "-input", in, "-out", out}, `"block_sparse_moe.experts.3.w1.weight" has shape [12 20]`},
		{"wrong prefix", []string{"forward", "-weights", w, "-input", in, "-out", out, "-prefix", "model.layers.0."}, "set -prefix"},
		{"no grad_output", []string{"grad", "-weights", w, "-input", xOnly, "-out", out}, `no tensor "grad_output"`},
		{"no hidden_states", []string{"forward", "-weights", w, "-input", w, "-out", out}, `no tensor "hidden_states"`},
		{"hidden size", []string{"forward", "-weights", w, "-input", badH, "-out", out}, "want [T,12]"},
		{"grad_output shape", []string{"grad", "-weights", w, "-input", badGrad, "-out", out}, "grad_output has shape"},
		{"top-k too large", []string{"forward", "-weights", w, "-input", in, "-out", out, "-top-k", "5"}, "exceeds the 4 experts"},
		{"bad dtype", []string{"forward", "-weights", w, "-input", in, "-out", out, "-dtype", "float16"}, "unknown -dtype"},
		{"missing -out", []string{"forward", "-weights", w, "-input", in}, "-out is required"},
		{"no such file", []string{"forward", "-weights", filepath.Join(tmp, "nope.safetensors"), "-input", in, "-out", out}, "no such file"},
		{"truncated input", []string{"forward", "-weights", w, "-input", trunc, "-out", out}, "input: safetensors"},
	}
	for _, c := range cases {
		stderr, err := runLayer(t, c.args...)
		if err == nil {
			t.Errorf("%s: exit status 0", c.name)
			continue
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Errorf("%s: %v", c.name, err)
		}
		if !strings.Contains(stderr, c.want) || strings.Contains(stderr, "panic") {
			t.Errorf("%s: stderr %q does not contain %q", c.name, stderr, c.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%s: an output file was written despite the error", c.name)
		}
	}
}
