package ops

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/chewxy/hm"
	"github.com/expertrt/expertrt-go/internal/bf16"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Mixed precision with bfloat16.
//
// BFloat16 is the module's one bfloat16 dtype (element type BF16: the bit pattern as a named uint16;
// conversions in BF16FromFloat32, BF16FromFloat64 and the methods Float32/Float64). A model trains in
// mixed precision the way Megatron-Core and torch.autocast do: parameters stay float32 nodes (the
// master weights: solvers and gradient sums in float32), activations are bfloat16 nodes, and router
// logits, routing weights, losses and the cost stay float32.
//
// What takes bfloat16 (all arithmetic in float32 or wider, each result rounded once):
//   - Cast converts float32, float64 and bfloat16 nodes into each other; its gradient is the reverse
//     cast (the straight-through derivative 1).
//   - Dispatch and DispatchTo (float32 rows may be packed straight into bfloat16), Combine and
//     CombineTo (bfloat16 expert outputs with float32 routing weights, summed in float32 or wider, the
//     result in bfloat16 or float32): rows of bytes move exactly; weighted rows are rounded once.
//   - GroupedMatMul and MatMul (MatMulTo for a float32 result) on bfloat16 operands, float32
//     accumulation. A float32 weight given with bfloat16 activations is cast to bfloat16 in the graph
//     (one Cast node per call); its gradient is accumulated in float32 and reaches the float32 weight
//     without ever being rounded to bfloat16.
//   - SwiGLU (fused; computed in float64, rounded once).
//   - Gorgonia's Add, which G.Grad inserts to sum the gradients of a node used twice: the CPU needs
//     HostEngine (Runner and Trainer use it), device backends' tensor engines add bfloat16 themselves.
//
// What refuses it, with an error wrapping ErrDtype that says what to do: Route and the routing kernels,
// every loss, the solvers (bfloat16 parameters: keep a float32 master weight and cast it), a bfloat16
// cost (Grad, NewTrainer; G.Grad itself silently returns no gradients for one), and Gorgonia's
// built-in ops other than Add, Reshape and Transpose (CheckBF16Graph, run by Runner and Trainer). The
// LispMachine does not take bfloat16 graphs. fmt prints a bfloat16 tensor's raw bits (gorgonia's
// formatter knows only Go's kinds): print Printable(v) instead.

// BF16 is the bfloat16 element type: tensor.New(tensor.WithBacking([]ops.BF16{...})) makes a bfloat16
// tensor.
type BF16 = bf16.BFloat16

// BFloat16 is the dtype of bfloat16 tensors and nodes.
var BFloat16 = bf16.Dtype

// BF16FromFloat32 rounds f to the nearest bfloat16, ties to even; NaN stays NaN (quieted).
func BF16FromFloat32(f float32) BF16 { return bf16.FromFloat32(f) }

// BF16FromFloat64 rounds f to the nearest bfloat16 once (not through float32), ties to even.
func BF16FromFloat64(f float64) BF16 { return bf16.FromFloat64(f) }

// anyAct, as a dtype argument of arg/checkDtype/nodeCheck, accepts float32, float64 and bfloat16: the
// dtypes of activations.
var anyAct = tensor.Dtype{Type: reflect.TypeOf(struct{ anyActivation bool }{})}

// isBF16 reports whether dt is bfloat16.
func isBF16(dt tensor.Dtype) bool { return dt == BFloat16 }

// tensorT is the Gorgonia type of a tensor of dims dimensions of dtype dt (a type variable when dt is
// the zero Dtype).
func tensorT(dims int, dt tensor.Dtype) hm.Type {
	if dt.Type == nil {
		return floatT(dims)
	}
	return G.TensorType{Dims: dims, Of: dt}
}

// dtName prints a dtype for op strings ("-" for the zero Dtype).
func dtName(dt tensor.Dtype) string {
	if dt.Type == nil {
		return "-"
	}
	return dt.String()
}

// gradDtype is the dtype of the gradient an op builds for its input n: float32 when n is a bfloat16
// Cast of a float32 node (a master weight: its gradient is accumulated in float32 and never rounded to
// bfloat16; Cast passes a float32 gradient through), else n's own dtype.
func gradDtype(n *G.Node) tensor.Dtype {
	if c, ok := n.Op().(*castOp); ok && isBF16(c.to) && c.from == tensor.Float32 {
		return tensor.Float32
	}
	return n.Dtype()
}

// Grad is G.Grad(cost, wrt...) after checking the cost: a scalar of float32 or float64. Gorgonia's Grad
// seeds only those two dtypes and returns no gradients and no error for any other (a bfloat16 cost), so
// a mixed-precision graph must compute its losses in float32 (Cast the bfloat16 output first; the
// losses of this package refuse bfloat16 inputs).
func Grad(cost *G.Node, wrt ...*G.Node) (G.Nodes, error) {
	if err := checkCost("grad", cost); err != nil {
		return nil, err
	}
	return G.Grad(cost, wrt...)
}

