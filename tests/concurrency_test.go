package tests

import (
	"math"
	"math/rand"
	"sync"
	"testing"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/hf"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestParallelGraphs backs the README's concurrency statement: separate graphs (one goroutine each)
// train in parallel and end with bitwise the weights of a serial run; one Checkpoint is read from several
// goroutines. Run with -race to check for data races.
func TestParallelGraphs(t *testing.T) {
	cfg := moe.Config{Hidden: 6, FFN: 8, Experts: 4, TopK: 2, Renormalize: true, AuxLossCoef: 0.01, ZLossCoef: 0.001, Seed: 7, Dtype: tensor.Float64}
	rng := rand.New(rand.NewSource(1))
	xv, tv := randVals(rng, 32*6), randVals(rng, 32*6)
	train := func() ([]float64, error) {
		g := G.NewGraph()
		l, err := moe.NewLayer(g, cfg)
		if err != nil {
			return nil, err
		}
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(32, 6), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(32, 6), tensor.WithBacking(append([]float64(nil), xv...)))))
		target := G.NewMatrix(g, tensor.Float64, G.WithShape(32, 6), G.WithName("target"), G.WithValue(tensor.New(tensor.WithShape(32, 6), tensor.WithBacking(append([]float64(nil), tv...)))))
		cost, _, err := layerLoss(l, x, target)
		if err != nil {
			return nil, err
		}
		if _, err := G.Grad(cost, l.Params()...); err != nil {
			return nil, err
		}
		m := G.NewTapeMachine(g, G.BindDualValues(l.Params()...))
		defer m.Close()
		solver := G.NewAdamSolver(G.WithLearnRate(0.01))
		for step := 0; step < 3; step++ {
			if err := ops.RunAll(m); err != nil {
				return nil, err
			}
			if err := solver.Step(G.NodesToValueGrads(l.Params())); err != nil {
				return nil, err
			}
			m.Reset()
		}
		var w []float64
		for _, p := range l.Params() {
			w = append(w, p.Value().Data().([]float64)...)
		}
		return w, nil
	}
	want, err := train()
	if err != nil {
		t.Fatal(err)
	}
	const workers = 4
	got := make([][]float64, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = train()
		}()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("graph %d: %v", i, errs[i])
		}
		for j := range want {
			if math.Float64bits(got[i][j]) != math.Float64bits(want[j]) {
				t.Fatalf("graph %d: weight %d = %v, serial run %v", i, j, got[i][j], want[j])
			}
		}
	}

	ck, err := hf.OpenCheckpoint("fixtures/mixtral_e4k2/weights.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := hf.LoadMixtral(ck, "", tensor.Float32); err != nil {
				t.Error(err)
			}
			_ = ck.Names()
		}()
	}
	wg.Wait()
}
