//go:build expertrt_cuda

package tests

import (
	"context"
	"errors"
	"fmt"
	"github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/cudaops/nccl"
	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/moe/ep/epcuda"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Expert parallelism on NCCL. With one GPU: a world of one rank end to end (TestCUDAEPWorldOne...).
// With several: one child process per GPU (this test binary, re-executed with torchrun-style
// variables), each checking its rank against the single-rank computation of all ranks' tokens
// (TestCUDAEPMultiGPU), and a rank that dies (TestCUDAEPDeadRank).

const epChildEnv = "EXPERTRT_EP_CHILD"

func epSkipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("EXPERTRT_REQUIRE_GPU") == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// epWorldOne joins a NCCL communicator of one rank on device 0.
func epWorldOne(t *testing.T) *epcuda.Transport {
	t.Helper()
	b := cudaops.Registered()
	if _, err := b.Device(); err != nil {
		epSkipOrFail(t, "no CUDA device: %v", err)
	}
	tr, err := epcuda.New(b, epcuda.Options{Rank: 0, World: 1, IDFile: filepath.Join(t.TempDir(), "nccl-id"), Run: "world-one", Timeout: time.Minute})
	if errors.Is(err, ops.ErrUnsupported) {
		epSkipOrFail(t, "NCCL is not available: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	t.Logf("NCCL %s from %s", nccl.VersionString(tr.Library().Version()), tr.Library().Path())
	return tr
}

// TestCUDAEPWorldOneLayer: the expert-parallel layer (computing on the host) exchanging its rows through
// NCCL with a world of one equals the single-rank layer.
func TestCUDAEPWorldOneLayer(t *testing.T) {
	tr := epWorldOne(t)
	if err := epCheckLayer(t, tr, 16); err != nil {
		t.Fatal(err)
	}
}

// TestCUDAEPWorldOneDevice: route, dispatch, exchange, local grouped matmul, exchange back and combine on
// device tensors through NCCL, forward and backward, equal the same computation without the exchanges
// (ops.GroupedMatMul over the routing) bitwise.
func TestCUDAEPWorldOneDevice(t *testing.T) {
	tr := epWorldOne(t)
	if err := epCheckDevice(t, tr, 64, true); err != nil {
		t.Fatal(err)
	}
	if err := tr.Barrier(); err != nil {
		t.Fatal(err)
	}
}

// TestCUDAEPInProcessDevice: 2 and 4 in-process ranks sharing GPU 0 (the in-process transport copying
// device rows) run the device pass through the exchanges; each rank equals the single-GPU pass over all
// ranks' tokens.
func TestCUDAEPInProcessDevice(t *testing.T) {
	b := cudaops.Registered()
	if _, err := b.Device(); err != nil {
		epSkipOrFail(t, "no CUDA device: %v", err)
	}
	for _, world := range []int{2, 4} {
		grp, err := ep.NewGroup(world, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		errs := make([]error, world)
		var wg sync.WaitGroup
		for r := 0; r < world; r++ {
			tr, err := grp.Rank(r)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer tr.Close()
				if errs[r] = epCheckDevice(t, tr, 48, false); errs[r] != nil {
					tr.Abort(errs[r])
				}
			}()
		}
		wg.Wait()
		for r, err := range errs {
			if err != nil {
				t.Fatalf("world %d, rank %d: %v", world, r, err)
			}
		}
	}
}

// TestCUDAEPWorldOneErrors: buffers NCCL cannot take give clear errors, not crashes.
func TestCUDAEPWorldOneErrors(t *testing.T) {
	tr := epWorldOne(t)
	i64 := tensor.New(tensor.Of(tensor.Int64), tensor.WithShape(2, 2))
	if err := tr.AllToAllV(i64, nil, i64.Clone().(*tensor.Dense), nil); !errors.Is(err, ops.ErrDtype) {
		t.Fatalf("int64 rows: %v, want ErrDtype", err)
	}
	x := tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(2, 2))
	if err := tr.AllToAllV(x, []ep.Segment{{Peer: 1, Rows: 1}}, x.Clone().(*tensor.Dense), nil); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("peer 1 of a world of 1: %v, want ErrConfig", err)
	}
	if err := tr.AllGather(x, tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(3))); !errors.Is(err, ops.ErrShape) {
		t.Fatalf("all-gather of 4 values into 3: %v, want ErrShape", err)
	}
}

