//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"gorgonia.org/cu"
)

// Device is a handle on one opened CUDA device: its primary context, one stream, the loaded kernel
// modules and a caching allocator (shared by every handle of the device), and the handle's Options
// (fixed: Open, or With for another handle on the same device). All driver calls go through do, which
// serialises them (one mutex per device) and runs them on a thread with the context current
// (runtime.LockOSThread + cuCtxSetCurrent), so a Device may be used from any goroutine.
//
// Every kernel and every copy is issued on the one stream, in call order: a kernel sees the results of
// the kernels issued before it, and memory returned to the allocator can be reused by the next kernel
// without waiting. Only copies to the host (and Synchronize) wait for the device.
type Device struct {
	*deviceCore
	opts Options
}

// deviceCore is the state every handle of one opened device shares.
type deviceCore struct {
	mu     sync.Mutex
	ord    int
	dev    cu.Device
	ctx    cu.CUContext
	stream cu.Stream

	name       string
	sms        int // multiprocessors
	maxSmem    int // shared memory per block, bytes
	ccMajor    int
	ccMinor    int
	totalBytes int64

	fns   map[string]cu.Function
	sigs  sigTable // kernel declarations (kernel_sigs.go), checked against the PTX at Open
	pool  *devengine.Pool
	fault cu.DevicePtr // the fault block (faultLayout): a fault word per kernel, then the grid-barrier state
	flay  faultLayout
	fbuf  []uint32 // host copy of the fault words (under mu)
	slots []uint64 // kernel parameter scratch (under mu)

	occ  map[occKey]int // occupancy per kernel configuration (under mu)
	gemm *gemmState     // GEMM configuration and loaded modules (gemm.go)

	waits   hostWaits    // host synchronisation counters (hostwaits.go)
	ktimer  *kernelTimer // kernel timing session, nil when off (kerneltime.go; under mu)
	kevents []cu.Event   // created timing events kept for the next session (under mu)

	closed bool
}

// Default returns the device of the registered backend of device 0 (Registered), opening it with
// default options when nothing opened it yet (see OpenRegistered).
func Default() (*Device, error) { return registeredBackend(0).Device() }

