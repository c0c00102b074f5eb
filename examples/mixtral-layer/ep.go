package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Expert-parallel training: the layer's E experts are split over W ranks (E/W each), every rank routes
// its own T tokens, exchanges rows with the ranks owning their experts, and the router is replicated
// (its gradient summed over ranks). Two ways to run:
//
//	mixtral-layer -expert-parallel 4 [train flags]       # 4 in-process ranks (goroutines), CPU
//	torchrun-style launch, one process per GPU:          # NCCL (binary built with -tags expertrt_cuda)
//	  RANK=r WORLD_SIZE=W LOCAL_RANK=r CUDA_VISIBLE_DEVICES=r EXPERTRT_NCCL_ID_FILE=/tmp/id mixtral-layer ep [flags]
//
// Each rank trains on its slice of the same global batch the single-rank run would see (W*T tokens per
// step); -check also trains the single-rank layer on those batches and compares the loss curves.

type epFlags struct {
	trainFlags
	world, recvRows int
	check           bool
	timeout         time.Duration
}

// epRequested reports whether the command line asks for expert parallelism.
func epRequested(args []string) bool {
	for _, a := range args {
		if a == "-expert-parallel" || a == "--expert-parallel" || strings.HasPrefix(a, "-expert-parallel=") || strings.HasPrefix(a, "--expert-parallel=") {
			return true
		}
	}
	return false
}

// epSummary is what -json prints (rank 0).
type epSummary struct {
	World         int       `json:"world"`
	Transport     string    `json:"transport"`
	InitialLoss   float64   `json:"initial_loss"`
	FinalLoss     float64   `json:"final_loss"`
	Losses        []float64 `json:"losses"`
	RankLoad      []float64 `json:"rank_load"`
	CheckMaxRel   *float64  `json:"check_max_rel_diff,omitempty"`
	Seconds       float64   `json:"seconds"`
	TokensPerRank int       `json:"tokens_per_rank"`
}

func runEP(args []string) error {
	var f epFlags
	fs := flag.NewFlagSet("mixtral-layer ep", flag.ContinueOnError)
	fs.IntVar(&f.world, "expert-parallel", 2, "in-process ranks W (ignored when launched once per GPU: WORLD_SIZE)")
	fs.IntVar(&f.tokens, "tokens", 64, "tokens per rank per step (T); the global batch is W*T")
	fs.IntVar(&f.hidden, "hidden", 32, "hidden size (H)")
	fs.IntVar(&f.ffn, "ffn", 64, "expert FFN size (F)")
	fs.IntVar(&f.experts, "experts", 8, "number of experts (E), a multiple of W")
	fs.IntVar(&f.topK, "top-k", 2, "experts per token (K)")
	fs.IntVar(&f.steps, "steps", 200, "training steps")
	fs.IntVar(&f.every, "every", 25, "print progress every N steps")
	fs.Float64Var(&f.lr, "lr", 0.01, "Adam learning rate")
	fs.Float64Var(&f.aux, "aux-coef", 0.01, "load-balancing loss coefficient")
	fs.Float64Var(&f.z, "z-coef", 0.001, "router z-loss coefficient")
	fs.Uint64Var(&f.seed, "seed", 1, "seed for data, teacher and student")
	fs.StringVar(&f.scoring, "scoring", "softmax-topk", "softmax-topk (Mixtral), topk-softmax or sigmoid (DeepSeek-V3)")
	f.route.register(fs)
	fs.StringVar(&f.dtype, "dtype", "float32", "float32 or float64")
	fs.IntVar(&f.recvRows, "recv-rows", 0, "rows of each rank's receive buffers (0: enough for any routing)")
	fs.BoolVar(&f.check, "check", false, "also train the single-rank layer on the same batches and compare the losses")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON summary at the end (rank 0)")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "how long a rank waits for the others in a collective")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("ep: unexpected argument %q", fs.Arg(0))
	}
	if f.steps < 1 || f.tokens < 1 || f.every < 1 {
		return fmt.Errorf("steps, tokens and every must be >= 1")
	}
	scoring, err := ops.ParseScoring(f.scoring)
	if err != nil {
		return err
	}
	dt := tensor.Float32
	switch f.dtype {
	case "float32":
	case "float64":
		dt = tensor.Float64
	default:
		return fmt.Errorf("unknown -dtype %q (want float32 or float64)", f.dtype)
	}
	cfg := moe.Config{Hidden: f.hidden, FFN: f.ffn, Experts: f.experts, TopK: f.topK, Scoring: scoring,
		AuxLossCoef: f.aux, ZLossCoef: f.z, Seed: f.seed, Dtype: dt}
	if err := f.route.apply(&cfg); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	launch, launched, err := ep.LaunchFromEnv()
	if err != nil {
		return err
	}
	if launched {
		return runEPLaunched(f, cfg, launch)
	}
	if f.world < 1 {
		return fmt.Errorf("-expert-parallel must be >= 1, got %d: %w", f.world, ops.ErrConfig)
	}
	grp, err := ep.NewGroup(f.world, f.timeout)
	if err != nil {
		return err
	}
	ranks := make([]*epRank, f.world)
	for r := range ranks {
		tr, err := grp.Rank(r)
		if err != nil {
			return err
		}
		if ranks[r], err = newEPRank(cfg, f.tokens, tr, ep.Options{RecvRows: f.recvRows}, f.lr); err != nil {
			return fmt.Errorf("rank %d: %w", r, err)
		}
		defer ranks[r].close()
	}
	// All ranks step together; rank 0 reports.
	step := func(x, y *tensor.Dense, train bool) (epMetrics, error) {
		ms := make([]epMetrics, f.world)
		errs := make([]error, f.world)
		var wg sync.WaitGroup
		for r, rk := range ranks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ms[r], errs[r] = rk.step(epSlice(x, r, f.world), epSlice(y, r, f.world), train)
			}()
		}
		wg.Wait()
		for r, err := range errs {
			if err != nil {
				return ms[0], fmt.Errorf("rank %d: %w", r, err)
			}
		}
		return ms[0], nil
	}
	return epTrain(f, cfg, f.world, "in-process", step, true)
}

