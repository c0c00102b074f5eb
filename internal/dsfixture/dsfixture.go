// Package dsfixture reads the DeepSeek-V3 routing fixtures (logits, biases, and the indices and weights
// transformers' own DeepseekV3 router produced for them, written by tests/fixtures/gen_deepseek_fixtures.py)
// and compares a routing with them. It is shared by the tests of package ops' backends and of the
// mixtral-layer route subcommand.
package dsfixture

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/expertrt/expertrt-go/moe/hf"
	"github.com/expertrt/expertrt-go/ops"
)

// File names inside the fixture folder (tests/fixtures/deepseek).
const (
	RoutingFile = "deepseek_v3_routing.safetensors"
	SourceFile  = "deepseek_v3_router_source.txt"
	// HowTo says how to make the fixtures.
	HowTo = "generate them with transformers 5.17 (CPU is enough): " +
		"python3 tests/fixtures/gen_deepseek_fixtures.py tests/fixtures/deepseek, and commit both files"
)

// Case is one fixture case: its configuration (header metadata, transformers' names) and tensors.
type Case struct {
	Name       string
	T, E, K    int
	Groups     int       `json:"n_group"`
	TopKGroups int       `json:"topk_group"`
	Norm       bool      `json:"norm_topk_prob"`
	Scale      float64   `json:"routed_scaling_factor"`
	Logits     []float32 // [T,E]
	Bias       []float32 // [E]
	Indices    []int64   // [T,K] as transformers returns them (its top-k is unsorted)
	Weights    []float32 // [T,K] in the order of Indices

	Transformers string        // the transformers version that wrote the file
	Mask         ops.GroupMask // what transformers' source fills dropped groups with
	MaskLine     string        // the masked_fill line of that source
}

// Config is the ops routing configuration of the case.
func (c Case) Config() ops.RouteConfig {
	cfg := ops.RouteConfig{K: c.K, Scoring: ops.Sigmoid, Renormalize: c.Norm, Scale: c.Scale, GroupMask: c.Mask}
	if c.Groups > 1 {
		cfg.Groups, cfg.TopKGroups = c.Groups, c.TopKGroups
	}
	return cfg
}

// Load reads every case of the fixture folder dir. A missing file is an error that wraps
// fs.ErrNotExist and says how to generate the fixtures.
func Load(dir string) ([]Case, error) {
	src, err := os.ReadFile(filepath.Join(dir, SourceFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("the DeepSeek-V3 router source %s is missing: %s: %w", filepath.Join(dir, SourceFile), HowTo, err)
	}
	if err != nil {
		return nil, err
	}
	mask, line, err := GroupMaskOf(string(src))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", SourceFile, err)
	}
	path := filepath.Join(dir, RoutingFile)
	f, err := hf.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("the DeepSeek-V3 routing fixtures %s are missing: %s: %w", path, HowTo, err)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	md := f.Metadata()
	var names []string
	for k := range md {
		if k != "transformers" && k != "torch" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("%s has no cases in its metadata", path)
	}
	var cases []Case
	for _, name := range names {
		c := Case{Name: name, Transformers: md["transformers"], Mask: mask, MaskLine: line}
		if err := json.Unmarshal([]byte(md[name]), &c); err != nil {
			return nil, fmt.Errorf("case %s: configuration %q: %w", name, md[name], err)
		}
		var shape []int
		if c.Logits, shape, err = f.ReadFloat32(name + ".logits"); err != nil || len(shape) != 2 || shape[0] != c.T || shape[1] != c.E {
			return nil, fmt.Errorf("case %s: logits of shape %v: %v", name, shape, err)
		}
		if c.Bias, _, err = f.ReadFloat32(name + ".bias"); err != nil || len(c.Bias) != c.E {
			return nil, fmt.Errorf("case %s: bias: %v", name, err)
		}
		if c.Weights, shape, err = f.ReadFloat32(name + ".weights"); err != nil || len(shape) != 2 || shape[0] != c.T || shape[1] != c.K {
			return nil, fmt.Errorf("case %s: weights of shape %v, want [%d %d]: %v", name, shape, c.T, c.K, err)
		}
		if c.Indices, shape, err = f.ReadInt64(name + ".indices"); err != nil {
			return nil, fmt.Errorf("case %s: indices: %w", name, err)
		}
		if len(shape) != 2 || shape[0] != c.T || shape[1] != c.K {
			// A generator before its fix stored transformers 5's router_logits ([T,E]) there.
			return nil, fmt.Errorf("case %s: the indices tensor has shape %v, want [%d %d]; regenerate the fixtures: %s",
				name, shape, c.T, c.K, HowTo)
		}
		if err := validIndices(c); err != nil {
			return nil, fmt.Errorf("case %s: %w; regenerate the fixtures: %s", name, err, HowTo)
		}
		cases = append(cases, c)
	}
	return cases, nil
}

