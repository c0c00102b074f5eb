package moe

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Config describes one MoE layer.
type Config struct {
	Hidden      int         // H, model width
	FFN         int         // F, expert hidden width
	Experts     int         // E
	TopK        int         // K, experts per token, 1 <= K <= E
	Scoring     ops.Scoring // ops.SoftmaxTopK (Mixtral) or ops.TopKSoftmax
	Renormalize bool        // SoftmaxTopK: renormalise the K weights (Mixtral: true)
	AuxLossCoef float64     // load-balancing loss coefficient; 0 leaves the node out
	ZLossCoef   float64     // router z-loss coefficient; 0 leaves the node out
	Seed        uint64      // weight initialisation seed
	Dtype       tensor.Dtype
	// Backend holds the layer's parameters: nil or ops.CPU() keeps them in host memory; a device backend
	// (e.g. the one named "cuda" in ops.Backends()) gets copies of the host weights (FromHost) when the
	// layer is created. The layer's ops run on the backend that owns their inputs, so feed the layer
	// inputs of the same backend (ops.Runner and ops.Trainer copy host feeds there).
	Backend ops.Backend
}

// MixtralConfig returns a Mixtral-style configuration (softmax, top-2, renormalised, aux coef 0.02 as
// in Mixtral's router_aux_loss_coef) in float32.
func MixtralConfig(hidden, ffn, experts int) Config {
	return Config{Hidden: hidden, FFN: ffn, Experts: experts, TopK: 2, Scoring: ops.SoftmaxTopK,
		Renormalize: true, AuxLossCoef: 0.02, Seed: 1, Dtype: tensor.Float32}
}

// Route returns the routing configuration of the layer.
func (c Config) Route() ops.RouteConfig {
	return ops.RouteConfig{K: c.TopK, Scoring: c.Scoring, Renormalize: c.Renormalize}
}

// Validate checks sizes, dtype and routing parameters.
func (c Config) Validate() error {
	if c.Hidden < 1 || c.FFN < 1 || c.Experts < 1 {
		return fmt.Errorf("moe: sizes must be >= 1, got hidden=%d ffn=%d experts=%d", c.Hidden, c.FFN, c.Experts)
	}
	if c.Dtype != tensor.Float32 && c.Dtype != tensor.Float64 {
		return fmt.Errorf("moe: dtype must be float32 or float64, got %v", c.Dtype)
	}
	if c.AuxLossCoef < 0 || c.ZLossCoef < 0 {
		return fmt.Errorf("moe: loss coefficients must be >= 0, got aux=%v z=%v", c.AuxLossCoef, c.ZLossCoef)
	}
	return c.Route().Validate(c.Experts)
}
