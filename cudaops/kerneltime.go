//go:build expertrt_cuda

package cudaops

import (
	"fmt"
	"time"

	"gorgonia.org/cu"
)

// Kernel timing: an opt-in mode in which every launch and every copy or fill on the device's stream is
// bracketed by two CUDA events, so that the device time of each piece of work can be summed by kernel
// family (what share of a training step the matrix products take). Off by default; when off, the cost is
// one nil check per launch. The events add a little host work per launch (two cuEventRecord calls), so
// time whole steps in runs without it and use it only for the breakdown.

// KernelTime is the device time of one kernel family during a kernel-timing session.
type KernelTime struct {
	// Family names the work: an embedded kernel's name without its type and width suffixes
	// ("dispatch", "swiglu_grad", "ew_add"), a matrix product (FamilyMatMul, FamilyGroupedMatMul,
	// FamilyGroupedGradW) or a copy or fill (FamilyMemset, FamilyCopyDtoD, ...).
	Family string
	// MatMul marks the matrix-product families (IsMatMulFamily).
	MatMul bool
	// Launches is the number of launches (or copies) of the family.
	Launches int
	// Time is the sum over those launches of the device time between the events recorded just before
	// and just after each.
	Time time.Duration
}

// kernelTimer is one timing session: a pair of recorded events per launch, in issue order.
type kernelTimer struct {
	marks []kernelMark
}

type kernelMark struct {
	family     string
	start, end cu.Event
}

// StartKernelTiming starts a kernel-timing session: from now on every launch, copy and fill on the
// stream records events around itself, until StopKernelTiming. Sessions do not nest.
func (d *Device) StartKernelTiming() error {
	return d.do(func() error {
		if d.ktimer != nil {
			return fmt.Errorf("cudaops: kernel timing is already on")
		}
		d.ktimer = &kernelTimer{}
		return nil
	})
}

// StopKernelTiming ends the session, waits for the stream and returns the device time per family, in
// order of first launch. Device faults raised during the session are reported.
func (d *Device) StopKernelTiming() ([]KernelTime, error) {
	var out []KernelTime
	err := d.do(func() error {
		kt := d.ktimer
		if kt == nil {
			return fmt.Errorf("cudaops: kernel timing is not on")
		}
		d.ktimer = nil
		defer func() {
			for _, m := range kt.marks {
				d.kevents = append(d.kevents, m.start, m.end)
			}
		}()
		if err := d.streamSyncLocked(); err != nil {
			return err
		}
		at := map[string]int{}
		for _, m := range kt.marks {
			ms, err := m.start.Elapsed(m.end)
			if err != nil {
				return fmt.Errorf("reading the events of %s: %w", m.family, err)
			}
			i, ok := at[m.family]
			if !ok {
				i = len(out)
				at[m.family] = i
				out = append(out, KernelTime{Family: m.family, MatMul: IsMatMulFamily(m.family)})
			}
			out[i].Launches++
			out[i].Time += time.Duration(ms * float64(time.Millisecond))
		}
		return d.checkFaultLocked()
	})
	if err != nil {
		return nil, fmt.Errorf("cudaops: kernel timing: %w", err)
	}
	return out, nil
}

// KernelTimingOn reports whether a kernel-timing session is running.
func (d *Device) KernelTimingOn() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ktimer != nil
}

// timedBeginLocked records the start event of one piece of work of the given family (the caller holds
// the context and checked that a session is on) and returns its mark's index for timedEndLocked.
func (d *Device) timedBeginLocked(family string) (int, error) {
	var ev [2]cu.Event
	for i := range ev {
		if n := len(d.kevents); n > 0 {
			ev[i], d.kevents = d.kevents[n-1], d.kevents[:n-1]
			continue
		}
		var err error
		if ev[i], err = cu.MakeEvent(cu.DefaultEvent); err != nil {
			return 0, fmt.Errorf("cudaops: kernel timing: creating an event: %w", err)
		}
	}
	if err := ev[0].Record(d.stream); err != nil {
		d.kevents = append(d.kevents, ev[0], ev[1])
		return 0, fmt.Errorf("cudaops: kernel timing: recording an event: %w", err)
	}
	kt := d.ktimer
	kt.marks = append(kt.marks, kernelMark{family: family, start: ev[0], end: ev[1]})
	return len(kt.marks) - 1, nil
}

// timedEndLocked records the end event of mark i.
func (d *Device) timedEndLocked(i int) error {
	if err := d.ktimer.marks[i].end.Record(d.stream); err != nil {
		return fmt.Errorf("cudaops: kernel timing: recording an event: %w", err)
	}
	return nil
}

// timedLocked issues work of the given family (issue enqueues it on the stream; the caller holds the
// context), between two events when a timing session is on.
func (d *Device) timedLocked(family string, issue func() error) error {
	if d.ktimer == nil {
		return issue()
	}
	i, err := d.timedBeginLocked(family)
	if err != nil {
		return err
	}
	err = issue()
	if e := d.timedEndLocked(i); err == nil { // recorded even after a failed issue: the mark stays readable
		err = e
	}
	return err
}

// destroyTimingEventsLocked destroys the kept events (Close).
func (d *Device) destroyTimingEventsLocked() {
	for i := range d.kevents {
		_ = cu.DestroyEvent(&d.kevents[i])
	}
	d.kevents = nil
	if d.ktimer != nil {
		for i := range d.ktimer.marks {
			_ = cu.DestroyEvent(&d.ktimer.marks[i].start)
			_ = cu.DestroyEvent(&d.ktimer.marks[i].end)
		}
		d.ktimer = nil
	}
}
