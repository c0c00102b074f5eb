package main

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// stats summarises repeated timings.
type stats struct {
	Median, Min, P90 time.Duration
}

// summarize returns the median (mean of the two middle values for an even count), the minimum and
// the 90th percentile (nearest rank) of ds. ds must not be empty; it is sorted in place.
func summarize(ds []time.Duration) stats {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	n := len(ds)
	med := ds[n/2]
	if n%2 == 0 {
		med = (ds[n/2-1] + ds[n/2]) / 2
	}
	p90 := ds[int(math.Ceil(0.9*float64(n)))-1]
	return stats{Median: med, Min: ds[0], P90: p90}
}

// rowCopyDevice is implemented by devices that can also time a copy done one row at a time (one
// copy() per row, as the CPU dispatch kernel does). It is a diagnostic: it shows how much of the gap
// to the plain copy is the store path (a large copy() uses non-temporal stores, small ones do not).
type rowCopyDevice interface {
	NewRowCopy(rows, rowBytes, minRowsPerWorker int) (copier, error)
}

// timings holds the raw repetitions of one measure call.
type timings struct {
	op, copy, rowCopy []time.Duration
	copyBytes         int64
}

// measure runs wl warmup times untimed and then reps times timed. Each timed repetition of the op is
// followed by one of the copy baseline (and of the row copy when asked), so both see the same
// machine state; bandwidth on shared hosts drifts by tens of percent within seconds.
func measure(dev device, wl *workload, warmup, reps int, rowCopy bool) (*timings, error) {
	if reps < 1 {
		return nil, fmt.Errorf("reps must be >= 1, got %d", reps)
	}
	rows := max(wl.copyRows, 1)
	size := wl.written
	if wl.copyBytes > 0 {
		size = wl.copyBytes
	}
	rowBytes := int(max((size+int64(rows)-1)/int64(rows), 1))
	cp, err := dev.NewCopy(rows, rowBytes, wl.copyMinRows)
	if err != nil {
		return nil, fmt.Errorf("copy baseline: %w", err)
	}
	defer cp.Close()
	var rc copier
	if rowCopy {
		rd, ok := dev.(rowCopyDevice)
		if !ok {
			return nil, fmt.Errorf("device %s has no row copy baseline", dev.Name())
		}
		if rc, err = rd.NewRowCopy(rows, rowBytes, wl.copyMinRows); err != nil {
			return nil, fmt.Errorf("row copy baseline: %w", err)
		}
		defer rc.Close()
	}
	for i := 0; i < warmup; i++ {
		if err := wl.run(); err != nil {
			return nil, err
		}
		if err := cp.Copy(); err != nil {
			return nil, err
		}
	}
	t := &timings{copyBytes: cp.Bytes()}
	for i := 0; i < reps; i++ {
		d, err := dev.TimeOnce(wl.run)
		if err != nil {
			return nil, err
		}
		t.op = append(t.op, d)
		if d, err = dev.TimeOnce(cp.Copy); err != nil {
			return nil, fmt.Errorf("copy baseline: %w", err)
		}
		t.copy = append(t.copy, d)
		if rc != nil {
			if d, err = dev.TimeOnce(rc.Copy); err != nil {
				return nil, fmt.Errorf("row copy baseline: %w", err)
			}
			t.rowCopy = append(t.rowCopy, d)
		}
	}
	return t, nil
}

// gbps is bytes per second in units of 1e9.
func gbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / d.Seconds() / 1e9
}
