package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// result is one op's report; its JSON form is what -json prints.
type result struct {
	Op          string `json:"op"`
	Device      string `json:"device"`
	DeviceDesc  string `json:"device_desc"`
	Dtype       string `json:"dtype"`
	Tokens      int    `json:"tokens"`
	Hidden      int    `json:"hidden"`
	Experts     int    `json:"experts"`
	TopK        int    `json:"top_k"`
	FFN         int    `json:"ffn,omitempty"`
	Skew        bool   `json:"skew,omitempty"`
	GemmVariant string `json:"gemm_variant,omitempty"` // forced GEMM tile configuration (-gemm-variants)
	Scoring     string `json:"scoring"`
	Renormalize bool   `json:"renormalize"`
	Workers     int    `json:"workers"`
	Reps        int    `json:"reps"`
	Warmup      int    `json:"warmup"`

	MedianMs float64 `json:"median_ms"`
	MinMs    float64 `json:"min_ms"`
	P90Ms    float64 `json:"p90_ms"`

	BytesRead    int64   `json:"bytes_read"`
	BytesWritten int64   `json:"bytes_written"`
	Bytes        int64   `json:"bytes"`
	GBps         float64 `json:"gb_per_s"` // Bytes / median, 1e9 bytes per second
	GFlops       float64 `json:"gflop_per_s,omitempty"`
	TFlops       float64 `json:"tflop_per_s,omitempty"`
	PctFP32Peak  float64 `json:"pct_fp32_peak,omitempty"` // TFlops / 66.9 (H100 SXM / H200 FFMA peak)

	// The copy baseline: a buffer of CopyBytes copied in the same run, interleaved with the op.
	CopyBytes    int64   `json:"copy_bytes"`
	CopyMedianMs float64 `json:"copy_median_ms"`
	CopyGBps     float64 `json:"copy_gb_per_s"` // 2*CopyBytes / copy median (read + written)
	RatioToCopy  float64 `json:"ratio_to_copy"` // GBps / CopyGBps
	CopyMinMs    float64 `json:"copy_min_ms"`
	// RatioBest compares the fastest repetitions (op min vs copy min): steadier than the medians
	// when other processes share the cores.
	RatioBest float64 `json:"ratio_to_copy_best"`

	// Routing (route, plan and e2e): the policy and the diagnostics of the routing the op computes.
	Routing          string    `json:"routing,omitempty"`
	Capacity         int       `json:"capacity,omitempty"`
	ExpertCounts     []int     `json:"expert_counts,omitempty"`
	MaxOverMeanLoad  float64   `json:"max_over_mean_load,omitempty"`
	LoadCV           *float64  `json:"load_cv,omitempty"`
	DroppedSlots     *int      `json:"dropped_slots,omitempty"`
	MeanEntropy      float64   `json:"mean_router_entropy,omitempty"`
	ExpertFractions  []float64 `json:"-"`
	diagnosticsShown bool
	summary          string

	// Optional diagnostic (-rowcopy): the same copy done one row per copy() call.
	RowCopyGBps     float64 `json:"rowcopy_gb_per_s,omitempty"`
	RatioToRowCopy  float64 `json:"ratio_to_rowcopy,omitempty"`
	RowCopyMedianMs float64 `json:"rowcopy_median_ms,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// newResult fills a result from a shape, a workload's counts and its timings.
func newResult(op string, dev device, s shape, wl *workload, t *timings, warmup int) result {
	st, cs := summarize(t.op), summarize(t.copy)
	r := result{
		Op: op, Device: dev.Name(), DeviceDesc: dev.Describe(), Dtype: dtypeName(s.Dtype),
		Tokens: s.Tokens, Hidden: s.Hidden, Experts: s.Experts, TopK: s.TopK,
		Scoring: s.Scoring.String(), Renormalize: s.route().EffectiveRenormalize(),
		Workers: dev.Workers(), Reps: len(t.op), Warmup: warmup,
		MedianMs: ms(st.Median), MinMs: ms(st.Min), P90Ms: ms(st.P90),
		BytesRead: wl.read, BytesWritten: wl.written, Bytes: wl.read + wl.written,
		GBps:      gbps(wl.read+wl.written, st.Median),
		CopyBytes: t.copyBytes, CopyMedianMs: ms(cs.Median), CopyGBps: gbps(2*t.copyBytes, cs.Median),
	}
	if wl.flops > 0 {
		r.FFN = s.ffn()
		r.GFlops = float64(wl.flops) / st.Median.Seconds() / 1e9
		r.TFlops = r.GFlops / 1e3
		r.PctFP32Peak = 100 * r.GFlops * 1e9 / peakFP32
	}
	r.Skew = s.Skew
	r.CopyMinMs = ms(cs.Min)
	if r.CopyGBps > 0 {
		r.RatioToCopy = r.GBps / r.CopyGBps
		r.RatioBest = gbps(r.Bytes, st.Min) / gbps(2*t.copyBytes, cs.Min)
	}
	if len(t.rowCopy) > 0 {
		rs := summarize(t.rowCopy)
		r.RowCopyMedianMs = ms(rs.Median)
		r.RowCopyGBps = gbps(2*t.copyBytes, rs.Median)
		if r.RowCopyGBps > 0 {
			r.RatioToRowCopy = r.GBps / r.RowCopyGBps
		}
	}
	return r
}

// printText writes one result for people.
func printText(w io.Writer, r result) {
	fmt.Fprintf(w, "%s  T=%d H=%d E=%d k=%d %s", r.Op, r.Tokens, r.Hidden, r.Experts, r.TopK, r.Dtype)
	if r.FFN > 0 {
		fmt.Fprintf(w, " F=%d", r.FFN)
	}
	if r.Skew {
		fmt.Fprintf(w, " skew")
	}
	if r.GemmVariant != "" {
		fmt.Fprintf(w, " gemm=%s", r.GemmVariant)
	}
	fmt.Fprintf(w, "  on %s (%s)\n", r.Device, r.DeviceDesc)
	fmt.Fprintf(w, "  time       median %.4f ms   min %.4f ms   p90 %.4f ms   (%d reps after %d warmup)\n",
		r.MedianMs, r.MinMs, r.P90Ms, r.Reps, r.Warmup)
	fmt.Fprintf(w, "  bytes      %.1f MB = read %.1f MB + written %.1f MB (minimal counts)\n",
		mb(r.Bytes), mb(r.BytesRead), mb(r.BytesWritten))
	fmt.Fprintf(w, "  bandwidth  %.2f GB/s", r.GBps)
	if r.GFlops > 0 {
		fmt.Fprintf(w, "   compute %.2f GFLOP/s = %.2f TFLOP/s, %.1f%% of the fp32 peak (66.9)", r.GFlops, r.TFlops, r.PctFP32Peak)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  copy       %.1f MB buffer, median %.4f ms, %.2f GB/s read+written  ->  ratio %.3f (best-of: %.3f)\n",
		mb(r.CopyBytes), r.CopyMedianMs, r.CopyGBps, r.RatioToCopy, r.RatioBest)
	if r.RowCopyGBps > 0 {
		fmt.Fprintf(w, "  row copy   one copy() per row, median %.4f ms, %.2f GB/s  ->  ratio %.3f\n",
			r.RowCopyMedianMs, r.RowCopyGBps, r.RatioToRowCopy)
	}
	if r.diagnosticsShown {
		fmt.Fprintf(w, "  routing    %s capacity=%d\n             %s\n", r.Routing, r.Capacity, r.summary)
	}
}

// setDiagnostics records the routing policy and diagnostics of a routing op.
func (r *result) setDiagnostics(s shape, st ops.RoutingStats) {
	cv, dropped := st.CV, st.Dropped
	r.Routing, r.Capacity = s.route().String(), s.capacity()
	r.ExpertCounts, r.ExpertFractions = st.Counts, st.Fractions
	r.MaxOverMeanLoad, r.LoadCV, r.DroppedSlots, r.MeanEntropy = st.MaxOverMean, &cv, &dropped, st.Entropy
	r.diagnosticsShown = true
	r.summary = st.String()
}

func mb(b int64) float64 { return float64(b) / 1e6 }

// printJSON writes one object: the result itself for one op, {"results": [...]} for several.
func printJSON(w io.Writer, rs []result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if len(rs) == 1 {
		return enc.Encode(rs[0])
	}
	return enc.Encode(struct {
		Results []result `json:"results"`
	}{rs})
}

// dtypeName names a dtype for reports: "bfloat16" for ops.BFloat16 (whose Go type prints as
// bf16.BFloat16), else tensor's name.
func dtypeName(dt tensor.Dtype) string {
	if dt == ops.BFloat16 {
		return "bfloat16"
	}
	return dt.String()
}