// epGlobal draws the inputs of all ranks: tokens per rank * world rows.
func epGlobal(seed uint64, dt tensor.Dtype, scale float64, shape ...int) *tensor.Dense {
	rng := rand.New(rand.NewPCG(seed, 99))
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

// epRows returns a copy of rows [lo,hi) of a host matrix (or of the leading axis of any tensor).
func epRows(t *tensor.Dense, lo, hi int) *tensor.Dense {
	shape := t.Shape().Clone()
	per := shape.TotalSize() / shape[0]
	shape[0] = hi - lo
	switch d := t.Data().(type) {
	case []float32:
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float32(nil), d[lo*per:hi*per]...)))
	case []float64:
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), d[lo*per:hi*per]...)))
	}
	panic("epRows: dtype")
}

func epFloats(v G.Value) []float64 {
	f, err := floats.Of(v)
	if err != nil {
		panic(err)
	}
	return f
}

// epDiff returns the largest relative difference of got from want, and whether they are bitwise equal.
func epDiff(got, want []float64) (float64, bool, error) {
	if len(got) != len(want) {
		return 0, false, fmt.Errorf("%d values, want %d", len(got), len(want))
	}
	worst, same := 0.0, true
	for i := range got {
		if got[i] != want[i] {
			same = false
		}
		d := math.Abs(got[i]-want[i]) / (1 + math.Abs(want[i]))
		if math.IsNaN(got[i]) {
			d = math.Inf(1)
		}
		worst = max(worst, d)
	}
	return worst, same, nil
}

// epLayerRun is one layer run: forward and backward of cost = sum(y ⊙ up) + router losses.
type epLayerRun struct {
	y, dx, dRouter, dW1, dW3, dW2 []float64
	aux, z                        float64
}

func epLayerGraph(g *G.ExprGraph, y, up *G.Node, aux, z *G.Node) (*G.Node, error) {
	prod, err := G.HadamardProd(y, up)
	if err != nil {
		return nil, err
	}
	cost, err := G.Sum(prod)
	if err != nil {
		return nil, err
	}
	for _, l := range []*G.Node{aux, z} {
		if l != nil {
			if cost, err = G.Add(cost, l); err != nil {
				return nil, err
			}
		}
	}
	return cost, nil
}

func epCollect(params G.Nodes, yv, auxv, zv G.Value) (epLayerRun, error) {
	r := epLayerRun{y: epFloats(yv)}
	if auxv != nil {
		r.aux = epFloats(auxv)[0]
	}
	if zv != nil {
		r.z = epFloats(zv)[0]
	}
	dst := []*[]float64{&r.dx, &r.dRouter, &r.dW1, &r.dW3, &r.dW2}
	for i, n := range params {
		gv, err := n.Grad()
		if err != nil {
			return r, err
		}
		*dst[i] = epFloats(gv)
	}
	return r, nil
}

func epReferenceLayer(cfg moe.Config, x, up *tensor.Dense) (epLayerRun, error) {
	g := G.NewGraph()
	l, err := moe.NewLayer(g, cfg)
	if err != nil {
		return epLayerRun{}, err
	}
	xn := G.NewMatrix(g, cfg.Dtype, G.WithShape(x.Shape()...), G.WithName("x"), G.WithValue(x))
	un := G.NewMatrix(g, cfg.Dtype, G.WithShape(up.Shape()...), G.WithName("up"), G.WithValue(up))
	out, err := l.Forward(xn)
	if err != nil {
		return epLayerRun{}, err
	}
	cost, err := epLayerGraph(g, out.Y, un, out.AuxLoss, out.ZLoss)
	if err != nil {
		return epLayerRun{}, err
	}
	var yv, auxv, zv G.Value
	G.Read(out.Y, &yv)
	G.Read(out.AuxLoss, &auxv)
	G.Read(out.ZLoss, &zv)
	params := append(G.Nodes{xn}, l.Params()...)
	if _, err := G.Grad(cost, params...); err != nil {
		return epLayerRun{}, err
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return epLayerRun{}, err
	}
	return epCollect(params, yv, auxv, zv)
}

