package tests

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
)

// Gradient checks (G.Grad + TapeMachine vs central differences, float64, see gradcheck_test.go) for every
// differentiable input of every op.

var scorings = []ops.RouteConfig{
	{Scoring: ops.SoftmaxTopK, Renormalize: true},
	{Scoring: ops.SoftmaxTopK, Renormalize: false},
	{Scoring: ops.TopKSoftmax},
}

func withK(c ops.RouteConfig, k int) ops.RouteConfig { c.K = k; return c }

// constWeights: with K=1 and renormalisation every weight is exactly 1, so its gradient is zero.
func constWeights(c ops.RouteConfig) bool { return c.K == 1 && c.EffectiveRenormalize() }

type routeShape struct{ T, E, K int }

var gradShapes = []routeShape{{5, 6, 2}, {4, 4, 1}, {3, 3, 3}, {1, 5, 2}}

// fixedIndices returns top-k indices of gapped random logits (distinct experts per token).
func fixedIndices(rng *rand.Rand, T, E, K int) []int32 {
	idx := make([]int32, 0, T*K)
	for t := 0; t < T; t++ {
		perm := rng.Perm(E)
		for j := 0; j < K; j++ {
			idx = append(idx, int32(perm[j]))
		}
	}
	return idx
}

func TestGradRouteWeights(t *testing.T) {
	for si, s := range gradShapes {
		for _, sc := range scorings {
			cfg := withK(sc, s.K)
			t.Run(fmt.Sprintf("T=%d,E=%d/%v", s.T, s.E, cfg), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(si)))
				checkGraphGrad(t, []gradInput{
					{name: "logits", shape: []int{s.T, s.E}, vals: gappedLogits(rng, s.T, s.E), wrt: true, zero: constWeights(cfg)},
				}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
					r, err := ops.Route(in[0], cfg)
					if err != nil {
						return nil, err
					}
					return r.Weights, nil
				})
			})
		}
	}
}

func TestGradDispatch(t *testing.T) {
	for si, s := range gradShapes {
		for _, H := range []int{1, 3} {
			t.Run(fmt.Sprintf("T=%d,E=%d,K=%d,H=%d", s.T, s.E, s.K, H), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(si)))
				cfg := withK(scorings[0], s.K)
				checkGraphGrad(t, []gradInput{
					{name: "logits", shape: []int{s.T, s.E}, vals: gappedLogits(rng, s.T, s.E)},
					{name: "x", shape: []int{s.T, H}, vals: randVals(rng, s.T*H), wrt: true},
				}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
					r, err := ops.Route(in[0], cfg)
					if err != nil {
						return nil, err
					}
					return ops.Dispatch(in[1], r)
				})
			})
		}
	}
}

// TestGradCombine: w.r.t. expert outputs and weights of a given routing (NewRouting), and w.r.t. expert
// outputs and logits through Route.
func TestGradCombine(t *testing.T) {
	for si, s := range gradShapes {
		const H = 3
		t.Run(fmt.Sprintf("given/T=%d,E=%d,K=%d", s.T, s.E, s.K), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(si)))
			checkGraphGrad(t, []gradInput{
				{name: "indices", shape: []int{s.T, s.K}, ivals: fixedIndices(rng, s.T, s.E, s.K)},
				{name: "weights", shape: []int{s.T, s.K}, vals: randVals(rng, s.T*s.K), wrt: true},
				{name: "ye", shape: []int{s.T * s.K, H}, vals: randVals(rng, s.T*s.K*H), wrt: true},
			}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				r, err := ops.NewRouting(in[0], in[1], s.E)
				if err != nil {
					return nil, err
				}
				return ops.Combine(in[2], r)
			})
		})
		for _, sc := range scorings {
			cfg := withK(sc, s.K)
			t.Run(fmt.Sprintf("routed/T=%d,E=%d/%v", s.T, s.E, cfg), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(si)))
				checkGraphGrad(t, []gradInput{
					{name: "logits", shape: []int{s.T, s.E}, vals: gappedLogits(rng, s.T, s.E), wrt: true, zero: constWeights(cfg)},
					{name: "ye", shape: []int{s.T * s.K, H}, vals: randVals(rng, s.T*s.K*H), wrt: true},
				}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
					r, err := ops.Route(in[0], cfg)
					if err != nil {
						return nil, err
					}
					return ops.Combine(in[1], r)
				})
			})
		}
	}
}

func TestGradGroupedMatMul(t *testing.T) {
	for si, s := range gradShapes {
		for _, io := range [][2]int{{3, 2}, {1, 4}, {5, 1}} {
			In, Out := io[0], io[1]
			t.Run(fmt.Sprintf("T=%d,E=%d,K=%d,In=%d,Out=%d", s.T, s.E, s.K, In, Out), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(si)))
				N := s.T * s.K
				checkGraphGrad(t, []gradInput{
					{name: "indices", shape: []int{s.T, s.K}, ivals: fixedIndices(rng, s.T, s.E, s.K)},
					{name: "weights", shape: []int{s.T, s.K}, vals: randVals(rng, N)},
					{name: "x", shape: []int{N, In}, vals: randVals(rng, N*In), wrt: true},
					{name: "w", shape: []int{s.E, In, Out}, vals: randVals(rng, s.E*In*Out), wrt: true},
				}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
					r, err := ops.NewRouting(in[0], in[1], s.E)
					if err != nil {
						return nil, err
					}
					return ops.GroupedMatMul(in[2], in[3], r)
				})
			})
		}
	}
}

