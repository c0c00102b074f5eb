// Package simdevice is a simulated device for testing the GPU path without a GPU: a backend and a
// tensor engine over memory the host cannot read. Device memory is one mmap'd region kept PROT_NONE
// except while one of the device's own "kernels" runs, so any host read of a device tensor (a
// t.Data() on the wrong side of the seam, a host loop in Gorgonia or the tensor package) crashes the
// test with a stack trace instead of passing unnoticed. Tensor addresses also carry the generation tags
// of package devengine, so even with the region unprotected they are not host addresses.
//
// The kernels unprotect the region, run the CPU reference kernels (ops.CPU(), devengine.HostKernels) on
// host views of the memory, and protect it again. The backend implements ops.Backend (including
// TrainingBackend), ops.TensorEngineProvider (the same devengine glue the CUDA backend runs) and
// ops.StepScoper, and Registered registers one under the name "sim".
//
// Linux/Unix only (syscall.Mmap, syscall.Mprotect).
package simdevice

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
)

// Device is one simulated device: a protected region, its allocator, pool and tensor engine.
type Device struct {
	name string

	mu     sync.Mutex // one kernel at a time: the region is readable only inside run
	region []byte
	base   uintptr

	raw  *regionAlloc
	pool *devengine.Pool
	eng  *devengine.Engine

	uploads, downloads atomic.Int64 // copies from and to host memory (Transfers)
}

// Open maps a region of size bytes (rounded up to 1 MiB) as a new simulated device named name.
func Open(name string, size int64) (*Device, error) {
	const mib = 1 << 20
	size = (size + mib - 1) / mib * mib
	if size <= 0 {
		return nil, fmt.Errorf("simdevice: size %d", size)
	}
	region, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("simdevice: mmap %d bytes: %w", size, err)
	}
	d := &Device{name: name, region: region, base: addrOfBytes(region)}
	d.raw = &regionAlloc{base: d.base, size: size, free: []span{{d.base, d.base + uintptr(size)}}}
	d.pool = devengine.NewPool(name, d.raw)
	d.eng = devengine.NewEngine(d.pool, simKernels{d})
	return d, nil
}

// Close unmaps the region; the device and its tensors must not be used afterwards.
func (d *Device) Close() error {
	_ = d.pool.ReleaseAll()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.region == nil {
		return nil
	}
	err := syscall.Munmap(d.region)
	d.region = nil
	return err
}

// Name is the device's name.
func (d *Device) Name() string { return d.name }

// Engine is the device's tensor engine.
func (d *Device) Engine() *devengine.Engine { return d.eng }

// Pool is the device's memory pool.
func (d *Device) Pool() *devengine.Pool { return d.pool }

// Transfers returns the number of copies from host memory to the device (uploads) and from the device
// to host memory (downloads) so far. On a real device each is a host synchronisation (a download waits
// for the kernels before it; an upload from pageable memory waits for its copy), so tests count them to
// assert that a training step synchronises only where it reads a value.
func (d *Device) Transfers() (uploads, downloads int64) { return d.uploads.Load(), d.downloads.Load() }

// Stats returns the pool's counters.
func (d *Device) Stats() devengine.Stats { return d.pool.Stats() }

// run executes fn with the pages of the given ranges (real addresses inside the region) readable and
// writable, one kernel at a time; everything else stays protected, so a kernel touches only its
// operands.
func (d *Device) run(ranges []span, fn func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.region == nil {
		return fmt.Errorf("simdevice %s: closed", d.name)
	}
	var open [][]byte
	defer func() {
		for _, b := range open {
			if err := syscall.Mprotect(b, syscall.PROT_NONE); err != nil {
				panic(fmt.Sprintf("simdevice %s: protect: %v", d.name, err))
			}
		}
	}()
	page := uintptr(syscall.Getpagesize())
	for _, r := range ranges {
		if r.hi <= r.lo {
			continue
		}
		if r.lo < d.base || r.hi > d.base+uintptr(len(d.region)) {
			return fmt.Errorf("simdevice %s: kernel operand [%#x, %#x) is outside device memory", d.name, r.lo, r.hi)
		}
		lo, hi := (r.lo-d.base)&^(page-1), (r.hi-d.base+page-1)&^(page-1)
		b := d.region[lo:hi]
		if err := syscall.Mprotect(b, syscall.PROT_READ|syscall.PROT_WRITE); err != nil {
			return fmt.Errorf("simdevice %s: unprotect: %w", d.name, err)
		}
		open = append(open, b)
	}
	return fn()
}

// Contains reports whether the real (untagged) address p lies in the device's region.
func (d *Device) Contains(p uintptr) bool {
	return p >= d.base && p < d.base+uintptr(len(d.region))
}

// regionAlloc is the device's own allocator: first fit over the region, 256-byte aligned, coalescing
// free spans. The pool above it caches blocks, so it is called rarely.
type regionAlloc struct {
	mu   sync.Mutex
	base uintptr
	size int64
	free []span // sorted, disjoint, coalesced
	used map[uintptr]uintptr
}

type span struct{ lo, hi uintptr }

func (r *regionAlloc) Alloc(n int64) (uintptr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sz := uintptr((n + 255) &^ 255)
	for i, s := range r.free {
		if s.hi-s.lo >= sz {
			p := s.lo
			if s.hi-s.lo == sz {
				r.free = append(r.free[:i], r.free[i+1:]...)
			} else {
				r.free[i].lo += sz
			}
			if r.used == nil {
				r.used = map[uintptr]uintptr{}
			}
			r.used[p] = sz
			return p, nil
		}
	}
	return 0, fmt.Errorf("simdevice: %d bytes requested: %w", n, devengine.ErrOutOfMemory)
}

func (r *regionAlloc) Free(p uintptr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	sz, ok := r.used[p]
	if !ok {
		return fmt.Errorf("simdevice: free of %#x: not an allocation", p)
	}
	delete(r.used, p)
	i := sort.Search(len(r.free), func(i int) bool { return r.free[i].lo > p })
	r.free = append(r.free, span{})
	copy(r.free[i+1:], r.free[i:])
	r.free[i] = span{p, p + sz}
	// Coalesce with the neighbours.
	if i+1 < len(r.free) && r.free[i].hi == r.free[i+1].lo {
		r.free[i].hi = r.free[i+1].hi
		r.free = append(r.free[:i+1], r.free[i+2:]...)
	}
	if i > 0 && r.free[i-1].hi == r.free[i].lo {
		r.free[i-1].hi = r.free[i].hi
		r.free = append(r.free[:i], r.free[i+1:]...)
	}
	return nil
}

func (r *regionAlloc) Sync() error { return nil }
