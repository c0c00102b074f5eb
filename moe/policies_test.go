package moe

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/expertrt/expertrt-go/internal/floats"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestDeepSeekStyleLayerTrains: a layer with sigmoid scoring, group-limited routing, a capacity and
// aux-loss-free balancing trains with Adam on the ops Trainer; after every step the bias moves by
// -rate on overloaded experts and +rate on underloaded ones, and the diagnostics agree with the plan.
func TestDeepSeekStyleLayerTrains(t *testing.T) {
	const T, H, E, K = 64, 6, 8, 2
	const rate = 0.01
	cfg := Config{Hidden: H, FFN: 5, Experts: E, TopK: K, Scoring: ops.Sigmoid, Renormalize: true, Groups: 4, TopKGroups: 2,
		RouteScale: 2, CapacityFactor: 1, BiasRate: rate, Seed: 3, Dtype: tensor.Float64}
	g := G.NewGraph()
	l, err := NewLayer(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if l.Bias == nil {
		t.Fatal("no bias node with BiasRate > 0")
	}
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"))
	y := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("y"))
	out, err := l.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if out.Routing.Capacity != T*K/E {
		t.Errorf("capacity %d, want ceil(1 * %d*%d / %d) = %d", out.Routing.Capacity, T, K, E, T*K/E)
	}
	mse, err := MSE(out.Y, y)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := out.Cost(mse)
	if err != nil {
		t.Fatal(err)
	}
	read := out.Read()
	adam, err := ops.NewAdam(ops.DefaultAdam(0.01))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ops.NewTrainer(cost, l.Params(), adam, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	batch := func() *tensor.Dense {
		v := make([]float64, T*H)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		return floats.Dense(tensor.Float64, v, T, H)
	}
	bias := l.Bias.Value().(*tensor.Dense).Data().([]float64)
	for step := 0; step < 3; step++ {
		before := append([]float64(nil), bias...)
		var st ops.RoutingStats
		err := tr.StepThen(ops.Feeds{x: batch(), y: batch()}, func() (err error) {
			if st, err = read.RoutingStats(); err != nil {
				return err
			}
			return l.UpdateBias(read)
		})
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		kept, routed := 0, 0
		for e := 0; e < E; e++ {
			routed += st.Counts[e]
			kept += st.Kept[e]
			if st.Kept[e] > out.Routing.Capacity || st.Kept[e] > st.Counts[e] {
				t.Errorf("step %d expert %d: kept %d of %d with capacity %d", step, e, st.Kept[e], st.Counts[e], out.Routing.Capacity)
			}
			want := 0.0
			switch mean := float64(T*K) / E; {
			case float64(st.Counts[e]) > mean:
				want = -rate
			case float64(st.Counts[e]) < mean:
				want = rate
			}
			if d := bias[e] - before[e]; math.Abs(d-want) > 1e-15 {
				t.Errorf("step %d expert %d (load %d): bias moved by %v, want %v", step, e, st.Counts[e], d, want)
			}
		}
		if routed != T*K || kept+st.Dropped != T*K || st.Entropy <= 0 || st.Entropy > math.Log(E)+1e-12 {
			t.Errorf("step %d: diagnostics %+v", step, st)
		}
	}
}

// TestPolicyConfigErrors: a balancing bias needs sigmoid scoring; its rate must be finite and >= 0;
// the routing options are validated as ops.RouteConfig.
func TestPolicyConfigErrors(t *testing.T) {
	base := Config{Hidden: 4, FFN: 3, Experts: 8, TopK: 2, Dtype: tensor.Float64}
	for _, c := range []func(*Config){
		func(c *Config) { c.BiasRate = 0.1 },
		func(c *Config) { c.Scoring, c.BiasRate = ops.Sigmoid, math.NaN() },
		func(c *Config) { c.Scoring, c.BiasRate = ops.Sigmoid, -1 },
		func(c *Config) { c.Scoring, c.Groups, c.TopKGroups = ops.Sigmoid, 3, 1 },
		func(c *Config) { c.Groups, c.TopKGroups = 4, 2 },
		func(c *Config) { c.CapacityFactor = -1 },
	} {
		cfg := base
		c(&cfg)
		if err := cfg.Validate(); !errors.Is(err, ops.ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", cfg, err)
		}
	}
}
