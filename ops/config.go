package ops

import (
	"fmt"
	"math"
)

// Scoring selects how router logits become routing weights.
type Scoring int

const (
	// SoftmaxTopK computes p = softmax(logits) over all E experts in float precision of the input,
	// selects the k largest p (ties to the lower expert index) and, when Renormalize is set, divides
	// the k selected probabilities by their sum (Mixtral, HF MixtralSparseMoeBlock).
	SoftmaxTopK Scoring = iota
	// TopKSoftmax selects the k largest logits (ties to the lower expert index) and takes a softmax over
	// those k logits only (Mistral's reference). Renormalize is ignored: the k weights always sum to 1.
	TopKSoftmax
	// Sigmoid is DeepSeek-V3's rule (transformers' DeepseekV3TopkRouter / DeepseekV3MoE):
	//
	//	s = sigmoid(logits)                     (in the logits' dtype)
	//	c = s + bias                            (selection only; bias [E], none when nil)
	//	groups (Groups > 1): the E experts split into Groups equal groups of consecutive experts; a group
	//	  scores the sum of its two largest c; the TopKGroups best groups are kept (ties to the lower
	//	  group index); the c of every expert of a dropped group becomes -Inf (GroupMaskExclude, the
	//	  default: never chosen, as transformers 5.17 and DeepSeek's reference code) or 0
	//	  (GroupMaskZero: earlier transformers releases)
	//	the k largest c are chosen (ties to the lower expert index)
	//	w_j = s[i_j] (the unbiased score), divided by (sum_j s[i_j] + 1e-20) when Renormalize
	//	  (norm_topk_prob), times Scale (routed_scaling_factor)
	//
	// The weights are differentiable w.r.t. the logits; the bias carries no gradient (it is updated by
	// UpdateBalanceBias, the aux-loss-free balancing). A NaN logit or a NaN or infinite bias is an error
	// (ErrNaN); infinite logits are valid (scores 1 and 0).
	Sigmoid
)

func (s Scoring) String() string {
	switch s {
	case SoftmaxTopK:
		return "softmax-topk"
	case TopKSoftmax:
		return "topk-softmax"
	case Sigmoid:
		return "sigmoid"
	}
	return fmt.Sprintf("Scoring(%d)", int(s))
}

// ParseScoring is the inverse of Scoring.String.
func ParseScoring(s string) (Scoring, error) {
	switch s {
	case "softmax-topk":
		return SoftmaxTopK, nil
	case "topk-softmax":
		return TopKSoftmax, nil
	case "sigmoid":
		return Sigmoid, nil
	}
	return 0, failf(ErrConfig, "unknown scoring %q (want softmax-topk, topk-softmax or sigmoid)", s)
}

// GroupMask says what group-limited routing (RouteConfig.Groups > 1) does with the experts of the
// groups it drops.
type GroupMask int

const (
	// GroupMaskExclude never chooses them (their selection value becomes -Inf): every chosen expert
	// lies in a kept group. The default: transformers 5.17's DeepseekV3TopkRouter
	// (masked_fill(..., float("-inf"))), DeepSeek-V3's reference inference code and vLLM.
	GroupMaskExclude GroupMask = iota
	// GroupMaskZero replaces their selection value by 0.0, as earlier transformers releases' DeepseekV3
	// router did (masked_fill(..., 0.0)): they are still chosen before a kept expert whose value
	// (score + bias) is negative. For reproducing results of those releases.
	GroupMaskZero
)

func (m GroupMask) String() string {
	switch m {
	case GroupMaskZero:
		return "zero"
	case GroupMaskExclude:
		return "exclude"
	}
	return fmt.Sprintf("GroupMask(%d)", int(m))
}

// ParseGroupMask is the inverse of GroupMask.String.
func ParseGroupMask(s string) (GroupMask, error) {
	switch s {
	case "exclude":
		return GroupMaskExclude, nil
	case "zero":
		return GroupMaskZero, nil
	}
	return 0, failf(ErrConfig, "unknown group mask %q (want exclude or zero)", s)
}

// DropPolicy says which slots keep their place when an expert receives more slots than its capacity.
type DropPolicy int