func epRankLayer(cfg moe.Config, tr ep.Transport, x, up *tensor.Dense) (epLayerRun, error) {
	g := G.NewGraph()
	l, err := ep.NewLayer(g, cfg, tr, ep.Options{})
	if err != nil {
		return epLayerRun{}, err
	}
	xn := G.NewMatrix(g, cfg.Dtype, G.WithShape(x.Shape()...), G.WithName("x"), G.WithValue(x))
	un := G.NewMatrix(g, cfg.Dtype, G.WithShape(up.Shape()...), G.WithName("up"), G.WithValue(up))
	out, err := l.Forward(xn)
	if err != nil {
		return epLayerRun{}, err
	}
	cost, err := epLayerGraph(g, out.Y, un, out.AuxLoss, out.ZLoss)
	if err != nil {
		return epLayerRun{}, err
	}
	var yv, auxv, zv G.Value
	G.Read(out.Y, &yv)
	G.Read(out.AuxLoss, &auxv)
	G.Read(out.ZLoss, &zv)
	params := append(G.Nodes{xn}, l.Params()...)
	if _, err := G.Grad(cost, params...); err != nil {
		return epLayerRun{}, err
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return epLayerRun{}, ops.MachineError(err)
	}
	if err := l.AllReduceRouterGrad(); err != nil {
		return epLayerRun{}, err
	}
	return epCollect(params, yv, auxv, zv)
}

// epCheckLayer runs this rank's layer (host compute, float64) and compares it with the single-rank
// layer on all ranks' tokens.
func epCheckLayer(t *testing.T, tr ep.Transport, tokens int) error {
	world, rank := tr.World(), tr.Rank()
	cfg := moe.Config{Hidden: 16, FFN: 12, Experts: 8, TopK: 2, Scoring: ops.SoftmaxTopK,
		Renormalize: true, AuxLossCoef: 0.1, ZLossCoef: 0.01, Seed: 5, Dtype: tensor.Float64}
	for cfg.Experts%world != 0 {
		cfg.Experts++ // 8 experts for 1, 2, 4 and 8 ranks
	}
	T, H, F := tokens, cfg.Hidden, cfg.FFN
	L := cfg.Experts / world
	x := epGlobal(1, cfg.Dtype, 2, world*T, H)
	up := epGlobal(2, cfg.Dtype, 1, world*T, H)
	ref, err := epReferenceLayer(cfg, x, up)
	if err != nil {
		return err
	}
	got, err := epRankLayer(cfg, tr, epRows(x, rank*T, (rank+1)*T), epRows(up, rank*T, (rank+1)*T))
	if err != nil {
		return err
	}
	losses := tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{got.aux, got.z}))
	if err := tr.AllReduceSum(losses); err != nil {
		return err
	}
	sum := losses.Data().([]float64)
	for _, c := range []struct {
		name      string
		got, want []float64
	}{
		{"y", got.y, ref.y[rank*T*H : (rank+1)*T*H]},
		{"dx", got.dx, ref.dx[rank*T*H : (rank+1)*T*H]},
		{"dRouter (summed)", got.dRouter, ref.dRouter},
		{"dW1", got.dW1, ref.dW1[rank*L*H*F : (rank+1)*L*H*F]},
		{"dW3", got.dW3, ref.dW3[rank*L*H*F : (rank+1)*L*H*F]},
		{"dW2", got.dW2, ref.dW2[rank*L*F*H : (rank+1)*L*F*H]},
		{"aux loss (sum of shares)", sum[:1], []float64{ref.aux}},
		{"z-loss (sum of shares)", sum[1:], []float64{ref.z}},
	} {
		d, _, err := epDiff(c.got, c.want)
		if err != nil {
			return fmt.Errorf("rank %d: %s: %v", rank, c.name, err)
		}
		if d > 1e-12 {
			return fmt.Errorf("rank %d of %d: %s differs from the single-rank layer by %.3g", rank, world, c.name, d)
		}
	}
	t.Logf("rank %d of %d: host-compute layer over NCCL equals the single-rank layer (E=%d, T=%d per rank)", rank, world, cfg.Experts, T)
	return nil
}

