//go:build expertrt_cuda

package cudaops

import (
	"github.com/expertrt/expertrt-go/cudaops/devengine"
)

// Engine is the tensor.Engine over the memory of one Device: the shared device-engine glue of package
// devengine (tensor's arithmetic interfaces with operand checks by address, generation-tagged
// addresses, training-step scopes) over this package's CUDA kernels (elementwise.cu). A *tensor.Dense
// created with tensor.WithEngine(engine) allocates on the GPU; its data pointer is a tagged device
// address and it is flagged natively inaccessible. Host <-> device copies happen only through Memcpy
// between a host and a device Memory, or FromHost / ToHost.
//
// Memory lifetime: see package devengine. Outside a training step, tensors created by NewDense (and by
// the Backend's New and FromHost) own their memory until they are freed (Backend.Free) or
// garbage-collected; between Backend.BeginStep and EndStep all allocations belong to the step.
type Engine = devengine.Engine

// NewEngine returns the tensor engine of d.
func NewEngine(d *Device) *Engine { return devengine.NewEngine(d.pool, cudaKernels{d}) }
