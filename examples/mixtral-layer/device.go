package main

import (
	"fmt"
	"strings"

	"github.com/expertrt/expertrt-go/ops"
)

// cudaTag is the build tag that links the CUDA backend (package cudaops) into this command.
const cudaTag = "expertrt_cuda"

// backendNamed returns the ops backend a -device flag names ("cpu", "cuda"). Device backends register
// themselves with ops when their package is linked (device_cuda.go, behind the build tag).
func backendNamed(name string) (ops.Backend, error) {
	var names []string
	for _, b := range ops.Backends() {
		if b.Name() == name {
			return b, nil
		}
		names = append(names, b.Name())
	}
	if name == "cuda" {
		return nil, fmt.Errorf("-device cuda: this binary has no CUDA backend; build it with -tags %s "+
			"(go run -tags %s ./examples/mixtral-layer -device cuda)", cudaTag, cudaTag)
	}
	return nil, fmt.Errorf("unknown -device %q (this binary has: %s)", name, strings.Join(names, ", "))
}
