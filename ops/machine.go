package ops

import (
	"errors"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// RunAll runs m.RunAll and returns its error in a form that errors.Is and errors.As see through.
// Gorgonia's machines (v0.9.18) report an op's error inside their own error type, which has no Unwrap
// method: errors.Is(m.RunAll(), ErrNaN) is false even when the route op failed with ErrNaN. The
// message is unchanged.
func RunAll(m G.VM) error { return MachineError(m.RunAll()) }

// MachineError makes the error of a Gorgonia machine (TapeMachine or LispMachine RunAll) unwrap to the
// error of the op that failed, so that errors.Is(MachineError(err), ErrShape) works. Errors that are
// not machine errors and nil are returned unchanged.
func MachineError(err error) error {
	if err == nil {
		return nil
	}
	var inner interface{ Err() error }
	if errors.As(err, &inner) && inner.Err() != nil {
		return &machineError{err: err, cause: inner.Err()}
	}
	return err
}

// machineError carries a machine error's message and unwraps to the op's error.
type machineError struct{ err, cause error }

func (e *machineError) Error() string { return e.err.Error() }
func (e *machineError) Unwrap() error { return e.cause }

// NewLispMachine returns G.NewLispMachine(g, opts...) after checking that the graph can be
// differentiated by it: every op of this package implements DoDiff (G.ADOp), so the LispMachine's
// gradients equal the TapeMachine's, but the LispMachine silently skips ops without DoDiff (every
// parameter upstream of one would get a gradient of exactly 0) and refuses graphs that G.Grad has
// extended with symbolic gradient nodes, with a message that does not say why. NewLispMachine reports
// both cases (ErrUnsupported) and says what to do. Forward-only machines (G.ExecuteFwdOnly()) are not
// checked. On a LispMachine, read gradients with Node.Grad() after RunAll; do not call G.Grad.
func NewLispMachine(g *G.ExprGraph, opts ...G.VMOpt) (G.VM, error) {
	if err := CheckLispGraph(g); err != nil {
		return nil, err
	}
	return G.NewLispMachine(g, opts...), nil
}

// CheckLispGraph reports why G.NewLispMachine(g) with backpropagation would give wrong gradients or fail
// (ErrUnsupported, saying what to do): symbolic gradient nodes made by G.Grad (the LispMachine
// differentiates on its own); differentiable ops without DoDiff (the LispMachine skips them, leaving
// zero gradients behind them); unused non-scalar nodes, e.g. the plan of a routing that only feeds
// weights (the LispMachine backpropagates from every node nothing consumes and refuses non-scalar ones).
func CheckLispGraph(g *G.ExprGraph) error {
	if g == nil {
		return failf(ErrConfig, "LispMachine: graph is nil")
	}
	if hasBF16(g) {
		return failf(ErrUnsupported, "LispMachine: the graph has bfloat16 nodes; the LispMachine accumulates gradients with host loops of float32/float64 only: run bfloat16 graphs on a TapeMachine with G.Grad (Runner, Trainer)")
	}
	for _, n := range g.AllNodes() {
		if of := n.DerivOf(); len(of) > 0 {
			return failf(ErrUnsupported, "LispMachine: the graph holds symbolic gradient nodes made by G.Grad (%v is the gradient of %v); "+
				"the LispMachine differentiates by itself: build the graph without G.Grad and read Node.Grad() after RunAll, "+
				"or run this graph (with G.Grad) on a TapeMachine", n, of[0])
		}
	}
	for _, n := range g.Roots() {
		if op := n.Op(); op != nil && op.Arity() > 0 && !n.IsScalar() {
			return failf(ErrUnsupported, "LispMachine: node %v is used by nothing (but G.Read), and the LispMachine backpropagates from every "+
				"such node, which must then be a scalar: make it part of the cost or leave it out (after RunAll, Node.Value() holds "+
				"forward values and Node.Grad() gradients)", n)
		}
	}
	for _, n := range g.AllNodes() {
		op := n.Op()
		if op == nil || op.Arity() == 0 { // inputs, constants, statements (G.Read)
			continue
		}
		if _, ok := op.(G.ADOp); ok {
			continue
		}
		sd, ok := op.(G.SDOp)
		if !ok {
			continue // not differentiable on any machine
		}
		var children []*G.Node
		for it := g.From(n.ID()); it != nil && it.Next(); {
			if c, ok := it.Node().(*G.Node); ok {
				children = append(children, c)
			}
		}
		for i, d := range sd.DiffWRT(len(children)) {
			if dt := children[i].Dtype(); d && (dt == tensor.Float32 || dt == tensor.Float64) {
				return failf(ErrUnsupported, "LispMachine: op %v (node %v) has no DoDiff, so the LispMachine would skip it and leave a zero gradient "+
					"for everything before it; use a TapeMachine with G.Grad", op, n)
			}
		}
	}
	return nil
}

// lispDiff implements G.ADOp's DoDiff (the LispMachine's backward step for one node) from an op's
// gradient kernels: grads receives the values of the op's inputs and the gradient of its output and
// returns one gradient per input (nil: none), which is added into that input's gradient (the
// LispMachine accumulates the contributions of every consumer of a node there).
func lispDiff(op stringer, inputs G.Nodes, output *G.Node, grads func(in []G.Value, g G.Value) ([]G.Value, error)) error {
	in := make([]G.Value, len(inputs))
	for i, n := range inputs {
		in[i] = n.Value()
	}
	g, err := output.Grad()
	if err != nil {
		return failf(ErrUnsupported, "%v: DoDiff: the output has no gradient value (%v)", op, err)
	}
	ds, err := grads(in, g)
	if err != nil {
		return err
	}
	for i, d := range ds {
		if d == nil {
			continue
		}
		acc, err := inputs[i].Grad()
		if err != nil {
			return failf(ErrUnsupported, "%v: DoDiff: input %d has no gradient value (%v)", op, i, err)
		}
		if err := addInto(acc, d); err != nil {
			return errorf("%v: DoDiff: input %d: %w", op, i, err)
		}
	}
	return nil
}

// addInto adds d to acc in place (host tensors of one shape and dtype, or Gorgonia scalars).
func addInto(acc, d G.Value) error {
	switch a := acc.(type) {
	case *G.F64:
		v, err := scalarOf(d)
		*a += G.F64(v)
		return err
	case *G.F32:
		v, err := scalarOf(d)
		*a += G.F32(v)
		return err
	case *tensor.Dense:
		dd, ok := d.(*tensor.Dense)
		if !ok || !a.IsNativelyAccessible() || !dd.IsNativelyAccessible() {
			return failf(ErrUnsupported, "the LispMachine accumulates gradients in host memory only, got %T", d)
		}
		if !a.Shape().Eq(dd.Shape()) {
			return failf(ErrShape, "gradient of shape %v for a value of shape %v", dd.Shape(), a.Shape())
		}
		switch av := a.Data().(type) {
		case []float64:
			dv, ok := dd.Data().([]float64)
			if !ok {
				return failf(ErrDtype, "gradient of dtype %v for a float64 value", dd.Dtype())
			}
			for i := range av {
				av[i] += dv[i]
			}
			return nil
		case []float32:
			dv, ok := dd.Data().([]float32)
			if !ok {
				return failf(ErrDtype, "gradient of dtype %v for a float32 value", dd.Dtype())
			}
			for i := range av {
				av[i] += dv[i]
			}
			return nil
		}
		return failf(ErrDtype, "cannot accumulate gradients of dtype %v", a.Dtype())
	}
	return failf(ErrUnsupported, "cannot accumulate a gradient into a %T", acc)
}

// noDiff is DoDiff for ops whose inputs get no gradient (integer outputs).
func noDiff() error { return nil }

// noSecondOrder is the error of the gradient ops' SymDiff and DoDiff: differentiating a gradient
// (second derivatives) is not supported through them.
func noSecondOrder(op stringer, of string) error {
	return failf(ErrUnsupported, "%v (part of the gradient of %s) is not differentiable: second derivatives through %s are not supported", op, of, of)
}

// allTrue returns n true flags (DiffWRT of ops whose every input is differentiable, or whose SymDiff
// must be reached to report an error).
func allTrue(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = true
	}
	return d
}
