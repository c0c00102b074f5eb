package dsfixture

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/expertrt/expertrt-go/moe/hf"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// routedCase makes a case whose indices and weights come from ops' CPU router (float32), with logits of
// scale lscale and a bias of scale bscale (negative when bscale < 0).
func routedCase(t *testing.T, name string, T, E, K, groups, topkGroups int, norm bool, scale, lscale, bscale float64, seed uint64) Case {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	c := Case{Name: name, T: T, E: E, K: K, Groups: groups, TopKGroups: topkGroups, Norm: norm, Scale: scale,
		Mask: ops.GroupMaskExclude, Logits: make([]float32, T*E), Bias: make([]float32, E)}
	for i := range c.Logits {
		c.Logits[i] = float32(rng.NormFloat64() * lscale)
	}
	for i := range c.Bias {
		if bscale < 0 {
			c.Bias[i] = float32(rng.Float64() * bscale)
		} else {
			c.Bias[i] = float32(rng.NormFloat64() * bscale)
		}
	}
	b := ops.CPU()
	l := tensor.New(tensor.WithShape(T, E), tensor.WithBacking(slices.Clone(c.Logits)))
	bias := tensor.New(tensor.WithShape(E), tensor.WithBacking(slices.Clone(c.Bias)))
	idx := tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(T, K))
	w := tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(T, K))
	if err := b.RouteIndicesBias(l, bias, c.Config(), idx); err != nil {
		t.Fatal(err)
	}
	if err := b.RouteWeights(l, idx, c.Config(), w); err != nil {
		t.Fatal(err)
	}
	for _, v := range idx.Data().([]int32) {
		c.Indices = append(c.Indices, int64(v))
	}
	c.Weights = slices.Clone(w.Data().([]float32))
	return c
}

func sameSets(t *testing.T, c Case, got, want []int64) {
	t.Helper()
	for tok := 0; tok < c.T; tok++ {
		g := slices.Clone(got[tok*c.K : (tok+1)*c.K])
		w := slices.Clone(want[tok*c.K : (tok+1)*c.K])
		slices.Sort(g)
		slices.Sort(w)
		if !slices.Equal(g, w) {
			t.Errorf("%s token %d: recovered experts %v, routed %v", c.Name, tok, g, w)
			return
		}
	}
}

// TestRecoverIndices: the experts rebuilt from the weights alone are the ones the router chose, for
// every shape of the committed fixtures (normalised or not, groups or none, k = 1, negative biases).
func TestRecoverIndices(t *testing.T) {
	for _, tc := range []struct {
		c      Case
		maxAmb int // the fixtures' shapes: a few tokens; saturated scores: most
	}{
		{routedCase(t, "v3", 512, 256, 8, 8, 4, true, 2.5, 2, 0.05, 1), 16},
		{routedCase(t, "v3_nonorm", 256, 256, 8, 8, 4, false, 2.5, 2, 0.05, 2), 16},
		{routedCase(t, "g4_negbias", 512, 16, 4, 4, 2, true, 1, 1, -1.5, 3), 16},
		{routedCase(t, "g1", 256, 64, 6, 1, 1, true, 1, 3, 0.1, 4), 16},
		{routedCase(t, "k1_g2", 128, 8, 1, 2, 1, false, 1, 1, 0.2, 5), 16},
		{routedCase(t, "saturated", 256, 64, 4, 4, 2, true, 1, 12, 0.5, 6), 256}, // many scores within an ulp of 1 or 0
	} {
		c := tc.c
		want := c.Indices
		c.Indices = nil
		amb, err := c.RecoverIndices()
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		sameSets(t, c, c.Indices, want)
		if amb > tc.maxAmb {
			t.Errorf("%s: %d of %d tokens ambiguous", c.Name, amb, c.T)
		}
		t.Logf("%s: %d ambiguous tokens", c.Name, amb)
	}
}

// TestRecoverIndicesErrors: weights that name no experts, and k = 1 under normalisation, are errors.
func TestRecoverIndicesErrors(t *testing.T) {
	c := routedCase(t, "k1norm", 8, 8, 1, 0, 0, true, 1, 1, 0.1, 7)
	if _, err := c.RecoverIndices(); err == nil {
		t.Error("k = 1 with norm_topk_prob: no error")
	}
	for _, norm := range []bool{false, true} {
		c := routedCase(t, "bad", 16, 32, 4, 4, 2, norm, 1, 1, 0.1, 8)
		c.Weights[5] *= 1.01
		if _, err := c.RecoverIndices(); err == nil {
			t.Errorf("norm=%t: a weight 1%% off matched an expert", norm)
		}
	}
}

// TestLoadIndices: Load keeps valid indices and rebuilds them when the file holds the router logits in
// their place (the generator's old defect).
func TestLoadIndices(t *testing.T) {
	c := routedCase(t, "case", 64, 32, 4, 4, 2, true, 1.5, 2, 0.1, 9)
	for _, broken := range []bool{false, true} {
		dir := t.TempDir()
		src := "scores_for_choice = scores_for_choice.masked_fill(~score_mask.bool(), float(\"-inf\"))\n"
		if err := os.WriteFile(filepath.Join(dir, SourceFile), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		idx, shape := c.Indices, []int{c.T, c.K}
		if broken {
			idx, shape = make([]int64, c.T*c.E), []int{c.T, c.E}
			for i, v := range c.Logits {
				idx[i] = int64(v)
			}
		}
		meta, _ := json.Marshal(map[string]any{"T": c.T, "E": c.E, "K": c.K, "n_group": c.Groups, "topk_group": c.TopKGroups,
			"norm_topk_prob": c.Norm, "routed_scaling_factor": c.Scale})
		err := hf.WriteFile(filepath.Join(dir, RoutingFile), []hf.Tensor{
			{Name: "case.logits", Shape: []int{c.T, c.E}, Values: c.Logits},
			{Name: "case.bias", Shape: []int{c.E}, Values: c.Bias},
			{Name: "case.indices", Shape: shape, Values: idx},
			{Name: "case.weights", Shape: []int{c.T, c.K}, Values: c.Weights},
		}, map[string]string{"transformers": "test", "case": string(meta)})
		if err != nil {
			t.Fatal(err)
		}
		cases, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		got := cases[0]
		if got.Recovered != broken || got.Mask != ops.GroupMaskExclude {
			t.Errorf("broken=%t: Recovered %t, mask %v", broken, got.Recovered, got.Mask)
		}
		if !broken && !slices.Equal(got.Indices, c.Indices) {
			t.Errorf("valid indices were not kept as they are")
		}
		sameSets(t, got, got.Indices, c.Indices)
		if r := Compare(got, toInt32(c.Indices), toFloat64(c.Weights)); r.Bad != 0 {
			t.Errorf("broken=%t: %s", broken, fmt.Sprint(r.Problems))
		}
	}
}

func toInt32(v []int64) []int32 {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out
}

func toFloat64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
