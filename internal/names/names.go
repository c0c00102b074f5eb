// Package names picks node names that are free in a Gorgonia graph, so that several layers (moe,
// moe/ep) can share one graph: Gorgonia refuses two nodes of one name.
package names

import (
	"fmt"

	G "gorgonia.org/gorgonia"
)

// Unique returns base when no node of g has that name, else the first free base.1, base.2, ...
func Unique(g *G.ExprGraph, base string) string {
	if len(g.ByName(base)) == 0 {
		return base
	}
	for i := 1; ; i++ {
		if n := fmt.Sprintf("%s.%d", base, i); len(g.ByName(n)) == 0 {
			return n
		}
	}
}
