package ops

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// PlanOf builds the routing plan node of expert indices [T,K] int32 over numExperts experts: an int32
// vector of PlanLen(T,K,E) elements (counts, offsets, rowOf, slotOf; see plan_layout.go). Rows of one
// expert keep slot order. Indices outside [0, numExperts) make the op fail at run time (ErrExpertIndex).
// T*K >= 2^31 is refused (ErrShape): plans are int32.
func PlanOf(indices *G.Node, numExperts int) (*G.Node, error) {
	if err := nodeCheck("plan", "indices", indices, 2, tensor.Int32); err != nil {
		return nil, err
	}
	if numExperts < 1 {
		return nil, failf(ErrConfig, "plan: number of experts must be >= 1, got %d", numExperts)
	}
	if err := checkSizes("plan", indices.Shape()[0], indices.Shape()[1], numExperts, 1); err != nil {
		return nil, err
	}
	return G.ApplyOp(&planOp{k: indices.Shape()[1], e: numExperts}, indices)
}

// planOp: indices [T,K] int32 -> plan [PlanLen(T,K,E)] int32.
type planOp struct {
	opBase
	k, e int
}

func (op *planOp) Arity() int            { return 1 }
func (op *planOp) Type() hm.Type         { return hm.NewFnType(int32T(2), int32T(1)) }
func (op *planOp) String() string        { return fmt.Sprintf("RoutingPlan{K=%d,E=%d}", op.k, op.e) }
func (op *planOp) WriteHash(h hash.Hash) { writeHash(op, h) }
func (op *planOp) Hashcode() uint32      { return hashOf(op) }
func (op *planOp) DiffWRT(int) []bool    { return []bool{false} }
func (op *planOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, failf(ErrUnsupported, "%v is not differentiable", op)
}

// DoDiff: the plan carries no gradient.
func (op *planOp) DoDiff(G.ExecutionContext, G.Nodes, *G.Node) error { return noDiff() }

func (op *planOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	if len(s) != 2 || s[1] != op.k {
		return nil, failf(ErrShape, "plan: indices shape %v, want [T,%d]", s, op.k)
	}
	return tensor.Shape{PlanLen(s[0], op.k, op.e)}, nil
}

func (op *planOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

func (op *planOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := arity(op, 1, vs); err != nil {
		return nil, err
	}
	idx, err := arg("plan", "indices", vs[0], tensor.Int32, -1, op.k)
	if err != nil {
		return nil, err
	}
	if err := checkSizes("plan", idx.Shape()[0], op.k, op.e, 1); err != nil {
		return nil, err
	}
	b, err := backendOf(op.String(), idx)
	if err != nil {
		return nil, err
	}
	out, err := output(b, prealloc, tensor.Int32, PlanLen(idx.Shape()[0], op.k, op.e))
	if err != nil {
		return nil, err
	}
	return out, b.Plan(idx, op.e, out)
}
