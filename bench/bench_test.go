package main

import (
	"fmt"
	"sync"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// The kernel benchmarks run the CLI's workloads (same inputs, same minimal byte counts) on the CPU
// device, so `go test -bench` prints MB/s comparable with `go run ./bench`. They run only with -bench:
//
//	go test ./bench -run '^$' -bench . -benchtime 20x
//
// Inputs are built once per shape and dtype, on first use.

var (
	envMu    sync.Mutex
	envCache = map[shape]*env{}
)

// benchEnv returns the shared inputs for s on the CPU device.
func benchEnv(b *testing.B, s shape) *env {
	b.Helper()
	envMu.Lock()
	defer envMu.Unlock()
	if e, ok := envCache[s]; ok {
		return e
	}
	dev, err := openDevice("cpu")
	if err != nil {
		b.Fatal(err)
	}
	e, err := newEnv(dev, s)
	if err != nil {
		b.Fatal(err)
	}
	envCache[s] = e
	return e
}

// memShape is the size of the memory-bound benchmarks: x is 16 MiB and the packed buffer 32 MiB in
// float32, beyond the caches of small machines, while setup stays under a second.
func memShape(dt tensor.Dtype) shape {
	return shape{Tokens: 4096, Hidden: 1024, Experts: 16, TopK: 2, Dtype: dt,
		Scoring: ops.SoftmaxTopK, Renormalize: true, Seed: 1}
}

// routeShape is the size of the routing benchmarks (router logits of 16384 tokens over 64 experts).
func routeShape(dt tensor.Dtype) shape {
	return shape{Tokens: 16384, Hidden: 1, Experts: 64, TopK: 2, Dtype: dt,
		Scoring: ops.SoftmaxTopK, Renormalize: true, Seed: 1}
}

// mmShape is the size of the grouped matmul benchmarks (1024 packed rows, 512 -> 1024).
func mmShape(dt tensor.Dtype) shape {
	return shape{Tokens: 512, Hidden: 512, Experts: 8, TopK: 2, FFN: 1024, Dtype: dt,
		Scoring: ops.SoftmaxTopK, Renormalize: true, Seed: 1}
}

// benchOp runs the named workload for float32 and float64 as sub-benchmarks.
func benchOp(b *testing.B, op string, shapeOf func(tensor.Dtype) shape) {
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		s := shapeOf(dt)
		name := fmt.Sprintf("%v/T=%d,H=%d,E=%d,k=%d", dt, s.Tokens, s.Hidden, s.Experts, s.TopK)
		if s.FFN > 0 {
			name += fmt.Sprintf(",F=%d", s.FFN)
		}
		b.Run(name, func(b *testing.B) {
			spec, err := lookupOp(op, false)
			if err != nil {
				b.Fatal(err)
			}
			wl, err := spec.prepare(benchEnv(b, s))
			if err != nil {
				b.Fatal(err)
			}
			if err := wl.run(); err != nil { // warm up and fault the output pages in
				b.Fatal(err)
			}
			b.SetBytes(wl.read + wl.written)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := wl.run(); err != nil {
					b.Fatal(err)
				}
			}
			if wl.flops > 0 {
				b.ReportMetric(float64(wl.flops)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			}
		})
	}
}

// deepseekShape is the GPU target's routing size: T=4096, E=256, k=8; sigmoid with a bias, 8 groups
// of which 4 are kept, normalised, scaled by 2.5 (DeepSeek-V3). softmaxE256Shape is the same size
// under Mixtral's softmax routing, the target's reference (sigmoid within 1.5x of it).
func deepseekShape(dt tensor.Dtype) shape {
	return shape{Tokens: 4096, Hidden: 1, Experts: 256, TopK: 8, Dtype: dt, Scoring: ops.Sigmoid, Renormalize: true,
		Groups: 8, TopKGroups: 4, Scale: 2.5, Seed: 1}
}

func softmaxE256Shape(dt tensor.Dtype) shape {
	return shape{Tokens: 4096, Hidden: 1, Experts: 256, TopK: 8, Dtype: dt, Scoring: ops.SoftmaxTopK, Renormalize: true, Seed: 1}
}

// capacityShape: the routing benchmarks' size with a capacity factor of 1.25 and the probs policy.
func capacityShape(dt tensor.Dtype) shape {
	s := routeShape(dt)
	s.CapacityFactor, s.DropPolicy = 1.25, ops.DropProbs
	return s
}

func BenchmarkRouteSigmoidGrouped(b *testing.B)          { benchOp(b, "route", deepseekShape) }
func BenchmarkRouteSoftmaxE256(b *testing.B)             { benchOp(b, "route", softmaxE256Shape) }
func BenchmarkCapacityPlan(b *testing.B)                 { benchOp(b, "plan", capacityShape) }
func BenchmarkRoute(b *testing.B)                        { benchOp(b, "route", routeShape) }
func BenchmarkRouteBackward(b *testing.B)                { benchOp(b, "route-bwd", routeShape) }
func BenchmarkPlan(b *testing.B)                         { benchOp(b, "plan", routeShape) }
func BenchmarkDispatch(b *testing.B)                     { benchOp(b, "dispatch", memShape) }
func BenchmarkDispatchBackward(b *testing.B)             { benchOp(b, "dispatch-bwd", memShape) }
func BenchmarkCombine(b *testing.B)                      { benchOp(b, "combine", memShape) }
func BenchmarkCombineBackward(b *testing.B)              { benchOp(b, "combine-bwd", memShape) }
func BenchmarkGroupedMatMul(b *testing.B)                { benchOp(b, "groupedmm", mmShape) }
func BenchmarkGroupedMatMulBackward(b *testing.B)        { benchOp(b, "groupedmm-bwd", mmShape) }
func BenchmarkRouteDispatchCombine(b *testing.B)         { benchOp(b, "e2e", memShape) }
func BenchmarkRouteDispatchCombineBackward(b *testing.B) { benchOp(b, "e2e-bwd", memShape) }

// BenchmarkCopy is the plain copy baseline at the size of the dispatch output, for reading the
// MB/s of the kernels above against (the CLI measures it interleaved with each op instead).
func BenchmarkCopy(b *testing.B) {
	s := memShape(tensor.Float32)
	dev, err := openDevice("cpu")
	if err != nil {
		b.Fatal(err)
	}
	c, err := dev.NewCopy(s.Tokens, s.TopK*s.Hidden*4, minRowsPerWorker(s.TopK*s.Hidden))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(2 * c.Bytes())
	b.ResetTimer()
	for b.Loop() {
		if err := c.Copy(); err != nil {
			b.Fatal(err)
		}
	}
}
