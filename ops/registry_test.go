package ops

import (
	"errors"
	"strings"
	"testing"

	"gorgonia.org/tensor"
)

// namedBackend is a backend that owns nothing, under a name and aliases of its own.
type namedBackend struct {
	Backend
	name    string
	aliases []string
}

func (b namedBackend) Name() string          { return b.name }
func (b namedBackend) Aliases() []string     { return b.aliases }
func (namedBackend) Owns(tensor.Tensor) bool { return false }

// TestRegisterRefusesDuplicates: Register reports a backend whose name or alias is taken (it used to
// drop it silently), and LookupBackend finds backends by name and alias.
func TestRegisterRefusesDuplicates(t *testing.T) {
	a := namedBackend{Backend: CPU(), name: "regtest:0", aliases: []string{"regtest"}}
	if err := Register(a); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		b    Backend
		want string
	}{
		{namedBackend{Backend: CPU(), name: "regtest:0"}, `a backend named "regtest:0" is registered already`},
		{namedBackend{Backend: CPU(), name: "regtest:1", aliases: []string{"regtest"}}, `a backend named "regtest" is registered already`},
		{namedBackend{Backend: CPU(), name: "regtest"}, `named "regtest"`},
		{namedBackend{Backend: CPU(), name: "cpu"}, `named "cpu"`},
		{namedBackend{Backend: CPU(), name: "regtest:2", aliases: []string{"regtest:2"}}, `named "regtest:2"`},
		{namedBackend{Backend: CPU(), name: ""}, "needs a name"},
		{nil, "nil backend"},
	} {
		err := Register(c.b)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Register(%v): %v, want ErrConfig saying %q", c.b, err, c.want)
		}
	}
	for _, name := range []string{"regtest:0", "regtest"} {
		if b, err := LookupBackend(name); err != nil || b.Name() != "regtest:0" {
			t.Errorf("LookupBackend(%q) = %v, %v", name, b, err)
		}
	}
	if b, err := LookupBackend("cpu"); err != nil || b != CPU() {
		t.Errorf("LookupBackend(cpu) = %v, %v", b, err)
	}
	if _, err := LookupBackend("regtest:9"); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "cpu, ") || !strings.Contains(err.Error(), "regtest:0, regtest") {
		t.Errorf("LookupBackend(unknown): %v, want ErrConfig listing the names", err)
	}
	n := 0
	for _, b := range Backends() {
		if strings.HasPrefix(b.Name(), "regtest") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d regtest backends registered, want 1", n)
	}
}
