package ep

import (
	"fmt"
	"hash"
	"strings"

	"github.com/chewxy/hm"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// headerLen is the number of int32 values each rank puts before its counts in the counts exchange:
// a magic word and the layer's sizes, so that ranks built with different configurations fail with an
// error naming the difference instead of exchanging garbage.
const headerLen = 8

const headerMagic = 0x45505631 // "EPV1"

var headerFields = [headerLen]string{"magic", "world", "experts", "tokens", "top-k", "hidden", "dtype", "receive rows"}

// Counts exchanges the routing counts of every rank: plan is this rank's routing plan over all E
// experts ([PlanLen(T,K,E)] int32, any backend); the result is a host int32 tensor [W,E] with
// C[p][e] = rows rank p routes to expert e, the same on every rank. It is a collective (one
// all-gather of 8 int32 of layer sizes, then one of E int32 per rank). Every rank checks that all ranks run the same layer sizes and that
// no rank receives more rows than its buffers hold; otherwise every rank fails with the same error
// (wrapping ops.ErrConfig or ErrCapacity).
type countsOp struct {
	opBase
	s      setup
	hidden int
	dt     tensor.Dtype
	tr     Transport
}

func (op *countsOp) Arity() int    { return 1 }
func (op *countsOp) Type() hm.Type { return hm.NewFnType(int32T(1), int32T(2)) }
func (op *countsOp) String() string {
	return fmt.Sprintf("ep.Counts{%v,H=%d,%v}", op.s, op.hidden, op.dt)
}
func (op *countsOp) WriteHash(h hash.Hash) { hashString(op.String(), h) }
func (op *countsOp) Hashcode() uint32      { return hash32(op.String()) }
func (op *countsOp) DiffWRT(int) []bool    { return []bool{false} }
func (op *countsOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, fmt.Errorf("ep: %v is not differentiable", op)
}

func (op *countsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if _, err := shapeArg(ds, 0); err != nil {
		return nil, err
	}
	return tensor.Shape{op.s.world, op.s.experts}, nil
}

func dtypeCode(dt tensor.Dtype) int32 {
	switch dt {
	case tensor.Float32:
		return 1
	case tensor.Float64:
		return 2
	}
	return 0
}

func (op *countsOp) header() [headerLen]int32 {
	s := op.s
	return [headerLen]int32{headerMagic, int32(s.world), int32(s.experts), int32(s.tokens), int32(s.topK),
		int32(op.hidden), dtypeCode(op.dt), int32(s.recvRows)}
}

func (op *countsOp) Do(vs ...G.Value) (G.Value, error) {
	s := op.s
	if len(vs) != 1 {
		return nil, fmt.Errorf("ep: %v: want 1 input, got %d: %w", op, len(vs), ops.ErrShape)
	}
	plan, err := dense("counts", "plan", vs[0], tensor.Int32, ops.PlanLen(s.tokens, s.topK, s.experts))
	if err != nil {
		return nil, err
	}
	b, err := ops.BackendFor(plan)
	if err != nil {
		return nil, err
	}
	head, err := b.View(plan, 0, s.experts)
	if err != nil {
		return nil, err
	}
	mine, err := hostInt32s(head)
	if err != nil {
		return nil, err
	}
	// Headers first, in a fixed-size exchange: ranks with different E must not meet in an all-gather
	// of different sizes (undefined behaviour for NCCL).
	hdr := op.header()
	hdrs := tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(s.world*headerLen))
	if err := op.tr.AllGather(tensor.New(tensor.WithShape(headerLen), tensor.WithBacking(append([]int32(nil), hdr[:]...))), hdrs); err != nil {
		return nil, err
	}
	all := hdrs.Data().([]int32)
	for p := 0; p < s.world; p++ {
		if diff := headerDiff(hdr, all[p*headerLen:(p+1)*headerLen], p, s.rank); diff != "" {
			return nil, fmt.Errorf("ep: ranks run different layers: %s (every rank must build the same layer with the same world size): %w", diff, ops.ErrConfig)
		}
	}
	recv := tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(s.world*s.experts))
	if err := op.tr.AllGather(tensor.New(tensor.WithShape(s.experts), tensor.WithBacking(append([]int32(nil), mine...))), recv); err != nil {
		return nil, err
	}
	counts := recv.Data().([]int32)
	lay, err := newLayout(counts, s.world, s.rank, s.experts)
	if err != nil {
		return nil, err
	}
	for q := 0; q < s.world; q++ {
		if got := lay.received(q); got > s.recvRows {
			return nil, fmt.Errorf("ep: rank %d would receive %d rows, its buffers hold %d (Options.RecvRows; 0 sizes them for any routing): %w",
				q, got, s.recvRows, ErrCapacity)
		}
	}
	return tensor.New(tensor.WithShape(s.world, s.experts), tensor.WithBacking(counts)), nil
}

