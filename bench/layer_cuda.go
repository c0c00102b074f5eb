//go:build expertrt_cuda

package main

import (
	"errors"
	"time"
)

// The CUDA device's support of the whole-layer ops (layer.go): step timing without the spin kernel,
// the device's host-wait counters, and per-kernel timing (cudaops' kernel-timing mode).

// TimeStep records CUDA events right before fn issues its first launch and after its last, and waits:
// the device time of the step, gaps in which the GPU waited for the host's launches included (no spin
// kernel hides them, unlike TimeOnce).
func (c cudaDevice) TimeStep(fn func() error) (time.Duration, error) { return c.d.Time(0, fn) }

// HostWaits returns the device's counts of host synchronisations and device-to-host reads.
func (c cudaDevice) HostWaits() (syncs, reads int64) {
	w := c.d.HostWaits()
	return w.Syncs, w.Reads
}

// TimeKernels runs fn in a kernel-timing session inside TimeStep: the step's device time and the
// device time of every kernel family it launched.
func (c cudaDevice) TimeKernels(fn func() error) (time.Duration, []familyTime, error) {
	if err := c.d.StartKernelTiming(); err != nil {
		return 0, nil, err
	}
	total, err := c.TimeStep(fn)
	times, serr := c.d.StopKernelTiming()
	if err := errors.Join(err, serr); err != nil {
		return 0, nil, err
	}
	out := make([]familyTime, len(times))
	for i, t := range times {
		out[i] = familyTime{Family: t.Family, MatMul: t.MatMul, Launches: t.Launches, Time: t.Time}
	}
	return total, out, nil
}

var (
	_ stepTimer   = cudaDevice{}
	_ hostWaiter  = cudaDevice{}
	_ kernelTimer = cudaDevice{}
)
