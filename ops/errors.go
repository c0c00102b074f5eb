package ops

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this module returns for one of these conditions wraps the sentinel, on
// every backend, so a program can branch with errors.Is. The message says what was wrong with which
// input.
//
// Gorgonia's machines (v0.9.18) report an op's error inside their own error type, which has no Unwrap
// method: errors.Is(vm.RunAll(), ErrNaN) is false even when the failing op returned ErrNaN. Run
// machines with RunAll(vm), or pass their errors through MachineError, and errors.Is sees the op's
// error; Runner and Trainer do so.
var (
	// ErrShape: a tensor or node has the wrong rank or shape, or sizes disagree.
	ErrShape = errors.New("wrong shape")
	// ErrDtype: a tensor or node has an unsupported dtype, or inputs mix dtypes.
	ErrDtype = errors.New("wrong dtype")
	// ErrExpertIndex: an expert index outside [0, E).
	ErrExpertIndex = errors.New("expert index out of range")
	// ErrLabel: a class label outside [0, C) (and not the ignore label -1).
	ErrLabel = errors.New("label out of range")
	// ErrNaN: a NaN or infinity where a finite value is required (router logits, gradients).
	ErrNaN = errors.New("not a finite number")
	// ErrMixedBackends: the inputs of one op live on different backends (copies are explicit).
	ErrMixedBackends = errors.New("inputs on different backends")
	// ErrUnsupported: a valid request this backend, machine or build cannot carry out.
	ErrUnsupported = errors.New("not supported")
	// ErrConfig: an invalid configuration value (k, coefficients, sizes).
	ErrConfig = errors.New("invalid configuration")
)

// errorf prefixes every error of this package with "ops: " (use %w to wrap a cause).
func errorf(format string, args ...any) error {
	return fmt.Errorf("ops: "+format, args...)
}

// failf returns an error prefixed "ops: " that wraps sentinel (one of the Err* values), so that
// errors.Is(err, sentinel) holds: failf(ErrShape, "dispatch: x has %d rows", n).
func failf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("ops: "+format+": %w", append(args, sentinel)...)
}
