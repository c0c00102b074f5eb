package tests

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/moe/hf"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// The DeepSeek-V3 routing fixtures: logits, biases, and the indices and weights that transformers'
// own DeepseekV3 router produced for them (tests/fixtures/gen_deepseek_fixtures.py), with the router's
// source text beside them.
const (
	deepseekFixture = "fixtures/deepseek/deepseek_v3_routing.safetensors"
	deepseekSource  = "fixtures/deepseek/deepseek_v3_router_source.txt"
	deepseekHowTo   = "generate them with transformers 5.17 (CPU is enough): " +
		"python3 tests/fixtures/gen_deepseek_fixtures.py tests/fixtures/deepseek, and commit both files"
)

// deepseekCase is one fixture case: its configuration (header metadata) and tensors.
type deepseekCase struct {
	Name           string
	T, E, K        int
	Groups         int     `json:"n_group"`
	TopKGroups     int     `json:"topk_group"`
	Norm           bool    `json:"norm_topk_prob"`
	Scale          float64 `json:"routed_scaling_factor"`
	logits, bias   []float32
	indices        []int64
	weights        []float32
	transformers   string
	mask           ops.GroupMask
	maskFromSource string
}

func (c deepseekCase) config() ops.RouteConfig {
	cfg := ops.RouteConfig{K: c.K, Scoring: ops.Sigmoid, Renormalize: c.Norm, Scale: c.Scale, GroupMask: c.mask}
	if c.Groups > 1 {
		cfg.Groups, cfg.TopKGroups = c.Groups, c.TopKGroups
	}
	return cfg
}

// loadDeepSeekFixtures reads every case; a missing file fails the test with how to generate it.
func loadDeepSeekFixtures(t *testing.T) []deepseekCase {
	t.Helper()
	src, err := os.ReadFile(deepseekSource)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the DeepSeek-V3 router source %s is missing: %s", deepseekSource, deepseekHowTo)
	}
	if err != nil {
		t.Fatal(err)
	}
	mask, line := groupMaskOf(t, string(src))
	f, err := hf.Open(deepseekFixture)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the DeepSeek-V3 routing fixtures %s are missing: %s", deepseekFixture, deepseekHowTo)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []deepseekCase
	md := f.Metadata()
	names := make([]string, 0, len(md))
	for k := range md {
		if k != "transformers" && k != "torch" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatalf("%s has no cases in its metadata", deepseekFixture)
	}
	for _, name := range names {
		c := deepseekCase{Name: name, transformers: md["transformers"], mask: mask, maskFromSource: line}
		if err := json.Unmarshal([]byte(md[name]), &c); err != nil {
			t.Fatalf("case %s: configuration %q: %v", name, md[name], err)
		}
		var shape []int
		if c.logits, shape, err = f.ReadFloat32(name + ".logits"); err != nil || len(shape) != 2 || shape[0] != c.T || shape[1] != c.E {
			t.Fatalf("case %s: logits %v: %v", name, shape, err)
		}
		if c.bias, _, err = f.ReadFloat32(name + ".bias"); err != nil || len(c.bias) != c.E {
			t.Fatalf("case %s: bias: %v", name, err)
		}
		if c.indices, shape, err = f.ReadInt64(name + ".indices"); err != nil || len(c.indices) != c.T*c.K {
			t.Fatalf("case %s: indices %v: %v", name, shape, err)
		}
		if c.weights, _, err = f.ReadFloat32(name + ".weights"); err != nil || len(c.weights) != c.T*c.K {
			t.Fatalf("case %s: weights: %v", name, err)
		}
		cases = append(cases, c)
	}
	return cases
}

// groupMaskOf reads from the router's source what dropped groups' experts score: masked_fill with 0.0
// (ops.GroupMaskZero) or with -inf (ops.GroupMaskExclude).
func groupMaskOf(t *testing.T, src string) (ops.GroupMask, string) {
	t.Helper()
	var found []string
	for _, l := range strings.Split(src, "\n") {
		if strings.Contains(l, "masked_fill") {
			found = append(found, strings.TrimSpace(l))
		}
	}
	switch {
	case len(found) != 1:
		t.Fatalf("%s: want exactly one masked_fill line (the group mask), found %q", deepseekSource, found)
	case regexp.MustCompile(`,\s*0(\.0*)?\s*\)`).MatchString(found[0]):
		return ops.GroupMaskZero, found[0]
	case strings.Contains(found[0], "inf"):
		return ops.GroupMaskExclude, found[0]
	}
	t.Fatalf("%s: cannot tell what %q fills dropped groups with", deepseekSource, found[0])
	return 0, ""
}

// fixtureChoice is transformers' selection value of one token in float32: sigmoid + bias, dropped
// groups masked; also the sorted group scores.
func fixtureChoice(c deepseekCase, tok int) (choice []float32, groupScores []float32) {
	choice = make([]float32, c.E)
	for e := range choice {
		choice[e] = float32(1/(1+math.Exp(-float64(c.logits[tok*c.E+e])))) + c.bias[e]
	}
	if c.Groups <= 1 {
		return choice, nil
	}
	gs := c.E / c.Groups
	score := make([]float32, c.Groups)
	for g := range score {
		v := append([]float32(nil), choice[g*gs:(g+1)*gs]...)
		sort.Slice(v, func(i, j int) bool { return v[i] > v[j] })
		score[g] = v[0] + v[1]
	}
	order := make([]int, c.Groups)
	for g := range order {
		order[g] = g
	}
	sort.SliceStable(order, func(i, j int) bool { return score[order[i]] > score[order[j]] })
	kept := map[int]bool{}
	for _, g := range order[:c.TopKGroups] {
		kept[g] = true
	}
	fill := float32(0)
	if c.mask == ops.GroupMaskExclude {
		fill = float32(math.Inf(-1))
	}
	for e := range choice {
		if !kept[e/gs] {
			choice[e] = fill
		}
	}
	sorted := append([]float32(nil), score...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] > sorted[j] })
	return choice, sorted
}

