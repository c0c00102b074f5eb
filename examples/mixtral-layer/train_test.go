package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/expertrt/expertrt-go/moe/hf"
	"gorgonia.org/tensor"
)

// TestTrainSavesLoadableWeights trains a few steps, saves the weights with HF names and reads them back.
func TestTrainSavesLoadableWeights(t *testing.T) {
	dir := t.TempDir()
	w := filepath.Join(dir, "w.safetensors")
	png := filepath.Join(dir, "loss.png")
	if err := runTrain([]string{"-steps", "3", "-tokens", "16", "-hidden", "8", "-ffn", "6", "-experts", "3",
		"-json", "-save", w, "-plot", png}); err != nil {
		t.Fatal(err)
	}
	ck, err := hf.OpenCheckpoint(w)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	lw, err := hf.LoadMixtral(ck, "", tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	e, h, f, err := lw.Dims()
	if err != nil || e != 3 || h != 8 || f != 6 {
		t.Fatalf("saved weights have E=%d H=%d F=%d (%v), want 3, 8, 6", e, h, f, err)
	}
	if st, err := os.Stat(png); err != nil || st.Size() == 0 {
		t.Fatalf("plot not written: %v", err)
	}
}

func TestTrainRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-top-k", "9"}, {"-dtype", "int8"}, {"-steps", "0"}, {"-scoring", "argmax"}} {
		if err := runTrain(args); err == nil {
			t.Errorf("runTrain(%v) succeeded, want an error", args)
		}
	}
}
