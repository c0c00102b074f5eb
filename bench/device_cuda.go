//go:build expertrt_cuda

package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// The CUDA device (-device cuda): the kernels of the registered cudaops backend on device 0, timed with
// CUDA events on its stream, against a device-to-device copy (cuMemcpyDtoDAsync) on the same stream.

func init() {
	registerDevice("cuda", newCUDADevice)
}

// timingSpin is how long the GPU busy-waits before each timed region, so that the launches of the
// region are queued before it starts and host launch latency stays out of the numbers.
const timingSpin = 200 * time.Microsecond

type cudaDevice struct {
	b *cudaops.Backend
	d *cudaops.Device
}

// Comparison switches (environment, default off), options of the registered device opened here:
// EXPERTRT_CUDA_PLAN=multi forces the three-launch plan; EXPERTRT_CUDA_STREAM_DISPATCH=1 makes
// dispatch write with streaming (evict-first) stores; EXPERTRT_GEMM_CONFIG=<variant> runs the matrix
// products of that variant's class on that tile configuration (cudaops gemm.variants; the sweep of
// gpu-check.sh gemm); EXPERTRT_GEMM_TF32=1 runs float32 products on the TF32 tensor-core kernels;
// EXPERTRT_GEMM_SPLITS=<n> splits the reduction of the grouped-rows products in n (cudaops GemmSplits);
// EXPERTRT_GEMM_STREAMK=1 schedules the grouped-rows products stream-K (cudaops GemmStreamK). The
// registered device is opened with them, so the whole-layer graphs (which ops run on the registered
// backend) use them too.
func newCUDADevice() (device, error) {
	var opts []cudaops.Option
	if os.Getenv("EXPERTRT_CUDA_PLAN") == "multi" {
		opts = append(opts, cudaops.WithPlanMode(cudaops.PlanMultiLaunch))
	}
	if os.Getenv("EXPERTRT_CUDA_STREAM_DISPATCH") == "1" {
		opts = append(opts, cudaops.WithStreamingDispatchStores(true))
	}
	if v := os.Getenv("EXPERTRT_GEMM_CONFIG"); v != "" {
		opts = append(opts, cudaops.WithGemmVariant(v))
	}
	if os.Getenv("EXPERTRT_GEMM_TF32") == "1" {
		opts = append(opts, cudaops.WithTF32(true))
	}
	if v := os.Getenv("EXPERTRT_GEMM_SPLITS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("bench: EXPERTRT_GEMM_SPLITS=%q: %w", v, err)
		}
		opts = append(opts, cudaops.WithGemmSplits(n))
	}
	if os.Getenv("EXPERTRT_GEMM_STREAMK") == "1" {
		opts = append(opts, cudaops.WithGemmStreamK(true))
	}
	d, err := cudaops.OpenRegistered(0, opts...)
	if err != nil {
		return nil, err
	}
	return cudaDevice{b: cudaops.Registered(), d: d}, nil
}

func (cudaDevice) Name() string { return "cuda" }

// GemmVariantNames lists the GEMM tile configurations that run dt in the device's mode (TF32 or not;
// bfloat16 products always run on the bf16 configurations).
func (c cudaDevice) GemmVariantNames(dt tensor.Dtype) ([]string, error) {
	vs, err := c.d.GemmVariants()
	if err != nil {
		return nil, err
	}
	tf32 := c.d.TF32() && dt == tensor.Float32
	bf := dt == ops.BFloat16
	var names []string
	for _, v := range vs {
		// wgmma configurations run only on compute capability 9.0; elsewhere forcing one would time the
		// planner's choice under its name.
		if v.BF16 == bf && v.Double == (dt == tensor.Float64) && v.TF32 == tf32 && (!v.WGMMA || c.d.GemmWGMMA()) {
			names = append(names, v.Name)
		}
	}
	return names, nil
}

// WithGemmVariant returns the device as a handle whose products run on the named tile configuration
// (a backend of its own over the same memory and stream: the kernel-level ops use it).
func (c cudaDevice) WithGemmVariant(name string) (device, error) {
	h, err := c.d.With(cudaops.WithGemmVariant(name))
	if err != nil {
		return nil, err
	}
	return cudaDevice{b: cudaops.NewBackend(h), d: h}, nil
}

func (c cudaDevice) Describe() string {
	maj, min := c.d.ComputeCapability()
	s := fmt.Sprintf("%s (%d SMs, compute capability %d.%d, %.0f GiB), CUDA driver %d",
		c.d.Name(), c.d.Multiprocessors(), maj, min, float64(c.d.TotalMemory())/(1<<30), cu.Version())
	if o := c.d.Options(); o != (cudaops.Options{}) {
		s += " [" + o.String() + "]"
	}
	return s
}

func (c cudaDevice) Backend() ops.Backend { return c.b }

func (cudaDevice) Workers() int { return 0 }

// TimeOnce records CUDA events around fn's launches (after a spin kernel) and waits for them.
func (c cudaDevice) TimeOnce(fn func() error) (time.Duration, error) { return c.d.Time(timingSpin, fn) }

func (c cudaDevice) NewCopy(rows, rowBytes, _ int) (copier, error) {
	n := int64(rows) * int64(rowBytes)
	if n < 1 {
		return nil, fmt.Errorf("copy baseline needs a positive size")
	}
	src, err := c.d.AllocBytes(n)
	if err != nil {
		return nil, err
	}
	dst, err := c.d.AllocBytes(n)
	if err != nil {
		c.d.FreeBytes(src)
		return nil, err
	}
	return &cudaCopier{d: c.d, src: src, dst: dst, n: n}, nil
}

// cudaCopier copies n bytes device to device with one cuMemcpyDtoDAsync on the backend's stream.
type cudaCopier struct {
	d        *cudaops.Device
	src, dst cu.DevicePtr
	n        int64
}

func (c *cudaCopier) Copy() error  { return c.d.CopyDtoD(c.dst, c.src, c.n) }
func (c *cudaCopier) Bytes() int64 { return c.n }
func (c *cudaCopier) Close() error {
	err1 := c.d.FreeBytes(c.src)
	err2 := c.d.FreeBytes(c.dst)
	if err1 != nil {
		return err1
	}
	return err2
}
