//go:build expertrt_cuda

package cudaops

import "sync/atomic"

// HostWaits counts the points where the host waited for the device, since the device was opened. A
// training step that runs entirely on the device adds nothing to either count; reading its loss adds one
// Sync and two Reads (the value and the fault word). Tests use the counts to assert that a step issues
// no hidden synchronisation (tests/cuda_hostsync_test.go).
type HostWaits struct {
	// Syncs counts waits for the stream or an event: Synchronize, every copy from or to host memory
	// (a copy from pageable host memory waits so that the caller may reuse its buffer), Time, and the
	// allocator's synchronisations (when the driver is out of memory, ReleaseCache).
	Syncs int64
	// Reads counts copies from device to host memory: ToHost and the engine's downloads, and the fault
	// word read at every Synchronize, Time and copy to the host.
	Reads int64
}

// hostWaits are the device's counters (atomic: read without the device lock).
type hostWaits struct{ syncs, reads atomic.Int64 }

// HostWaits returns the counts so far.
func (d *Device) HostWaits() HostWaits {
	return HostWaits{Syncs: d.waits.syncs.Load(), Reads: d.waits.reads.Load()}
}

// streamSyncLocked waits for the device's stream (the caller holds the context) and counts the wait.
func (d *Device) streamSyncLocked() error {
	d.waits.syncs.Add(1)
	return d.stream.Synchronize()
}
