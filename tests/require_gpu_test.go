package tests

import (
	"os"
	"testing"
)

// requireGPU reports whether EXPERTRT_REQUIRE_GPU=1: then tests that need a GPU fail instead of
// skipping when none is there (set it on the GPU host, so that a broken driver or build cannot pass as
// a run of skipped tests).
func requireGPU() bool { return os.Getenv("EXPERTRT_REQUIRE_GPU") == "1" }

// TestGPURequired fails in a build without the GPU backend when EXPERTRT_REQUIRE_GPU=1: the GPU tests
// exist only under the expertrt_cuda build tag, so an untagged test binary would otherwise pass
// without running any of them.
func TestGPURequired(t *testing.T) {
	if requireGPU() && !cudaBuild {
		t.Fatal("EXPERTRT_REQUIRE_GPU=1, but this test binary was built without -tags expertrt_cuda: it holds no GPU test")
	}
}
