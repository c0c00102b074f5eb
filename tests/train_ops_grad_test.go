package tests

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
)

// Graph-level gradient checks (G.Grad + TapeMachine against central differences) of the training ops.

func TestGradMatMul(t *testing.T) {
	const M, K, N = 3, 4, 2
	for _, f := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("transA=%t,transB=%t", f[0], f[1]), func(t *testing.T) {
			rng := rand.New(rand.NewSource(21))
			as, bs := []int{M, K}, []int{K, N}
			if f[0] {
				as = []int{K, M}
			}
			if f[1] {
				bs = []int{N, K}
			}
			checkGraphGrad(t, []gradInput{
				{name: "a", shape: as, vals: randVals(rng, M*K), wrt: true},
				{name: "b", shape: bs, vals: randVals(rng, K*N), wrt: true},
			}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
				return ops.MatMul(in[0], in[1], f[0], f[1])
			})
		})
	}
	// A chain, so gradients of MatMul flow into MatMul: (a · bᵀ) · c.
	rng := rand.New(rand.NewSource(22))
	checkGraphGrad(t, []gradInput{
		{name: "a", shape: []int{3, 4}, vals: randVals(rng, 12), wrt: true},
		{name: "b", shape: []int{5, 4}, vals: randVals(rng, 20), wrt: true},
		{name: "c", shape: []int{5, 2}, vals: randVals(rng, 10), wrt: true},
	}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		ab, err := ops.MatMul(in[0], in[1], false, true)
		if err != nil {
			return nil, err
		}
		return ops.MatMul(ab, in[2], false, false)
	})
}

func TestGradTaskLosses(t *testing.T) {
	rng := rand.New(rand.NewSource(23))
	t.Run("MSE", func(t *testing.T) {
		checkGraphGrad(t, []gradInput{
			{name: "pred", shape: []int{3, 4}, vals: randVals(rng, 12), wrt: true},
			{name: "target", shape: []int{3, 4}, vals: randVals(rng, 12), wrt: true},
		}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return ops.MSELoss(in[0], in[1])
		})
	})
	t.Run("cross-entropy", func(t *testing.T) {
		lg := randVals(rng, 5*4)
		for i := range lg {
			lg[i] *= 3
		}
		checkGraphGrad(t, []gradInput{
			{name: "logits", shape: []int{5, 4}, vals: lg, wrt: true},
			{name: "labels", shape: []int{5}, ivals: []int32{3, -1, 0, 0, 2}},
		}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return ops.SoftmaxCrossEntropy(in[0], in[1])
		})
	})
	t.Run("sum of losses", func(t *testing.T) {
		checkGraphGrad(t, []gradInput{
			{name: "pred", shape: []int{2, 3}, vals: randVals(rng, 6), wrt: true},
			{name: "target", shape: []int{2, 3}, vals: randVals(rng, 6)},
			{name: "logits", shape: []int{2, 3}, vals: randVals(rng, 6), wrt: true},
			{name: "labels", shape: []int{2}, ivals: []int32{1, 2}},
		}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return taskLosses(in, 0)
		})
	})
	t.Run("scaled loss", func(t *testing.T) {
		checkGraphGrad(t, []gradInput{
			{name: "pred", shape: []int{2, 3}, vals: randVals(rng, 6), wrt: true},
			{name: "target", shape: []int{2, 3}, vals: randVals(rng, 6), wrt: true},
		}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			mse, err := ops.MSELoss(in[0], in[1])
			if err != nil {
				return nil, err
			}
			return ops.ScaleLoss(mse, -0.375)
		})
	})
}

func TestGradSwiGLU(t *testing.T) {
	rng := rand.New(rand.NewSource(24))
	gate := randVals(rng, 12)
	for i := range gate {
		gate[i] *= 4
	}
	checkGraphGrad(t, []gradInput{
		{name: "gate", shape: []int{3, 4}, vals: gate, wrt: true},
		{name: "up", shape: []int{3, 4}, vals: randVals(rng, 12), wrt: true},
	}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return ops.SwiGLU(in[0], in[1])
	})
	// An expert: SwiGLU(x·W1, x·W3)·W2, so the fused gradient's two views feed further MatMuls.
	checkGraphGrad(t, []gradInput{
		{name: "x", shape: []int{4, 3}, vals: randVals(rng, 12), wrt: true},
		{name: "w1", shape: []int{3, 5}, vals: randVals(rng, 15), wrt: true},
		{name: "w3", shape: []int{3, 5}, vals: randVals(rng, 15), wrt: true},
		{name: "w2", shape: []int{5, 3}, vals: randVals(rng, 15), wrt: true},
	}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		a, err := ops.MatMul(in[0], in[1], false, false)
		if err != nil {
			return nil, err
		}
		b, err := ops.MatMul(in[0], in[2], false, false)
		if err != nil {
			return nil, err
		}
		h, err := ops.SwiGLU(a, b)
		if err != nil {
			return nil, err
		}
		return ops.MatMul(h, in[3], false, false)
	})
}

// taskLosses builds MSE(in[0], in[1]) + CE(in[2], labels in[3]) + ZLoss(in[2], 0.1) with ops.AddLosses
// (a nil term is skipped), plus ScaleLoss(MSE, half) when half != 0.
func taskLosses(in []*G.Node, half float64) (*G.Node, error) {
	mse, err := ops.MSELoss(in[0], in[1])
	if err != nil {
		return nil, err
	}
	ce, err := ops.SoftmaxCrossEntropy(in[2], in[3])
	if err != nil {
		return nil, err
	}
	z, err := ops.ZLoss(in[2], 0.1)
	if err != nil {
		return nil, err
	}
	var scaled *G.Node
	if half != 0 {
		if scaled, err = ops.ScaleLoss(mse, half); err != nil {
			return nil, err
		}
	}
	return ops.AddLosses(mse, scaled, ce, z)
}
