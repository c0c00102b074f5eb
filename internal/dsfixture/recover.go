package dsfixture

import (
	"fmt"
	"math"
	"sort"
)

// recoverTol is the relative distance within which a score matches a weight in RecoverIndices. torch
// computes the sigmoid, the sum, the division and the scaling in float32 (a few roundings of 2^-24
// each); distinct experts' scores are almost always much further apart.
const recoverTol = 2e-6

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

// RecoverIndices rebuilds transformers' indices [T,K] from its weights and the logits and stores them
// in c.Indices (in the order of c.Weights). Each weight is w_j = s[i_j] · scale, divided by
// (Σ_j' s[i_j'] + 1e-20) under norm_topk_prob, with s = sigmoid(logits) in float32, so every weight
// names the expert whose score it is: without normalisation directly (s = w / scale), with it up to the
// token's common denominator D, found by trying each expert as the one behind the largest weight and
// keeping the D for which every weight matches an expert's score (within recoverTol). The result does
// not use ops' router. When a weight matches several experts' scores, the expert transformers' rule
// selects first (the largest masked selection value, see choice) is taken, and the token is counted in
// the returned number of ambiguous tokens. A token that no D explains is an error, as is K = 1 under
// normalisation (its weight is always the scale and names no expert).
func (c *Case) RecoverIndices() (ambiguous int, err error) {
	if c.K == 1 && c.Norm {
		return 0, fmt.Errorf("k = 1 with norm_topk_prob: every weight is the scale and names no expert")
	}
	if !(c.Scale > 0) {
		return 0, fmt.Errorf("routed_scaling_factor %v: the weights carry no scores", c.Scale)
	}
	idx := make([]int64, c.T*c.K)
	s := make([]float64, c.E)
	order := make([]int, c.E) // experts by increasing score
	r := make([]float64, c.K)
	for tok := 0; tok < c.T; tok++ {
		for e := range s {
			s[e] = float64(float32(1 / (1 + math.Exp(-float64(c.Logits[tok*c.E+e])))))
			order[e] = e
		}
		sort.SliceStable(order, func(a, b int) bool { return s[order[a]] < s[order[b]] })
		top := 0
		for j := range r {
			r[j] = float64(c.Weights[tok*c.K+j]) / c.Scale
			if r[j] > r[top] {
				top = j
			}
		}
		choice, _ := c.choice(tok)
		match := func(d float64) (set []int64, amb bool, ok bool) {
			set = make([]int64, c.K)
			used := map[int]bool{}
			for j := range r {
				target := r[j] * d
				tol := recoverTol * math.Max(target, 1e-30)
				lo := sort.Search(c.E, func(a int) bool { return s[order[a]] >= target-tol })
				best, n := -1, 0
				for a := lo; a < c.E && s[order[a]] <= target+tol; a++ {
					e := order[a]
					if used[e] {
						continue
					}
					n++
					if best < 0 || choice[e] > choice[best] || (choice[e] == choice[best] && e < best) {
						best = e
					}
				}
				if best < 0 {
					return nil, false, false
				}
				amb = amb || n > 1
				used[best] = true
				set[j] = int64(best)
			}
			return set, amb, true
		}
		var found [][]int64
		var amb bool
		if !c.Norm {
			if set, a, ok := match(1); ok {
				found, amb = append(found, set), a
			}
		} else {
			for _, e := range order {
				if s[e] == 0 || r[top] == 0 {
					continue
				}
				set, a, ok := match(s[e] / r[top])
				if !ok {
					continue
				}
				amb = amb || a
				if !containsSet(found, set) {
					found = append(found, set)
				}
			}
		}
		switch {
		case len(found) == 0:
			return ambiguous, fmt.Errorf("token %d: weights %v match no %d experts' scores", tok, c.Weights[tok*c.K:(tok+1)*c.K], c.K)
		case len(found) > 1:
			// Several denominators explain the weights: take the set transformers' rule prefers.
			amb = true
			sort.SliceStable(found, func(a, b int) bool { return choiceSum(choice, found[a]) > choiceSum(choice, found[b]) })
		}
		if amb {
			ambiguous++
		}
		copy(idx[tok*c.K:], found[0])
	}
	c.Indices = idx
	return ambiguous, nil
}

// containsSet reports whether sets holds set (as a set of experts).
func containsSet(sets [][]int64, set []int64) bool {
	key := func(v []int64) string {
		w := append([]int64(nil), v...)
		sort.Slice(w, func(a, b int) bool { return w[a] < w[b] })
		return fmt.Sprint(w)
	}
	k := key(set)
	for _, o := range sets {
		if key(o) == k {
			return true
		}
	}
	return false
}

func choiceSum(choice []float32, set []int64) float64 {
	var sum float64
	for _, e := range set {
		sum += float64(choice[e])
	}
	return sum
}
