//go:build expertrt_cuda

package tests

import (
	"math/rand"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestCUDAGraphRouteIsFused: a graph's routing on the GPU is one launch of the fused router (route or
// route_sigmoid, the kernel bench's route and e2e time) and no route_weights launch, and its indices and
// weights are bitwise those of the separate kernels (RouteIndicesBias, RouteWeights).
func TestCUDAGraphRouteIsFused(t *testing.T) {
	b := cudaBackend(t)
	d, err := b.Device()
	if err != nil {
		t.Fatal(err)
	}
	eng, err := b.TensorEngine()
	if err != nil {
		t.Fatal(err)
	}
	const T, E, H = 1000, 64, 32
	for _, c := range []struct {
		cfg    ops.RouteConfig
		kernel string
	}{
		{ops.RouteConfig{K: 2, Scoring: ops.SoftmaxTopK, Renormalize: true}, "route"},
		{ops.RouteConfig{K: 4, Scoring: ops.SoftmaxTopK, Scale: 1.5}, "route"},
		{ops.RouteConfig{K: 6, Scoring: ops.Sigmoid, Renormalize: true, Groups: 8, TopKGroups: 3, Scale: 2.5}, "route_sigmoid"},
	} {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			rng := rand.New(rand.NewSource(3))
			dev := func(h *tensor.Dense) *tensor.Dense { return mustFromHost(t, b, h) }
			logits, x := dev(randT(rng, dt, T, E)), dev(randT(rng, dt, T, H))
			var bias *tensor.Dense
			if c.cfg.Scoring == ops.Sigmoid {
				bias = dev(randT(rng, dt, E))
			}
			g := G.NewGraph()
			ln, xn := G.NodeFromAny(g, logits, G.WithName("logits")), G.NodeFromAny(g, x, G.WithName("x"))
			var bn *G.Node
			if bias != nil {
				bn = G.NodeFromAny(g, bias, G.WithName("bias"))
			}
			r, err := ops.RouteBiased(ln, bn, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			xe, err := ops.Dispatch(xn, r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ops.Combine(xe, r); err != nil {
				t.Fatal(err)
			}
			m := G.NewTapeMachine(g, G.WithEngine(eng))
			if err := d.StartKernelTiming(); err != nil {
				t.Fatal(err)
			}
			err = m.RunAll()
			times, terr := d.StopKernelTiming()
			m.Close()
			if err != nil || terr != nil {
				t.Fatalf("%v %v: RunAll %v, kernel timing %v", c.cfg, dt, err, terr)
			}
			launches := map[string]int{}
			for _, kt := range times {
				launches[kt.Family] = kt.Launches
			}
			if launches[c.kernel] != 1 || launches["route_weights"] != 0 || launches["route"]+launches["route_sigmoid"] != 1 {
				t.Errorf("%v %v: route launches %v, want one %s and no route_weights", c.cfg, dt, launches, c.kernel)
			}
			idx, w := mustNew(t, b, tensor.Int32, T, c.cfg.K), mustNew(t, b, dt, T, c.cfg.K)
			if err := b.RouteIndicesBias(logits, bias, c.cfg, idx); err != nil {
				t.Fatal(err)
			}
			if err := b.RouteWeights(logits, idx, c.cfg, w); err != nil {
				t.Fatal(err)
			}
			for name, p := range map[string][2]*tensor.Dense{"indices": {r.Indices.Value().(*tensor.Dense), idx}, "weights": {r.Weights.Value().(*tensor.Dense), w}} {
				got, want := hostOf(t, b, p[0]), hostOf(t, b, p[1])
				if string(got.Raw) != string(want.Raw) {
					t.Errorf("%v %v: the graph's %s differ from the separate kernels'", c.cfg, dt, name)
				}
			}
		}
	}
}

func mustNew(t testing.TB, b ops.Backend, dt tensor.Dtype, shape ...int) *tensor.Dense {
	t.Helper()
	d, err := b.New(dt, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
