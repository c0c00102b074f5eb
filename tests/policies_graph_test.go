package tests

import (
	"errors"
	"fmt"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestPolicyGraphGradients: finite-difference checks through whole routed pipelines built with
// RouteBiased under every routing policy, with and without a capacity: the gradient reaches the logits
// through the sigmoid (or softmax) weights, x through dispatch and combine, the expert weights through
// the grouped matmul; dropped slots contribute nothing (their finite differences are 0 too).
func TestPolicyGraphGradients(t *testing.T) {
	const T, E, K, H, F = 6, 8, 2, 3, 2
	rng := rand.New(rand.NewSource(31))
	logits := gappedLogits(rng, T, E)
	bias := randVals(rng, E)
	for i := range bias {
		bias[i] *= 0.05
	}
	x := randVals(rng, T*H)
	w := randVals(rng, E*H*F)
	w2 := randVals(rng, E*F*H)
	for _, cfg := range []ops.RouteConfig{
		{K: K, Scoring: ops.Sigmoid, Renormalize: true, Groups: 4, TopKGroups: 2, Scale: 2.5},
		{K: K, Scoring: ops.Sigmoid, Groups: 2, TopKGroups: 1, GroupMask: ops.GroupMaskZero},
		{K: K, Scoring: ops.Sigmoid, Renormalize: true, Capacity: 1, DropPolicy: ops.DropProbs},
		{K: K, Scoring: ops.SoftmaxTopK, Renormalize: true, Scale: 0.5, CapacityFactor: 0.5},
		{K: K, Scoring: ops.TopKSoftmax, Capacity: 2, DropPolicy: ops.DropPosition},
	} {
		t.Run(cfg.String(), func(t *testing.T) {
			inputs := []gradInput{
				{name: "logits", shape: []int{T, E}, vals: logits, wrt: true},
				{name: "x", shape: []int{T, H}, vals: x, wrt: true},
				{name: "w", shape: []int{E, H, F}, vals: w, wrt: true},
				{name: "w2", shape: []int{E, F, H}, vals: w2, wrt: true},
			}
			biased := cfg.Scoring == ops.Sigmoid
			if biased {
				inputs = append(inputs, gradInput{name: "bias", shape: []int{E}, vals: bias})
			}
			checkGraphGrad(t, inputs, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				var b *G.Node
				if biased {
					b = in[4]
				}
				r, err := ops.RouteBiased(in[0], b, cfg)
				if err != nil {
					return nil, err
				}
				p, err := ops.Dispatch(in[1], r)
				if err != nil {
					return nil, err
				}
				h, err := ops.GroupedMatMul(p, in[2], r)
				if err != nil {
					return nil, err
				}
				back, err := ops.GroupedMatMul(h, in[3], r) // [T*K,F] -> [T*K,H]
				if err != nil {
					return nil, err
				}
				return ops.Combine(back, r)
			})
		})
	}
}

