package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
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
		"-json", "-save", w, "-plot", png}, io.Discard); err != nil {
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
	for _, args := range [][]string{{"-top-k", "9"}, {"-dtype", "int8"}, {"-steps", "0"}, {"-scoring", "argmax"},
		{"-steps", "1", "extra"}, {"-aux-coef", "NaN"}, {"-z-coef", "-1"}} {
		if err := runTrain(args, io.Discard); err == nil {
			t.Errorf("runTrain(%v) succeeded, want an error", args)
		}
	}
}

// TestRunCommandLine: a mistyped subcommand is an error (it used to train 600 steps and exit 0),
// positional arguments after the flags are errors, -h and help exit 0 and list the subcommands.
func TestRunCommandLine(t *testing.T) {
	for _, c := range []struct {
		args     []string
		status   int
		out, err string // substrings of stdout and stderr
	}{
		{[]string{"foward", "-weights", "w.safetensors"}, 2, "", `unknown subcommand "foward"`},
		{[]string{"-steps", "1", "forward"}, 1, "", `unexpected argument "forward"`},
		{[]string{"train", "-steps", "1", "x"}, 1, "", `unexpected argument "x"`},
		{[]string{"-h"}, 0, "", "mixtral-layer grad"},
		{[]string{"train", "-h"}, 0, "", "-top-k"},
		{[]string{"help"}, 0, "mixtral-layer forward", ""},
		{[]string{"-no-such-flag"}, 1, "", "flag provided but not defined"},
	} {
		var out, errb strings.Builder
		if got := run(c.args, &out, &errb); got != c.status {
			t.Errorf("run(%q) = %d, want %d (stderr %q)", c.args, got, c.status, errb.String())
		}
		if !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.err) {
			t.Errorf("run(%q): stdout %q, stderr %q; want them to contain %q and %q", c.args, out.String(), errb.String(), c.out, c.err)
		}
	}
}

// TestTrainReportsLossesSeparately: the JSON summary reports the load-balancing loss and the z-loss
// apart (final_aux_loss used to include the z-loss).
func TestTrainReportsLossesSeparately(t *testing.T) {
	sum := func(aux, z string) trainSummary {
		t.Helper()
		out, err := captureStdout(t, func() error {
			// -lr 0: the weights stay put, so the evaluated losses do not depend on the other coefficient
			return runTrain([]string{"-steps", "2", "-tokens", "16", "-hidden", "8", "-ffn", "6", "-experts", "4",
				"-json", "-lr", "0", "-aux-coef", aux, "-z-coef", z}, io.Discard)
		})
		if err != nil {
			t.Fatal(err)
		}
		var s trainSummary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("summary %q: %v", out, err)
		}
		return s
	}
	both, auxOnly, zOnly := sum("0.01", "0.5"), sum("0.01", "0"), sum("0", "0.5")
	if both.FinalAux != auxOnly.FinalAux || both.FinalZ != zOnly.FinalZ {
		t.Errorf("aux %v (with z) vs %v (without), z %v (with aux) vs %v (without): each must not depend on the other",
			both.FinalAux, auxOnly.FinalAux, both.FinalZ, zOnly.FinalZ)
	}
	if auxOnly.FinalZ != 0 || zOnly.FinalAux != 0 || both.FinalAux <= 0 || both.FinalZ <= 0 {
		t.Errorf("summaries: both %+v, aux only %+v, z only %+v", both, auxOnly, zOnly)
	}
	// Top-2 of 4 experts: the load-balancing loss is about coef*K = 0.02 near balance; the z-loss with
	// coefficient 0.5 is far larger, so a sum would show.
	if both.FinalAux > 0.1 {
		t.Errorf("final_aux_loss = %v includes more than the load-balancing loss", both.FinalAux)
	}
}

// captureStdout runs f with os.Stdout redirected and returns what it printed.
func captureStdout(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	ferr := f()
	os.Stdout = old
	w.Close()
	return string(<-done), ferr
}

// TestTrainRoutingFlags: -renormalize is honoured (it used to be hard-coded), and a DeepSeek-style run
// (sigmoid, groups, capacity, balancing bias) trains and reports its routing diagnostics.
func TestTrainRoutingFlags(t *testing.T) {
	sum := func(args ...string) trainSummary {
		t.Helper()
		out, err := captureStdout(t, func() error {
			return runTrain(append([]string{"-steps", "3", "-tokens", "32", "-hidden", "8", "-ffn", "6", "-experts", "8", "-json"}, args...), io.Discard)
		})
		if err != nil {
			t.Fatal(err)
		}
		var s trainSummary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("summary %q: %v", out, err)
		}
		return s
	}
	on, off := sum(), sum("-renormalize=false")
	if on.FinalLoss == off.FinalLoss {
		t.Errorf("-renormalize=false gave the same final loss %v as the default", on.FinalLoss)
	}
	if a, b := sum("-scoring", "topk-softmax"), sum("-scoring", "topk-softmax", "-renormalize=false"); a.FinalLoss != b.FinalLoss {
		t.Errorf("topk-softmax: -renormalize changed the result (%v vs %v); its weights always sum to 1", a.FinalLoss, b.FinalLoss)
	}
	ds := sum("-scoring", "sigmoid", "-top-k", "2", "-groups", "4", "-topk-groups", "2", "-scale", "2.5",
		"-capacity-factor", "1", "-drop-policy", "probs", "-bias-rate", "0.001")
	r, ok := ds.Routing.(map[string]any)
	if !ok || !(ds.FinalLoss < ds.InitialLoss) || r["expert_counts"] == nil || r["dropped_slots"] == nil || r["max_over_mean_load"].(float64) < 1 {
		t.Errorf("sigmoid run: %+v", ds)
	}
	for _, bad := range [][]string{{"-bias-rate", "0.1"}, {"-groups", "3", "-scoring", "sigmoid", "-topk-groups", "1"}, {"-drop-policy", "x"}, {"-group-mask", "y"}} {
		if err := runTrain(append([]string{"-steps", "1"}, bad...), io.Discard); err == nil {
			t.Errorf("runTrain(%v) succeeded", bad)
		}
	}
}
