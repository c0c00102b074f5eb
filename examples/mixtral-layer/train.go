package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/hf"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

type trainFlags struct {
	tokens, hidden, ffn, experts, topK int
	steps, every                       int
	lr, aux, z                         float64
	seed                               uint64
	scoring, dtype, plot, save, device string
	asJSON                             bool
	route                              routeFlags
}

// routeFlags are the routing-policy flags of train and ep (see moe.Config).
type routeFlags struct {
	renormalize           bool
	groups, topKGroups    int
	groupMask, dropPolicy string
	scale, capacityFactor float64
	capacity              int
	biasRate              float64
}

func (r *routeFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&r.renormalize, "renormalize", true, "divide the k weights by their sum (softmax-topk, sigmoid; topk-softmax always sums to 1)")
	fs.IntVar(&r.groups, "groups", 0, "sigmoid: experts in this many groups (n_group; 0: none)")
	fs.IntVar(&r.topKGroups, "topk-groups", 0, "sigmoid: groups kept per token (topk_group)")
	fs.StringVar(&r.groupMask, "group-mask", "exclude", "sigmoid: dropped groups' experts are never chosen (exclude: transformers 5.17, DeepSeek) or score 0 (zero: earlier transformers releases)")
	fs.Float64Var(&r.scale, "scale", 1, "routing weights are multiplied by this (routed_scaling_factor)")
	fs.IntVar(&r.capacity, "capacity", 0, "slots per expert (0: dropless)")
	fs.Float64Var(&r.capacityFactor, "capacity-factor", 0, "capacity = ceil(f * T*K / E) (0: dropless)")
	fs.StringVar(&r.dropPolicy, "drop-policy", "position", "over capacity, keep the first slots (position) or the largest weights (probs)")
	fs.Float64Var(&r.biasRate, "bias-rate", 0, "sigmoid: aux-loss-free balancing, the selection bias moves by this after each step (0: no bias)")
}

// apply sets the routing fields of cfg from the flags.
func (r *routeFlags) apply(cfg *moe.Config) error {
	cfg.Renormalize = r.renormalize
	cfg.Groups, cfg.TopKGroups = r.groups, r.topKGroups
	var err error
	if cfg.GroupMask, err = ops.ParseGroupMask(r.groupMask); err != nil {
		return fmt.Errorf("-group-mask: %w", err)
	}
	if r.scale != 1 {
		cfg.RouteScale = r.scale
	}
	cfg.Capacity, cfg.CapacityFactor, cfg.BiasRate = r.capacity, r.capacityFactor, r.biasRate
	cfg.DropPolicy, err = ops.ParseDropPolicy(r.dropPolicy)
	return err
}

// trainSummary is what -json prints. final_aux_loss is the load-balancing loss alone (times its
// coefficient), final_z_loss the router z-loss (times its coefficient).
type trainSummary struct {
	InitialLoss float64   `json:"initial_loss"`
	FinalLoss   float64   `json:"final_loss"`
	FinalAux    float64   `json:"final_aux_loss"`
	FinalZ      float64   `json:"final_z_loss"`
	Steps       int       `json:"steps"`
	ExpertLoad  []float64 `json:"expert_load"`
	Routing     any       `json:"routing"`
	Seconds     float64   `json:"seconds"`
	Config      any       `json:"config"`
}

// runTrain implements the train subcommand (the default); usage and flag errors go to stderr.
func runTrain(args []string, stderr io.Writer) error {
	var f trainFlags
	fs := flag.NewFlagSet("mixtral-layer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), subcommands, "\nflags of train:\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&f.tokens, "tokens", 256, "tokens per batch (T)")
	fs.IntVar(&f.experts, "experts", 8, "number of experts (E)")
	fs.IntVar(&f.steps, "steps", 600, "training steps")
	fs.IntVar(&f.every, "every", 50, "print progress every N steps")
	f.registerLayer(fs)
	fs.StringVar(&f.plot, "plot", "", "write a PNG of loss and per-expert load to this path")
	fs.StringVar(&f.save, "save", "", "write the trained weights to this safetensors file (Hugging Face Mixtral names, F32)")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON summary at the end instead of progress lines")
	fs.StringVar(&f.device, "device", "cpu", "where the layer trains: cpu, or cuda (a binary built with -tags "+cudaTag+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (subcommands: train, forward, grad; see mixtral-layer -h)", fs.Arg(0))
	}
	cfg, err := f.config()
	if err != nil {
		return err
	}
	return train(f, cfg)
}

