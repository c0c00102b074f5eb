package ep

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Exchange is the expert-parallel core of one layer on one rank, for layers whose experts are not
// moe's SwiGLU: from this rank's routing over all E experts it builds the counts exchange, then
//
//	received, _ := ex.ToExperts(ops.Dispatch(x, r))   // [R,H] rows for this rank's E/W experts
//	h, _ := ex.GroupedMatMul(received, w)              // w [E/W,H,F]: one matrix per local expert
//	...                                                // any row-wise function of the received rows
//	back, _ := ex.FromExperts(out)                     // [T*K,H'] in r's expert-major order
//	y, _ := ops.Combine(back, r)
//
// Received rows are grouped by local expert, then by source rank and token (layout.go); rows past the
// received count are zero, and row-wise functions may compute on them (they are never sent back).
type Exchange struct {
	// Counts is the host int32 [W,E] table of rows each rank routes to each expert.
	Counts *G.Node
	// LocalPlan is the plan of the received rows over the local experts (counts and offsets sections;
	// see planOp), on the backend of the routing plan.
	LocalPlan *G.Node

	s  setup
	tr Transport
	r  *ops.Routing
}

// RecvRows is the row count of the receive buffers of a layer: recvRows when it is in (0, worst), else
// the worst case world*tokens*min(topK, experts/world), which no routing can exceed.
func RecvRows(world, tokens, topK, experts, recvRows int) int {
	if world < 1 {
		return 0
	}
	worst := world * tokens * min(topK, experts/world)
	if recvRows > 0 && recvRows < worst {
		return recvRows
	}
	return worst
}

// NewExchange adds the counts exchange of routing r (this rank's T tokens over all E experts) to r's
// graph. hidden and dt describe the rows that will be exchanged (they are checked across ranks);
// recvRows is Options.RecvRows (0: the worst case).
func NewExchange(r *ops.Routing, hidden int, dt tensor.Dtype, tr Transport, recvRows int) (*Exchange, error) {
	if r == nil || r.Plan == nil {
		return nil, fmt.Errorf("ep: exchange: a routing with a plan is required: %w", ops.ErrConfig)
	}
	if tr == nil {
		return nil, fmt.Errorf("ep: exchange: a transport is required: %w", ops.ErrConfig)
	}
	w := tr.World()
	if w < 1 || r.E%w != 0 || r.E < w {
		return nil, fmt.Errorf("ep: exchange: %d experts cannot be split evenly over %d ranks: %w", r.E, w, ops.ErrConfig)
	}
	if recvRows < 0 || hidden < 1 {
		return nil, fmt.Errorf("ep: exchange: receive rows %d and hidden size %d: %w", recvRows, hidden, ops.ErrConfig)
	}
	s := setup{world: w, rank: tr.Rank(), experts: r.E, tokens: r.T, topK: r.K(),
		recvRows: RecvRows(w, r.T, r.K(), r.E, recvRows)}
	ex := &Exchange{s: s, tr: tr, r: r}
	var err error
	if ex.Counts, err = G.ApplyOp(&countsOp{s: s, hidden: hidden, dt: dt, tr: tr}, r.Plan); err != nil {
		return nil, fmt.Errorf("ep: counts: %w", err)
	}
	if ex.LocalPlan, err = G.ApplyOp(&planOp{s: s, kind: localPlan}, ex.Counts, r.Plan); err != nil {
		return nil, fmt.Errorf("ep: local plan: %w", err)
	}
	return ex, nil
}

// RecvRows is the row count R of the receive buffers.
func (ex *Exchange) RecvRows() int { return ex.s.recvRows }

// ToExperts sends dispatched rows [T*K,H] (ops.Dispatch over the routing) to the ranks owning their
// experts and returns this rank's received rows [R,H]. Gradient: FromExperts of the upstream gradient.
func (ex *Exchange) ToExperts(packed *G.Node) (*G.Node, error) {
	if err := ex.rowsNode("to experts", packed, ex.s.tokens*ex.s.topK); err != nil {
		return nil, err
	}
	n, err := G.ApplyOp(&exchangeOp{s: ex.s, dir: toExperts, tr: ex.tr}, packed, ex.Counts)
	if err != nil {
		return nil, fmt.Errorf("ep: exchange to experts: %w", err)
	}
	return n, nil
}

// FromExperts sends rows [R,H'] computed from the received rows back to the ranks they came from and
// returns this rank's [T*K,H'] in its routing's expert-major order. Gradient: ToExperts.
func (ex *Exchange) FromExperts(rows *G.Node) (*G.Node, error) {
	if err := ex.rowsNode("from experts", rows, ex.s.recvRows); err != nil {
		return nil, err
	}
	n, err := G.ApplyOp(&exchangeOp{s: ex.s, dir: fromExperts, tr: ex.tr}, rows, ex.Counts)
	if err != nil {
		return nil, fmt.Errorf("ep: exchange from experts: %w", err)
	}
	return n, nil
}

// GroupedMatMul multiplies the received rows x [R,In] by their local experts' matrices w [E/W,In,Out]
// (the ops.Backend grouped product over the valid rows); rows past the received count give zero.
// Differentiable w.r.t. x and w. It has the signature of moe.GroupedMatMulFunc.
func (ex *Exchange) GroupedMatMul(x, w *G.Node) (*G.Node, error) {
	if err := ex.rowsNode("local grouped matmul", x, ex.s.recvRows); err != nil {
		return nil, err
	}
	if w == nil || w.Shape().Dims() != 3 || w.Shape()[0] != ex.s.local() || w.Shape()[1] != x.Shape()[1] || w.Dtype() != x.Dtype() {
		return nil, fmt.Errorf("ep: local grouped matmul: w must be [%d,%d,Out] of %v, got %v: %w", ex.s.local(), x.Shape()[1], x.Dtype(), w, ops.ErrShape)
	}
	n, err := G.ApplyOp(&gmmOp{s: ex.s}, x, w, ex.LocalPlan, ex.Counts)
	if err != nil {
		return nil, fmt.Errorf("ep: local grouped matmul: %w", err)
	}
	return n, nil
}

// GlobalRouting returns a copy of the routing whose plan carries the counts summed over all ranks (in
// its counts section only): ops.LoadBalancingLoss over it with coefficient coef/W^2 is this rank's
// share of the load-balancing loss of all W*T tokens.
func (ex *Exchange) GlobalRouting() (*ops.Routing, error) {
	gplan, err := G.ApplyOp(&planOp{s: ex.s, kind: globalPlan}, ex.Counts, ex.r.Plan)
	if err != nil {
		return nil, fmt.Errorf("ep: global counts: %w", err)
	}
	rg := *ex.r
	rg.Plan = gplan
	return &rg, nil
}

func (ex *Exchange) rowsNode(what string, n *G.Node, rows int) error {
	if n == nil || n.Shape().Dims() != 2 || n.Shape()[0] != rows {
		var s tensor.Shape
		if n != nil {
			s = n.Shape()
		}
		return fmt.Errorf("ep: %s: rows must be [%d,·], got %v: %w", what, rows, s, ops.ErrShape)
	}
	if dt := n.Dtype(); dt != tensor.Float32 && dt != tensor.Float64 {
		return fmt.Errorf("ep: %s: rows must be float32 or float64, got %v: %w", what, dt, ops.ErrDtype)
	}
	return nil
}