// TestGradGroupedMatMulEmptyExpert: experts without rows get an exactly zero weight gradient.
func TestGradGroupedMatMulEmptyExpert(t *testing.T) {
	const T, K, E, In, Out = 3, 1, 4, 2, 2
	rng := rand.New(rand.NewSource(9))
	inputs := []gradInput{
		{name: "indices", shape: []int{T, K}, ivals: []int32{2, 0, 2}},
		{name: "weights", shape: []int{T, K}, vals: []float64{1, 1, 1}},
		{name: "x", shape: []int{T * K, In}, vals: randVals(rng, T*K*In), wrt: true},
		{name: "w", shape: []int{E, In, Out}, vals: randVals(rng, E*In*Out), wrt: true},
	}
	build := func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		r, err := ops.NewRouting(in[0], in[1], E)
		if err != nil {
			return nil, err
		}
		return ops.GroupedMatMul(in[2], in[3], r)
	}
	checkGraphGrad(t, inputs, build)
	_, grads := symbolicGrads(t, inputs, build)
	for _, e := range []int{1, 3} {
		for i := 0; i < In*Out; i++ {
			if v := grads[1][e*In*Out+i]; v != 0 {
				t.Errorf("dW[%d] element %d = %v, want exactly 0 (expert has no rows)", e, i, v)
			}
		}
	}
}

func TestGradLosses(t *testing.T) {
	for si, s := range gradShapes {
		for _, sc := range scorings[:2] {
			cfg := withK(sc, s.K)
			if s.K == s.E {
				continue // every expert gets every token: the aux loss is the constant E, gradient 0
			}
			t.Run(fmt.Sprintf("aux/T=%d,E=%d/%v", s.T, s.E, cfg), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(si)))
				checkGraphGrad(t, []gradInput{
					{name: "logits", shape: []int{s.T, s.E}, vals: gappedLogits(rng, s.T, s.E), wrt: true},
				}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
					r, err := ops.Route(in[0], cfg)
					if err != nil {
						return nil, err
					}
					return ops.LoadBalancingLoss(r, 0.7)
				})
			})
		}
		t.Run(fmt.Sprintf("z/T=%d,E=%d", s.T, s.E), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(si)))
			checkGraphGrad(t, []gradInput{
				{name: "logits", shape: []int{s.T, s.E}, vals: gappedLogits(rng, s.T, s.E), wrt: true},
			}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				return ops.ZLoss(in[0], 0.3)
			})
		})
	}
}

// TestGradPipeline: route -> dispatch -> grouped matmul -> combine, plus both router losses, in one cost
// (several gradient contributions to the logits and to x are summed by Grad).
func TestGradPipeline(t *testing.T) {
	for _, sc := range scorings {
		cfg := withK(sc, 2)
		t.Run(cfg.String(), func(t *testing.T) {
			const T, E, H, Out = 5, 4, 3, 3
			rng := rand.New(rand.NewSource(3))
			checkGraphGrad(t, []gradInput{
				{name: "logits", shape: []int{T, E}, vals: gappedLogits(rng, T, E), wrt: true},
				{name: "x", shape: []int{T, H}, vals: randVals(rng, T*H), wrt: true},
				{name: "w", shape: []int{E, H, Out}, vals: randVals(rng, E*H*Out), wrt: true},
			}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				r, err := ops.Route(in[0], cfg)
				if err != nil {
					return nil, err
				}
				y, err := expertBlock(in[1], in[2], r)
				if err != nil {
					return nil, err
				}
				aux, err := ops.LoadBalancingLoss(r, 0.5)
				if err != nil {
					return nil, err
				}
				z, err := ops.ZLoss(in[0], 0.2)
				if err != nil {
					return nil, err
				}
				s, err := G.Sum(y)
				if err != nil {
					return nil, err
				}
				s, err = G.Add(s, aux)
				if err != nil {
					return nil, err
				}
				return G.Add(s, z)
			})
		})
	}
}

// expertBlock is Combine(GroupedMatMul(Dispatch(x), w)) over the routing r: the expert part of an MoE
// layer with one linear expert matrix w [E,H,Out].
func expertBlock(x, w *G.Node, r *ops.Routing) (*G.Node, error) {
	p, err := ops.Dispatch(x, r)
	if err != nil {
		return nil, err
	}
	h, err := ops.GroupedMatMul(p, w, r)
	if err != nil {
		return nil, err
	}
	return ops.Combine(h, r)
}
