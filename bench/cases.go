package main

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// shape is the problem size of one benchmark.
type shape struct {
	Tokens, Hidden, Experts, TopK int
	FFN                           int  // grouped matmul output width (0: Hidden)
	Skew                          bool // half the tokens route to expert 0, the other half never do
	Dtype                         tensor.Dtype
	Scoring                       ops.Scoring
	Renormalize                   bool
	Seed                          uint64
	// Routing policies (ops.RouteConfig): Sigmoid routes with a random selection bias; a capacity
	// makes every plan of the workloads a capacity plan.
	Groups, TopKGroups int
	GroupMask          ops.GroupMask
	Scale              float64
	Capacity           int
	CapacityFactor     float64
	DropPolicy         ops.DropPolicy
}

func (s shape) validate() error {
	switch {
	case s.Tokens < 1 || s.Hidden < 1 || s.Experts < 1:
		return fmt.Errorf("tokens, hidden and experts must be >= 1 (got %d, %d, %d)", s.Tokens, s.Hidden, s.Experts)
	case s.TopK < 1 || s.TopK > s.Experts:
		return fmt.Errorf("top-k must satisfy 1 <= k <= experts (got k=%d, E=%d)", s.TopK, s.Experts)
	case s.FFN < 0:
		return fmt.Errorf("ffn must be >= 0 (got %d)", s.FFN)
	case s.Dtype != tensor.Float32 && s.Dtype != tensor.Float64 && s.Dtype != ops.BFloat16:
		return fmt.Errorf("dtype must be float32, float64 or bfloat16 (got %v)", s.Dtype)
	}
	_, err := s.route().CapacityFor(s.Tokens, s.Experts)
	return err
}

func (s shape) ffn() int {
	if s.FFN > 0 {
		return s.FFN
	}
	return s.Hidden
}

func (s shape) route() ops.RouteConfig {
	return ops.RouteConfig{K: s.TopK, Scoring: s.Scoring, Renormalize: s.Renormalize, Groups: s.Groups, TopKGroups: s.TopKGroups,
		GroupMask: s.GroupMask, Scale: s.Scale, Capacity: s.Capacity, CapacityFactor: s.CapacityFactor, DropPolicy: s.DropPolicy}
}

// capacity is the slots per expert of the workloads' plans (0: dropless).
func (s shape) capacity() int {
	c, _ := s.route().CapacityFor(s.Tokens, s.Experts) // validated by validate
	return c
}

// workload is one prepared benchmark: a call to time and the bytes it must move at the least.
type workload struct {
	run func() error
	// read and written are the minimal byte counts of ../shared/notes/moe-routing.md (every input
	// element read once, every output element written once; plan and index reads are not counted for
	// dispatch/combine, as in the note).
	read, written int64
	// flops is the floating-point work of a matmul (0 for memory-bound ops).
	flops int64
	// copyRows and copyMinRows shape the copy baseline like the op's main output: copyRows rows,
	// split over goroutines as the kernel splits them (copyMinRows = the kernel's minimum rows per
	// goroutine). The baseline copies `written` bytes in total, or copyBytes when set (reductions,
	// whose output is too small to give a meaningful copy).
	copyRows, copyMinRows int
	copyBytes             int64
	// diag: the op routes, so the report carries the routing diagnostics of the env's routing.
	diag bool
}

// opSpec describes one -op value.
type opSpec struct {
	name, help string
	prepare    func(e *env) (*workload, error)
}

// opSpecs is every op the CLI and the testing.B benchmarks know, by -op name. Device files may add
// device-only ops from their init functions.
var opSpecs = map[string]opSpec{}

// portableOps are the ops registered by this file, which every backend runs. It is filled at the end
// of this file's init, which runs before the init of device_*.go files (Go runs a package's init
// functions in file name order).
var portableOps []string

func addOp(name, help string, prepare func(e *env) (*workload, error)) {
	opSpecs[name] = opSpec{name: name, help: help, prepare: prepare}
}