func checkCost(op string, cost *G.Node) error {
	switch {
	case cost == nil:
		return failf(ErrConfig, "%s: nil cost", op)
	case !cost.IsScalar():
		return failf(ErrShape, "%s: the cost must be a scalar node, got shape %v", op, cost.Shape())
	case isBF16(cost.Dtype()):
		return failf(ErrDtype, "%s: the cost %s is bfloat16, for which G.Grad silently returns no gradients; compute losses in float32 (Cast the bfloat16 output to float32 first)", op, nodeName(cost))
	case cost.Dtype() != tensor.Float32 && cost.Dtype() != tensor.Float64:
		return failf(ErrDtype, "%s: the cost %s is %v, want float32 or float64", op, nodeName(cost), cost.Dtype())
	}
	return nil
}

// checkParamDtypes refuses bfloat16 parameters: solvers update float32 master weights.
func checkParamDtypes(op string, params G.Nodes) error {
	for _, p := range params {
		if p != nil && isBF16(p.Dtype()) {
			return failf(ErrDtype, "%s: parameter %s is bfloat16; solvers update float32 master weights: keep the parameter float32 and Cast it to bfloat16 where the graph uses it (GroupedMatMul and MatMul do so for a float32 weight)", op, nodeName(p))
		}
	}
	return nil
}

// hasBF16 reports whether any node of g is bfloat16.
func hasBF16(g *G.ExprGraph) bool {
	for _, n := range g.AllNodes() {
		if nodeIsBF16(n) {
			return true
		}
	}
	return false
}

// nodeIsBF16 reports whether n's value is bfloat16 (a scalar or tensor type; Node.Dtype panics on
// statement nodes such as G.Read's, which have no dtype).
func nodeIsBF16(n *G.Node) bool {
	switch t := n.Type().(type) {
	case tensor.Dtype:
		return isBF16(t)
	case G.TensorType:
		d, ok := t.Of.(tensor.Dtype)
		return ok && isBF16(d)
	}
	return false
}

// CheckBF16Graph reports every node of g that is one of Gorgonia's built-in ops (package gorgonia) and
// has a bfloat16 input or output, other than the ones that handle bfloat16: Add of two tensors (the
// gradient sums G.Grad inserts; on the CPU it needs HostEngine, on a device the backend's tensor
// engine), Reshape, Transpose, Read and the ops that bind values. Gorgonia's other built-ins build with
// bfloat16 nodes but fail only when they run, or compute on the raw bits: cast to float32 with Cast
// around them. The error wraps ErrDtype and names each node. Runner and Trainer call it.
func CheckBF16Graph(g *G.ExprGraph) error {
	if g == nil {
		return failf(ErrConfig, "bfloat16 graph check: nil graph")
	}
	var problems []string
	for _, n := range g.AllNodes() {
		op := n.Op()
		if op == nil {
			continue
		}
		t := reflect.TypeOf(op)
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.PkgPath() != gorgoniaPkg {
			continue
		}
		bf := nodeIsBF16(n)
		it := n.Graph().From(n.ID())
		for it.Next() {
			if c, ok := it.Node().(*G.Node); ok && nodeIsBF16(c) {
				bf = true
			}
		}
		if !bf {
			continue
		}
		switch t.Name() {
		case "reshapeOp", "transposeOp", "letOp", "readOp", "constantTensor", "sizeOp":
			continue
		case "elemBinOp":
			if isTensorAdd(n) {
				continue
			}
		}
		problems = append(problems, fmt.Sprintf("node %d %q: %v (%s) does not compute in bfloat16; Cast its operands to float32", n.ID(), n.Name(), op, t.Name()))
	}
	if len(problems) == 0 {
		return nil
	}
	return failf(ErrDtype, "bfloat16 graph: %d node(s) apply Gorgonia built-ins to bfloat16 values:\n\t%s\n", len(problems), joinLines(problems))
}

// isTensorAdd reports whether n is Gorgonia's Add of two non-scalar tensors (elemBinOp prints its
// operator first: "+ false").
func isTensorAdd(n *G.Node) bool {
	if n.IsScalar() || !strings.HasPrefix(fmt.Sprint(n.Op()), "+ ") {
		return false
	}
	it := n.Graph().From(n.ID())
	for it.Next() {
		if c, ok := it.Node().(*G.Node); !ok || c.IsScalar() {
			return false
		}
	}
	return true
}

func joinLines(s []string) string { return strings.Join(s, "\n\t") }
