//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// Fills and copies on the device's stream (util.cu's fill_u64 for 8-byte patterns, the driver's memsets
// and copies otherwise), each timed under its family when kernel timing is on.

// fill writes n values of width bytes (1, 2, 4 or 8) with the given bit pattern.
func (d *Device) fill(p cu.DevicePtr, n, width int64, bits uint64) error {
	if n == 0 {
		return nil
	}
	switch width {
	case 1:
		return d.do(func() error {
			return d.timedLocked(FamilyMemset, func() error { return cu.MemsetD8Async(p, byte(bits), n, d.stream) })
		})
	case 2:
		return d.do(func() error {
			return d.timedLocked(FamilyMemset, func() error { return cu.MemsetD16Async(p, uint16(bits), n, d.stream) })
		})
	case 4:
		return d.do(func() error {
			return d.timedLocked(FamilyMemset, func() error { return cu.MemsetD32Async(p, uint(uint32(bits)), n, d.stream) })
		})
	case 8:
		return d.launch("fill_u64", d.flatGrid(n), ptrArg(p), i64(n), u64(bits))
	}
	return fmt.Errorf("cudaops: fill: unsupported width %d", width)
}

func (d *Device) copyHtoD(dst cu.DevicePtr, src unsafe.Pointer, n int64) error {
	if n == 0 {
		return nil
	}
	return d.do(func() error {
		if err := d.timedLocked(FamilyCopyHtoD, func() error { return cu.MemcpyHtoDAsync(dst, src, n, d.stream) }); err != nil {
			return fmt.Errorf("cudaops: copy %d bytes host->device: %w", n, err)
		}
		// Pageable source: wait so that the Go memory may change as soon as we return.
		if err := d.streamSyncLocked(); err != nil {
			return fmt.Errorf("cudaops: copy %d bytes host->device: %w", n, err)
		}
		return nil
	})
}

// copyDtoH waits for the stream (all earlier kernels), copies, and reports pending device faults.
func (d *Device) copyDtoH(dst unsafe.Pointer, src cu.DevicePtr, n int64) error {
	return d.do(func() error {
		if n > 0 {
			d.waits.reads.Add(1)
			if err := d.timedLocked(FamilyCopyDtoH, func() error { return cu.MemcpyDtoHAsync(dst, src, n, d.stream) }); err != nil {
				return fmt.Errorf("cudaops: copy %d bytes device->host: %w", n, err)
			}
		}
		if err := d.streamSyncLocked(); err != nil {
			return fmt.Errorf("cudaops: copy %d bytes device->host: %w", n, err)
		}
		return d.checkFaultLocked()
	})
}

func (d *Device) copyDtoD(dst, src cu.DevicePtr, n int64) error {
	if n == 0 {
		return nil
	}
	return d.do(func() error {
		if err := d.timedLocked(FamilyCopyDtoD, func() error { return cu.MemcpyDtoDAsync(dst, src, n, d.stream) }); err != nil {
			return fmt.Errorf("cudaops: copy %d bytes device->device: %w", n, err)
		}
		return nil
	})
}

// CopyDtoD issues a device-to-device copy of n bytes on the stream (the bandwidth baseline).
func (d *Device) CopyDtoD(dst, src cu.DevicePtr, n int64) error { return d.copyDtoD(dst, src, n) }
