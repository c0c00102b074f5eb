//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"unsafe"

	"github.com/expertrt/expertrt-go/cudaops/devengine"
	"gorgonia.org/cu"
)

// ptrArg passes a device address to a kernel without its generation tag (devengine): the typed
// launchers get validated real addresses, and a tagged address that reached a raw launcher still
// names the right memory.
func ptrArg(p cu.DevicePtr) arg { return rawPtrArg(uint64(devengine.Untag(uintptr(p)))) }

// launch issues kernel name on the device's stream. The typed launchers (kernels.go, ...) validate
// sizes and addresses; launch checks the arguments against the kernel's declaration (kernel_sigs.go).
func (d *Device) launch(name string, cfg launchCfg, args ...arg) error {
	return d.do(func() error { return d.launchLocked(name, cfg.grid, 1, cfg.block, 1, cfg.smem, args...) })
}

func (d *Device) launchLocked(name string, gx, gy, bx, by, smem int, args ...arg) error {
	sig, ok := d.sigs[name]
	if !ok {
		return fmt.Errorf("cudaops: kernel %s is not declared (kernel_sigs.go)", name)
	}
	fn, ok := d.fns[name]
	if !ok {
		return fmt.Errorf("cudaops: kernel %s is not in the embedded PTX", name)
	}
	if gx <= 0 || gy <= 0 || bx <= 0 || by <= 0 {
		return fmt.Errorf("cudaops: kernel %s: empty launch grid=(%d,%d) block=(%d,%d)", name, gx, gy, bx, by)
	}
	if smem > d.maxSmem {
		return fmt.Errorf("cudaops: kernel %s needs %d bytes of shared memory, the device allows %d per block", name, smem, d.maxSmem)
	}
	slots, err := sig.bind(args, uint64(devengine.Untag(uintptr(d.fault))), uint64(d.faultWord(name)), d.slots)
	if err != nil {
		return err
	}
	d.slots = slots
	params := make([]unsafe.Pointer, len(slots))
	for i := range slots {
		params[i] = unsafe.Pointer(&slots[i])
	}
	mark := -1
	if d.ktimer != nil {
		var err error
		if mark, err = d.timedBeginLocked(kernelFamily(name)); err != nil {
			return err
		}
	}
	err = fn.Launch(gx, gy, 1, bx, by, 1, smem, d.stream, params)
	if mark >= 0 {
		if e := d.timedEndLocked(mark); err == nil {
			err = e
		}
	}
	if err != nil {
		return fmt.Errorf("cudaops: launching %s grid=(%d,%d) block=(%d,%d) smem=%d: %w", name, gx, gy, bx, by, smem, err)
	}
	return nil
}

// warpGrid sizes a grid-striding launch of one warp per item (warpGridFor).
func (d *Device) warpGrid(items int) launchCfg { return warpGridFor(d.sms, items) }

// flatGrid sizes a grid-striding elementwise launch over n items (flatGridFor).
func (d *Device) flatGrid(n int64) launchCfg { return flatGridFor(d.sms, n) }