// GroupMaskOf reads from the router's source what dropped groups' experts score: masked_fill with 0.0
// (ops.GroupMaskZero) or with -inf (ops.GroupMaskExclude). It returns the masked_fill line too.
func GroupMaskOf(src string) (ops.GroupMask, string, error) {
	var found []string
	for _, l := range strings.Split(src, "\n") {
		if strings.Contains(l, "masked_fill") {
			found = append(found, strings.TrimSpace(l))
		}
	}
	switch {
	case len(found) != 1:
		return 0, "", fmt.Errorf("want exactly one masked_fill line (the group mask), found %q", found)
	case regexp.MustCompile(`,\s*0(\.0*)?\s*\)`).MatchString(found[0]):
		return ops.GroupMaskZero, found[0], nil
	case strings.Contains(found[0], "inf"):
		return ops.GroupMaskExclude, found[0], nil
	}
	return 0, "", fmt.Errorf("cannot tell what %q fills dropped groups with", found[0])
}

// choice is transformers' selection value of one token in float32 (sigmoid + bias, dropped groups
// masked) and the group scores sorted in decreasing order.
func (c Case) choice(tok int) (choice []float32, groupScores []float32) {
	choice = make([]float32, c.E)
	for e := range choice {
		choice[e] = float32(1/(1+math.Exp(-float64(c.Logits[tok*c.E+e])))) + c.Bias[e]
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
	if c.Mask == ops.GroupMaskExclude {
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

// Report is the outcome of Compare.
type Report struct {
	Problems []string // the first few differences, described
	Bad      int      // tokens that differ beyond ties
	Tied     int      // tokens that differ only at exact ties (accepted)
	NearTied int      // tokens that differ only at near-ties (accepted up to 1% of the tokens)
}

// OK reports whether the routing matches: no bad token, near-ties at most 1% of the tokens.
func (r Report) OK(T int) bool { return r.Bad == 0 && r.NearTied*100 <= T }

// Compare checks a routing (idx [T,K] and weights [T,K], any order within a token) against
// transformers': per token the same expert set and the same weight per expert (relative 2e-6).
// torch's choice among equal values is unspecified, so a token whose sets differ only by experts of
// exactly equal selection value (e.g. several dropped experts at 0.0 under GroupMaskZero), or whose kept
// groups differ only between groups of exactly equal score, is accepted (Tied), its weights checked
// against transformers' formula for our experts. Differences at near-ties (|difference| <= 1e-6:
// torch's float32 sigmoid rounding) are counted as NearTied.
func Compare(c Case, idx []int32, w []float64) Report {
	const near = 1e-6
	var r Report
	fail := func(format string, args ...any) {
		if len(r.Problems) < 5 {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
		r.Bad++
	}
	for tok := 0; tok < c.T; tok++ {
		ours, theirs := map[int]float64{}, map[int]float64{}
		for j := 0; j < c.K; j++ {
			ours[int(idx[tok*c.K+j])] = w[tok*c.K+j]
			theirs[int(c.Indices[tok*c.K+j])] = float64(c.Weights[tok*c.K+j])
		}
		if len(ours) != c.K || len(theirs) != c.K {
			fail("%s token %d: %d distinct experts of ours, %d of transformers', want %d", c.Name, tok, len(ours), len(theirs), c.K)
			continue
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
		if len(onlyOurs) == 0 {
			for e, wv := range ours {
				if d := math.Abs(wv - theirs[e]); d > 2e-6*math.Max(1, math.Abs(theirs[e])) {
					fail("%s token %d expert %d: weight %.9g, transformers %.9g", c.Name, tok, e, wv, theirs[e])
				}
			}
			continue
		}
		choice, gscores := c.choice(tok)
		maxDiff := 0.0
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
			r.Tied++
			var sum float64
			for e := range ours {
				sum += 1 / (1 + math.Exp(-float64(c.Logits[tok*c.E+e])))
			}
			for e, wv := range ours {
				want := 1 / (1 + math.Exp(-float64(c.Logits[tok*c.E+e])))
				if c.Norm {
					want /= sum + 1e-20
				}
				want *= c.Scale
				if math.Abs(wv-want) > 2e-6*math.Max(1, want) {
					fail("%s token %d (a tie) expert %d: weight %.9g, transformers' formula gives %.9g", c.Name, tok, e, wv, want)
				}
			}
		case maxDiff <= near || groupDiff <= near:
			r.NearTied++
		default:
			fail("%s token %d: experts %v, transformers %v (only ours %v, only theirs %v)", c.Name, tok, sortedKeys(ours), sortedKeys(theirs), onlyOurs, onlyTheirs)
		}
	}
	return r
}

func sortedKeys(m map[int]float64) []int {
	k := make([]int, 0, len(m))
	for e := range m {
		k = append(k, e)
	}
	sort.Ints(k)
	return k
}

// validIndices checks that c.Indices holds K distinct experts in [0, E) per token.
func validIndices(c Case) error {
	if len(c.Indices) != c.T*c.K {
		return fmt.Errorf("%d indices, want %d", len(c.Indices), c.T*c.K)
	}
	for tok := 0; tok < c.T; tok++ {
		seen := map[int64]bool{}
		for _, e := range c.Indices[tok*c.K : (tok+1)*c.K] {
			if e < 0 || e >= int64(c.E) || seen[e] {
				return fmt.Errorf("token %d: indices %v are not %d distinct experts in [0,%d)", tok, c.Indices[tok*c.K:(tok+1)*c.K], c.K, c.E)
			}
			seen[e] = true
		}
	}
	return nil
}