const (
	// DropPosition keeps the first slots in slot order s = t*K + j (token order; for K = 1 the Switch
	// Transformer rule, for K > 1 Megatron-Core's "position" policy).
	DropPosition DropPolicy = iota
	// DropProbs keeps the slots with the largest routing weights (ties to the lower slot), Megatron-Core's
	// "probs" policy.
	DropProbs
)

func (p DropPolicy) String() string {
	switch p {
	case DropPosition:
		return "position"
	case DropProbs:
		return "probs"
	}
	return fmt.Sprintf("DropPolicy(%d)", int(p))
}

// ParseDropPolicy is the inverse of DropPolicy.String.
func ParseDropPolicy(s string) (DropPolicy, error) {
	switch s {
	case "position":
		return DropPosition, nil
	case "probs":
		return DropProbs, nil
	}
	return 0, failf(ErrConfig, "unknown drop policy %q (want position or probs)", s)
}

// RouteConfig parameterises routing. The zero values of the fields added after K, Scoring and
// Renormalize keep Mixtral-style dropless routing.
type RouteConfig struct {
	K           int     // experts per token, 1 <= K <= E
	Scoring     Scoring // how logits become weights
	Renormalize bool    // SoftmaxTopK and Sigmoid: divide the k weights by their sum (norm_topk_prob)

	// Group-limited routing (Sigmoid only): Groups > 1 splits the E experts into Groups equal groups
	// (E % Groups == 0, at least 2 experts per group) and keeps the TopKGroups (1..Groups) best groups
	// of each token; K must not exceed the experts of the kept groups. 0 or 1: no groups.
	Groups, TopKGroups int
	// GroupMask: what dropped groups' experts score (by default GroupMaskExclude, transformers 5.17's
	// rule: never chosen).
	GroupMask GroupMask

	// Scale multiplies every routing weight (routed_scaling_factor); 0 means 1. Finite and >= 0.
	Scale float64

	// Capacity (see CapacityFor): at most Capacity slots per expert, or, when CapacityFactor > 0,
	// C = ceil(CapacityFactor * T*K / E); slots beyond it are dropped by DropPolicy. Both 0: dropless.
	Capacity       int
	CapacityFactor float64
	DropPolicy     DropPolicy
}

// Validate checks the configuration against the number of experts (errors wrap ErrConfig).
func (c RouteConfig) Validate(numExperts int) error {
	if numExperts < 1 {
		return failf(ErrConfig, "route: number of experts must be >= 1, got %d", numExperts)
	}
	if c.K < 1 || c.K > numExperts {
		return failf(ErrConfig, "route: top-k must satisfy 1 <= k <= E, got k=%d, E=%d", c.K, numExperts)
	}
	if c.Scoring != SoftmaxTopK && c.Scoring != TopKSoftmax && c.Scoring != Sigmoid {
		return failf(ErrConfig, "route: unknown scoring %d", int(c.Scoring))
	}
	if c.Groups < 0 || c.TopKGroups < 0 {
		return failf(ErrConfig, "route: groups and top-k groups must be >= 0, got %d and %d", c.Groups, c.TopKGroups)
	}
	if c.Groups > 1 {
		if c.Scoring != Sigmoid {
			return failf(ErrConfig, "route: group-limited routing (groups=%d) needs sigmoid scoring, got %v", c.Groups, c.Scoring)
		}
		if numExperts%c.Groups != 0 || numExperts/c.Groups < 2 {
			return failf(ErrConfig, "route: %d groups must divide E=%d into groups of at least 2 experts (a group scores its top-2)", c.Groups, numExperts)
		}
		if c.TopKGroups < 1 || c.TopKGroups > c.Groups {
			return failf(ErrConfig, "route: top-k groups must satisfy 1 <= topk_group <= groups, got %d of %d", c.TopKGroups, c.Groups)
		}
		if kept := c.TopKGroups * (numExperts / c.Groups); c.K > kept {
			return failf(ErrConfig, "route: k=%d exceeds the %d experts of the %d kept groups (of %d experts each)", c.K, kept, c.TopKGroups, numExperts/c.Groups)
		}
	} else if c.TopKGroups > 1 {
		return failf(ErrConfig, "route: top-k groups = %d needs groups > 1, got groups=%d", c.TopKGroups, c.Groups)
	}
	if c.GroupMask != GroupMaskZero && c.GroupMask != GroupMaskExclude {
		return failf(ErrConfig, "route: unknown group mask %d", int(c.GroupMask))
	}
	if !(c.Scale >= 0) || math.IsInf(c.Scale, 1) {
		return failf(ErrConfig, "route: scale must be finite and >= 0 (0 means 1), got %v", c.Scale)
	}
	if c.Capacity < 0 {
		return failf(ErrConfig, "route: capacity must be >= 0, got %d", c.Capacity)
	}
	if !(c.CapacityFactor >= 0) || math.IsInf(c.CapacityFactor, 1) {
		return failf(ErrConfig, "route: capacity factor must be finite and >= 0, got %v", c.CapacityFactor)
	}
	if c.Capacity > 0 && c.CapacityFactor > 0 {
		return failf(ErrConfig, "route: give a capacity (%d) or a capacity factor (%v), not both", c.Capacity, c.CapacityFactor)
	}
	if c.Capacity > maxSlots {
		return failf(ErrConfig, "route: capacity %d does not fit the int32 routing plan", c.Capacity)
	}
	if c.DropPolicy != DropPosition && c.DropPolicy != DropProbs {
		return failf(ErrConfig, "route: unknown drop policy %d", int(c.DropPolicy))
	}
	return nil
}

