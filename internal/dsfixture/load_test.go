package dsfixture

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// TestLoadIndices: Load keeps valid indices and refuses a file that holds the router logits in their
// place (the generator's old defect), saying how to regenerate it.
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
		if broken {
			if err == nil || !strings.Contains(err.Error(), "regenerate") {
				t.Errorf("indices of shape [T,E]: error %v, want one that says to regenerate the fixtures", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got := cases[0]
		if got.Mask != ops.GroupMaskExclude || !slices.Equal(got.Indices, c.Indices) {
			t.Errorf("mask %v; valid indices kept as they are: %t", got.Mask, slices.Equal(got.Indices, c.Indices))
		}
		if r := Compare(got, toInt32(c.Indices), toFloat64(c.Weights)); r.Bad != 0 {
			t.Errorf("%s", fmt.Sprint(r.Problems))
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
