//go:build !expertrt_cuda

package main

import (
	"errors"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
)

// TestEPLaunchedNeedsCUDABuild: with launcher variables set, a build without the CUDA tag says what is
// missing instead of running something else.
func TestEPLaunchedNeedsCUDABuild(t *testing.T) {
	t.Setenv("RANK", "0")
	t.Setenv("WORLD_SIZE", "2")
	err := runEP([]string{"-steps", "1", "-json"})
	if !errors.Is(err, ops.ErrUnsupported) {
		t.Fatalf("launched without the CUDA build: %v, want ErrUnsupported", err)
	}
}
