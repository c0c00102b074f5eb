//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"time"

	"gorgonia.org/cu"
)

// Time issues fn between two CUDA events on the device's stream, waits, and returns the device time
// between the events. A spin kernel (spin) is queued first so the GPU is busy while fn's launches are
// issued: the result is the device execution time of fn's work, without host launch latency (pass 0 to
// measure with the latency included). Device faults raised meanwhile are reported.
func (d *Device) Time(spin time.Duration, fn func() error) (time.Duration, error) {
	var start, end cu.Event
	err := d.do(func() error {
		var err error
		if start, err = cu.MakeEvent(cu.DefaultEvent); err != nil {
			return err
		}
		if end, err = cu.MakeEvent(cu.DefaultEvent); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cudaops: creating events: %w", err)
	}
	defer d.do(func() error {
		_ = cu.DestroyEvent(&start)
		_ = cu.DestroyEvent(&end)
		return nil
	})
	if spin > 0 {
		if err := d.launch("spin_ns", launchCfg{grid: 1, block: 1}, u64(uint64(spin))); err != nil {
			return 0, err
		}
	}
	if err := d.do(func() error { return start.Record(d.stream) }); err != nil {
		return 0, fmt.Errorf("cudaops: recording start event: %w", err)
	}
	if err := fn(); err != nil {
		return 0, err
	}
	var ms float64
	err = d.do(func() error {
		if err := end.Record(d.stream); err != nil {
			return err
		}
		d.waits.syncs.Add(1)
		if err := end.Synchronize(); err != nil {
			return err
		}
		var err error
		if ms, err = start.Elapsed(end); err != nil {
			return err
		}
		return d.checkFaultLocked()
	})
	if err != nil {
		return 0, fmt.Errorf("cudaops: timing: %w", err)
	}
	return time.Duration(ms * float64(time.Millisecond)), nil
}

// AllocBytes returns n bytes of raw device memory from the caching allocator (FreeBytes returns them):
// an untagged address for the raw launchers and copies, never a tensor's memory.
func (d *Device) AllocBytes(n int64) (cu.DevicePtr, error) { return d.scratch(n) }

// FreeBytes returns a block from AllocBytes.
func (d *Device) FreeBytes(p cu.DevicePtr) error { return d.pool.PutScratch(uintptr(p)) }