// EffectiveRenormalize reports whether the k weights are divided by their sum (they then sum to Scale).
func (c RouteConfig) EffectiveRenormalize() bool {
	return c.Scoring == TopKSoftmax || c.Renormalize
}

// EffectiveScale is the factor applied to every weight: Scale, or 1 when Scale is 0.
func (c RouteConfig) EffectiveScale() float64 {
	if c.Scale == 0 {
		return 1
	}
	return c.Scale
}

// Grouped reports whether group-limited selection applies (Groups > 1).
func (c RouteConfig) Grouped() bool { return c.Groups > 1 }

// Dropping reports whether a capacity is configured (the plan may drop slots).
func (c RouteConfig) Dropping() bool { return c.Capacity > 0 || c.CapacityFactor > 0 }

// CapacityFor returns the capacity C (slots per expert) for T tokens and E experts: Capacity, or
// ceil(CapacityFactor * T*K / E) (Megatron-Core's and Switch's formula), and 0 for dropless routing. A
// capacity of T*K or more never drops a slot; buffers stay T*K rows whatever the capacity (rows of
// dropped slots are zero), so a large capacity costs no memory. A factor whose capacity does not fit
// an int32 is refused (ErrConfig).
func (c RouteConfig) CapacityFor(numTokens, numExperts int) (int, error) {
	if err := c.Validate(numExperts); err != nil {
		return 0, err
	}
	if c.Capacity > 0 {
		return c.Capacity, nil
	}
	if c.CapacityFactor == 0 {
		return 0, nil
	}
	v := math.Ceil(c.CapacityFactor * float64(numTokens) * float64(c.K) / float64(numExperts))
	if !(v <= maxSlots) {
		return 0, failf(ErrConfig, "route: capacity factor %v gives a capacity of %v slots per expert (T=%d, K=%d, E=%d), beyond the int32 routing plan", c.CapacityFactor, v, numTokens, c.K, numExperts)
	}
	return max(int(v), 1), nil
}

func (c RouteConfig) String() string {
	s := fmt.Sprintf("k=%d,scoring=%v,renorm=%t", c.K, c.Scoring, c.EffectiveRenormalize())
	if c.Grouped() || c.TopKGroups != 0 {
		s += fmt.Sprintf(",groups=%d/%d,mask=%v", c.TopKGroups, c.Groups, c.GroupMask)
	}
	if c.Scale != 0 {
		s += fmt.Sprintf(",scale=%v", c.Scale)
	}
	if c.Dropping() {
		s += fmt.Sprintf(",capacity=%d,factor=%v,drop=%v", c.Capacity, c.CapacityFactor, c.DropPolicy)
	}
	return s
}
