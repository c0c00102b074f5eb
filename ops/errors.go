package ops

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this module returns for one of these conditions wraps the sentinel, on
// every backend, so a program can branch with errors.Is (also through Gorgonia's machine errors, which
// wrap with %w). The message says what was wrong with which input.
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

// errorf prefixes every error of this package with "ops: ".
func errorf(format string, args ...any) error {
	return fmt.Errorf("ops: "+format, args...)
}
