package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/expertrt/expertrt-go/ops"
)

// device is where a benchmark runs: the kernel set of one ops.Backend, a clock for it, and the plain
// copy that its bandwidth is compared with. The CPU device lives in device_cpu.go; a GPU device
// (device_cuda.go, build tag expertrt_cuda) registers itself the same way from an init function.
type device interface {
	// Name is the -device flag value ("cpu", "cuda").
	Name() string
	// Describe names the hardware for the report (CPU model and goroutines, GPU model).
	Describe() string
	// Backend is the kernel set the benchmarks call; inputs are created with its FromHost and New.
	Backend() ops.Backend
	// Workers is the number of goroutines the kernels (and the copy baseline) use; 0 when the
	// question does not apply (a GPU).
	Workers() int
	// TimeOnce runs fn once and returns the time it took on the device: wall clock around a
	// synchronous call on the CPU, events recorded around fn on the stream (then synchronised) on a GPU.
	TimeOnce(fn func() error) (time.Duration, error)
	// NewCopy prepares the copy baseline: two buffers of rows*rowBytes bytes in device memory and a
	// copy between them, split over the same goroutines and chunks (rows, minRowsPerWorker) as the
	// device's kernels split an output of that many rows (CPU), or one device-to-device copy (GPU).
	NewCopy(rows, rowBytes, minRowsPerWorker int) (copier, error)
}

// copier is one prepared copy baseline.
type copier interface {
	// Copy copies the source buffer into the destination once.
	Copy() error
	// Bytes is the size of one buffer; bandwidth counts it twice (read + written).
	Bytes() int64
	// Close releases the buffers.
	Close() error
}

// devices maps a -device name to its constructor. Files for optional devices fill it from init
// functions behind their build tags, so the CLI and the benchmarks pick them up without edits here.
var devices = map[string]func() (device, error){}

// registerDevice adds a device constructor under name; a duplicate name is a programming error.
func registerDevice(name string, mk func() (device, error)) {
	if _, dup := devices[name]; dup {
		panic("bench: device " + name + " registered twice")
	}
	devices[name] = mk
}

// deviceNames lists the registered devices, sorted.
func deviceNames() []string {
	names := make([]string, 0, len(devices))
	for n := range devices {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// openDevice builds the named device.
func openDevice(name string) (device, error) {
	mk, ok := devices[name]
	if !ok {
		return nil, fmt.Errorf("unknown device %q (built-in: %s; cuda needs -tags expertrt_cuda)",
			name, strings.Join(deviceNames(), ", "))
	}
	return mk()
}

// backendNamed returns the ops backend called name (ops.LookupBackend: "cpu", a registered name or alias).
func backendNamed(name string) (ops.Backend, error) { return ops.LookupBackend(name) }