// Open opens device ordinal with the given options: it retains the primary context, creates a stream,
// loads the embedded PTX modules (after checking them against the kernel declarations) and sets up an
// allocator of its own. The device is not registered with ops (see NewBackend and OpenRegistered).
// Invalid options are an error wrapping ops.ErrConfig.
func Open(ordinal int, opts ...Option) (*Device, error) {
	o, err := Options{}.apply(gemmVariantNames(), opts...)
	if err != nil {
		return nil, err
	}
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("cudaops: counting devices: %w", err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("cudaops: device %d requested, %d present", ordinal, n)
	}
	sigs, err := parseKernelSigs(kernelSigs)
	if err != nil {
		return nil, err
	}
	d := &Device{deviceCore: &deviceCore{ord: ordinal, sigs: sigs, flay: newFaultLayout(sigs)}, opts: o}
	if d.dev, err = cu.GetDevice(ordinal); err != nil {
		return nil, fmt.Errorf("cudaops: device %d: %w", ordinal, err)
	}
	if d.ctx, err = d.dev.RetainPrimaryCtx(); err != nil {
		return nil, fmt.Errorf("cudaops: device %d: retaining primary context: %w", ordinal, err)
	}
	d.pool = devengine.NewPool(fmt.Sprintf("cuda:%d", ordinal), rawAlloc{d})
	err = d.do(func() error {
		var err error
		if d.name, err = d.dev.Name(); err != nil {
			return fmt.Errorf("name: %w", err)
		}
		attrs := []struct {
			a   cu.DeviceAttribute
			dst *int
		}{
			{cu.MultiprocessorCount, &d.sms},
			{cu.MaxSharedMemoryPerBlock, &d.maxSmem},
			{cu.ComputeCapabilityMajor, &d.ccMajor},
			{cu.ComputeCapabilityMinor, &d.ccMinor},
		}
		for _, a := range attrs {
			if *a.dst, err = d.dev.Attribute(a.a); err != nil {
				return fmt.Errorf("attribute %v: %w", a.a, err)
			}
		}
		if d.totalBytes, err = d.dev.TotalMem(); err != nil {
			return fmt.Errorf("total memory: %w", err)
		}
		if d.stream, err = cu.MakeStream(cu.DefaultStream); err != nil {
			return fmt.Errorf("creating stream: %w", err)
		}
		if d.fns, err = loadModules(d.sigs); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cudaops: opening device %d: %w", ordinal, err)
	}
	if d.fault, err = d.scratch(d.flay.bytes()); err != nil {
		return nil, fmt.Errorf("cudaops: opening device %d: fault block: %w", ordinal, err)
	}
	if err := d.do(func() error { return cu.MemsetD32Async(d.fault, 0, d.flay.bytes()/4, d.stream) }); err != nil {
		return nil, fmt.Errorf("cudaops: opening device %d: clearing fault block: %w", ordinal, err)
	}
	return d, nil
}

// With returns another handle on the same device (context, stream, memory, kernels, counters) whose
// options are d's with opts applied: tensors and addresses of either handle are valid in the other,
// and the work of both runs on the one stream in call order. Invalid options are an error wrapping
// ops.ErrConfig.
func (d *Device) With(opts ...Option) (*Device, error) {
	o, err := d.opts.apply(gemmVariantNames(), opts...)
	if err != nil {
		return nil, err
	}
	return &Device{deviceCore: d.deviceCore, opts: o}, nil
}

// Options returns the handle's options.
func (d *Device) Options() Options { return d.opts }

// do runs fn with the device's context current on a locked OS thread, one call at a time.
func (d *Device) do(fn func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.doLocked(fn)
}

func (d *Device) doLocked(fn func() error) error {
	if d.closed {
		return fmt.Errorf("cudaops: device %d is closed", d.ord)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		return fmt.Errorf("setting context current: %w", err)
	}
	return fn()
}

// Name is the GPU's marketing name ("NVIDIA H100 80GB HBM3").
func (d *Device) Name() string { return d.name }

// Multiprocessors is the number of SMs.
func (d *Device) Multiprocessors() int { return d.sms }

// ComputeCapability returns major, minor.
func (d *Device) ComputeCapability() (int, int) { return d.ccMajor, d.ccMinor }

// TotalMemory is the device memory in bytes.
func (d *Device) TotalMemory() int64 { return d.totalBytes }

// Synchronize waits for all work issued so far and reports device faults raised by kernels since the
// last check (for example out-of-range expert indices in Plan or RouteWeights).
func (d *Device) Synchronize() error {
	return d.do(func() error {
		if err := d.streamSyncLocked(); err != nil {
			return fmt.Errorf("cudaops: synchronize: %w", err)
		}
		return d.checkFaultLocked()
	})
}

// checkFaultLocked reads and clears the fault words; the caller holds the context and has synchronised.
func (d *Device) checkFaultLocked() error {
	n := d.flay.words()
	if len(d.fbuf) != n {
		d.fbuf = make([]uint32, n)
	}
	d.waits.reads.Add(1)
	if err := cu.MemcpyDtoH(unsafe.Pointer(&d.fbuf[0]), d.fault, int64(n)*4); err != nil {
		return fmt.Errorf("cudaops: reading the fault block: %w", err)
	}
	err := d.flay.decode(d.fbuf)
	if err == nil {
		return nil
	}
	if cerr := cu.MemsetD32(d.fault, 0, int64(n)); cerr != nil {
		return fmt.Errorf("cudaops: clearing the fault block: %w", cerr)
	}
	return err
}

// faultWord is the address of kernel's own fault word (launchLocked passes it as the fault parameter).
func (d *Device) faultWord(kernel string) cu.DevicePtr {
	return offsetPtr(d.fault, d.flay.wordOffset(kernel))
}

// barrier returns the grid-barrier state of the one-pass kernels (two uint32, count and generation)
// in the fault block, zeroed at Open and left zeroed by every completed launch.
func (d *Device) barrier() cu.DevicePtr { return offsetPtr(d.fault, d.flay.barrierOffset()) }

// Close frees every cached and live block, destroys the stream and releases the primary context: it
// closes the device for every handle. Tensors of this device must not be used afterwards (their checks report devengine.ErrReleased).
func (d *Device) Close() error {
	perr := d.pool.ReleaseAll() // takes d.mu itself, through the driver calls
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	err := d.doLocked(func() error {
		if err := d.streamSyncLocked(); err != nil {
			return err
		}
		d.destroyTimingEventsLocked()
		return d.stream.Destroy()
	})
	if err == nil {
		err = perr
	}
	d.closed = true
	if rerr := d.dev.ReleasePrimaryCtx(); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("cudaops: closing device %d: %w", d.ord, err)
	}
	return nil
}
