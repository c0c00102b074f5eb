package ops

import (
	"errors"
	"math/rand"
	"testing"
	"unsafe"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestRouteNodeIsFused: Route builds one route node whose buffer the Indices and Weights nodes view
// (the weights share its memory), with values bitwise those of RouteIndicesBias and RouteWeights, for
// every scoring, both dtypes, with and without a bias, and T = 1 (odd T*K: the weights start padded).
func TestRouteNodeIsFused(t *testing.T) {
	for _, c := range []struct {
		name   string
		cfg    RouteConfig
		biased bool
		T      int
	}{
		{"softmax-renorm", RouteConfig{K: 2, Scoring: SoftmaxTopK, Renormalize: true}, false, 37},
		{"softmax-full-scaled", RouteConfig{K: 3, Scoring: SoftmaxTopK, Scale: 1.5}, false, 16},
		{"topk-softmax", RouteConfig{K: 2, Scoring: TopKSoftmax}, false, 1},
		{"sigmoid-grouped-biased", RouteConfig{K: 2, Scoring: Sigmoid, Renormalize: true, Groups: 4, TopKGroups: 2, Scale: 2.5}, true, 21},
	} {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			t.Run(c.name+"/"+dt.String(), func(t *testing.T) {
				const E = 8
				rng := rand.New(rand.NewSource(int64(c.T)))
				logits := randDense(rng, dt, c.T, E)
				var bias *tensor.Dense
				g := G.NewGraph()
				ln := G.NodeFromAny(g, logits, G.WithName("logits"))
				var bn *G.Node
				if c.biased {
					bias = randDense(rng, dt, E)
					bn = G.NodeFromAny(g, bias, G.WithName("bias"))
				}
				r, err := RouteBiased(ln, bn, c.cfg)
				if err != nil {
					t.Fatal(err)
				}
				ic, wc := childrenOf(g, r.Indices), childrenOf(g, r.Weights)
				if len(ic) != 1 || len(wc) != 3 || wc[0] != ic[0] {
					t.Fatalf("Indices and Weights are not views of one route node: %v, %v", ic, wc)
				}
				buf := ic[0]
				if _, ok := buf.Op().(*routeOp); !ok {
					t.Fatalf("the indices view %v, not of a route node", buf.Op())
				}
				m := G.NewTapeMachine(g)
				defer m.Close()
				if err := m.RunAll(); err != nil {
					t.Fatal(err)
				}
				idx, w := r.Indices.Value().(*tensor.Dense), r.Weights.Value().(*tensor.Dense)
				raw := buf.Value().(*tensor.Dense).Raw
				start, end := uintptr(unsafe.Pointer(&raw[0])), uintptr(unsafe.Pointer(&raw[0]))+uintptr(len(raw))
				for name, v := range map[string]*tensor.Dense{"indices": idx, "weights": w} {
					if p := uintptr(unsafe.Pointer(&v.Raw[0])); p < start || p+uintptr(len(v.Raw)) > end {
						t.Errorf("%s are not a view of the route buffer", name)
					}
				}
				wantIdx := tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(c.T, c.cfg.K))
				wantW := tensor.New(tensor.Of(dt), tensor.WithShape(c.T, c.cfg.K))
				if err := CPU().RouteIndicesBias(logits, bias, c.cfg, wantIdx); err != nil {
					t.Fatal(err)
				}
				if err := CPU().RouteWeights(logits, wantIdx, c.cfg, wantW); err != nil {
					t.Fatal(err)
				}
				if string(idx.Raw) != string(wantIdx.Raw) || string(w.Raw) != string(wantW.Raw) {
					t.Errorf("route node: indices %v weights %v, want %v %v", idx.Data(), w.Data(), wantIdx.Data(), wantW.Data())
				}
			})
		}
	}
}

// TestCPUViewAs: the CPU backend's reinterpreting views share memory, and refuse views out of range,
// misaligned, or of unsupported dtypes.
func TestCPUViewAs(t *testing.T) {
	b := CPU().(Reinterpreter)
	base := tensor.New(tensor.WithShape(6), tensor.WithBacking([]int32{1, 2, 3, 4, 5, 6}))
	f, err := b.ViewAs(base, tensor.Float32, 8, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	f.Data().([]float32)[1] = 1.5
	if got := base.Data().([]int32)[3]; got != 0x3fc00000 {
		t.Errorf("a write through the float32 view left %#x in the base", got)
	}
	if d, err := b.ViewAs(base, tensor.Float64, 8, 2); err != nil || d.Shape()[0] != 2 {
		t.Errorf("float64 view: %v, %v", d, err)
	}
	if e, err := b.ViewAs(base, tensor.Float32, 24, 0); err != nil || e.Shape().TotalSize() != 0 {
		t.Errorf("empty view at the end: %v, %v", e, err)
	}
	for _, c := range []struct {
		dt    tensor.Dtype
		off   int
		shape []int
		want  error
	}{
		{tensor.Float32, 12, []int{4}, ErrShape},
		{tensor.Float32, -4, []int{1}, ErrShape},
		{tensor.Float64, 4, []int{1}, ErrShape},
		{tensor.Float32, 0, []int{-1}, ErrShape},
		{tensor.Int64, 0, []int{1}, ErrDtype},
	} {
		if _, err := b.ViewAs(base, c.dt, c.off, c.shape...); !errors.Is(err, c.want) {
			t.Errorf("ViewAs(%v, %d, %v): %v, want %v", c.dt, c.off, c.shape, err, c.want)
		}
	}
}

func randDense(rng *rand.Rand, dt tensor.Dtype, shape ...int) *tensor.Dense {
	n := tensor.Shape(shape).TotalSize()
	if dt == tensor.Float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
}

// childrenOf returns n's inputs in order.
func childrenOf(g *G.ExprGraph, n *G.Node) G.Nodes {
	var out G.Nodes
	for it := g.From(n.ID()); it.Next(); {
		out = append(out, it.Node().(*G.Node))
	}
	return out
}
