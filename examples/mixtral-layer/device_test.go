//go:build !expertrt_cuda

package main

import (
	"io"
	"strings"
	"testing"
)

// TestDeviceCUDAWithoutTag: in the default build every subcommand refuses -device cuda with a message
// naming the build tag.
func TestDeviceCUDAWithoutTag(t *testing.T) {
	for _, run := range []struct {
		name string
		f    func([]string) error
		args []string
	}{
		{"train", func(a []string) error { return runTrain(a, io.Discard) }, []string{"-device", "cuda", "-steps", "1"}},
		{"forward", runForward, []string{"-device", "cuda", "-weights", "w", "-input", "x", "-out", "y"}},
		{"grad", runGrad, []string{"-device", "cuda", "-weights", "w", "-input", "x", "-out", "y"}},
	} {
		err := run.f(run.args)
		if err == nil || !strings.Contains(err.Error(), cudaTag) {
			t.Errorf("%s -device cuda: %v, want an error naming the build tag %s", run.name, err, cudaTag)
		}
	}
	if err := runTrain([]string{"-device", "tpu"}, io.Discard); err == nil || !strings.Contains(err.Error(), "cpu") {
		t.Errorf("-device tpu: %v, want an error listing the available devices", err)
	}
}
