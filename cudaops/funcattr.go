//go:build expertrt_cuda

package cudaops

// #cgo LDFLAGS: -lcuda
// #cgo linux CFLAGS: -I/usr/local/cuda/include -I/usr/include
// #include <cuda.h>
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// setMaxDynamicSmem lets fn launch with up to bytes of dynamic shared memory (above the default 48 KiB,
// up to the device's opt-in limit): cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES),
// which gorgonia.org/cu v0.9.6 does not wrap. The caller holds the device's context.
func setMaxDynamicSmem(fn cu.Function, bytes int) error {
	// cu.Function is a struct holding only the CUfunction handle.
	f := *(*C.CUfunction)(unsafe.Pointer(&fn))
	if r := C.cuFuncSetAttribute(f, C.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, C.int(bytes)); r != C.CUDA_SUCCESS {
		return fmt.Errorf("cuFuncSetAttribute(max dynamic shared memory = %d): CUresult %d", bytes, int(r))
	}
	return nil
}

// optinSmemAttr is CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN (gorgonia.org/cu v0.9.6 has no
// constant for it).
const optinSmemAttr = cu.DeviceAttribute(C.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
