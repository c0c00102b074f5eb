package ops

import (
	"fmt"
	"reflect"
	"strings"

	G "gorgonia.org/gorgonia"
)

// CheckDeviceGraph reports, before a graph is compiled for a device backend, every node that cannot run
// on device memory or would give a silently wrong result there (Gorgonia v0.9.18, read from its
// sources). It returns nil or one error wrapping ErrUnsupported that names each offending
// node and says what to use instead. Call it after G.Grad, so that the backward nodes are checked too.
// Rejected:
//
//   - matrix products of Gorgonia (Mul, BatchedMatMul, OuterProd, MatVecMul, Tensordot): the compiler
//     gives them a host output buffer. Use MatMul.
//
//   - Repeat, which every Broadcast* op and the gradient of Sum and Mean insert, and any Sum whose
//     gradient is taken: host loops over the data. Use MSELoss / SoftmaxCrossEntropy for a loss, or a
//     project op; a Sum only read in the forward pass (a metric) is accepted.
//
//   - SoftMax and LogSoftMax and their gradients: they allocate host memory.
//
//   - Slice along an axis other than 0 and Concat off axis 0 (silently zero on device memory), and the
//     gradient of any Slice (a silently zero gradient).
//
//   - every other op of package gorgonia that is not known to work on a device engine (Max, At, ByIndices,
//     dropout, convolutions, pooling, norms, ...), and any op of another package that has Gorgonia's
//     compiler allocate its output on the host (CallsExtern and ReturnsPtr both true).
//
//   - input nodes bound to dual values (G.BindDualValues): Gorgonia zeroes those gradients with host
//     loops. Read gradients with Node.Grad() instead (the solvers of this package do).
//
//   - Gorgonia's scalar arithmetic (G.Add, G.Mul, ... of two scalar nodes) on the scalar output of a
//     project op (a loss): on a device that is a one-element device tensor. Use AddLosses.
//
// Accepted: elementwise arithmetic and the unary functions that the device's tensor engine implements
// (Add, Sub, HadamardProd, HadamardDiv, scalar variants, Exp, Log, Neg, Square, Sqrt, Tanh, Sigmoid,
// ...), Transpose, Reshape, Slice and Concat along axis 0, Read, constants, and the ops of this package.
// Whether an engine implements a given elementwise function is checked when it runs (a clear error).
//
// Run device graphs on a TapeMachine with the backend's tensor engine (see CheckDeviceVM); never on a
// LispMachine.
func CheckDeviceGraph(g *G.ExprGraph) error {
	if g == nil {
		return failf(ErrConfig, "device graph: nil graph")
	}
	var problems []string
	for _, n := range g.AllNodes() {
		if why := deviceProblem(n); why != "" {
			problems = append(problems, fmt.Sprintf("node %d %q: %s", n.ID(), n.Name(), why))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return errorf("device graph: %d node(s) cannot run on device memory:\n\t%s\n%w",
		len(problems), strings.Join(problems, "\n\t"), ErrUnsupported)
}

// CheckDeviceVM rejects machines that cannot run a device graph: anything but Gorgonia's TapeMachine
// (the LispMachine runs Do twice with host preallocation and its DoDiff path is broken for some
// built-ins), and TapeMachines made with options that read or zero values with host loops:
// G.BindDualValues, G.WithNaNWatch, G.WithInfWatch, G.TraceExec, G.WithWatchlist. Create the machine
// with G.NewTapeMachine(g, G.WithEngine(engine)), where engine comes from the backend's
// TensorEngineProvider (Runner does this).
func CheckDeviceVM(vm G.VM) error {
	if vm == nil {
		return failf(ErrConfig, "device machine: nil machine")
	}
	t := reflect.TypeOf(vm)
	if t.String() != "*gorgonia.tapeMachine" {
		return failf(ErrUnsupported, "device machine: %v cannot run a device graph; use G.NewTapeMachine(g, G.WithEngine(engine))", t)
	}
	// Gorgonia v0.9.18 keeps these options as bits of tapeMachine.runFlags (vm.go).
	flags, ok := uintField(reflect.ValueOf(vm).Elem(), "runFlags")
	if !ok {
		return nil
	}
	for _, f := range []struct {
		bit  uint
		name string
	}{{2, "G.WithNaNWatch"}, {3, "G.WithInfWatch"}, {6, "G.TraceExec"}, {7, "G.BindDualValues"}, {8, "G.WithWatchlist"}} {
		if flags>>f.bit&1 == 1 {
			return failf(ErrUnsupported, "device machine: made with %s, which reads or zeroes values with host loops", f.name)
		}
	}
	return nil
}

func uintField(v reflect.Value, name string) (uint64, bool) {
	if v.Kind() != reflect.Struct {
		return 0, false
	}
	f := v.FieldByName(name)
	if !f.IsValid() || f.Kind() < reflect.Uint || f.Kind() > reflect.Uint64 {
		return 0, false
	}
	return f.Uint(), true
}

const gorgoniaPkg = "gorgonia.org/gorgonia"

// deviceProblem returns why n cannot run on device memory, or "".
func deviceProblem(n *G.Node) string {
	op := n.Op()
	if op == nil {
		if boundToDualValue(n) {
			return "bound to a dual value (G.BindDualValues), whose gradient Gorgonia zeroes with a host loop; read gradients with Node.Grad()"
		}
		return ""
	}
	t := reflect.TypeOf(op)
	v := reflect.ValueOf(op)
	if t.Kind() == reflect.Pointer {
		t, v = t.Elem(), v.Elem()
	}
	if t.PkgPath() != gorgoniaPkg {
		if strings.HasPrefix(t.PkgPath(), gorgoniaPkg+"/") {
			return fmt.Sprintf("op %v (%s) is not known to work on device memory", op, t)
		}
		if op.CallsExtern() && op.ReturnsPtr() {
			return fmt.Sprintf("op %v (%s) has CallsExtern and ReturnsPtr both true, so Gorgonia's compiler allocates its output on the host", op, t)
		}
		return ""
	}
	switch t.Name() {
	case "elemBinOp":
		if c := deviceScalarChild(n); c != nil {
			return fmt.Sprintf("%v uses the scalar %q, a one-element device tensor that Gorgonia's scalar arithmetic cannot take; add losses with ops.AddLosses", op, c.Name())
		}
		return ""
	case "elemUnaryOp", "transposeOp", "reshapeOp", "letOp", "readOp", "constantScalar", "constantTensor", "sizeOp":
		return ""
	case "sumOp":
		if n.Deriv() != nil {
			return fmt.Sprintf("the gradient of %v (a Sum or Mean) is a Repeat that loops over host memory; use a project loss op (MSELoss, SoftmaxCrossEntropy) or keep the Sum out of the gradient", op)
		}
		return ""
	case "repeatOp":
		return fmt.Sprintf("%v (inserted by Broadcast* ops and by the gradient of Sum and Mean) loops over host memory", op)
	case "linAlgBinOp", "tensordotOp":
		return fmt.Sprintf("Gorgonia's matrix product %v gets a host output buffer from the compiler; use ops.MatMul", op)
	case "softmaxOp", "softmaxDiffOp":
		return fmt.Sprintf("%v allocates its result in host memory; use ops.SoftmaxCrossEntropy for a loss", op)
	case "sliceOp":
		if along, ok := intField(v, "along"); !ok || along != 0 {
			return fmt.Sprintf("%v slices along axis %d: only axis 0 is a contiguous view, other axes read as zeros on device memory", op, along)
		}
		return ""
	case "sliceIncrOp":
		return fmt.Sprintf("%v (the gradient of a Slice) gives a silently zero gradient on device memory", op)
	case "concatOp":
		if axis, ok := intField(v, "axis"); !ok || axis != 0 {
			return fmt.Sprintf("%v concatenates along axis %d; its gradient slices off axis 0, which reads zeros on device memory", op, axis)
		}
		return ""
	}
	return fmt.Sprintf("op %v (%s) is not known to work on device memory", op, t.Name())
}

// deviceScalarChild returns an operand of n that is a scalar node computed by an op outside package
// gorgonia (on a device, such ops return one-element device tensors), or nil.
func deviceScalarChild(n *G.Node) *G.Node {
	it := n.Graph().From(n.ID())
	for it.Next() {
		c, ok := it.Node().(*G.Node)
		if !ok || !c.IsScalar() || c.Op() == nil {
			continue
		}
		t := reflect.TypeOf(c.Op())
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.PkgPath() != gorgoniaPkg {
			return c
		}
	}
	return nil
}

// intField reads an int field of a struct value (unexported fields included; reflection may read them).
func intField(v reflect.Value, name string) (int, bool) {
	if v.Kind() != reflect.Struct {
		return 0, false
	}
	f := v.FieldByName(name)
	if !f.IsValid() || f.Kind() != reflect.Int {
		return 0, false
	}
	return int(f.Int()), true
}

// boundToDualValue reports whether an input node's value is one of Gorgonia's dual values (the node's
// exported API unwraps them, so the field's dynamic type is inspected).
func boundToDualValue(n *G.Node) bool {
	f := reflect.ValueOf(n).Elem().FieldByName("boundTo")
	if !f.IsValid() || f.Kind() != reflect.Interface || f.IsNil() {
		return false
	}
	return f.Elem().Type().String() == "*gorgonia.dualValue"
}
