package moe

import (
	"fmt"
	"math"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Config describes one MoE layer.
type Config struct {
	Hidden      int         // H, model width
	FFN         int         // F, expert hidden width
	Experts     int         // E
	TopK        int         // K, experts per token, 1 <= K <= E
	Scoring     ops.Scoring // ops.SoftmaxTopK (Mixtral), ops.TopKSoftmax or ops.Sigmoid (DeepSeek-V3)
	Renormalize bool        // SoftmaxTopK and Sigmoid: renormalise the K weights (Mixtral: true)
	// Routing policies (see ops.RouteConfig): group-limited selection (Sigmoid), the weights' scale
	// (0: 1), and a capacity per expert (Capacity, or CapacityFactor; both 0: dropless) with its drop
	// policy.
	Groups, TopKGroups int
	GroupMask          ops.GroupMask
	RouteScale         float64
	Capacity           int
	CapacityFactor     float64
	DropPolicy         ops.DropPolicy
	// BiasRate > 0 (Sigmoid only) gives the layer a selection bias [E] (zero at first) for aux-loss-free
	// balancing: Layer.UpdateBias adds BiasRate * sign(mean load - load) after each step. Finite, >= 0.
	BiasRate    float64
	AuxLossCoef float64 // load-balancing loss coefficient, finite and >= 0; 0 leaves the node out
	ZLossCoef   float64 // router z-loss coefficient, finite and >= 0; 0 leaves the node out
	// Seed of the weight initialisation (NewLayer). 0: every layer added to a graph draws from its own
	// stream (the graph's n-th layer from stream n), so two layers of one graph differ while the same
	// program gives the same weights on every run. Non-zero: exactly this seed, so the same Config gives
	// the same weights in any graph.
	Seed uint64
	// Dtype is tensor.Float32 or tensor.Float64 (weights, inputs and outputs of that dtype), or
	// ops.BFloat16 for mixed precision: the experts compute on bfloat16 (rows packed into bfloat16 by
	// the dispatch, bfloat16 tensor-core products with float32 accumulation, fused SwiGLU), the router,
	// routing weights and losses stay float32, and the parameters are float32 master weights (NewLayer;
	// NewLayerWithWeights also takes bfloat16 weights, e.g. a checkpoint loaded without widening, for
	// forward passes: solvers refuse bfloat16 parameters). A mixed-precision layer takes float32 or
	// bfloat16 inputs and returns outputs of the input's dtype (float32 outputs are summed from the
	// expert rows in float32 or wider, never rounded to bfloat16). The zero value means float32.
	Dtype tensor.Dtype
	// FusedSwiGLU computes the experts' gate and up products and their SwiGLU as one ops.GroupedSwiGLU
	// (cudaops: one grouped GEMM launch with the activation in its epilogue, instead of two launches
	// and an elementwise pass) instead of two ops.GroupedMatMul and ops.SwiGLU. Values and gradients
	// are the same bit for bit; only the speed differs (measure it: bench -op layer with
	// EXPERTRT_FUSED_SWIGLU=1). On an H200 it is slower (train-step 0.99x fp32, 0.97x bf16, and TF32
	// cannot use the wgmma tiles with it: see docs/gemm.md), so it is off by default. The
	// expert-parallel layer (package moe/ep) runs its local experts unfused whatever this says.
	FusedSwiGLU bool
	// Backend holds the layer's parameters: nil or ops.CPU() keeps them in host memory; a device backend
	// (e.g. ops.LookupBackend("cuda")) gets copies of the host weights (FromHost) when the
	// layer is created. The layer's ops run on the backend that owns their inputs, so feed the layer
	// inputs of the same backend (ops.Runner and ops.Trainer copy host feeds there).
	Backend ops.Backend
}

// MixtralConfig returns a Mixtral-style configuration (softmax, top-2, renormalised, aux coef 0.02 as
// in Mixtral's router_aux_loss_coef) in float32, with per-layer weight streams (Seed 0).
func MixtralConfig(hidden, ffn, experts int) Config {
	return Config{Hidden: hidden, FFN: ffn, Experts: experts, TopK: 2, Scoring: ops.SoftmaxTopK,
		Renormalize: true, AuxLossCoef: 0.02, Dtype: tensor.Float32}
}

// Route returns the routing configuration of the layer.
func (c Config) Route() ops.RouteConfig {
	return ops.RouteConfig{K: c.TopK, Scoring: c.Scoring, Renormalize: c.Renormalize, Groups: c.Groups, TopKGroups: c.TopKGroups,
		GroupMask: c.GroupMask, Scale: c.RouteScale, Capacity: c.Capacity, CapacityFactor: c.CapacityFactor, DropPolicy: c.DropPolicy}
}

// Mixed reports whether the layer computes in mixed precision (Dtype is ops.BFloat16).
func (c Config) Mixed() bool { return c.Dtype == ops.BFloat16 }

// masterDtype is the dtype NewLayer gives the parameters: float32 master weights for mixed precision,
// else Dtype.
func (c Config) masterDtype() tensor.Dtype {
	if c.Mixed() {
		return tensor.Float32
	}
	return c.Dtype
}

// withDefaults fills the zero Dtype with float32.
func (c Config) withDefaults() Config {
	if c.Dtype == (tensor.Dtype{}) {
		c.Dtype = tensor.Float32
	}
	return c
}

// Validate checks sizes, dtype (unset means float32), loss coefficients and routing parameters. Errors
// wrap ops.ErrConfig (ops.ErrDtype for the dtype).
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Hidden < 1 || c.FFN < 1 || c.Experts < 1 {
		return fmt.Errorf("moe: sizes must be >= 1, got hidden=%d ffn=%d experts=%d: %w", c.Hidden, c.FFN, c.Experts, ops.ErrConfig)
	}
	if c.Dtype != tensor.Float32 && c.Dtype != tensor.Float64 && c.Dtype != ops.BFloat16 {
		return fmt.Errorf("moe: dtype must be float32, float64 or bfloat16 (ops.BFloat16), got %s: %w", dtypeName(c.Dtype), ops.ErrDtype)
	}
	for _, coef := range []struct {
		name string
		v    float64
	}{{"AuxLossCoef", c.AuxLossCoef}, {"ZLossCoef", c.ZLossCoef}} {
		if !(coef.v >= 0) || math.IsInf(coef.v, 1) {
			return fmt.Errorf("moe: %s must be finite and >= 0, got %v: %w", coef.name, coef.v, ops.ErrConfig)
		}
	}
	if !(c.BiasRate >= 0) || math.IsInf(c.BiasRate, 1) {
		return fmt.Errorf("moe: BiasRate must be finite and >= 0, got %v: %w", c.BiasRate, ops.ErrConfig)
	}
	if c.BiasRate > 0 && c.Scoring != ops.Sigmoid {
		return fmt.Errorf("moe: a balancing bias (BiasRate %v) needs sigmoid scoring, got %v: %w", c.BiasRate, c.Scoring, ops.ErrConfig)
	}
	return c.Route().Validate(c.Experts)
}

// dtypeName prints a dtype, including the zero Dtype (whose String method panics).
func dtypeName(dt tensor.Dtype) string {
	if dt.Type == nil {
		return "<unset>"
	}
	return dt.String()
}
