package ep_test

import (
	"errors"
	"fmt"
	"github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// result is what one run (the single-rank reference, or one rank of a group) produces. Row-sliced
// quantities of a rank cover its own tokens; expert gradients its local experts.
type result struct {
	y, dx                  []float64
	dRouter, dW1, dW3, dW2 []float64
	aux, z                 float64
	indices                []int32
	received               *tensor.Dense // EP only: [R,H]
	counts                 []int32       // EP only: [W,E]
	raw                    []byte        // EP only: Y's bytes (bitwise comparisons between runs)
}

func floatsOf(v G.Value) []float64 {
	f, err := floats.Of(v)
	if err != nil {
		panic(err)
	}
	return f
}

func randDense(rng *rand.Rand, dt tensor.Dtype, scale float64, shape ...int) *tensor.Dense {
	n := tensor.Shape(shape).TotalSize()
	if dt == tensor.Float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(rng.NormFloat64() * scale)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(d))
	}
	d := make([]float64, n)
	for i := range d {
		d[i] = rng.NormFloat64() * scale
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(d))
}

// rows returns a copy of rows [lo,hi) of a host matrix.
func rows(t *tensor.Dense, lo, hi int) *tensor.Dense {
	h := t.Shape()[1]
	switch d := t.Data().(type) {
	case []float32:
		return tensor.New(tensor.WithShape(hi-lo, h), tensor.WithBacking(append([]float32(nil), d[lo*h:hi*h]...)))
	case []float64:
		return tensor.New(tensor.WithShape(hi-lo, h), tensor.WithBacking(append([]float64(nil), d[lo*h:hi*h]...)))
	}
	panic("dtype")
}

// lossGraph adds cost = sum(y ⊙ up) + router losses (a linear task loss: the group's objective is the
// sum over ranks, exactly the single-rank objective).
func lossGraph(y, up *G.Node, rl *G.Node) (*G.Node, error) {
	prod, err := G.HadamardProd(y, up)
	if err != nil {
		return nil, err
	}
	cost, err := G.Sum(prod)
	if err != nil {
		return nil, err
	}
	if rl != nil {
		return G.Add(cost, rl)
	}
	return cost, nil
}

