//go:build expertrt_cuda

package cudaops

import (
	"errors"
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// Access to the device's stream for libraries that enqueue their own work on a caller's stream (NCCL).

// WithStream runs fn on a locked OS thread with the device's context current and the device lock held,
// passing the raw CUstream (cudaStream_t) of the device's stream. Work fn enqueues is ordered with the
// backend's kernels and copies like theirs. fn must not call back into this Device (the lock is held).
func (d *Device) WithStream(fn func(stream uintptr) error) error {
	return d.do(func() error { return fn(uintptr(unsafe.Pointer(d.stream.C()))) })
}

// StreamIdle reports, without waiting, whether all work issued to the device's stream has completed
// (cuStreamQuery). A caller that must not block forever on work that may never finish (a collective
// whose peer died) polls this instead of calling Synchronize.
func (d *Device) StreamIdle() (bool, error) {
	var idle bool
	err := d.do(func() error {
		err := d.stream.Query()
		switch {
		case err == nil:
			idle = true
			return nil
		case errors.Is(err, cu.NotReady):
			return nil
		}
		return fmt.Errorf("cudaops: querying the stream: %w", err)
	})
	return idle, err
}

// Ordinal is the device's index among the visible CUDA devices.
func (d *Device) Ordinal() int { return d.ord }