// epMetrics are the global (all ranks) values of one step.
type epMetrics struct {
	loss, aux float64
	load      []float64 // share of all routed slots that each rank's experts received
}

// epRank is one rank's training graph.
type epRank struct {
	layer           *ep.Layer
	x, target       *G.Node
	lossV, auxV, cV G.Value
	machine         G.VM
	solver          G.Solver
	tr              ep.Transport
	slots           int // W*T*K routed slots per step over all ranks
}

func newEPRank(cfg moe.Config, tokens int, tr ep.Transport, opts ep.Options, lr float64) (*epRank, error) {
	g := G.NewGraph()
	rk := &epRank{tr: tr, slots: tr.World() * tokens * cfg.TopK}
	var err error
	if rk.layer, err = ep.NewLayer(g, cfg, tr, opts); err != nil {
		return nil, err
	}
	rk.x = G.NewMatrix(g, cfg.Dtype, G.WithShape(tokens, cfg.Hidden), G.WithName("x"))
	rk.target = G.NewMatrix(g, cfg.Dtype, G.WithShape(tokens, cfg.Hidden), G.WithName("target"))
	out, err := rk.layer.Forward(rk.x)
	if err != nil {
		return nil, err
	}
	diff, err := G.Sub(out.Y, rk.target)
	if err != nil {
		return nil, err
	}
	sq, err := G.Square(diff)
	if err != nil {
		return nil, err
	}
	mean, err := G.Mean(sq)
	if err != nil {
		return nil, err
	}
	// This rank's share of the mean over all W*T tokens: the ranks' costs add up to the single-rank
	// objective, which is what the exchanges' gradients compute.
	share, err := G.Mul(mean, G.NewConstant(scalarOf(cfg.Dtype, rk.layer.LossScale())))
	if err != nil {
		return nil, err
	}
	cost := share
	rl, err := out.RouterLoss()
	if err != nil {
		return nil, err
	}
	if rl != nil {
		if cost, err = G.Add(share, rl); err != nil {
			return nil, err
		}
		G.Read(rl, &rk.auxV)
	}
	G.Read(share, &rk.lossV)
	G.Read(out.Counts, &rk.cV)
	if _, err := G.Grad(cost, rk.layer.Params()...); err != nil {
		return nil, fmt.Errorf("grad: %w", err)
	}
	rk.machine = G.NewTapeMachine(g)
	if rk.solver, err = ops.NewAdam(ops.DefaultAdam(lr)); err != nil {
		return nil, err
	}
	return rk, nil
}

func scalarOf(dt tensor.Dtype, v float64) any {
	if dt == tensor.Float32 {
		return float32(v)
	}
	return v
}

func (rk *epRank) close() { rk.machine.Close() }

// step runs forward and backward on this rank's rows; with train it sums the router gradient over the
// ranks and applies Adam. The loss and aux values are summed over ranks (collectives: every rank calls
// step with the same train flag).
func (rk *epRank) step(x, y *tensor.Dense, train bool) (epMetrics, error) {
	rk.machine.Reset()
	if err := G.Let(rk.x, x); err != nil {
		return epMetrics{}, err
	}
	if err := G.Let(rk.target, y); err != nil {
		return epMetrics{}, err
	}
	if err := rk.machine.RunAll(); err != nil {
		return epMetrics{}, ep.Cause(err)
	}
	if train {
		if err := rk.layer.AllReduceRouterGrad(); err != nil {
			return epMetrics{}, err
		}
		if err := rk.solver.Step(G.NodesToValueGrads(rk.layer.Params())); err != nil {
			return epMetrics{}, fmt.Errorf("solver: %w", err)
		}
	}
	loss, err := ops.Float(rk.lossV)
	if err != nil {
		return epMetrics{}, err
	}
	var aux float64
	if rk.auxV != nil {
		if aux, err = ops.Float(rk.auxV); err != nil {
			return epMetrics{}, err
		}
	}
	sum := tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{loss, aux}))
	if err := rk.tr.AllReduceSum(sum); err != nil {
		return epMetrics{}, err
	}
	counts, ok := rk.cV.Data().([]int32)
	if !ok {
		return epMetrics{}, fmt.Errorf("counts hold %T", rk.cV.Data())
	}
	loads, err := ep.RankLoads(counts, rk.tr.World())
	if err != nil {
		return epMetrics{}, err
	}
	m := epMetrics{loss: sum.Data().([]float64)[0], aux: sum.Data().([]float64)[1], load: make([]float64, len(loads))}
	for q, n := range loads {
		m.load[q] = float64(n) / float64(rk.slots)
	}
	return m, nil
}

