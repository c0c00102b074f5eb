package main

import (
	"fmt"
	"strings"

	"github.com/expertrt/expertrt-go/ops"
)

// cudaTag is the build tag that links the CUDA backend (package cudaops) into this command.
const cudaTag = "expertrt_cuda"

// backendNamed returns the ops backend a -device flag names ("cpu", "cuda" or "cuda:N" for GPU N).
// Device backends register themselves with ops when their package is linked (device_cuda.go, behind
// the build tag).
func backendNamed(name string) (ops.Backend, error) {
	b, err := ops.LookupBackend(name)
	if err == nil {
		return b, nil
	}
	if name == "cuda" || strings.HasPrefix(name, "cuda:") {
		return nil, fmt.Errorf("-device %s: this binary has no CUDA backend; build it with -tags %s "+
			"(go run -tags %s ./examples/mixtral-layer -device cuda)", name, cudaTag, cudaTag)
	}
	return nil, fmt.Errorf("unknown -device %q: %w", name, err)
}
