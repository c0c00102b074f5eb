package ops

import "fmt"

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
)

func (s Scoring) String() string {
	switch s {
	case SoftmaxTopK:
		return "softmax-topk"
	case TopKSoftmax:
		return "topk-softmax"
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
	}
	return 0, failf(ErrConfig, "unknown scoring %q (want softmax-topk or topk-softmax)", s)
}

// RouteConfig parameterises routing.
type RouteConfig struct {
	K           int     // experts per token, 1 <= K <= E
	Scoring     Scoring // how logits become weights
	Renormalize bool    // SoftmaxTopK only: divide the k weights by their sum
}

// Validate checks the configuration against the number of experts (errors wrap ErrConfig).
func (c RouteConfig) Validate(numExperts int) error {
	if numExperts < 1 {
		return failf(ErrConfig, "route: number of experts must be >= 1, got %d", numExperts)
	}
	if c.K < 1 || c.K > numExperts {
		return failf(ErrConfig, "route: top-k must satisfy 1 <= k <= E, got k=%d, E=%d", c.K, numExperts)
	}
	if c.Scoring != SoftmaxTopK && c.Scoring != TopKSoftmax {
		return failf(ErrConfig, "route: unknown scoring %d", int(c.Scoring))
	}
	return nil
}

// EffectiveRenormalize reports whether the k weights sum to one after routing.
func (c RouteConfig) EffectiveRenormalize() bool {
	return c.Scoring == TopKSoftmax || c.Renormalize
}

func (c RouteConfig) String() string {
	return fmt.Sprintf("k=%d,scoring=%v,renorm=%t", c.K, c.Scoring, c.EffectiveRenormalize())
}
