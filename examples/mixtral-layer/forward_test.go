package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/moe/hf"
	"gorgonia.org/tensor"
)

const fixtureDir = "../../tests/fixtures/mixtral_e4k2"

func TestParseHFFlags(t *testing.T) {
	o, err := parseHFFlags("forward", []string{"-weights", "w", "-input", "x", "-out", "y"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.topK != 2 || o.dtype != tensor.Float32 || o.outDtype != hf.F32 || o.prefix != "" {
		t.Errorf("defaults: %+v", o)
	}
	o, err = parseHFFlags("grad", []string{"-weights", "w", "-input", "x", "-out", "y", "-dtype", "float64", "-out-dtype", "bfloat16", "-top-k", "3", "-prefix", "model.layers.1."}, io.Discard)
	if err != nil || o.dtype != tensor.Float64 || o.outDtype != hf.BF16 || o.topK != 3 || o.prefix != "model.layers.1." {
		t.Errorf("explicit: %+v %v", o, err)
	}
	for _, args := range [][]string{
		{"-input", "x", "-out", "y"},
		{"-weights", "w", "-input", "x", "-out", "y", "-dtype", "int"},
		{"-weights", "w", "-input", "x", "-out", "y", "-out-dtype", "I32"},
		{"-weights", "w", "-input", "x", "-out", "y", "-top-k", "0"},
		{"-weights", "w", "-input", "x", "-out", "y", "extra"},
		{"-nonsense"},
	} {
		if _, err := parseHFFlags("forward", args, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// TestRunHFLayerBatchedInput checks that [B,S,H] hidden states give the [T,H] results reshaped, for
// the forward values and all gradients.
func TestRunHFLayerBatchedInput(t *testing.T) {
	o := &hfOptions{weights: filepath.Join(fixtureDir, "weights.safetensors"), input: filepath.Join(fixtureDir, "input.safetensors"),
		dtype: tensor.Float64}
	w, in, err := loadHFInputs(o, "hidden_states", "grad_output")
	if err != nil {
		t.Fatal(err)
	}
	flat, err := runHFLayer(w, in[0], in[1], 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	T, H := in[0].Shape()[0], in[0].Shape()[1]
	x3 := in[0].Clone().(*tensor.Dense)
	g3 := in[1].Clone().(*tensor.Dense)
	if err := x3.Reshape(1, T, H); err != nil {
		t.Fatal(err)
	}
	if err := g3.Reshape(1, T, H); err != nil {
		t.Fatal(err)
	}
	batched, err := runHFLayer(w, x3, g3, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !batched.Output.Shape().Eq(tensor.Shape{1, T, H}) || !batched.GradX.Shape().Eq(tensor.Shape{1, T, H}) || !batched.Logits.Shape().Eq(tensor.Shape{T, 4}) {
		t.Fatalf("shapes %v %v %v", batched.Output.Shape(), batched.GradX.Shape(), batched.Logits.Shape())
	}
	pairs := [][2]*tensor.Dense{{flat.Output, batched.Output}, {flat.Logits, batched.Logits}, {flat.GradX, batched.GradX},
		{flat.Grads.Router, batched.Grads.Router}, {flat.Grads.W1, batched.Grads.W1}, {flat.Grads.W3, batched.Grads.W3}, {flat.Grads.W2, batched.Grads.W2}}
	for i, p := range pairs {
		a, b := p[0].Data().([]float64), p[1].Data().([]float64)
		for j := range a {
			if a[j] != b[j] {
				t.Fatalf("pair %d differs at %d: %v vs %v", i, j, a[j], b[j])
			}
		}
	}
	// Forward only leaves the gradients out, and the forward values agree with the grad run's.
	fwd, err := runHFLayer(w, in[0], nil, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fwd.Grads != nil || fwd.GradX != nil {
		t.Error("forward run computed gradients")
	}
	a, b := fwd.Output.Data().([]float64), flat.Output.Data().([]float64)
	for j := range a {
		if a[j] != b[j] {
			t.Fatalf("forward and grad outputs differ at %d", j)
		}
	}
	ts, err := gradTensors(flat, "model.layers.0.", hf.F32)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3+1+3*4 || !strings.HasPrefix(ts[3].Name, "grad.model.layers.0.block_sparse_moe.") {
		t.Errorf("grad tensors: %d, %q", len(ts), ts[3].Name)
	}
}

func TestRunForwardWritesOutDtype(t *testing.T) {
	out := filepath.Join(t.TempDir(), "y.safetensors")
	err := runForward([]string{"-weights", filepath.Join(fixtureDir, "weights.safetensors"), "-input", filepath.Join(fixtureDir, "input.safetensors"),
		"-out", out, "-out-dtype", "bfloat16"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := hf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := strings.Join(f.Names(), ","); got != "output,router_logits" {
		t.Errorf("names %s", got)
	}
	if info, _ := f.Info("output"); info.DType != hf.BF16 || info.Shape[0] != 7 || info.Shape[1] != 12 {
		t.Errorf("output info %+v", info)
	}
	if f.Metadata()["top_k"] != "2" || f.Metadata()["dtype"] != "float32" {
		t.Errorf("metadata %v", f.Metadata())
	}
}