// TestPolicyBuildErrors: the builders refuse bad routing-policy inputs with the ops sentinels.
func TestPolicyBuildErrors(t *testing.T) {
	g := G.NewGraph()
	mat := func(dt tensor.Dtype, name string, shape ...int) *G.Node {
		return G.NewTensor(g, dt, len(shape), G.WithShape(shape...), G.WithName(name))
	}
	logits := mat(tensor.Float64, "logits", 4, 8)
	sig := ops.RouteConfig{K: 2, Scoring: ops.Sigmoid}
	for _, c := range []struct {
		name     string
		sentinel error
		f        func() error
	}{
		{"bias with softmax", ops.ErrConfig, func() error {
			_, err := ops.RouteBiased(logits, mat(tensor.Float64, "b1", 8), ops.RouteConfig{K: 2})
			return err
		}},
		{"bias rank 2", ops.ErrShape, func() error { _, err := ops.RouteBiased(logits, mat(tensor.Float64, "b2", 1, 8), sig); return err }},
		{"bias length", ops.ErrShape, func() error { _, err := ops.RouteBiased(logits, mat(tensor.Float64, "b3", 7), sig); return err }},
		{"bias dtype", ops.ErrDtype, func() error { _, err := ops.RouteBiased(logits, mat(tensor.Float32, "b4", 8), sig); return err }},
		{"groups not dividing E", ops.ErrConfig, func() error {
			_, err := ops.Route(logits, ops.RouteConfig{K: 2, Scoring: ops.Sigmoid, Groups: 3, TopKGroups: 1})
			return err
		}},
		{"topk_group > n_group", ops.ErrConfig, func() error {
			_, err := ops.Route(logits, ops.RouteConfig{K: 2, Scoring: ops.Sigmoid, Groups: 4, TopKGroups: 5})
			return err
		}},
		{"k beyond the kept groups", ops.ErrConfig, func() error {
			_, err := ops.Route(logits, ops.RouteConfig{K: 3, Scoring: ops.Sigmoid, Groups: 4, TopKGroups: 1})
			return err
		}},
		{"groups with softmax", ops.ErrConfig, func() error {
			_, err := ops.Route(logits, ops.RouteConfig{K: 2, Groups: 4, TopKGroups: 2})
			return err
		}},
		{"capacity factor beyond int32", ops.ErrConfig, func() error {
			_, err := ops.Route(logits, ops.RouteConfig{K: 2, CapacityFactor: 1e12})
			return err
		}},
		{"negative scale", ops.ErrConfig, func() error { _, err := ops.Route(logits, ops.RouteConfig{K: 2, Scale: -1}); return err }},
		{"capacity plan capacity 0", ops.ErrConfig, func() error {
			_, err := ops.CapacityPlanOf(mat(tensor.Int32, "i1", 4, 2), nil, 8, 0, ops.DropPosition)
			return err
		}},
		{"probs policy without weights", ops.ErrShape, func() error {
			_, err := ops.CapacityPlanOf(mat(tensor.Int32, "i2", 4, 2), nil, 8, 1, ops.DropProbs)
			return err
		}},
		{"stats without logits", ops.ErrConfig, func() error {
			r, err := ops.NewRouting(mat(tensor.Int32, "i3", 4, 2), mat(tensor.Float64, "w3", 4, 2), 8)
			if err != nil {
				return err
			}
			_, err = ops.RoutingStatsOf(r)
			return err
		}},
		{"bias update without a bias", ops.ErrConfig, func() error {
			r, err := ops.Route(logits, sig)
			if err != nil {
				return err
			}
			return r.UpdateBias(0.1)
		}},
		{"bias update rate NaN", ops.ErrConfig, func() error {
			return ops.UpdateBalanceBias(tensor.New(tensor.WithShape(8), tensor.WithBacking(make([]float64, 8))),
				tensor.New(tensor.WithShape(ops.PlanLen(4, 2, 8)), tensor.WithBacking(make([]int32, ops.PlanLen(4, 2, 8)))), nan())
		}},
	} {
		if err := c.f(); !errors.Is(err, c.sentinel) {
			t.Errorf("%s: error %v, want one wrapping %v", c.name, err, c.sentinel)
		}
	}
}

func nan() float64 { var z float64; return z / z }

// TestCapacityRoutingGraph: a capacity routing's plan and its combine in a graph: tokens whose slots
// were all dropped get zero outputs, and WithCapacity on a given routing gives the plan CapacityPlanOf
// gives.
func TestCapacityRoutingGraph(t *testing.T) {
	g := G.NewGraph()
	// Four tokens all choosing experts 0 then 1 (K = 2); capacity 1: only token 0 keeps its slots.
	idx := G.NewMatrix(g, tensor.Int32, G.WithShape(4, 2), G.WithName("idx"),
		G.WithValue(tensor.New(tensor.WithShape(4, 2), tensor.WithBacking([]int32{0, 1, 0, 1, 0, 1, 0, 1}))))
	w := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 2), G.WithName("w"),
		G.WithValue(tensor.New(tensor.WithShape(4, 2), tensor.WithBacking([]float64{0.5, 0.5, 0.6, 0.4, 0.9, 0.1, 0.2, 0.8}))))
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 1), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(4, 1), tensor.WithBacking([]float64{1, 2, 3, 4}))))
	r0, err := ops.NewRouting(idx, w, 3)
	if err != nil {
		t.Fatal(err)
	}
	var ys []*G.Node
	for _, pol := range []ops.DropPolicy{ops.DropPosition, ops.DropProbs} {
		r, err := r0.WithCapacity(1, pol)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ops.Dispatch(x, r)
		if err != nil {
			t.Fatal(err)
		}
		y, err := ops.Combine(p, r)
		if err != nil {
			t.Fatal(err)
		}
		ys = append(ys, y)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := ops.RunAll(m); err != nil {
		t.Fatal(err)
	}
	// position: token 0 keeps both slots (0.5+0.5)*1; probs: expert 0's best weight is token 2's 0.9,
	// expert 1's is token 3's 0.8.
	for i, want := range []string{"[1 0 0 0]", "[0 0 2.7 3.2]"} {
		if got := fmt.Sprint(ys[i].Value().Data()); got != want {
			t.Errorf("policy %d: y = %s, want %s", i, got, want)
		}
	}
}
