//go:build expertrt_cuda

package cudaops

import (
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// TensorEngine returns the tensor engine of the backend's device (ops.TensorEngineProvider): run device
// graphs with G.NewTapeMachine(g, G.WithEngine(e)) so that Gorgonia's built-in elementwise ops and the
// gradient sums Grad inserts run on the GPU.
func (b *Backend) TensorEngine() (tensor.Engine, error) {
	if err := b.open(); err != nil {
		return nil, err
	}
	return b.eng, nil
}

// BeginStep starts a training step (ops.StepScoper): until EndStep, every device allocation (the ops'
// outputs, the tensor engine's results, Gorgonia's and the tensor package's allocations through the
// engine) belongs to the step. Steps do not nest.
func (b *Backend) BeginStep() error {
	if err := b.open(); err != nil {
		return err
	}
	return b.dev.pool.BeginStep()
}

// EndStep ends the training step: the step's memory goes back to the allocator (no synchronisation:
// later work on the stream reuses it in order). Tensors of the step other than persisted ones must not
// be used afterwards; their checks report devengine.ErrReleased.
func (b *Backend) EndStep() error {
	if err := b.open(); err != nil {
		return err
	}
	return b.dev.pool.EndStep()
}

// Persist moves t (allocated in the current step) out of the step: optimizer state created lazily, a
// value read after EndStep. It then lives until it is garbage-collected or freed.
func (b *Backend) Persist(t *tensor.Dense) error {
	if err := b.open(); err != nil {
		return err
	}
	return b.eng.Persist(t)
}

var (
	_ ops.TensorEngineProvider = (*Backend)(nil)
	_ ops.StepScoper           = (*Backend)(nil)
)
