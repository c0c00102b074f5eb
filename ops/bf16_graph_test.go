package ops

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func randF32(rng *rand.Rand, scale float64, shape ...int) *tensor.Dense {
	n := tensor.Shape(shape).TotalSize()
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
}

// TestMixedPrecisionGraph builds a SwiGLU MoE block by hand in float32 and in mixed precision
// (DispatchTo bfloat16, GroupedMatMul with float32 weights cast in the graph, SwiGLU, CombineTo
// float32) and runs both through a Runner (HostEngine adds the bfloat16 gradient of the packed rows,
// used by two products): cost and every gradient within 16·2^-8 relative of float32's.
func TestMixedPrecisionGraph(t *testing.T) {
	const T, H, F, E, K = 6, 8, 12, 4, 2
	rng := rand.New(rand.NewPCG(1, 2))
	xv, rv := randF32(rng, 1, T, H), randF32(rng, 0.3, E, H)
	w1v, w3v, w2v := randF32(rng, 0.3, E, H, F), randF32(rng, 0.3, E, H, F), randF32(rng, 0.3, E, F, H)
	tv := randF32(rng, 1, T, H)
	run := func(mixed bool) (float64, [][]float32) {
		g := G.NewGraph()
		x := G.NewMatrix(g, tensor.Float32, G.WithShape(T, H), G.WithName("x"), G.WithValue(xv.Clone()))
		router := G.NewMatrix(g, tensor.Float32, G.WithShape(E, H), G.WithName("router"), G.WithValue(rv.Clone()))
		w1 := G.NewTensor(g, tensor.Float32, 3, G.WithShape(E, H, F), G.WithName("w1"), G.WithValue(w1v.Clone()))
		w3 := G.NewTensor(g, tensor.Float32, 3, G.WithShape(E, H, F), G.WithName("w3"), G.WithValue(w3v.Clone()))
		w2 := G.NewTensor(g, tensor.Float32, 3, G.WithShape(E, F, H), G.WithName("w2"), G.WithValue(w2v.Clone()))
		target := G.NewMatrix(g, tensor.Float32, G.WithShape(T, H), G.WithName("target"), G.WithValue(tv.Clone()))
		logits := must(MatMul(x, router, false, true))
		r, err := Route(logits, RouteConfig{K: K, Scoring: SoftmaxTopK, Renormalize: true})
		if err != nil {
			t.Fatal(err)
		}
		dt := tensor.Float32
		if mixed {
			dt = BFloat16
		}
		packed := must(DispatchTo(x, r, dt))
		gate := must(GroupedMatMul(packed, w1, r))
		up := must(GroupedMatMul(packed, w3, r))
		h := must(SwiGLU(gate, up))
		down := must(GroupedMatMul(h, w2, r))
		y := must(CombineTo(down, r, tensor.Float32))
		loss := must(MSELoss(y, target))
		params := G.Nodes{router, w1, w3, w2}
		if _, err := Grad(loss, append(params, x)...); err != nil {
			t.Fatal(err)
		}
		var lossV G.Value
		G.Read(loss, &lossV)
		rn, err := NewRunner(g, nil)
		if err != nil {
			t.Fatal(err)
		}
		var grads [][]float32
		if err := rn.Run(nil, func() error {
			for _, p := range append(params, x) {
				gv, err := p.Grad()
				if err != nil {
					return err
				}
				grads = append(grads, append([]float32(nil), gv.Data().([]float32)...))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		l, _ := Float(lossV)
		return l, grads
	}
	l32, g32 := run(false)
	lbf, gbf := run(true)
	const tol = 16.0 / 256
	if d := math.Abs(l32-lbf) / l32; d > tol {
		t.Errorf("loss: float32 %v, mixed %v", l32, lbf)
	}
	for i := range g32 {
		var num, den float64
		for j := range g32[i] {
			d := float64(g32[i][j] - gbf[i][j])
			num += d * d
			den += float64(g32[i][j]) * float64(g32[i][j])
		}
		if d := math.Sqrt(num / den); d > tol {
			t.Errorf("gradient %d: relative error %.3g", i, d)
		}
	}
}

func must(n *G.Node, err error) *G.Node {
	if err != nil {
		panic(err)
	}
	return n
}
