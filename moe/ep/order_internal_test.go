package ep

import (
	"strings"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestCollectivesAreChained: every collective of a layer's forward and backward graph depends on the
// previous one, so all ranks issue them in one order whatever order the machine chooses for independent
// nodes. The graph is only built (nothing runs).
func TestCollectivesAreChained(t *testing.T) {
	grp, _ := NewGroup(2, time.Second)
	tr, _ := grp.Rank(0)
	cfg := moe.Config{Hidden: 4, FFN: 3, Experts: 4, TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true,
		AuxLossCoef: 0.1, ZLossCoef: 0.1, Seed: 1, Dtype: tensor.Float64}
	g := G.NewGraph()
	l, err := NewLayer(g, cfg, tr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := G.NewMatrix(g, cfg.Dtype, G.WithShape(5, 4), G.WithName("x"))
	out, err := l.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Sum(out.Y)
	if err != nil {
		t.Fatal(err)
	}
	if cost, err = G.Add(cost, out.AuxLoss); err != nil {
		t.Fatal(err)
	}
	if _, err := G.Grad(cost, append(G.Nodes{x}, l.Params()...)...); err != nil {
		t.Fatal(err)
	}
	sorted, err := G.Sort(g)
	if err != nil {
		t.Fatal(err)
	}
	var collectives G.Nodes
	for i := len(sorted) - 1; i >= 0; i-- { // G.Sort lists dependents first
		n := sorted[i]
		switch n.Op().(type) {
		case *countsOp, *exchangeOp:
			collectives = append(collectives, n)
		}
	}
	if len(collectives) != 5 {
		t.Fatalf("%d collectives (counts, 2 forward and 2 backward exchanges expected): %v", len(collectives), collectives)
	}
	for i := 1; i < len(collectives); i++ {
		if !dependsOn(collectives[i], collectives[i-1], map[*G.Node]bool{}) {
			t.Fatalf("collective %d (%v) does not depend on collective %d (%v)", i, collectives[i].Op(), i-1, collectives[i-1].Op())
		}
	}
	if s := collectives[3].Op().(*exchangeOp).String(); !strings.Contains(s, "ordered=true") {
		t.Fatalf("the first backward exchange is %s", s)
	}
}

func dependsOn(n, m *G.Node, seen map[*G.Node]bool) bool {
	if n == m {
		return true
	}
	if seen[n] {
		return false
	}
	seen[n] = true
	in := n.Graph().From(n.ID()) // n's inputs
	for in.Next() {
		if dependsOn(in.Node().(*G.Node), m, seen) {
			return true
		}
	}
	return false
}