// epDeviceRun is a device pass: y = Combine(GroupedMatMul(Dispatch(x)), routing of logits) with its
// gradients for an upstream gradient up, all on the GPU.
type epDeviceRun struct{ y, dx, dlogits, dw []float64 }

// epDeviceGraph builds and runs the pass; with tr it goes through the exchanges and the rank's experts
// w [E/W,H,F], without through ops.GroupedMatMul and all experts w [E,H,F].
func epDeviceGraph(b *cudaops.Backend, tr ep.Transport, E int, cfg ops.RouteConfig, logits, x, w, up *tensor.Dense) (epDeviceRun, error) {
	eng, err := b.Engine()
	if err != nil {
		return epDeviceRun{}, err
	}
	dev := map[string]*tensor.Dense{}
	for name, h := range map[string]*tensor.Dense{"logits": logits, "x": x, "w": w, "up": up} {
		if dev[name], err = b.FromHost(h); err != nil {
			return epDeviceRun{}, err
		}
	}
	dt := x.Dtype()
	g := G.NewGraph()
	ln := G.NewMatrix(g, dt, G.WithShape(logits.Shape()...), G.WithName("logits"), G.WithValue(dev["logits"]))
	xn := G.NewMatrix(g, dt, G.WithShape(x.Shape()...), G.WithName("x"), G.WithValue(dev["x"]))
	wn := G.NewTensor(g, dt, 3, G.WithShape(w.Shape()...), G.WithName("w"), G.WithValue(dev["w"]))
	un := G.NewMatrix(g, dt, G.WithShape(up.Shape()...), G.WithName("up"), G.WithValue(dev["up"]))
	r, err := ops.Route(ln, cfg)
	if err != nil {
		return epDeviceRun{}, err
	}
	packed, err := ops.Dispatch(xn, r)
	if err != nil {
		return epDeviceRun{}, err
	}
	var back *G.Node
	if tr == nil {
		if back, err = ops.GroupedMatMul(packed, wn, r); err != nil {
			return epDeviceRun{}, err
		}
	} else {
		ex, err := ep.NewExchange(r, x.Shape()[1], dt, tr, 0)
		if err != nil {
			return epDeviceRun{}, err
		}
		recv, err := ex.ToExperts(packed)
		if err != nil {
			return epDeviceRun{}, err
		}
		h, err := ex.GroupedMatMul(recv, wn)
		if err != nil {
			return epDeviceRun{}, err
		}
		if back, err = ex.FromExperts(h); err != nil {
			return epDeviceRun{}, err
		}
	}
	y, err := ops.Combine(back, r)
	if err != nil {
		return epDeviceRun{}, err
	}
	grads, err := G.Backpropagate(G.Nodes{y}, G.Nodes{un}, G.Nodes{xn, ln, wn})
	if err != nil {
		return epDeviceRun{}, err
	}
	m := G.NewTapeMachine(g, G.WithEngine(eng))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return epDeviceRun{}, ops.MachineError(err)
	}
	var out epDeviceRun
	for i, n := range append(G.Nodes{y}, grads...) {
		d := n.Value().(*tensor.Dense)
		if !b.Owns(d) {
			return out, fmt.Errorf("value %d of the device pass is not a device tensor", i)
		}
		h, err := b.ToHost(d)
		if err != nil {
			return out, err
		}
		*[]*[]float64{&out.y, &out.dx, &out.dlogits, &out.dw}[i] = epFloats(h)
	}
	return out, nil
}