// opNames lists the ops, sorted.
func opNames() []string {
	names := make([]string, 0, len(opSpecs))
	for n := range opSpecs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// lookupOp resolves an op name; backward selects its "-bwd" variant.
func lookupOp(name string, backward bool) (opSpec, error) {
	if backward && !strings.HasSuffix(name, "-bwd") {
		name += "-bwd"
	}
	s, ok := opSpecs[name]
	if !ok {
		return opSpec{}, fmt.Errorf("unknown op %q (have %s)", name, strings.Join(opNames(), ", "))
	}
	return s, nil
}

// minRowsPerWorker mirrors the CPU kernels' split: a goroutine gets at least ~32K elements.
func minRowsPerWorker(width int) int { return max(1, (32<<10)/max(width, 1)) }

func init() {
	defer func() { portableOps = append(portableOps, opNames()...) }()
	addOp("route", "router logits [T,E] -> top-k indices [T,k] int32 and weights [T,k]", prepareRoute)
	addOp("route-bwd", "routing weight gradient [T,k] -> logits gradient [T,E]", prepareRouteBwd)
	addOp("plan", "indices [T,k] -> routing plan (counts, offsets, row maps)", preparePlan)
	addOp("dispatch", "x [T,H] -> expert-major packed [T*k,H]", prepareDispatch)
	addOp("dispatch-bwd", "packed gradient [T*k,H] -> dx [T,H] (unweighted combine)", prepareDispatchBwd)
	addOp("combine", "expert outputs [T*k,H] and weights [T,k] -> y [T,H]", prepareCombine)
	addOp("combine-bwd", "dy [T,H] -> d expert outputs [T*k,H] and d weights [T,k] (both kernels)", prepareCombineBwd)
	addOp("combine-bwd-x", "dy [T,H] -> d expert outputs [T*k,H] only (weighted dispatch)", prepareCombineBwdX)
	addOp("combine-bwd-w", "dy [T,H], expert outputs [T*k,H] -> d weights [T,k] only", prepareCombineBwdW)
	addOp("groupedmm", "packed [T*k,H] x W [E,H,F] -> [T*k,F]", prepareGroupedMM)
	addOp("groupedmm-bwd", "d out [T*k,F] -> d packed [T*k,H] and dW [E,H,F] (both products)", prepareGroupedMMBwd)
	addOp("groupedmm-bwd-x", "d out [T*k,F] -> d packed [T*k,H] = d out · W[e]ᵀ only", prepareGroupedMMBwdX)
	addOp("groupedmm-bwd-w", "packed [T*k,H], d out [T*k,F] -> dW[e] = packed_eᵀ · d out_e only", prepareGroupedMMBwdW)
	addOp("e2e", "route + plan + dispatch + combine (identity experts)", prepareE2E)
	addOp("e2e-bwd", "combine-bwd + route-bwd + dispatch-bwd (identity experts)", prepareE2EBwd)
}

// env holds the inputs of one shape on one device; tensors are made on first use and shared by
// the ops prepared from it. Float inputs are uniform in [-1, 1) (logits: [-4, 4)); the routing is
// the real one computed from the logits by the device's own kernels.
type env struct {
	s   shape
	dev device
	b   ops.Backend
	rng *rand.Rand

	logits, bias, idx, w, plan *tensor.Dense
	tensors                    map[string]*tensor.Dense
	owned                      []*tensor.Dense // everything allocated, for Close
}

func newEnv(dev device, s shape) (*env, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &env{s: s, dev: dev, b: dev.Backend(), rng: rand.New(rand.NewPCG(s.Seed, 0x5eed)),
		tensors: map[string]*tensor.Dense{}}, nil
}

// useDevice makes the env's ops run on dev, a handle on the same device memory as the env's (the
// CUDA device with another GEMM configuration): the tensors made so far stay valid.
func (e *env) useDevice(dev device) { e.dev, e.b = dev, dev.Backend() }

// es is the element size of the float dtype in bytes.
func (e *env) es() int64 { return int64(e.s.Dtype.Size()) }

// wdt is the dtype of router logits, routing weights and their gradients: the float dtype, or float32
// for bfloat16 rows (mixed precision).
func (e *env) wdt() tensor.Dtype {
	if e.s.Dtype == ops.BFloat16 {
		return tensor.Float32
	}
	return e.s.Dtype
}

// gradWdt is the dtype of expert-weight gradients: float32 master-weight gradients for bfloat16 rows.
func (e *env) gradWdt() tensor.Dtype { return e.wdt() }

// random returns a device tensor of the env's dtype filled with uniform values in [-scale, scale).
func (e *env) random(scale float64, shape ...int) (*tensor.Dense, error) {
	return e.randomAs(e.s.Dtype, scale, shape...)
}

// randomAs is random with an explicit dtype (float32, float64 or bfloat16).
func (e *env) randomAs(dt tensor.Dtype, scale float64, shape ...int) (*tensor.Dense, error) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	var host *tensor.Dense
	switch dt {
	case ops.BFloat16:
		v := make([]ops.BF16, n)
		for i := range v {
			v[i] = ops.BF16FromFloat64(scale * (2*e.rng.Float64() - 1))
		}
		host = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
	case tensor.Float32:
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(scale * (2*e.rng.Float64() - 1))
		}
		host = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
	default:
		v := make([]float64, n)
		for i := range v {
			v[i] = scale * (2*e.rng.Float64() - 1)
		}
		host = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
	}
	t, err := e.b.FromHost(host)
	if err == nil {
		e.owned = append(e.owned, t)
	}
	return t, err
}