// compareDeepSeek checks one backend's routing of a case against transformers': per token the same
// expert set (transformers returns its top-k unsorted; our order is decreasing, ties to the lower
// index) and the same weight per expert. torch's choice among equal values is unspecified, so a token
// whose sets differ only by experts of exactly equal selection value (e.g. several dropped experts at
// 0.0 under GroupMaskZero), or whose kept groups differ only between groups of exactly equal score, is
// accepted, its weights checked against transformers' formula for our experts. Differences at near-ties
// (|difference| <= 1e-6: torch's float32 sigmoid rounding) are accepted for at most 1% of the tokens.
func compareDeepSeek(t *testing.T, c deepseekCase, idx []int32, w []float64) {
	t.Helper()
	const near = 1e-6
	tied, nearTied, bad := 0, 0, 0
	fail := func(format string, args ...any) {
		if bad < 5 {
			t.Errorf(format, args...)
		}
		bad++
	}
	for tok := 0; tok < c.T; tok++ {
		ours := map[int]float64{}
		for j := 0; j < c.K; j++ {
			ours[int(idx[tok*c.K+j])] = w[tok*c.K+j]
		}
		theirs := map[int]float64{}
		for j := 0; j < c.K; j++ {
			theirs[int(c.indices[tok*c.K+j])] = float64(c.weights[tok*c.K+j])
		}
		var onlyOurs, onlyTheirs []int
		for e := range ours {
			if _, ok := theirs[e]; !ok {
				onlyOurs = append(onlyOurs, e)
			}
		}
		for e := range theirs {
			if _, ok := ours[e]; !ok {
				onlyTheirs = append(onlyTheirs, e)
			}
		}
		if len(ours) != c.K || len(theirs) != c.K {
			fail("%s token %d: %d distinct experts of ours, %d of transformers', want %d", c.Name, tok, len(ours), len(theirs), c.K)
			continue
		}
		if len(onlyOurs) == 0 {
			for e, wv := range ours {
				if d := math.Abs(wv - theirs[e]); d > 2e-6*math.Max(1, math.Abs(theirs[e])) {
					fail("%s token %d expert %d: weight %.9g, transformers %.9g", c.Name, tok, e, wv, theirs[e])
				}
			}
			continue
		}
		choice, gscores := fixtureChoice(c, tok)
		maxDiff := 0.0 // the largest selection-value difference among the exchanged experts
		for _, x := range onlyOurs {
			for _, y := range onlyTheirs {
				maxDiff = math.Max(maxDiff, math.Abs(float64(choice[x]-choice[y])))
			}
		}
		groupDiff := math.Inf(1)
		if len(gscores) > c.TopKGroups {
			groupDiff = math.Abs(float64(gscores[c.TopKGroups-1] - gscores[c.TopKGroups]))
		}
		switch {
		case maxDiff == 0 || groupDiff == 0:
			tied++
			var sum float64
			for e := range ours {
				sum += 1 / (1 + math.Exp(-float64(c.logits[tok*c.E+e])))
			}
			for e, wv := range ours {
				want := 1 / (1 + math.Exp(-float64(c.logits[tok*c.E+e])))
				if c.Norm {
					want /= sum + 1e-20
				}
				want *= c.Scale
				if math.Abs(wv-want) > 2e-6*math.Max(1, want) {
					fail("%s token %d (a tie) expert %d: weight %.9g, transformers' formula gives %.9g", c.Name, tok, e, wv, want)
				}
			}
		case maxDiff <= near || groupDiff <= near:
			nearTied++
		default:
			fail("%s token %d: experts %v, transformers %v (only ours %v, only theirs %v)", c.Name, tok, keys(ours), keys(theirs), onlyOurs, onlyTheirs)
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d tokens differ", c.Name, bad)
	}
	if nearTied*100 > c.T {
		t.Errorf("%s: %d of %d tokens differ at near-ties (more than 1%%)", c.Name, nearTied, c.T)
	}
	if tied+nearTied > 0 {
		t.Logf("%s: %d tokens differ at exact ties (torch's order among equal values is unspecified), %d at near-ties", c.Name, tied, nearTied)
	}
}

func keys(m map[int]float64) []int {
	k := make([]int, 0, len(m))
	for e := range m {
		k = append(k, e)
	}
	sort.Ints(k)
	return k
}

// runDeepSeekFixtures routes every case on backend b (RouteIndicesBias + RouteWeights) and compares.
func runDeepSeekFixtures(t *testing.T, b ops.Backend) {
	for _, c := range loadDeepSeekFixtures(t) {
		t.Run(c.Name, func(t *testing.T) {
			cfg := c.config()
			if err := cfg.Validate(c.E); err != nil {
				t.Fatal(err)
			}
			l, err := b.FromHost(tensor.New(tensor.WithShape(c.T, c.E), tensor.WithBacking(append([]float32(nil), c.logits...))))
			if err != nil {
				t.Fatal(err)
			}
			bias, err := b.FromHost(tensor.New(tensor.WithShape(c.E), tensor.WithBacking(append([]float32(nil), c.bias...))))
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
	if c := cases[0]; c.mask != (ops.RouteConfig{}).GroupMask {
		t.Errorf("transformers %s fills dropped groups as %q (%v), but ops' default GroupMask is %v: change the default",
			c.transformers, c.maskFromSource, c.mask, (ops.RouteConfig{}).GroupMask)
	}
	runDeepSeekFixtures(t, ops.CPU())
}