// registerLayer adds the flags of the layer and its training that train and ep share.
func (f *trainFlags) registerLayer(fs *flag.FlagSet) {
	fs.IntVar(&f.hidden, "hidden", 32, "hidden size (H)")
	fs.IntVar(&f.ffn, "ffn", 64, "expert FFN size (F)")
	fs.IntVar(&f.topK, "top-k", 2, "experts per token (K)")
	fs.Float64Var(&f.lr, "lr", 0.01, "Adam learning rate")
	fs.Float64Var(&f.aux, "aux-coef", 0.01, "load-balancing loss coefficient")
	fs.Float64Var(&f.z, "z-coef", 0.001, "router z-loss coefficient")
	fs.Uint64Var(&f.seed, "seed", 1, "seed for data, teacher and student")
	fs.StringVar(&f.scoring, "scoring", "softmax-topk", "softmax-topk (Mixtral), topk-softmax or sigmoid (DeepSeek-V3)")
	f.route.register(fs)
	fs.StringVar(&f.dtype, "dtype", "float32", "float32, float64, or bfloat16 (mixed precision: float32 master weights, data and losses; bfloat16 experts)")
}

// config checks the parsed flags and returns the layer's configuration on the -device backend.
func (f trainFlags) config() (moe.Config, error) {
	if f.steps < 1 || f.tokens < 1 || f.every < 1 {
		return moe.Config{}, fmt.Errorf("steps, tokens and every must be >= 1")
	}
	scoring, err := ops.ParseScoring(f.scoring)
	if err != nil {
		return moe.Config{}, err
	}
	dt := tensor.Float32
	switch f.dtype {
	case "float32":
	case "float64":
		dt = tensor.Float64
	case "bfloat16", "bf16":
		dt = ops.BFloat16
	default:
		return moe.Config{}, fmt.Errorf("unknown -dtype %q (want float32, float64 or bfloat16)", f.dtype)
	}
	backend, err := backendNamed(f.device)
	if err != nil {
		return moe.Config{}, err
	}
	cfg := moe.Config{Hidden: f.hidden, FFN: f.ffn, Experts: f.experts, TopK: f.topK, Scoring: scoring,
		AuxLossCoef: f.aux, ZLossCoef: f.z, Seed: f.seed, Dtype: dt, Backend: backend}
	if err := f.route.apply(&cfg); err != nil {
		return moe.Config{}, err
	}
	return cfg, cfg.Validate()
}