// alloc is Backend.New, remembering the tensor for Close.
func (e *env) alloc(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	t, err := e.b.New(dt, shape...)
	if err == nil {
		e.owned = append(e.owned, t)
	}
	return t, err
}

// freer is implemented by backends whose memory is returned explicitly (the CUDA backend's Free).
type freer interface{ Free(t *tensor.Dense) error }

// Close returns every tensor the env made to its backend when the backend frees explicitly; host
// tensors are left to the garbage collector.
func (e *env) Close() error {
	f, ok := e.b.(freer)
	var first error
	for _, t := range e.owned {
		if ok {
			if err := f.Free(t); err != nil && first == nil {
				first = err
			}
		}
	}
	e.owned, e.tensors, e.logits, e.bias, e.idx, e.w, e.plan = nil, map[string]*tensor.Dense{}, nil, nil, nil, nil, nil
	return first
}

// named returns the random tensor called name, creating it with the given shape on first use.
func (e *env) named(name string, shape ...int) (*tensor.Dense, error) {
	if t, ok := e.tensors[name]; ok {
		return t, nil
	}
	t, err := e.random(1, shape...)
	if err != nil {
		return nil, fmt.Errorf("input %s: %w", name, err)
	}
	e.tensors[name] = t
	return t, nil
}

// routing computes logits, indices, weights and plan once with the device's kernels.
func (e *env) routing() error {
	if e.plan != nil {
		return nil
	}
	s := e.s
	var err error
	if s.Skew {
		e.logits, err = e.skewedLogits()
	} else {
		e.logits, err = e.randomAs(e.wdt(), 4, s.Tokens, s.Experts)
	}
	if err != nil {
		return fmt.Errorf("logits: %w", err)
	}
	if s.Scoring == ops.Sigmoid {
		if e.bias, err = e.randomAs(e.wdt(), 0.05, s.Experts); err != nil {
			return fmt.Errorf("bias: %w", err)
		}
	}
	if e.idx, err = e.alloc(tensor.Int32, s.Tokens, s.TopK); err != nil {
		return err
	}
	if e.w, err = e.alloc(e.wdt(), s.Tokens, s.TopK); err != nil {
		return err
	}
	if e.plan, err = e.alloc(tensor.Int32, ops.PlanLen(s.Tokens, s.TopK, s.Experts)); err != nil {
		return err
	}
	if err := e.route(e.logits, e.idx, e.w); err != nil {
		return fmt.Errorf("route: %w", err)
	}
	if err := e.makePlan(e.idx, e.w, e.plan); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	return nil
}

// makePlan builds the plan of idx (a capacity plan when the shape has a capacity; the probs policy
// ranks by w).
func (e *env) makePlan(idx, w, plan *tensor.Dense) error {
	c := e.s.capacity()
	if c == 0 {
		return e.b.Plan(idx, e.s.Experts, plan)
	}
	if e.s.DropPolicy != ops.DropProbs {
		w = nil
	}
	return e.b.CapacityPlan(idx, w, e.s.Experts, c, e.s.DropPolicy, plan)
}

// route writes indices and weights of logits (with the env's bias under sigmoid scoring) exactly as a
// graph's route node computes them (ops.RouteInto: the fused kernel on the CUDA backend), so the route
// and e2e figures time what graphs run.
func (e *env) route(logits, idx, w *tensor.Dense) error {
	return ops.RouteInto(e.b, logits, e.bias, e.s.route(), idx, w)
}

// diagnostics returns the routing diagnostics of the env's routing (computed on the device, read on
// the host).
func (e *env) diagnostics() (ops.RoutingStats, error) {
	if err := e.routing(); err != nil {
		return ops.RoutingStats{}, err
	}
	st, err := e.alloc(tensor.Float64, ops.RouteStatsLen(e.s.Experts))
	if err != nil {
		return ops.RoutingStats{}, err
	}
	if err := e.b.RouteStats(e.logits, e.plan, e.s.route(), st); err != nil {
		return ops.RoutingStats{}, err
	}
	return ops.ReadRoutingStats(st, e.s.Tokens, e.s.TopK)
}

