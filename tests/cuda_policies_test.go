//go:build expertrt_cuda

package tests

import (
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// TestCUDAPolicies compares the GPU's routing-policy kernels with the CPU's at production sizes
// (DeepSeek-V3: E=256 in 8 groups, 4 kept, k=8): indices and plans exactly, floats within tolerance;
// the fused router's weights are bitwise those of RouteWeights.
func TestCUDAPolicies(t *testing.T) {
	b := cudaSyncBackend(t)
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for _, cfg := range []ops.RouteConfig{
			{K: 8, Scoring: ops.Sigmoid, Renormalize: true, Groups: 8, TopKGroups: 4, Scale: 2.5},
			{K: 8, Scoring: ops.Sigmoid, Groups: 8, TopKGroups: 4, GroupMask: ops.GroupMaskZero},
			{K: 6, Scoring: ops.Sigmoid, Renormalize: true},
			{K: 8, Scoring: ops.SoftmaxTopK, Renormalize: true, Scale: 1.5},
		} {
			t.Run(dt.String()+"/"+cfg.String(), func(t *testing.T) {
				const T, E, H = 4096, 256, 64
				if cfg.Scoring != ops.Sigmoid {
					cfg.Groups, cfg.TopKGroups = 0, 0
				}
				gpu := policyRun(t, b, dt, cfg, T, E, H, 11)
				cpu := policyRun(t, ops.CPU(), dt, cfg, T, E, H, 11)
				tol := 1e-5
				if dt == tensor.Float64 {
					tol = 1e-12
				}
				comparePolicyRuns(t, gpu, cpu, tol)
				if string(rawBytes(gpu["w fused"])) != string(rawBytes(gpu["w"])) || string(rawBytes(gpu["idx fused"])) != string(rawBytes(gpu["idx"])) {
					t.Errorf("the fused router differs from RouteIndicesBias + RouteWeights")
				}
			})
		}
	}
}

// TestCUDADeepSeekV3Fixtures: the GPU's sigmoid router on transformers' DeepSeek-V3 fixtures.
func TestCUDADeepSeekV3Fixtures(t *testing.T) {
	b := cudaSyncBackend(t)
	runDeepSeekFixtures(t, b)
}