func headerDiff(mine [headerLen]int32, theirs []int32, peer, rank int) string {
	var d []string
	for i := range mine {
		if mine[i] != theirs[i] {
			d = append(d, fmt.Sprintf("%s %d on rank %d, %d on rank %d", headerFields[i], theirs[i], peer, mine[i], rank))
		}
	}
	return strings.Join(d, "; ")
}

// exchangeDir names the two all-to-alls of a layer; each is the other's gradient.
type exchangeDir int

const (
	toExperts   exchangeDir = iota // dispatch side: [T*K,H] expert-major over all E -> [R,H] local experts
	fromExperts                    // combine side: [R,H] -> [T*K,H]
)

// exchangeOp moves expert-major rows between ranks (see layout for the row order):
//
//	toExperts:   (x [T*K,H], counts [W,E]) -> [R,H], rows past the received count are zero
//	fromExperts: (y [R,H],   counts [W,E]) -> [T*K,H]
//
// Pure data movement: every received row is bitwise the row that was sent.
//
// A gradient exchange (built by SymDiff) takes the forward exchange's output as a third input that it
// does not read: the dependency orders it after the forward exchange on every rank, so the ranks'
// collectives meet in the same order whatever order the machine picks for independent nodes.
type exchangeOp struct {
	opBase
	s       setup
	dir     exchangeDir
	tr      Transport
	ordered bool // a third, unread input orders this exchange after another
}

func (op *exchangeOp) rows() (in, out int) {
	tk := op.s.tokens * op.s.topK
	if op.dir == toExperts {
		return tk, op.s.recvRows
	}
	return op.s.recvRows, tk
}

func (op *exchangeOp) Arity() int {
	if op.ordered {
		return 3
	}
	return 2
}

func (op *exchangeOp) Type() hm.Type {
	if op.ordered {
		return hm.NewFnType(floatT(2), int32T(2), floatT(2), floatT(2))
	}
	return hm.NewFnType(floatT(2), int32T(2), floatT(2))
}

func (op *exchangeOp) String() string {
	return fmt.Sprintf("ep.Exchange{%s,ordered=%t,%v}", [...]string{"to-experts", "from-experts"}[op.dir], op.ordered, op.s)
}
func (op *exchangeOp) WriteHash(h hash.Hash) { hashString(op.String(), h) }
func (op *exchangeOp) Hashcode() uint32      { return hash32(op.String()) }
func (op *exchangeOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	d[0] = !op.ordered
	return d
}

// SymDiff: the gradient of an exchange is the exchange in the other direction over the same counts,
// ordered after this exchange (its output is the third input).
func (op *exchangeOp) SymDiff(in G.Nodes, out, g *G.Node) (G.Nodes, error) {
	if op.ordered {
		return nil, fmt.Errorf("ep: %v: second derivatives are not supported", op)
	}
	if len(in) != 2 {
		return nil, fmt.Errorf("ep: %v: want 2 inputs, got %d", op, len(in))
	}
	back := &exchangeOp{s: op.s, dir: 1 - op.dir, tr: op.tr, ordered: true}
	d, err := G.ApplyOp(back, g, in[1], out)
	return G.Nodes{d, nil}, err
}

func (op *exchangeOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	x, err := shapeArg(ds, 0)
	if err != nil {
		return nil, err
	}
	in, out := op.rows()
	if len(x) != 2 || x[0] != in {
		return nil, fmt.Errorf("ep: %v: input shape %v, want [%d,H]: %w", op, x, in, ops.ErrShape)
	}
	return tensor.Shape{out, x[1]}, nil
}

func (op *exchangeOp) Do(vs ...G.Value) (G.Value, error) {
	if len(vs) != op.Arity() {
		return nil, fmt.Errorf("ep: %v: want %d inputs, got %d: %w", op, op.Arity(), len(vs), ops.ErrShape)
	}
	in, out := op.rows()
	x, err := dense("exchange", "rows", vs[0], tensor.Dtype{}, in, -1)
	if err != nil {
		return nil, err
	}
	lay, err := op.s.countsArg("exchange", vs[1])
	if err != nil {
		return nil, err
	}
	b, err := ops.BackendFor(x)
	if err != nil {
		return nil, err
	}
	res, err := b.New(x.Dtype(), out, x.Shape()[1])
	if err != nil {
		return nil, err
	}
	sends, recvs := lay.dispatchSends(), lay.dispatchRecvs()
	if op.dir == fromExperts {
		sends, recvs = recvs, sends
	}
	if err := op.tr.AllToAllV(x, sends, res, recvs); err != nil {
		return nil, err
	}
	return res, nil
}