// out allocates an output tensor of the env's float dtype.
func (e *env) out(shape ...int) (*tensor.Dense, error) { return e.alloc(e.s.Dtype, shape...) }

func prepareRoute(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s := e.s
	idx, err := e.alloc(tensor.Int32, s.Tokens, s.TopK)
	if err != nil {
		return nil, err
	}
	w, err := e.alloc(e.wdt(), s.Tokens, s.TopK)
	if err != nil {
		return nil, err
	}
	wl := routeCost(e)
	wl.run = func() error { return e.route(e.logits, idx, w) }
	wl.diag = true
	return wl, nil
}

func prepareRouteBwd(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s, cfg := e.s, e.s.route()
	dw, err := e.randomAs(e.wdt(), 1, s.Tokens, s.TopK)
	if err != nil {
		return nil, err
	}
	dlogits, err := e.alloc(e.wdt(), s.Tokens, s.Experts)
	if err != nil {
		return nil, err
	}
	wl := routeBwdCost(e)
	wl.run = func() error { return e.b.RouteWeightsGrad(e.logits, e.idx, dw, cfg, dlogits) }
	return wl, nil
}

func preparePlan(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s := e.s
	plan, err := e.alloc(tensor.Int32, ops.PlanLen(s.Tokens, s.TopK, s.Experts))
	if err != nil {
		return nil, err
	}
	wl := planCost(e)
	wl.run = func() error { return e.makePlan(e.idx, e.w, plan) }
	wl.diag = true
	return wl, nil
}

