//go:build expertrt_cuda

package cudaops

import (
	"errors"
	"fmt"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"gorgonia.org/cu"
)

// The device's memory is a devengine.Pool over cuMemAlloc: size classes (powers of two from 512 B up
// to 1 MiB, then multiples of 2 MiB) whose freed blocks are cached and handed out again without a
// driver call, generation-tagged tensor addresses, training-step scopes (BeginStep/EndStep), and, when
// the driver runs out of memory, a garbage collection that takes back the blocks of unreachable tensors,
// then a synchronisation that returns the cache to the driver, each followed by a retry. A steady-state
// training or benchmark loop that allocates the same shapes every step calls cuMemAlloc only in its
// first step.
//
// Reuse is safe without waiting because all work runs on the device's one stream, in issue order.

// AllocStats counts allocator traffic (devengine.Stats: driver allocations, cache hits, live, cached
// and step bytes, blocks reclaimed from collected tensors).
type AllocStats = devengine.Stats

// rawAlloc is the pool's view of the driver.
type rawAlloc struct{ d *Device }

func (r rawAlloc) Alloc(n int64) (uintptr, error) {
	var p cu.DevicePtr
	err := r.d.do(func() error {
		var err error
		p, err = cu.MemAlloc(n)
		return err
	})
	if err != nil {
		if errors.Is(err, cu.OutOfMemory) {
			return 0, fmt.Errorf("cuMemAlloc(%d): %v: %w", n, err, devengine.ErrOutOfMemory)
		}
		return 0, fmt.Errorf("cuMemAlloc(%d): %w", n, err)
	}
	return uintptr(p), nil
}

func (r rawAlloc) Free(p uintptr) error {
	return r.d.do(func() error { return cu.MemFree(cu.DevicePtr(p)) })
}

func (r rawAlloc) Sync() error {
	return r.d.do(r.d.streamSyncLocked)
}

// scratch returns n bytes of internal device memory (kernels' temporary buffers); putScratch returns it.
func (d *Device) scratch(n int64) (cu.DevicePtr, error) {
	p, err := d.pool.Scratch(n)
	if err != nil {
		return 0, fmt.Errorf("cudaops: scratch memory: %w", err)
	}
	return cu.DevicePtr(p), nil
}

func (d *Device) putScratch(p cu.DevicePtr) { _ = d.pool.PutScratch(uintptr(p)) }

// AllocStats reports the allocator's counters.
func (d *Device) AllocStats() AllocStats { return d.pool.Stats() }

// ReleaseCache synchronises and returns every cached (free) block to the driver.
func (d *Device) ReleaseCache() error { return d.pool.ReleaseCache() }

// Pool returns the device's memory pool.
func (d *Device) Pool() *devengine.Pool { return d.pool }
