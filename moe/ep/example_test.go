package ep_test

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Two in-process ranks hold 4 experts each of an 8-expert layer; each routes its own 3 tokens. Their
// outputs equal the single-rank layer's on all 6 tokens.
func Example() {
	cfg := moe.Config{Hidden: 4, FFN: 6, Experts: 8, TopK: 2, Scoring: ops.SoftmaxTopK, Renormalize: true,
		Seed: 1, Dtype: tensor.Float64}
	const world, T = 2, 3
	x := make([]float64, world*T*cfg.Hidden)
	for i := range x {
		x[i] = math.Sin(float64(i))
	}
	grp, _ := ep.NewGroup(world, 10*time.Second)
	ys := make([][]float64, world)
	var wg sync.WaitGroup
	for r := 0; r < world; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, _ := grp.Rank(r)
			defer tr.Close()
			g := G.NewGraph()
			l, err := ep.NewLayer(g, cfg, tr, ep.Options{})
			if err != nil {
				tr.Abort(err)
				return
			}
			mine := tensor.New(tensor.WithShape(T, cfg.Hidden), tensor.WithBacking(x[r*T*cfg.Hidden:(r+1)*T*cfg.Hidden]))
			xn := G.NewMatrix(g, cfg.Dtype, G.WithShape(T, cfg.Hidden), G.WithValue(mine))
			out, err := l.Forward(xn)
			if err != nil {
				tr.Abort(err)
				return
			}
			m := G.NewTapeMachine(g)
			defer m.Close()
			if err := m.RunAll(); err != nil {
				fmt.Println("rank", r, ops.MachineError(err))
				return
			}
			ys[r] = out.Y.Value().Data().([]float64)
		}()
	}
	wg.Wait()

	// The single-rank layer on all tokens.
	g := G.NewGraph()
	l, _ := moe.NewLayer(g, cfg)
	xn := G.NewMatrix(g, cfg.Dtype, G.WithShape(world*T, cfg.Hidden), G.WithValue(tensor.New(tensor.WithShape(world*T, cfg.Hidden), tensor.WithBacking(x))))
	out, _ := l.Forward(xn)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		fmt.Println(err)
		return
	}
	want := out.Y.Value().Data().([]float64)
	worst := 0.0
	for r, y := range ys {
		if len(y) != T*cfg.Hidden {
			fmt.Println("rank", r, "produced no output")
			return
		}
		for i, v := range y {
			worst = math.Max(worst, math.Abs(v-want[r*T*cfg.Hidden+i]))
		}
	}
	fmt.Printf("ranks: %d, experts per rank: %d, max difference from the single-rank layer < 1e-12: %t\n",
		world, cfg.Experts/world, worst < 1e-12)
	// Output: ranks: 2, experts per rank: 4, max difference from the single-rank layer < 1e-12: true
}