// epCheckDevice compares this rank's device pass through the exchanges with the single-GPU pass over
// all ranks' tokens and experts (computed on this rank's GPU). With bitwise set, it requires equal bits.
func epCheckDevice(t *testing.T, tr ep.Transport, tokens int, bitwise bool) error {
	world, rank := tr.World(), tr.Rank()
	E, K, H, F := 4*world, 2, 32, 24
	cfg := ops.RouteConfig{K: K, Scoring: ops.SoftmaxTopK, Renormalize: true}
	T, L := tokens, E/world
	dt := tensor.Float32
	logits := epGlobal(11, dt, 3, world*T, E)
	x := epGlobal(12, dt, 1, world*T, H)
	w := epGlobal(13, dt, 0.3, E, H, F)
	up := epGlobal(14, dt, 1, world*T, F)
	b := cudaops.Registered()
	ref, err := epDeviceGraph(b, nil, E, cfg, logits, x, w, up)
	if err != nil {
		return fmt.Errorf("single-GPU pass: %w", err)
	}
	got, err := epDeviceGraph(b, tr, E, cfg, epRows(logits, rank*T, (rank+1)*T), epRows(x, rank*T, (rank+1)*T),
		epRows(w, rank*L, (rank+1)*L), epRows(up, rank*T, (rank+1)*T))
	if err != nil {
		return fmt.Errorf("rank %d of %d: expert-parallel pass: %w", rank, world, err)
	}
	for _, c := range []struct {
		name      string
		got, want []float64
	}{
		{"y", got.y, ref.y[rank*T*F : (rank+1)*T*F]},
		{"dx", got.dx, ref.dx[rank*T*H : (rank+1)*T*H]},
		{"dlogits", got.dlogits, ref.dlogits[rank*T*E : (rank+1)*T*E]},
		{"dw", got.dw, ref.dw[rank*L*H*F : (rank+1)*L*H*F]},
	} {
		d, same, err := epDiff(c.got, c.want)
		if err != nil {
			return fmt.Errorf("rank %d: %s: %v", rank, c.name, err)
		}
		if (bitwise && !same) || d > 1e-5 {
			return fmt.Errorf("rank %d of %d: device %s differs from the single-GPU pass by %.3g (bitwise %t)", rank, world, c.name, d, same)
		}
		t.Logf("rank %d of %d: device %s: max relative difference %.3g, bitwise equal %t", rank, world, c.name, d, same)
	}
	return nil
}

