package main

import (
	"fmt"
	"time"

	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/simdevice"
)

// The simulated device (tests/simdevice: memory the host cannot read) as a bench device, in this test
// binary only: the whole-layer ops run their device path (ops.Runner and ops.Trainer with a tensor
// engine, memory steps, device-resident inputs) in CI, and its transfer counters stand in for a GPU's
// host synchronisations.
func init() { registerDevice("sim", newSimDevice) }

type simDevice struct{ b *simdevice.Backend }

func newSimDevice() (device, error) {
	b, err := simdevice.Registered()
	if err != nil {
		return nil, err
	}
	return simDevice{b: b}, nil
}

func (simDevice) Name() string           { return "sim" }
func (simDevice) Describe() string       { return "simulated device (tests/simdevice), CPU kernels" }
func (d simDevice) Backend() ops.Backend { return d.b }
func (simDevice) Workers() int           { return 0 }
func (simDevice) TimeOnce(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

func (simDevice) NewCopy(rows, rowBytes, minRowsPerWorker int) (copier, error) {
	return nil, fmt.Errorf("the simulated device has no copy baseline")
}

// HostWaits counts every transfer as a synchronisation (on a GPU each waits for the device) and the
// downloads as reads.
func (d simDevice) HostWaits() (syncs, reads int64) {
	up, down := d.b.Device().Transfers()
	return up + down, down
}

var _ hostWaiter = simDevice{}
