package ops

import (
	"math"
	"reflect"
	"unsafe"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Feeds assigns the input tensors of one run: each node must be an input node (no op) of the graph,
// each tensor of the node's dtype and shape, in host memory or already owned by the run's backend.
type Feeds map[*G.Node]*tensor.Dense

// Runner runs a graph on one backend, one step at a time, with what a device needs done around every
// run: the graph is checked once (CheckDeviceGraph) and runs on a TapeMachine with the backend's tensor
// engine; each run opens a memory step (StepScoper), copies host feeds to the backend (FromHost), runs
// the machine, lets the caller read values, resets the machine and closes the step, which releases the
// run's device memory. On the CPU backend it is a plain TapeMachine run.
//
// Values computed by a run live only until the run ends (on a device their memory is released): read
// them inside the read callback, e.g. with Float or the backend's ToHost.
type Runner struct {
	g      *G.ExprGraph
	b      Backend
	vm     G.VM
	scoper StepScoper
	reads  []*G.Value // destinations of the graph's G.Read nodes (device runs clear them)

	callerSteps bool // WithCallerSteps
}

// RunnerOption changes how a Runner runs.
type RunnerOption func(*Runner)

// WithCallerSteps makes the runner run inside a training step that the caller opens and closes
// (StepScoper.BeginStep and EndStep on the backend, around the runs) instead of opening one per run.
// Steps do not nest, so this is how several runners share one device at the same time, e.g. the
// in-process ranks of an expert-parallel group: the caller opens one step, every rank runs, the caller
// closes it once all have finished. Without an open step, device memory of the runs is released only
// when the garbage collector finds it unreachable.
func WithCallerSteps() RunnerOption { return func(r *Runner) { r.callerSteps = true } }

// NewRunner prepares g for runs on b (nil: the CPU). On a device backend, g must pass
// CheckDeviceGraph, b must provide a tensor engine (TensorEngineProvider), and every input node that
// already holds a value (parameters) must hold a tensor of b. A graph with bfloat16 nodes must pass
// CheckBF16Graph; on the CPU it runs with HostEngine (which adds the bfloat16 gradient sums).
func NewRunner(g *G.ExprGraph, b Backend, opts ...RunnerOption) (*Runner, error) {
	return newRunner(g, g, b, opts...)
}

// newRunner runs the nodes of run, a subgraph of g (or g itself); feeds are checked against g.
func newRunner(g, run *G.ExprGraph, b Backend, opts ...RunnerOption) (*Runner, error) {
	if g == nil || run == nil {
		return nil, failf(ErrConfig, "runner: nil graph")
	}
	if b == nil {
		b = CPU()
	}
	r := &Runner{g: g, b: b}
	for _, o := range opts {
		o(r)
	}
	var vmOpts []G.VMOpt
	if hasBF16(run) {
		if err := CheckBF16Graph(run); err != nil {
			return nil, err
		}
		if b.Name() == CPU().Name() {
			vmOpts = append(vmOpts, G.WithEngine(HostEngine())) // adds the bfloat16 gradient sums
		}
	}
	if b.Name() != CPU().Name() {
		if err := CheckDeviceGraph(run); err != nil {
			return nil, err
		}
		for _, n := range run.Inputs() {
			if d, ok := n.Value().(*tensor.Dense); ok && d != nil && !b.Owns(d) {
				return nil, failf(ErrMixedBackends, "runner: input %q holds a tensor that is not in %s memory; place it with the backend's FromHost (moe layers: Config.Backend)", n.Name(), b.Name())
			}
		}
		tp, ok := b.(TensorEngineProvider)
		if !ok {
			return nil, failf(ErrUnsupported, "runner: backend %s provides no tensor engine for Gorgonia's built-in ops", b.Name())
		}
		eng, err := tp.TensorEngine()
		if err != nil {
			return nil, errorf("runner: %s tensor engine: %w", b.Name(), err)
		}
		vmOpts = append(vmOpts, G.WithEngine(eng))
		if !r.callerSteps {
			r.scoper, _ = b.(StepScoper)
		}
		r.reads = readTargets(run)
	}
	r.vm = G.NewTapeMachine(run, vmOpts...)
	if b.Name() != CPU().Name() {
		if err := CheckDeviceVM(r.vm); err != nil {
			r.vm.Close()
			return nil, err
		}
	}
	return r, nil
}

// Backend returns the backend the runner runs on.
func (r *Runner) Backend() Backend { return r.b }

// Run runs the whole graph once with feeds bound to their nodes, then calls read (when non-nil) while
// the run's values are still alive.
func (r *Runner) Run(feeds Feeds, read func() error) error { return r.run(feeds, nil, read) }

// Close releases the machine.
func (r *Runner) Close() error { return r.vm.Close() }

func (r *Runner) run(feeds Feeds, update, read func() error) (err error) {
	if r.scoper != nil {
		if err := r.scoper.BeginStep(); err != nil {
			return errorf("runner: begin step: %w", err)
		}
		defer func() {
			if e := r.scoper.EndStep(); e != nil && err == nil {
				err = errorf("runner: end step: %w", e)
			}
		}()
	}
	r.vm.Reset()
	defer r.vm.Reset() // drop the registers before the step's memory goes
	// A G.Read node copies into the value its destination already holds (Gorgonia's readInstr): on a
	// device that is the previous run's copy, released with its step. Start every run from nil, so the
	// read clones the new value (in this run's memory).
	for _, p := range r.reads {
		*p = nil
	}
	for n, v := range feeds {
		if err := r.feed(n, v); err != nil {
			return err
		}
	}
	if err := r.vm.RunAll(); err != nil {
		return MachineError(err)
	}
	if update != nil {
		if err := update(); err != nil {
			return err
		}
	}
	if read != nil {
		return read()
	}
	return nil
}

// feed checks one feed and binds it, copied to the backend when it is a host tensor.
func (r *Runner) feed(n *G.Node, v *tensor.Dense) error {
	switch {
	case n == nil || v == nil:
		return failf(ErrConfig, "runner: nil node or tensor in feeds")
	case n.Graph() != r.g || n.Op() != nil:
		return failf(ErrConfig, "runner: feed %q is not an input node of the runner's graph", n.Name())
	case v.Dtype() != n.Dtype():
		return failf(ErrDtype, "runner: feed %q: tensor dtype %v, node %v", n.Name(), v.Dtype(), n.Dtype())
	case !v.Shape().Eq(n.Shape()):
		return failf(ErrShape, "runner: feed %q: tensor shape %v, node %v", n.Name(), v.Shape(), n.Shape())
	}
	if r.b.Name() != CPU().Name() && !r.b.Owns(v) {
		d, err := r.b.FromHost(v)
		if err != nil {
			return errorf("runner: feed %q: copy to %s: %w", n.Name(), r.b.Name(), err)
		}
		v = d
	}
	return G.Let(n, v)
}

// Trainer runs training steps: forward, backward and the solver's update, with the Runner's handling
// of device memory. A step synchronises with the host only when a value is read (StepLoss, StepThen).
//
//	adam, _ := ops.NewAdam(ops.DefaultAdam(1e-3))
//	tr, _ := ops.NewTrainer(loss, params, adam, backend)
//	for step := 0; step < n; step++ {
//		l, err := tr.StepLoss(ops.Feeds{x: xs[step], y: ys[step]})
//		...
//	}
type Trainer struct {
	*Runner
	cost   *G.Node
	params G.Nodes
	solver G.Solver
	costV  G.Value
}

// NewTrainer takes the gradient of the scalar cost w.r.t. params (G.Grad: do not call it yourself on this
// graph) and prepares the graph for training on b (nil: the CPU; see NewRunner). On a device backend the
// solver must be one of this package's (Adam, SGD): Gorgonia's solvers loop over host memory.
func NewTrainer(cost *G.Node, params G.Nodes, solver G.Solver, b Backend) (*Trainer, error) {
	if err := checkCost("trainer", cost); err != nil {
		return nil, err
	}
	if err := checkParamDtypes("trainer", params); err != nil {
		return nil, err
	}
	switch {
	case len(params) == 0:
		return nil, failf(ErrConfig, "trainer: no parameters")
	case solver == nil:
		return nil, failf(ErrConfig, "trainer: nil solver")
	}
	for _, p := range params {
		if p == nil || p.Graph() != cost.Graph() {
			return nil, failf(ErrConfig, "trainer: a parameter is nil or in another graph")
		}
		if p.Deriv() != nil {
			return nil, failf(ErrConfig, "trainer: %q already has a gradient node; let NewTrainer call G.Grad once for the graph", p.Name())
		}
	}
	if b != nil && b.Name() != CPU().Name() {
		if t := reflect.TypeOf(solver); t.Kind() == reflect.Pointer && t.Elem().PkgPath() == gorgoniaPkg {
			return nil, failf(ErrUnsupported, "trainer: %v updates weights with host loops; use ops.NewAdam or ops.NewSGD on %s", t, b.Name())
		}
	}
	t := &Trainer{cost: cost, params: params, solver: solver}
	g := cost.Graph()
	outputs := sinks(g) // the forward graph's outputs, before G.Grad adds gradient nodes
	if _, err := G.Grad(cost, params...); err != nil {
		return nil, errorf("trainer: gradient: %w", err)
	}
	G.Read(cost, &t.costV) // the cost's own register may be reused by the backward pass
	// The machine runs only what a step needs: the forward outputs (and the G.Read statements on the
	// nodes it runs) and the parameters' gradients. G.Grad also builds gradients of nodes no parameter
	// depends on (the layer input's, each expert product's input side); a TapeMachine over the whole graph
	// would compute them every step (about a fifth of an MoE layer's matmul work).
	roots := append(G.Nodes{cost}, outputs...)
	for _, p := range params {
		d := p.Deriv()
		if d == nil {
			return nil, failf(ErrConfig, "trainer: the cost does not depend on parameter %q", p.Name())
		}
		roots = append(roots, d)
	}
	r, err := newRunner(g, g.SubgraphRoots(roots...), b)
	if err != nil {
		return nil, err
	}
	t.Runner = r
	return t, nil
}

// Step runs one training step without reading anything back.
func (t *Trainer) Step(feeds Feeds) error { return t.run(feeds, t.update, nil) }

// StepLoss runs one training step and returns the cost before the update (a host read: it waits for the
// step on an asynchronous device and reports its faults).
func (t *Trainer) StepLoss(feeds Feeds) (float64, error) {
	loss := math.NaN()
	err := t.run(feeds, t.update, func() (err error) {
		loss, err = Float(t.costV)
		return err
	})
	return loss, err
}

// StepThen runs one training step and then read (when non-nil), before the step's values are released.
func (t *Trainer) StepThen(feeds Feeds, read func() error) error { return t.run(feeds, t.update, read) }

// Loss reads the cost of the current run; call it inside a read callback.
func (t *Trainer) Loss() (float64, error) { return Float(t.costV) }

func (t *Trainer) update() error {
	if err := t.solver.Step(G.NodesToValueGrads(t.params)); err != nil {
		return errorf("trainer: solver: %w", err)
	}
	return nil
}

// sinks returns the nodes of g that no other node uses (the outputs); for a G.Read statement, the node it
// reads (SubgraphRoots adds the statement back for every node it keeps).
func sinks(g *G.ExprGraph) G.Nodes {
	var out G.Nodes
	for _, n := range g.AllNodes() {
		if g.To(n.ID()).Len() != 0 {
			continue
		}
		if isReadStmt(n) {
			for from := g.From(n.ID()); from.Next(); {
				if c, ok := from.Node().(*G.Node); ok {
					out = append(out, c)
				}
			}
			continue
		}
		out = append(out, n)
	}
	return out
}

func isReadStmt(n *G.Node) bool {
	op := n.Op()
	if op == nil {
		return false
	}
	t := reflect.TypeOf(op)
	return t.PkgPath() == gorgoniaPkg && t.Name() == "readOp"
}

// readTargets returns the destinations of g's G.Read nodes (Gorgonia v0.9.18 keeps each in the field
// into of its readOp).
func readTargets(g *G.ExprGraph) []*G.Value {
	var out []*G.Value
	for _, n := range g.AllNodes() {
		op := n.Op()
		if op == nil {
			continue
		}
		v := reflect.ValueOf(op)
		if t := v.Type(); t.PkgPath() != gorgoniaPkg || t.Name() != "readOp" || t.Kind() != reflect.Struct {
			continue
		}
		f := v.FieldByName("into")
		if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() || f.Type().Elem() != reflect.TypeFor[G.Value]() {
			continue
		}
		out = append(out, (*G.Value)(unsafe.Pointer(f.Pointer())))
	}
	return out
}