func prepareDispatch(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s := e.s
	x, err := e.named("x", s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	packed, err := e.out(s.Tokens*s.TopK, s.Hidden)
	if err != nil {
		return nil, err
	}
	wl := dispatchCost(e)
	wl.run = func() error { return e.b.Dispatch(x, nil, e.plan, packed) }
	return wl, nil
}

func prepareDispatchBwd(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s := e.s
	dpacked, err := e.named("dpacked", s.Tokens*s.TopK, s.Hidden)
	if err != nil {
		return nil, err
	}
	dx, err := e.out(s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	wl := dispatchBwdCost(e)
	wl.run = func() error { return e.b.Combine(dpacked, nil, e.plan, dx) }
	return wl, nil
}

func prepareCombine(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s := e.s
	ye, err := e.named("ye", s.Tokens*s.TopK, s.Hidden)
	if err != nil {
		return nil, err
	}
	y, err := e.out(s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	wl := combineCost(e)
	wl.run = func() error { return e.b.Combine(ye, e.w, e.plan, y) }
	return wl, nil
}

// combineBwdBufs makes the combine-backward operands: dy, expert outputs, and the two gradients.
func combineBwdBufs(e *env) (dy, ye, dye, dw *tensor.Dense, err error) {
	if err := e.routing(); err != nil {
		return nil, nil, nil, nil, err
	}
	s := e.s
	if dy, err = e.named("dy", s.Tokens, s.Hidden); err != nil {
		return
	}
	if ye, err = e.named("ye", s.Tokens*s.TopK, s.Hidden); err != nil {
		return
	}
	if dye, err = e.out(s.Tokens*s.TopK, s.Hidden); err != nil {
		return
	}
	dw, err = e.alloc(e.wdt(), s.Tokens, s.TopK)
	return
}

// combineBwdParts prepares the two kernels of the combine backward on shared inputs.
func combineBwdParts(e *env) (dxRun, dwRun func() error, err error) {
	dy, ye, dye, dw, err := combineBwdBufs(e)
	if err != nil {
		return nil, nil, err
	}
	dxRun = func() error { return e.b.Dispatch(dy, e.w, e.plan, dye) }
	dwRun = func() error { return e.b.CombineGradWeights(dy, ye, e.plan, dw) }
	return dxRun, dwRun, nil
}

// prepareCombineBwd times what the graph's combine gradient runs: the backend's fused kernel when it
// has one (ops.CombineBackwarder), else the two separate kernels.
func prepareCombineBwd(e *env) (*workload, error) {
	dy, ye, dye, dw, err := combineBwdBufs(e)
	if err != nil {
		return nil, err
	}
	wl := combineBwdCost(e)
	wl.run = combineBackward(e, dy, ye, dye, dw)
	return wl, nil
}

// combineBackward runs the fused kernel when the backend has one, else both parts in sequence.
func combineBackward(e *env, dy, ye, dye, dw *tensor.Dense) func() error {
	if fused, ok := e.b.(ops.CombineBackwarder); ok {
		return func() error { return fused.CombineBackward(dy, ye, e.w, e.plan, dye, dw) }
	}
	return func() error {
		if err := e.b.Dispatch(dy, e.w, e.plan, dye); err != nil {
			return err
		}
		return e.b.CombineGradWeights(dy, ye, e.plan, dw)
	}
}

func prepareCombineBwdX(e *env) (*workload, error) {
	dxRun, _, err := combineBwdParts(e)
	if err != nil {
		return nil, err
	}
	wl := combineBwdXCost(e)
	wl.run = dxRun
	return wl, nil
}

func prepareCombineBwdW(e *env) (*workload, error) {
	_, dwRun, err := combineBwdParts(e)
	if err != nil {
		return nil, err
	}
	wl := combineBwdWCost(e)
	wl.run = dwRun
	return wl, nil
}

func prepareGroupedMM(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s, f := e.s, e.s.ffn()
	n := s.Tokens * s.TopK
	xp, err := e.named("packed", n, s.Hidden)
	if err != nil {
		return nil, err
	}
	w, err := e.named("W", s.Experts, s.Hidden, f)
	if err != nil {
		return nil, err
	}
	out, err := e.out(n, f)
	if err != nil {
		return nil, err
	}
	wl := groupedMMCost(e)
	wl.run = func() error { return e.b.GroupedMatMul(xp, w, e.plan, false, out) }
	return wl, nil
}

func prepareGroupedMMBwd(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s, f := e.s, e.s.ffn()
	n := s.Tokens * s.TopK
	xp, err := e.named("packed", n, s.Hidden)
	if err != nil {
		return nil, err
	}
	w, err := e.named("W", s.Experts, s.Hidden, f)
	if err != nil {
		return nil, err
	}
	dout, err := e.named("dout", n, f)
	if err != nil {
		return nil, err
	}
	dxp, err := e.out(n, s.Hidden)
	if err != nil {
		return nil, err
	}
	dW, err := e.alloc(e.gradWdt(), s.Experts, s.Hidden, f)
	if err != nil {
		return nil, err
	}
	wl := groupedMMBwdCost(e)
	wl.run = func() error {
		if err := e.b.GroupedMatMul(dout, w, e.plan, true, dxp); err != nil {
			return err
		}
		return e.b.GroupedMatMulGradW(xp, dout, e.plan, dW)
	}
	return wl, nil
}

// groupedMMOperands makes the grouped-matmul operands: packed rows, W [E,H,F], d out.
func groupedMMOperands(e *env) (xp, w, dout *tensor.Dense, err error) {
	if err = e.routing(); err != nil {
		return
	}
	s, f := e.s, e.s.ffn()
	n := s.Tokens * s.TopK
	if xp, err = e.named("packed", n, s.Hidden); err != nil {
		return
	}
	if w, err = e.named("W", s.Experts, s.Hidden, f); err != nil {
		return
	}
	dout, err = e.named("dout", n, f)
	return
}

func prepareGroupedMMBwdX(e *env) (*workload, error) {
	_, w, dout, err := groupedMMOperands(e)
	if err != nil {
		return nil, err
	}
	dxp, err := e.out(e.s.Tokens*e.s.TopK, e.s.Hidden)
	if err != nil {
		return nil, err
	}
	wl := groupedMMBwdXCost(e)
	wl.run = func() error { return e.b.GroupedMatMul(dout, w, e.plan, true, dxp) }
	return wl, nil
}

func prepareGroupedMMBwdW(e *env) (*workload, error) {
	xp, _, dout, err := groupedMMOperands(e)
	if err != nil {
		return nil, err
	}
	dW, err := e.alloc(e.gradWdt(), e.s.Experts, e.s.Hidden, e.s.ffn())
	if err != nil {
		return nil, err
	}
	wl := groupedMMBwdWCost(e)
	wl.run = func() error { return e.b.GroupedMatMulGradW(xp, dout, e.plan, dW) }
	return wl, nil
}

// skewedLogits are router logits [T,E] (uniform in [-4, 4)) where the even tokens rank expert 0 first
// and the odd tokens rank it last: expert 0 gets exactly half the tokens, the others share the rest.
func (e *env) skewedLogits() (*tensor.Dense, error) {
	s := e.s
	v := make([]float64, s.Tokens*s.Experts)
	for i := range v {
		v[i] = 8*e.rng.Float64() - 4
	}
	for t := 0; t < s.Tokens; t++ {
		if t%2 == 0 {
			v[t*s.Experts] = 100
		} else {
			v[t*s.Experts] = -100
		}
	}
	var host *tensor.Dense
	if e.wdt() == tensor.Float32 {
		f := make([]float32, len(v))
		for i, x := range v {
			f[i] = float32(x)
		}
		host = tensor.New(tensor.WithShape(s.Tokens, s.Experts), tensor.WithBacking(f))
	} else {
		host = tensor.New(tensor.WithShape(s.Tokens, s.Experts), tensor.WithBacking(v))
	}
	t, err := e.b.FromHost(host)
	if err == nil {
		e.owned = append(e.owned, t)
	}
	return t, err
}

// sequence runs several prepared workloads as one and adds up their byte counts. The copy baseline
// takes the shape of the part that writes the most.
func sequence(parts ...*workload) *workload {
	total := &workload{}
	var biggest int64 = -1
	for _, p := range parts {
		total.read += p.read
		total.written += p.written
		total.flops += p.flops
		if p.written > biggest {
			biggest = p.written
			total.copyRows, total.copyMinRows = p.copyRows, p.copyMinRows
		}
	}
	total.run = func() error {
		for _, p := range parts {
			if err := p.run(); err != nil {
				return err
			}
		}
		return nil
	}
	return total
}

// prepareE2E chains route, plan, dispatch and combine through fresh intermediates, so every call
// recomputes the routing it uses (the experts are the identity: combine reads the dispatch output).
func prepareE2E(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s := e.s
	x, err := e.named("x", s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	idx, err := e.alloc(tensor.Int32, s.Tokens, s.TopK)
	if err != nil {
		return nil, err
	}
	w, err := e.alloc(e.wdt(), s.Tokens, s.TopK)
	if err != nil {
		return nil, err
	}
	plan, err := e.alloc(tensor.Int32, ops.PlanLen(s.Tokens, s.TopK, s.Experts))
	if err != nil {
		return nil, err
	}
	packed, err := e.out(s.Tokens*s.TopK, s.Hidden)
	if err != nil {
		return nil, err
	}
	y, err := e.out(s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	route, pl, disp, comb := routeCost(e), planCost(e), dispatchCost(e), combineCost(e)
	route.run = func() error { return e.route(e.logits, idx, w) }
	pl.run = func() error { return e.makePlan(idx, w, plan) }
	disp.run = func() error { return e.b.Dispatch(x, nil, plan, packed) }
	comb.run = func() error { return e.b.Combine(packed, w, plan, y) }
	wl := sequence(route, pl, disp, comb)
	wl.diag = true
	return wl, nil
}

// prepareE2EBwd is the backward of e2e with identity experts: combine backward (d expert outputs
// and d weights), route backward from d weights, dispatch backward from d expert outputs.
func prepareE2EBwd(e *env) (*workload, error) {
	if err := e.routing(); err != nil {
		return nil, err
	}
	s, cfg := e.s, e.s.route()
	cb, rb, db := combineBwdCost(e), routeBwdCost(e), dispatchBwdCost(e)
	dy, err := e.named("dy", s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	ye, err := e.named("ye", s.Tokens*s.TopK, s.Hidden)
	if err != nil {
		return nil, err
	}
	dye, err := e.out(s.Tokens*s.TopK, s.Hidden)
	if err != nil {
		return nil, err
	}
	dw, err := e.alloc(e.wdt(), s.Tokens, s.TopK)
	if err != nil {
		return nil, err
	}
	dlogits, err := e.alloc(e.wdt(), s.Tokens, s.Experts)
	if err != nil {
		return nil, err
	}
	dx, err := e.out(s.Tokens, s.Hidden)
	if err != nil {
		return nil, err
	}
	cb.run = combineBackward(e, dy, ye, dye, dw)
	rb.run = func() error { return e.b.RouteWeightsGrad(e.logits, e.idx, dw, cfg, dlogits) }
	db.run = func() error { return e.b.Combine(dye, nil, e.plan, dx) }
	return sequence(cb, rb, db), nil
}
