package names

import (
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestUnique(t *testing.T) {
	g := G.NewGraph()
	for _, want := range []string{"w", "w.1", "w.2"} {
		got := Unique(g, "w")
		if got != want {
			t.Fatalf("Unique = %q, want %q", got, want)
		}
		G.NewScalar(g, tensor.Float64, G.WithName(got))
	}
}