func runReference(t *testing.T, cfg moe.Config, x, up *tensor.Dense) result {
	t.Helper()
	g := G.NewGraph()
	l, err := moe.NewLayer(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	xn := G.NewMatrix(g, cfg.Dtype, G.WithShape(x.Shape()...), G.WithName("x"), G.WithValue(x))
	un := G.NewMatrix(g, cfg.Dtype, G.WithShape(up.Shape()...), G.WithName("up"), G.WithValue(up))
	out, err := l.Forward(xn)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := out.RouterLoss()
	if err != nil {
		t.Fatal(err)
	}
	cost, err := lossGraph(out.Y, un, rl)
	if err != nil {
		t.Fatal(err)
	}
	var yv, auxv, zv, idxv G.Value
	G.Read(out.Y, &yv)
	G.Read(out.Routing.Indices, &idxv)
	if out.AuxLoss != nil {
		G.Read(out.AuxLoss, &auxv)
	}
	if out.ZLoss != nil {
		G.Read(out.ZLoss, &zv)
	}
	if _, err := G.Grad(cost, append(G.Nodes{xn}, l.Params()...)...); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	res := result{y: floatsOf(yv), indices: append([]int32(nil), idxv.Data().([]int32)...)}
	if auxv != nil {
		res.aux = floatsOf(auxv)[0]
	}
	if zv != nil {
		res.z = floatsOf(zv)[0]
	}
	grads := []*[]float64{&res.dx, &res.dRouter, &res.dW1, &res.dW3, &res.dW2}
	for i, n := range append(G.Nodes{xn}, l.Params()...) {
		gv, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		*grads[i] = floatsOf(gv)
	}
	return res
}

// runRank builds and runs one rank's graph; errors are returned (a rank's failure is data in some tests).
func runRank(cfg moe.Config, tr ep.Transport, opts ep.Options, x, up *tensor.Dense) (res result, err error) {
	defer func() {
		if err != nil {
			tr.Abort(err)
		}
	}()
	g := G.NewGraph()
	l, err := ep.NewLayer(g, cfg, tr, opts)
	if err != nil {
		return res, err
	}
	xn := G.NewMatrix(g, cfg.Dtype, G.WithShape(x.Shape()...), G.WithName("x"), G.WithValue(x))
	un := G.NewMatrix(g, cfg.Dtype, G.WithShape(up.Shape()...), G.WithName("up"), G.WithValue(up))
	out, err := l.Forward(xn)
	if err != nil {
		return res, err
	}
	rl, err := out.RouterLoss()
	if err != nil {
		return res, err
	}
	cost, err := lossGraph(out.Y, un, rl)
	if err != nil {
		return res, err
	}
	var yv, auxv, zv, idxv, recv, counts G.Value
	G.Read(out.Y, &yv)
	G.Read(out.Routing.Indices, &idxv)
	G.Read(out.Received, &recv)
	G.Read(out.Counts, &counts)
	if out.AuxLoss != nil {
		G.Read(out.AuxLoss, &auxv)
	}
	if out.ZLoss != nil {
		G.Read(out.ZLoss, &zv)
	}
	if _, err := G.Grad(cost, append(G.Nodes{xn}, l.Params()...)...); err != nil {
		return res, err
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return res, ops.MachineError(err)
	}
	if err := l.AllReduceRouterGrad(); err != nil {
		return res, err
	}
	res = result{y: floatsOf(yv), indices: append([]int32(nil), idxv.Data().([]int32)...),
		received: recv.(*tensor.Dense), counts: append([]int32(nil), counts.Data().([]int32)...),
		raw: append([]byte(nil), yv.(*tensor.Dense).Raw...)}
	if auxv != nil {
		res.aux = floatsOf(auxv)[0]
	}
	if zv != nil {
		res.z = floatsOf(zv)[0]
	}
	grads := []*[]float64{&res.dx, &res.dRouter, &res.dW1, &res.dW3, &res.dW2}
	for i, n := range append(G.Nodes{xn}, l.Params()...) {
		gv, err := n.Grad()
		if err != nil {
			return res, err
		}
		*grads[i] = floatsOf(gv)
	}
	return res, nil
}

// runGroup runs world ranks in goroutines over an in-process group; rank r gets rows [rT,(r+1)T).
func runGroup(cfg moe.Config, world int, opts ep.Options, x, up *tensor.Dense) ([]result, []error) {
	grp, err := ep.NewGroup(world, 20*time.Second)
	if err != nil {
		return nil, []error{err}
	}
	T := x.Shape()[0] / world
	res := make([]result, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := 0; r < world; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := grp.Rank(r)
			if err != nil {
				errs[r] = err
				return
			}
			defer tr.Close()
			res[r], errs[r] = runRank(cfg, tr, opts, rows(x, r*T, (r+1)*T), rows(up, r*T, (r+1)*T))
		}()
	}
	wg.Wait()
	return res, errs
}

func closeTo(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst, at := 0.0, -1
	for i := range got {
		d := math.Abs(got[i]-want[i]) / (1 + math.Abs(want[i]))
		if d > worst || math.IsNaN(got[i]) {
			worst, at = d, i
		}
	}
	if worst > tol || at >= 0 && math.IsNaN(got[at]) {
		t.Fatalf("%s: element %d is %g, want %g (relative error %.3g > %.1g)", what, at, got[at], want[at], worst, tol)
	}
}

func testConfig(dt tensor.Dtype, experts int) moe.Config {
	return moe.Config{Hidden: 8, FFN: 6, Experts: experts, TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true,
		AuxLossCoef: 0.1, ZLossCoef: 0.05, Seed: 7, Dtype: dt}
}

// TestLayerEqualsSingleRank: the expert-parallel layer over 1, 2, 4 and 8 in-process ranks gives the
// single-rank layer's output, input gradient, expert gradients, summed router gradient and router
// losses on the ranks' concatenated tokens; the rows an expert receives are bitwise the single-rank
// layer's dispatch rows of that expert, in the same order.
func TestLayerEqualsSingleRank(t *testing.T) {
	const T = 5 // tokens per rank
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for _, world := range []int{1, 2, 4, 8} {
			for _, experts := range []int{8, 16} {
				t.Run(fmt.Sprintf("%v/W=%d/E=%d", dt, world, experts), func(t *testing.T) {
					cfg := testConfig(dt, experts)
					rng := rand.New(rand.NewPCG(uint64(world), uint64(experts)))
					x := randDense(rng, dt, 2, world*T, cfg.Hidden)
					up := randDense(rng, dt, 1, world*T, cfg.Hidden)
					ref := runReference(t, cfg, x, up)
					got, errs := runGroup(cfg, world, ep.Options{}, x, up)
					for r, err := range errs {
						if err != nil {
							t.Fatalf("rank %d: %v", r, err)
						}
					}
					tol := 1e-12
					if dt == tensor.Float32 {
						tol = 2e-5
					}
					compareRanks(t, cfg, world, T, x, ref, got, tol)
				})
			}
		}
	}
}