// epGPUs lists the GPUs children may use: CUDA_VISIBLE_DEVICES' entries, or 0..n-1.
func epGPUs(t *testing.T) []string {
	n, err := cu.NumDevices()
	if err != nil {
		t.Skipf("no CUDA driver: %v", err)
	}
	if v := os.Getenv("CUDA_VISIBLE_DEVICES"); v != "" {
		ids := strings.Split(v, ",")
		return ids[:min(len(ids), n)]
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	return ids
}

type epChild struct {
	rank   int
	out    string
	err    error
	wall   time.Duration
	failed bool
}

// epRunChildren starts one child per rank (this binary, TestCUDAEPChild) on its own GPU and waits.
func epRunChildren(t *testing.T, gpus []string, mode string, timeout time.Duration, extraEnv ...string) []epChild {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	world := len(gpus)
	dir := t.TempDir()
	run := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res := make([]epChild, world)
	var wg sync.WaitGroup
	for r := 0; r < world; r++ {
		cmd := exec.CommandContext(ctx, exe, "-test.run", "^TestCUDAEPChild$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(),
			"RANK="+strconv.Itoa(r), "WORLD_SIZE="+strconv.Itoa(world), "LOCAL_RANK="+strconv.Itoa(r),
			"CUDA_VISIBLE_DEVICES="+gpus[r], "NCCL_NVLS_ENABLE=0",
			epcuda.EnvIDFile+"="+filepath.Join(dir, "nccl-id"), epcuda.EnvRun+"="+run, epChildEnv+"="+mode)
		cmd.Env = append(cmd.Env, extraEnv...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			out, err := cmd.CombinedOutput()
			res[r] = epChild{rank: r, out: string(out), err: err, wall: time.Since(start), failed: err != nil}
		}()
	}
	wg.Wait()
	return res
}

// TestCUDAEPMultiGPU: with 2, 4 and 8 GPUs (as many as present), every rank of the expert-parallel
// layer (host compute, NCCL exchanges) and of the device pass equals the single-rank computation.
func TestCUDAEPMultiGPU(t *testing.T) {
	gpus := epGPUs(t)
	if len(gpus) < 2 {
		t.Skipf("needs 2 or more GPUs, found %d: expert parallelism across GPUs was not tested", len(gpus))
	}
	for _, world := range []int{2, 4, 8} {
		if world > len(gpus) {
			t.Logf("world %d skipped: %d GPUs", world, len(gpus))
			continue
		}
		t.Run(fmt.Sprintf("world=%d", world), func(t *testing.T) {
			for _, c := range epRunChildren(t, gpus[:world], "equal", 4*time.Minute) {
				if c.failed {
					t.Errorf("rank %d failed (%v) after %v:\n%s", c.rank, c.err, c.wall, c.out)
				} else {
					t.Logf("rank %d passed in %v", c.rank, c.wall.Round(time.Millisecond))
				}
			}
		})
	}
}

// TestCUDAEPDeadRank: the last rank exits right after a first barrier; the others' next collective fails with a transport error within the timeout (10 s) instead of hanging.
func TestCUDAEPDeadRank(t *testing.T) {
	gpus := epGPUs(t)
	if len(gpus) < 2 {
		t.Skipf("needs 2 or more GPUs, found %d: a dying rank was not tested", len(gpus))
	}
	res := epRunChildren(t, gpus[:2], "dead", 3*time.Minute, epcuda.EnvTimeout+"=10s")
	if res[0].failed || !strings.Contains(res[0].out, "EP-DEAD-DETECTED") {
		t.Fatalf("rank 0 did not report the dead peer (%v, %v):\n%s", res[0].err, res[0].wall, res[0].out)
	}
	t.Logf("rank 0:\n%s", res[0].out)
}

// TestCUDAEPChild is the body of one rank of the multi-GPU tests; it runs only as their child.
func TestCUDAEPChild(t *testing.T) {
	mode := os.Getenv(epChildEnv)
	if mode == "" {
		t.Skip("runs only as a child process of TestCUDAEPMultiGPU and TestCUDAEPDeadRank")
	}
	opts, ok, err := epcuda.OptionsFromEnv()
	if err != nil || !ok {
		t.Fatalf("launcher variables: ok=%t %v", ok, err)
	}
	start := time.Now()
	tr, err := epcuda.New(cudaops.Registered(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rank %d of %d joined in %v (NCCL %s)", opts.Rank, opts.World, time.Since(start).Round(time.Millisecond), nccl.VersionString(tr.Library().Version()))
	switch mode {
	case "equal":
		defer tr.Close()
		if err := epCheckLayer(t, tr, 24); err != nil {
			t.Fatal(err)
		}
		if err := epCheckDevice(t, tr, 96, false); err != nil {
			t.Fatal(err)
		}
		if err := tr.Barrier(); err != nil {
			t.Fatal(err)
		}
	case "dead":
		// Every rank has joined once the barrier returns; then the last one dies.
		if err := tr.Barrier(); err != nil {
			t.Fatal(err)
		}
		if opts.Rank == opts.World-1 {
			time.Sleep(500 * time.Millisecond)
			fmt.Println("rank exits without leaving the communicator")
			os.Exit(0)
		}
		start := time.Now()
		err := epCheckLayer(t, tr, 8)
		if !errors.Is(err, ep.ErrTransport) {
			t.Fatalf("with a dead peer the layer returned %v, want a transport error", err)
		}
		if d := time.Since(start); d > opts.Timeout+30*time.Second {
			t.Fatalf("the dead peer was noticed after %v (timeout %v)", d, opts.Timeout)
		}
		fmt.Printf("EP-DEAD-DETECTED after %v: %v\n", time.Since(start).Round(time.Millisecond), err)
	default:
		t.Fatalf("unknown child mode %q", mode)
	}
}
