package ops

// MachineError makes the error a Gorgonia machine returned from RunAll transparent to errors.Is and
// errors.As: Gorgonia v0.9.18 wraps an op's error in a context error that has no Unwrap method (it has
// Err()), so errors.Is(err, ErrLabel) is false for the raw error. The message is unchanged. nil stays nil;
// other errors are returned as they are. Runner and Trainer apply it to their machine's errors.
func MachineError(err error) error {
	if err == nil {
		return nil
	}
	if c, ok := err.(interface{ Err() error }); ok && c.Err() != nil {
		return machineError{msg: err, cause: c.Err()}
	}
	return err
}

type machineError struct{ msg, cause error }

func (e machineError) Error() string { return e.msg.Error() }
func (e machineError) Unwrap() error { return e.cause }
