package tests

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/expertrt/expertrt-go/internal/dsfixture"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// deepseekDir holds the DeepSeek-V3 routing fixtures: logits, biases, and the indices and weights that
// transformers' own DeepseekV3 router produced for them (tests/fixtures/gen_deepseek_fixtures.py),
// with the router's source text beside them.
const deepseekDir = "fixtures/deepseek"

// loadDeepSeekFixtures reads every case; missing fixtures fail the test with how to generate them.
func loadDeepSeekFixtures(t *testing.T) []dsfixture.Case {
	t.Helper()
	dir := deepseekDir
	if _, err := os.Stat(dir); err != nil {
		if _, err2 := os.Stat("tests/" + deepseekDir); err2 == nil {
			dir = "tests/" + deepseekDir // a test binary run from the repository root (gpu-check.sh)
		}
	}
	cases, err := dsfixture.Load(dir)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

// compareDeepSeek fails t when a routing differs from transformers' (dsfixture.Compare).
func compareDeepSeek(t *testing.T, c dsfixture.Case, idx []int32, w []float64) {
	t.Helper()
	r := dsfixture.Compare(c, idx, w)
	for _, p := range r.Problems {
		t.Error(p)
	}
	if !r.OK(c.T) {
		t.Errorf("%s: %d tokens differ, %d more at near-ties (at most 1%% of %d allowed)", c.Name, r.Bad, r.NearTied, c.T)
	}
	if r.Tied+r.NearTied > 0 {
		t.Logf("%s: %d tokens differ at exact ties (torch's order among equal values is unspecified), %d at near-ties", c.Name, r.Tied, r.NearTied)
	}
}

// runDeepSeekFixtures routes every case on backend b (RouteIndicesBias + RouteWeights) and compares.
func runDeepSeekFixtures(t *testing.T, b ops.Backend) {
	for _, c := range loadDeepSeekFixtures(t) {
		t.Run(c.Name, func(t *testing.T) {
			cfg := c.Config()
			if err := cfg.Validate(c.E); err != nil {
				t.Fatal(err)
			}
			l, err := b.FromHost(tensor.New(tensor.WithShape(c.T, c.E), tensor.WithBacking(append([]float32(nil), c.Logits...))))
			if err != nil {
				t.Fatal(err)
			}
			bias, err := b.FromHost(tensor.New(tensor.WithShape(c.E), tensor.WithBacking(append([]float32(nil), c.Bias...))))
			if err != nil {
				t.Fatal(err)
			}
			idx, err := b.New(tensor.Int32, c.T, c.K)
			if err != nil {
				t.Fatal(err)
			}
			w, err := b.New(tensor.Float32, c.T, c.K)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.RouteIndicesBias(l, bias, cfg, idx); err != nil {
				t.Fatal(err)
			}
			if err := b.RouteWeights(l, idx, cfg, w); err != nil {
				t.Fatal(err)
			}
			hi, err := b.ToHost(idx)
			if err != nil {
				t.Fatal(err)
			}
			hw, err := b.ToHost(w)
			if err != nil {
				t.Fatal(err)
			}
			wv := make([]float64, c.T*c.K)
			for i, v := range hw.Data().([]float32) {
				wv[i] = float64(v)
			}
			compareDeepSeek(t, c, hi.Data().([]int32), wv)
		})
	}
}

// TestDeepSeekV3Fixtures: ops' Sigmoid routing on the CPU equals transformers' DeepseekV3 router on
// the committed fixtures, and ops' default GroupMask is the one transformers' source uses.
func TestDeepSeekV3Fixtures(t *testing.T) {
	cases := loadDeepSeekFixtures(t)
	if c := cases[0]; c.Mask != (ops.RouteConfig{}).GroupMask {
		t.Errorf("transformers %s fills dropped groups as %q (%v), but ops' default GroupMask is %v: change the default",
			c.Transformers, c.MaskLine, c.Mask, (ops.RouteConfig{}).GroupMask)
	}
	runDeepSeekFixtures(t, ops.CPU())
}
