package ep

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Row copies between tensors of any backend, through ops.Backend views and the tensor engine's Memcpy
// (which a device backend's engine implements for every direction). Host tensors are recognised by
// ownership (no registered device backend owns them), not by their memory flag: Gorgonia relabels a
// device graph's values, host ones included, as natively inaccessible.

// isCPU reports whether t belongs to the host backend.
func isCPU(t *tensor.Dense) (ops.Backend, bool, error) {
	b, err := ops.BackendFor(t)
	if err != nil {
		return nil, false, err
	}
	return b, b.Name() == ops.CPU().Name(), nil
}

// copyRows copies n rows of width h from src (from row srcRow) into dst (from row dstRow). Both are
// row-major tensors of one dtype; either may be host or device memory of one device backend.
func copyRows(dst *tensor.Dense, dstRow int, src *tensor.Dense, srcRow, n, h int) error {
	return copyElems(dst, dstRow*h, src, srcRow*h, n*h)
}

// copyElems copies n elements of src from element so into dst from element do.
func copyElems(dst *tensor.Dense, do int, src *tensor.Dense, so, n int) error {
	if n == 0 {
		return nil
	}
	if dst.Dtype() != src.Dtype() {
		return fmt.Errorf("ep: copy between dtypes %v and %v: %w", src.Dtype(), dst.Dtype(), ops.ErrDtype)
	}
	if do < 0 || so < 0 || do+n > dst.Shape().TotalSize() || so+n > src.Shape().TotalSize() {
		return fmt.Errorf("ep: copy of %d elements from %d of %v into %d of %v is out of range: %w",
			n, so, src.Shape(), do, dst.Shape(), ops.ErrShape)
	}
	bd, dHost, err := isCPU(dst)
	if err != nil {
		return err
	}
	bs, sHost, err := isCPU(src)
	if err != nil {
		return err
	}
	if dHost && sHost {
		return hostCopy(dst, do, src, so, n)
	}
	if !dHost && !sHost && bd.Name() != bs.Name() {
		return fmt.Errorf("ep: copy from %s to %s memory: %w", bs.Name(), bd.Name(), ops.ErrMixedBackends)
	}
	dv, err := bd.View(dst, do, n)
	if err != nil {
		return err
	}
	sv, err := bs.View(src, so, n)
	if err != nil {
		return err
	}
	dev := bd
	if dHost {
		dev = bs
	}
	eng, err := deviceEngine(dev, dv, sv)
	if err != nil {
		return err
	}
	if err := eng.Memcpy(dv, sv); err != nil {
		return fmt.Errorf("ep: copy of %d elements (%s): %w", n, dev.Name(), err)
	}
	return nil
}

// deviceEngine returns the tensor engine that copies for backend b: the backend's own
// (ops.TensorEngineProvider) or the engine of whichever view b made.
func deviceEngine(b ops.Backend, views ...*tensor.Dense) (tensor.Engine, error) {
	if p, ok := b.(ops.TensorEngineProvider); ok {
		return p.TensorEngine()
	}
	for _, v := range views {
		if e := v.Engine(); e != nil && !e.AllocAccessible() {
			return e, nil
		}
	}
	return nil, fmt.Errorf("ep: backend %s has no tensor engine to copy device rows with: %w", b.Name(), ops.ErrUnsupported)
}

func hostCopy(dst *tensor.Dense, do int, src *tensor.Dense, so, n int) error {
	switch d := dst.Data().(type) {
	case []float32:
		copy(d[do:do+n], src.Data().([]float32)[so:so+n])
	case []float64:
		copy(d[do:do+n], src.Data().([]float64)[so:so+n])
	case []int32:
		copy(d[do:do+n], src.Data().([]int32)[so:so+n])
	default:
		return fmt.Errorf("ep: copy of %v tensors: %w", dst.Dtype(), ops.ErrDtype)
	}
	return nil
}

// hostInt32s returns the values of an int32 tensor of any backend (a copy when it lives on a device).
func hostInt32s(t *tensor.Dense) ([]int32, error) {
	if t == nil || t.Dtype() != tensor.Int32 {
		return nil, fmt.Errorf("ep: want an int32 tensor, got %v: %w", dtypeOf(t), ops.ErrDtype)
	}
	b, host, err := isCPU(t)
	if err != nil {
		return nil, err
	}
	if !host {
		if t, err = b.ToHost(t); err != nil {
			return nil, err
		}
	}
	d, ok := t.Data().([]int32)
	if !ok {
		return nil, fmt.Errorf("ep: int32 tensor holds %T: %w", t.Data(), ops.ErrDtype)
	}
	return d, nil
}

// toHost returns t itself when it is host memory, else a host copy.
func toHost(t *tensor.Dense) (*tensor.Dense, error) {
	b, host, err := isCPU(t)
	if err != nil || host {
		return t, err
	}
	return b.ToHost(t)
}

func dtypeOf(t *tensor.Dense) any {
	if t == nil {
		return "nil"
	}
	return t.Dtype()
}
