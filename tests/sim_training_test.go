package tests

import (
	"testing"

	"github.com/expertrt/expertrt-go/tests/trainingtest"
)

// TestSimTraining runs the training-kernel suite on the simulated device: the CPU kernels of
// ops.TrainingBackend through the device boundary (methods whose CPU kernel is not written yet return
// ErrUnsupported and are skipped).
func TestSimTraining(t *testing.T) {
	b := simBackend(t)
	trainingtest.Run(t, b, trainingtest.Options{Stats: b.Device().Stats})
}
