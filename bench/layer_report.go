package main

import (
	"encoding/json"
	"fmt"
	"io"
)

// layerResult is one whole-layer op's report; its JSON form is what -json prints. The keys op, tokens,
// hidden, ffn, experts, top_k, dtype and median_ms are those of bench/pytorch_layer.py's rows, so
// bench/compare_layer.py joins the two.
type layerResult struct {
	Op         string `json:"op"`
	Impl       string `json:"impl"`
	Device     string `json:"device"`
	DeviceDesc string `json:"device_desc"`
	Dtype      string `json:"dtype"`
	Tokens     int    `json:"tokens"`
	Hidden     int    `json:"hidden"`
	FFN        int    `json:"ffn"`
	Experts    int    `json:"experts"`
	TopK       int    `json:"top_k"`
	Reps       int    `json:"reps"`
	Warmup     int    `json:"warmup"`
	// FusedSwiGLU: the layer ran with moe.Config.FusedSwiGLU (EXPERTRT_FUSED_SWIGLU=1).
	FusedSwiGLU bool `json:"fused_swiglu,omitempty"`

	// Device time of one step: CUDA events around the step on a GPU, the wall clock on the CPU.
	MedianMs float64 `json:"median_ms"`
	MinMs    float64 `json:"min_ms"`
	P90Ms    float64 `json:"p90_ms"`
	// WallMedianMs is the host's wall clock per step, from before the first launch is issued until the
	// device has finished (the synchronisation included).
	WallMedianMs float64 `json:"wall_median_ms"`

	TokensPerS  float64 `json:"tokens_per_s"`
	ModelFlops  int64   `json:"model_flops"` // matmul FLOPs the op needs (modelFlops)
	TFlops      float64 `json:"tflop_per_s"` // ModelFlops / median
	PctFP32Peak float64 `json:"pct_fp32_peak"`

	// Host waits per step counted over untimed steps after the warm-up (devices that count them).
	HostSyncsPerStep *float64 `json:"host_syncs_per_step,omitempty"`
	HostReadsPerStep *float64 `json:"host_reads_per_step,omitempty"`

	// Per-kernel breakdown from KernelReps extra steps with events around every launch (devices with
	// kernel timing). KernelStepMs is the step's device time in those steps; the per-family times are
	// per step; MatMulPctOfStep = MatMulMs / KernelStepMs (the share of the step spent in matmuls),
	// MatMulPctOfKernels = MatMulMs / KernelSumMs (of the time the device spent in any kernel or copy).
	KernelReps         int           `json:"kernel_reps,omitempty"`
	KernelStepMs       float64       `json:"kernel_step_ms,omitempty"`
	KernelSumMs        float64       `json:"kernel_sum_ms,omitempty"`
	LaunchesPerStep    float64       `json:"launches_per_step,omitempty"`
	MatMulMs           float64       `json:"matmul_ms,omitempty"`
	MatMulPctOfStep    float64       `json:"matmul_pct_of_step,omitempty"`
	MatMulPctOfKernels float64       `json:"matmul_pct_of_kernels,omitempty"`
	Kernels            []layerKernel `json:"kernels,omitempty"`
}

// layerKernel is one kernel family's share of a step.
type layerKernel struct {
	Family          string  `json:"family"`
	MatMul          bool    `json:"matmul"`
	LaunchesPerStep float64 `json:"launches_per_step"`
	MsPerStep       float64 `json:"ms_per_step"`
	PctOfStep       float64 `json:"pct_of_step"`
}

func newLayerResult(lb *layerBench, reps, warmup int) *layerResult {
	s := lb.s
	return &layerResult{Op: lb.op, Impl: "expertrt moe.Layer graph", Device: lb.dev.Name(), DeviceDesc: lb.dev.Describe(),
		Dtype: dtypeName(s.Dtype), Tokens: s.Tokens, Hidden: s.Hidden, FFN: s.ffn(), Experts: s.Experts, TopK: s.TopK,
		Reps: reps, Warmup: warmup, ModelFlops: modelFlops(lb.op, s), FusedSwiGLU: layerConfig(s, nil).FusedSwiGLU}
}

// printLayerText writes one whole-layer result for people.
func printLayerText(w io.Writer, r *layerResult) {
	fmt.Fprintf(w, "%s  T=%d H=%d F=%d E=%d k=%d %s  on %s (%s)\n", r.Op, r.Tokens, r.Hidden, r.FFN, r.Experts, r.TopK,
		r.Dtype, r.Device, r.DeviceDesc)
	fmt.Fprintf(w, "  step       median %.3f ms   min %.3f ms   p90 %.3f ms   wall %.3f ms   (%d reps after %d warmup)\n",
		r.MedianMs, r.MinMs, r.P90Ms, r.WallMedianMs, r.Reps, r.Warmup)
	fmt.Fprintf(w, "  throughput %.0f tokens/s   matmuls %.2f GFLOP -> %.3f TFLOP/s (%.1f%% of the fp32 peak 66.9)\n",
		r.TokensPerS, float64(r.ModelFlops)/1e9, r.TFlops, r.PctFP32Peak)
	if r.HostSyncsPerStep != nil {
		fmt.Fprintf(w, "  host       %.1f synchronisations and %.1f reads per step\n", *r.HostSyncsPerStep, *r.HostReadsPerStep)
	}
	if r.KernelReps == 0 {
		return
	}
	fmt.Fprintf(w, "  kernels    %d steps with events around every launch: step %.3f ms, %.0f launches, kernels and copies %.3f ms\n",
		r.KernelReps, r.KernelStepMs, r.LaunchesPerStep, r.KernelSumMs)
	fmt.Fprintf(w, "    %-28s %9s %10s %9s\n", "family", "launches", "ms/step", "% step")
	for _, k := range r.Kernels {
		mark := ""
		if k.MatMul {
			mark = "  matmul"
		}
		fmt.Fprintf(w, "    %-28s %9.1f %10.4f %8.1f%%%s\n", k.Family, k.LaunchesPerStep, k.MsPerStep, k.PctOfStep, mark)
	}
	fmt.Fprintf(w, "  matmuls    %.3f ms per step = %.1f%% of the step (%.1f%% of the kernel time)\n",
		r.MatMulMs, r.MatMulPctOfStep, r.MatMulPctOfKernels)
}

// printLayerJSON writes one object: the result itself for one op, {"results": [...]} for several (as
// printJSON does for the kernel ops).
func printLayerJSON(w io.Writer, rs []layerResult) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if len(rs) == 1 {
		return enc.Encode(rs[0])
	}
	return enc.Encode(struct {
		Results []layerResult `json:"results"`
	}{rs})
}