func compareRanks(t *testing.T, cfg moe.Config, world, T int, x *tensor.Dense, ref result, got []result, tol float64) {
	t.Helper()
	H, F, E, K := cfg.Hidden, cfg.FFN, cfg.Experts, cfg.TopK
	L := E / world
	var aux, z float64
	for r, g := range got {
		lo := r * T * K
		for i, v := range g.indices {
			if v != ref.indices[lo+i] {
				t.Fatalf("rank %d routes slot %d to expert %d, the single-rank layer to %d", r, i, v, ref.indices[lo+i])
			}
		}
		closeTo(t, fmt.Sprintf("rank %d: y", r), g.y, ref.y[r*T*H:(r+1)*T*H], tol)
		closeTo(t, fmt.Sprintf("rank %d: dx", r), g.dx, ref.dx[r*T*H:(r+1)*T*H], tol)
		closeTo(t, fmt.Sprintf("rank %d: dRouter (summed over ranks)", r), g.dRouter, ref.dRouter, tol)
		closeTo(t, fmt.Sprintf("rank %d: dW1", r), g.dW1, ref.dW1[r*L*H*F:(r+1)*L*H*F], tol)
		closeTo(t, fmt.Sprintf("rank %d: dW3", r), g.dW3, ref.dW3[r*L*H*F:(r+1)*L*H*F], tol)
		closeTo(t, fmt.Sprintf("rank %d: dW2", r), g.dW2, ref.dW2[r*L*F*H:(r+1)*L*F*H], tol)
		for i := range g.dRouter {
			if g.dRouter[i] != got[0].dRouter[i] {
				t.Fatalf("rank %d: summed router gradient differs from rank 0's at %d: %g vs %g", r, i, g.dRouter[i], got[0].dRouter[i])
			}
		}
		aux += g.aux
		z += g.z
		checkReceived(t, r, world, L, H, x, ref.indices, K, g.received)
	}
	closeTo(t, "aux loss (sum of ranks' shares)", []float64{aux}, []float64{ref.aux}, tol)
	closeTo(t, "z-loss (sum of ranks' shares)", []float64{z}, []float64{ref.z}, tol)
}

// checkReceived: rank q's receive buffer holds, for each local expert in order, the input rows of
// every token (in global token order) routed to it — bitwise — followed by zero rows.
func checkReceived(t *testing.T, q, world, L, H int, x *tensor.Dense, idx []int32, K int, recv *tensor.Dense) {
	t.Helper()
	xs, rs := floatsOf(x), floatsOf(recv)
	row := 0
	for e := q * L; e < (q+1)*L; e++ {
		for s, ie := range idx {
			if int(ie) != e {
				continue
			}
			tok := s / K
			for h := 0; h < H; h++ {
				if rs[row*H+h] != xs[tok*H+h] {
					t.Fatalf("rank %d: received row %d (expert %d, token %d) differs at %d: %g vs %g", q, row, e, tok, h, rs[row*H+h], xs[tok*H+h])
				}
			}
			row++
		}
	}
	for i := row * H; i < len(rs); i++ {
		if rs[i] != 0 {
			t.Fatalf("rank %d: padding row %d is not zero", q, i/H)
		}
	}
}