func train(f trainFlags, cfg moe.Config) error {
	start := time.Now()
	teacher, err := newTeacher(cfg, f.tokens)
	if err != nil {
		return err
	}
	defer teacher.runner.Close()
	st, err := newStudent(cfg, f.tokens, f.lr)
	if err != nil {
		return err
	}
	defer st.close()

	rng := rand.New(rand.NewPCG(f.seed, 7))
	evalX := randomBatch(rng, dataDtype(cfg), f.tokens, cfg.Hidden)
	evalY, err := teacher.forward(evalX)
	if err != nil {
		return err
	}
	initial, err := st.evaluate(evalX, evalY)
	if err != nil {
		return err
	}

	var prog *progress
	if !f.asJSON {
		fmt.Printf("training a %d-expert top-%d MoE layer (H=%d, F=%d, T=%d, %v) to match a teacher layer; eval loss %.5f\n",
			cfg.Experts, cfg.TopK, cfg.Hidden, cfg.FFN, f.tokens, cfg.Dtype, initial.loss)
		prog = newProgress(os.Stdout, f.steps)
	}
	losses := make([]float64, 0, f.steps)
	auxes := make([]float64, 0, f.steps)
	zs := make([]float64, 0, f.steps)
	loads := make([][]float64, 0, f.steps)
	for step := 1; step <= f.steps; step++ {
		x := randomBatch(rng, dataDtype(cfg), f.tokens, cfg.Hidden)
		y, err := teacher.forward(x)
		if err != nil {
			return err
		}
		report := prog != nil && (step%f.every == 0 || step == 1 || step == f.steps)
		// metrics are a host read (a device waits for the step): only when they are shown or plotted
		m, err := st.step(x, y, report || f.plot != "")
		if err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		if f.plot != "" {
			losses, auxes, zs, loads = append(losses, m.loss), append(auxes, m.aux), append(zs, m.z), append(loads, m.load)
		}
		if report {
			prog.Update(step, fmt.Sprintf("loss %.5f aux %.4f z %.4f | %v", m.loss, m.aux, m.z, m.stats))
		}
	}
	if prog != nil {
		prog.Finish()
	}
	final, err := st.evaluate(evalX, evalY)
	if err != nil {
		return err
	}
	if f.plot != "" {
		if cfg.AuxLossCoef == 0 {
			auxes = nil
		}
		if cfg.ZLossCoef == 0 {
			zs = nil
		}
		if err := writeTrainingPlot(f.plot, losses, auxes, zs, loads); err != nil {
			return err
		}
	}
	if f.save != "" {
		w, err := st.layer.HostWeights()
		if err != nil {
			return err
		}
		if err := hf.SaveMixtral(f.save, hf.LayerWeights{Router: w.Router, W1: w.W1, W3: w.W3, W2: w.W2}, "", hf.F32); err != nil {
			return fmt.Errorf("save weights: %w", err)
		}
	}
	sum := trainSummary{InitialLoss: initial.loss, FinalLoss: final.loss, FinalAux: final.aux, FinalZ: final.z, Steps: f.steps,
		ExpertLoad: final.load, Seconds: time.Since(start).Seconds(), Config: map[string]any{
			"tokens": f.tokens, "hidden": cfg.Hidden, "ffn": cfg.FFN, "experts": cfg.Experts, "top_k": cfg.TopK,
			"scoring": cfg.Scoring.String(), "dtype": cfg.Dtype.String(), "lr": f.lr, "aux_coef": cfg.AuxLossCoef,
			"z_coef": cfg.ZLossCoef, "seed": f.seed, "device": f.device, "routing": cfg.Route().String(), "bias_rate": cfg.BiasRate},
		Routing: routingJSON(final.stats)}
	if f.asJSON {
		enc := json.NewEncoder(os.Stdout)
		return enc.Encode(sum)
	}
	fmt.Printf("eval loss %.5f -> %.5f (%.1f%% of initial) in %d steps, %.1fs; routing %v\n",
		initial.loss, final.loss, 100*final.loss/initial.loss, f.steps, sum.Seconds, final.stats)
	if f.plot != "" {
		fmt.Printf("plot written to %s\n", f.plot)
	}
	if f.save != "" {
		fmt.Printf("weights written to %s (load them with: mixtral-layer forward -weights %s ...)\n", f.save, f.save)
	}
	return nil
}

// routingJSON is the routing diagnostics of the summary.
func routingJSON(s ops.RoutingStats) map[string]any {
	return map[string]any{"expert_counts": s.Counts, "max_over_mean_load": s.MaxOverMean, "load_cv": s.CV,
		"dropped_slots": s.Dropped, "mean_router_entropy": s.Entropy}
}

func fmtLoad(load []float64) string {
	parts := make([]string, len(load))
	for i, v := range load {
		parts[i] = fmt.Sprintf("%.2f", v)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
