package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/expertrt/expertrt-go/ops"
)

func init() { registerDevice("cpu", newCPUDevice) }

// cpuDevice runs the ops.CPU kernels on host memory and times them with the wall clock.
type cpuDevice struct{ b ops.Backend }

func newCPUDevice() (device, error) {
	b, err := backendNamed("cpu")
	if err != nil {
		return nil, err
	}
	return cpuDevice{b: b}, nil
}

func (cpuDevice) Name() string { return "cpu" }

func (d cpuDevice) Describe() string {
	return fmt.Sprintf("%s, %d goroutines (GOMAXPROCS), %s/%s", cpuModel(), d.Workers(), runtime.GOOS, runtime.GOARCH)
}

func (d cpuDevice) Backend() ops.Backend { return d.b }

// Workers is GOMAXPROCS: the CPU kernels start one goroutine per chunk, at most GOMAXPROCS chunks.
func (cpuDevice) Workers() int { return runtime.GOMAXPROCS(0) }

func (cpuDevice) TimeOnce(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

func (cpuDevice) NewCopy(rows, rowBytes, minRowsPerWorker int) (copier, error) {
	return newCPUCopier(rows, rowBytes, minRowsPerWorker, false)
}

// NewRowCopy is the diagnostic copy of rowCopyDevice: the same split, but one copy() per row.
func (cpuDevice) NewRowCopy(rows, rowBytes, minRowsPerWorker int) (copier, error) {
	return newCPUCopier(rows, rowBytes, minRowsPerWorker, true)
}

func newCPUCopier(rows, rowBytes, minRowsPerWorker int, byRow bool) (*cpuCopier, error) {
	if rows < 1 || rowBytes < 1 {
		return nil, fmt.Errorf("copy baseline needs a positive size, got %d rows of %d bytes", rows, rowBytes)
	}
	c := &cpuCopier{rows: rows, rowBytes: rowBytes, minRows: minRowsPerWorker, byRow: byRow}
	c.src = make([]byte, rows*rowBytes)
	c.dst = make([]byte, rows*rowBytes)
	for i := range c.src {
		c.src[i] = byte(i)
	}
	copy(c.dst, c.src) // fault the pages in before timing
	return c, nil
}

// cpuCopier is the plain copy the CPU kernels are measured against. It splits its rows exactly as
// the kernels split theirs (ops' parallelRows: min(GOMAXPROCS, rows/minRows) contiguous chunks of
// ceil(rows/workers) rows, the first on the calling goroutine) and copies each chunk with one copy()
// (or, with byRow, one copy() per row).
type cpuCopier struct {
	rows, rowBytes, minRows int
	byRow                   bool
	src, dst                []byte
}

func (c *cpuCopier) Copy() error {
	workers := runtime.GOMAXPROCS(0)
	minRows := max(c.minRows, 1)
	if w := c.rows / minRows; w < workers {
		workers = w
	}
	if workers <= 1 {
		c.copyRows(0, c.rows)
		return nil
	}
	chunk := (c.rows + workers - 1) / workers
	part := c.copyRows
	var wg sync.WaitGroup
	for lo := chunk; lo < c.rows; lo += chunk {
		hi := min(lo+chunk, c.rows)
		wg.Add(1)
		go func() {
			defer wg.Done()
			part(lo, hi)
		}()
	}
	part(0, min(chunk, c.rows))
	wg.Wait()
	return nil
}

// copyRows copies rows [lo, hi).
func (c *cpuCopier) copyRows(lo, hi int) {
	if !c.byRow {
		copy(c.dst[lo*c.rowBytes:hi*c.rowBytes], c.src[lo*c.rowBytes:hi*c.rowBytes])
		return
	}
	for r := lo; r < hi; r++ {
		copy(c.dst[r*c.rowBytes:(r+1)*c.rowBytes], c.src[r*c.rowBytes:(r+1)*c.rowBytes])
	}
}

func (c *cpuCopier) Bytes() int64 { return int64(len(c.src)) }

func (c *cpuCopier) Close() error {
	c.src, c.dst = nil, nil
	return nil
}

// cpuModel reads the processor name from /proc/cpuinfo (Linux); elsewhere it says "unknown CPU".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimLeft(name, " \t:"))
		}
	}
	return "unknown CPU"
}