// epSlice returns rank r's rows of a global batch of world ranks.
func epSlice(t *tensor.Dense, r, world int) *tensor.Dense {
	rows, h := t.Shape()[0]/world, t.Shape()[1]
	switch d := t.Data().(type) {
	case []float32:
		return tensor.New(tensor.WithShape(rows, h), tensor.WithBacking(append([]float32(nil), d[r*rows*h:(r+1)*rows*h]...)))
	case []float64:
		return tensor.New(tensor.WithShape(rows, h), tensor.WithBacking(append([]float64(nil), d[r*rows*h:(r+1)*rows*h]...)))
	}
	panic(fmt.Sprintf("epSlice: %v", t.Dtype()))
}

// epTrain is the training loop shared by both transports: every process draws the same global batches
// and teacher targets; step runs this process's rank(s). report is true on the process that prints.
func epTrain(f epFlags, cfg moe.Config, world int, transport string, step func(x, y *tensor.Dense, train bool) (epMetrics, error), report bool) error {
	start := time.Now()
	global := world * f.tokens
	teacher, err := newTeacher(cfg, global)
	if err != nil {
		return err
	}
	defer teacher.runner.Close()
	var ref *student
	if f.check && report {
		if ref, err = newStudent(cfg, global, f.lr); err != nil {
			return err
		}
		defer ref.close()
	}
	rng := rand.New(rand.NewPCG(f.seed, 7))
	evalX := randomBatch(rng, cfg.Dtype, global, cfg.Hidden)
	evalY, err := teacher.forward(evalX)
	if err != nil {
		return err
	}
	initial, err := step(evalX, evalY, false)
	if err != nil {
		return err
	}
	quiet := f.asJSON || !report
	if !quiet {
		fmt.Printf("expert-parallel training (%s, %d ranks, %d experts each): %d-expert top-%d MoE layer (H=%d, F=%d), %d tokens per rank, %v; eval loss %.5f\n",
			transport, world, cfg.Experts/world, cfg.Experts, cfg.TopK, cfg.Hidden, cfg.FFN, f.tokens, cfg.Dtype, initial.loss)
	}
	losses := make([]float64, 0, f.steps)
	worst := 0.0
	var last epMetrics
	for s := 1; s <= f.steps; s++ {
		x := randomBatch(rng, cfg.Dtype, global, cfg.Hidden)
		y, err := teacher.forward(x)
		if err != nil {
			return err
		}
		m, err := step(x, y, true)
		if err != nil {
			return fmt.Errorf("step %d: %w", s, err)
		}
		last = m
		losses = append(losses, m.loss)
		line := fmt.Sprintf("step %4d  loss %.6f  aux %.4f  rank load %s", s, m.loss, m.aux, fmtLoad(m.load))
		if ref != nil {
			rm, err := ref.step(x, y, true)
			if err != nil {
				return fmt.Errorf("single-rank step %d: %w", s, err)
			}
			d := math.Abs(m.loss-rm.loss) / math.Max(math.Abs(rm.loss), 1e-30)
			worst = math.Max(worst, d)
			line += fmt.Sprintf("  single-rank loss %.6f (rel diff %.2g)", rm.loss, d)
		}
		if !quiet && (s%f.every == 0 || s == 1 || s == f.steps) {
			fmt.Println(line)
		}
	}
	final, err := step(evalX, evalY, false)
	if err != nil {
		return err
	}
	sum := epSummary{World: world, Transport: transport, InitialLoss: initial.loss, FinalLoss: final.loss, Losses: losses,
		RankLoad: last.load, Seconds: time.Since(start).Seconds(), TokensPerRank: f.tokens}
	if ref != nil {
		sum.CheckMaxRel = &worst
	}
	if report {
		if f.asJSON {
			if err := json.NewEncoder(os.Stdout).Encode(sum); err != nil {
				return err
			}
		} else {
			fmt.Printf("eval loss %.5f -> %.5f (%.1f%% of initial) in %d steps, %.1fs; rank load %s\n",
				initial.loss, final.loss, 100*final.loss/initial.loss, f.steps, sum.Seconds, fmtLoad(last.load))
		}
	}
	if ref != nil {
		tol := 1e-3
		if cfg.Dtype == tensor.Float64 {
			tol = 1e-9
		}
		if !f.asJSON {
			fmt.Printf("check: loss curve of %d ranks vs the single-rank layer: max relative difference %.3g (tolerance %g)\n", world, worst, tol)
		}
		if worst > tol {
			return fmt.Errorf("the expert-parallel loss curve differs from the single-rank one by %.3g (> %g)", worst, tol)
		}
	}
	return nil
}
