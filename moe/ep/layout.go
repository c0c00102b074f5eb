package ep

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
)

// layout is what every rank derives on the host from the all-gathered routing counts
// C[p][e] = rows rank p routes to expert e. Rank q owns the experts [q*L, (q+1)*L), L = E/W.
//
// Rank r's dispatch output (ops.Dispatch over all E experts) is expert-major, so the rows for rank q's
// experts are contiguous: expert e's rows start at off_r[e] = sum_{e'<e} C[r][e']. A rank's receive
// buffer is expert-major over its L local experts, and within an expert in source-rank order:
//
//	local expert l (global e = q*L + l): rows from rank 0, then rank 1, ... each in the sender's token order
//
// which is exactly the order of expert e's segment in the single-rank layer run on the ranks'
// concatenated tokens. One segment moves per (sender, receiver, local expert) with rows.
type layout struct {
	world, rank, experts, local int
	c                           []int32 // [W*E] row-major C[p][e]
}

func newLayout(counts []int32, world, rank, experts int) (layout, error) {
	if world < 1 || experts%world != 0 || len(counts) != world*experts || rank < 0 || rank >= world {
		return layout{}, fmt.Errorf("ep: counts of %d values for W=%d, E=%d, rank %d: %w", len(counts), world, experts, rank, ops.ErrShape)
	}
	for i, v := range counts {
		if v < 0 {
			return layout{}, fmt.Errorf("ep: negative count %d for rank %d, expert %d: %w", v, i/experts, i%experts, ops.ErrShape)
		}
	}
	return layout{world: world, rank: rank, experts: experts, local: experts / world, c: counts}, nil
}

func (l layout) count(p, e int) int { return int(l.c[p*l.experts+e]) }

// sourceOffset is the first row of expert e in rank p's dispatch output.
func (l layout) sourceOffset(p, e int) int {
	o := 0
	for i := 0; i < e; i++ {
		o += l.count(p, i)
	}
	return o
}

// received is the number of rows rank q receives: every rank's rows for q's experts.
func (l layout) received(q int) int {
	n := 0
	for p := 0; p < l.world; p++ {
		for e := q * l.local; e < (q+1)*l.local; e++ {
			n += l.count(p, e)
		}
	}
	return n
}

// localOffsets are the L+1 segment boundaries of this rank's local experts in its receive buffer.
func (l layout) localOffsets() []int32 {
	off := make([]int32, l.local+1)
	for j := 0; j < l.local; j++ {
		n := 0
		for p := 0; p < l.world; p++ {
			n += l.count(p, l.rank*l.local+j)
		}
		off[j+1] = off[j] + int32(n)
	}
	return off
}

// dispatchSends: from this rank's dispatch output to every rank, one segment per local expert there.
func (l layout) dispatchSends() []Segment {
	var s []Segment
	for q := 0; q < l.world; q++ {
		for e := q * l.local; e < (q+1)*l.local; e++ {
			if n := l.count(l.rank, e); n > 0 {
				s = append(s, Segment{Peer: q, Offset: l.sourceOffset(l.rank, e), Rows: n})
			}
		}
	}
	return s
}

// dispatchRecvs: into this rank's receive buffer, from every rank, in local-expert order per sender.
func (l layout) dispatchRecvs() []Segment {
	var s []Segment
	off := l.localOffsets()
	for p := 0; p < l.world; p++ {
		for j := 0; j < l.local; j++ {
			e := l.rank*l.local + j
			n := l.count(p, e)
			if n == 0 {
				continue
			}
			at := int(off[j])
			for p2 := 0; p2 < p; p2++ {
				at += l.count(p2, e)
			}
			s = append(s, Segment{Peer: p, Offset: at, Rows: n})
		}
	}
	return s
}

// globalCounts is the per-expert row count summed over ranks (the single-rank layer's counts).
func (l layout) globalCounts() []int32 {
	g := make([]int32, l.experts)
	for p := 0; p < l.world; p++ {
		for e := 0; e < l.experts; e++ {
			g[e] += l.c[p*l.experts+e]
		}
	}
	return g
}
