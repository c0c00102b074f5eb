package ops

import "fmt"

// errorf prefixes every error of this package with "ops: ".
func errorf(format string, args ...any) error {
	return fmt.Errorf("ops: "+format, args...)
}