// TestLayerDeterministic: two runs of a group give bitwise-identical outputs on every rank.
func TestLayerDeterministic(t *testing.T) {
	const world, T = 4, 6
	cfg := testConfig(tensor.Float32, 8)
	rng := rand.New(rand.NewPCG(3, 4))
	x := randDense(rng, cfg.Dtype, 2, world*T, cfg.Hidden)
	up := randDense(rng, cfg.Dtype, 1, world*T, cfg.Hidden)
	a, errs := runGroup(cfg, world, ep.Options{}, x, up)
	b, errs2 := runGroup(cfg, world, ep.Options{}, x, up)
	for r := range a {
		if errs[r] != nil || errs2[r] != nil {
			t.Fatalf("rank %d: %v / %v", r, errs[r], errs2[r])
		}
		if string(a[r].raw) != string(b[r].raw) {
			t.Fatalf("rank %d: outputs of two runs differ", r)
		}
		for i := range a[r].dW1 {
			if a[r].dW1[i] != b[r].dW1[i] {
				t.Fatalf("rank %d: dW1 of two runs differs at %d", r, i)
			}
		}
	}
}

// TestRecvRowsCapacity: with receive buffers smaller than a step needs, every rank fails with
// ErrCapacity; with exactly enough rows the result still equals the single-rank layer.
func TestRecvRowsCapacity(t *testing.T) {
	const world, T = 2, 8
	cfg := testConfig(tensor.Float64, 4)
	rng := rand.New(rand.NewPCG(5, 6))
	x := randDense(rng, cfg.Dtype, 2, world*T, cfg.Hidden)
	up := randDense(rng, cfg.Dtype, 1, world*T, cfg.Hidden)
	ref := runReference(t, cfg, x, up)
	_, errs := runGroup(cfg, world, ep.Options{RecvRows: 3}, x, up)
	for r, err := range errs {
		if !errors.Is(err, ep.ErrCapacity) {
			t.Fatalf("rank %d: error %v, want ErrCapacity", r, err)
		}
	}
	// The exact need: the larger of the two ranks' loads.
	loads, err := ep.RankLoads(countsOf(ref.indices, world, cfg.Experts, T, cfg.TopK), world)
	if err != nil {
		t.Fatal(err)
	}
	need := max(loads[0], loads[1])
	got, errs := runGroup(cfg, world, ep.Options{RecvRows: need}, x, up)
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d with RecvRows=%d (loads %v): %v", r, need, loads, err)
		}
	}
	compareRanks(t, cfg, world, T, x, ref, got, 1e-12)
}

// countsOf builds the [W,E] counts table from global indices.
func countsOf(idx []int32, world, experts, T, K int) []int32 {
	c := make([]int32, world*experts)
	for s, e := range idx {
		c[(s/(T*K))*experts+int(e)]++
	}
	return c
}

func TestRankLoads(t *testing.T) {
	// W=2, E=4: rank 0 sends [3 0 | 1 2], rank 1 sends [0 1 | 4 0].
	loads, err := ep.RankLoads([]int32{3, 0, 1, 2, 0, 1, 4, 0}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if loads[0] != 4 || loads[1] != 7 {
		t.Fatalf("loads %v, want [4 7]", loads)
	}
	if _, err := ep.RankLoads([]int32{1, 2, 3}, 2); !errors.Is(err, ops.ErrShape) {
		t.Fatalf("error %v, want ErrShape", err)
	}
}

// TestForwardRefusesCapacityAndBias: capacity routing and the balancing bias are not implemented across
// ranks; the layer says so (ops.ErrUnsupported) instead of routing without them.
func TestForwardRefusesCapacityAndBias(t *testing.T) {
	const E = 4
	sig := testConfig(tensor.Float64, E)
	sig.Scoring = ops.Sigmoid
	for name, cfg := range map[string]moe.Config{
		"capacity":        func() moe.Config { c := testConfig(tensor.Float64, E); c.Capacity = 3; return c }(),
		"capacity factor": func() moe.Config { c := testConfig(tensor.Float64, E); c.CapacityFactor = 1.25; return c }(),
		"bias":            func() moe.Config { c := sig; c.BiasRate = 0.01; return c }(),
	} {
		grp, err := ep.NewGroup(1, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := grp.Rank(0)
		if err != nil {
			t.Fatal(err)
		}
		g := G.NewGraph()
		l, err := ep.NewLayer(g, cfg, tr, ep.Options{})
		if err == nil {
			x := G.NewMatrix(g, cfg.Dtype, G.WithShape(6, cfg.Hidden), G.WithName("x"))
			_, err = l.Forward(x)
		}
		if !errors.Is(err, ops.ErrUnsupported) {
			t.Errorf("%s: error %v, want one wrapping ops.ErrUnsupported", name, err)
		}
		tr.Close()
	}
}
