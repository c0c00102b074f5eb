//go:build expertrt_cuda

package cudaops

import (
	"errors"
	"fmt"

	"gorgonia.org/cu"
)

// allocator is a caching device allocator. Requests are rounded up to a size class (powers of two from
// 512 B up to 1 MiB, then multiples of 2 MiB); freed blocks go to the free list of their class and are
// handed out again without a driver call. A steady-state training or benchmark loop that allocates the
// same shapes every step therefore calls cuMemAlloc only in its first step.
//
// Reuse is safe without waiting because all work runs on the device's one stream, in issue order.
// When the driver runs out of memory, the cached blocks are released (after a synchronisation) and
// the allocation is retried once.
type allocator struct {
	d     *Device
	free  map[int64][]cu.DevicePtr // size class -> cached blocks
	live  map[cu.DevicePtr]int64   // block -> size class
	stats AllocStats
}

// AllocStats counts allocator traffic.
type AllocStats struct {
	DriverAllocs int64 // cuMemAlloc calls
	CacheHits    int64 // requests served from a free list
	LiveBytes    int64 // bytes in blocks handed out
	CachedBytes  int64 // bytes in free lists
}

const (
	minClass   = 512
	smallLimit = 1 << 20
	largeStep  = 2 << 20
)

func newAllocator(d *Device) *allocator {
	return &allocator{d: d, free: map[int64][]cu.DevicePtr{}, live: map[cu.DevicePtr]int64{}}
}

// sizeClass rounds a request up to its class.
func sizeClass(n int64) int64 {
	if n <= minClass {
		return minClass
	}
	if n <= smallLimit {
		c := int64(minClass)
		for c < n {
			c <<= 1
		}
		return c
	}
	return (n + largeStep - 1) / largeStep * largeStep
}

// get returns a block of at least n bytes (256-byte aligned).
func (a *allocator) get(n int64) (cu.DevicePtr, error) {
	var p cu.DevicePtr
	err := a.d.do(func() error {
		var err error
		p, err = a.getLocked(n)
		return err
	})
	return p, err
}

func (a *allocator) getLocked(n int64) (cu.DevicePtr, error) {
	if n < 0 {
		return 0, fmt.Errorf("cudaops: alloc: negative size %d", n)
	}
	c := sizeClass(n)
	if fl := a.free[c]; len(fl) > 0 {
		p := fl[len(fl)-1]
		a.free[c] = fl[:len(fl)-1]
		a.live[p] = c
		a.stats.CacheHits++
		a.stats.CachedBytes -= c
		a.stats.LiveBytes += c
		return p, nil
	}
	p, err := cu.MemAlloc(c)
	if err != nil && errors.Is(err, cu.OutOfMemory) {
		if serr := a.d.stream.Synchronize(); serr != nil {
			return 0, fmt.Errorf("cudaops: alloc %d bytes: synchronising before releasing the cache: %w", c, serr)
		}
		a.releaseCachedLocked()
		p, err = cu.MemAlloc(c)
	}
	if err != nil {
		return 0, fmt.Errorf("cudaops: alloc %d bytes (live %d, cached %d): %w", c, a.stats.LiveBytes, a.stats.CachedBytes, err)
	}
	a.live[p] = c
	a.stats.DriverAllocs++
	a.stats.LiveBytes += c
	return p, nil
}

// put returns a block to its free list.
func (a *allocator) put(p cu.DevicePtr) error {
	return a.d.do(func() error { return a.putLocked(p) })
}

func (a *allocator) putLocked(p cu.DevicePtr) error {
	c, ok := a.live[p]
	if !ok {
		return fmt.Errorf("cudaops: free of %v: not a live block of this device (double free?)", p)
	}
	delete(a.live, p)
	a.free[c] = append(a.free[c], p)
	a.stats.LiveBytes -= c
	a.stats.CachedBytes += c
	return nil
}

// block returns the live block containing address p and its size class.
func (a *allocator) block(p uintptr) (cu.DevicePtr, int64, bool) {
	if c, ok := a.live[cu.DevicePtr(p)]; ok {
		return cu.DevicePtr(p), c, true
	}
	for b, c := range a.live {
		if p >= uintptr(b) && p < uintptr(b)+uintptr(c) {
			return b, c, true
		}
	}
	return 0, 0, false
}

func (a *allocator) releaseCachedLocked() {
	for c, fl := range a.free {
		for _, p := range fl {
			_ = cu.MemFree(p)
			a.stats.CachedBytes -= c
		}
		delete(a.free, c)
	}
}

func (a *allocator) releaseAllLocked() {
	a.releaseCachedLocked()
	for p := range a.live {
		_ = cu.MemFree(p)
	}
	a.live = map[cu.DevicePtr]int64{}
	a.stats.LiveBytes = 0
}

// AllocStats reports the allocator's counters.
func (d *Device) AllocStats() AllocStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.alloc.stats
}

// ReleaseCache synchronises and returns every cached (free) block to the driver.
func (d *Device) ReleaseCache() error {
	return d.do(func() error {
		if err := d.stream.Synchronize(); err != nil {
			return fmt.Errorf("cudaops: release cache: %w", err)
		}
		d.alloc.releaseCachedLocked()
		return nil
	})
}
