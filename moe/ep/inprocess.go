package ep

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Group is an in-process transport: World goroutine "ranks" in one process exchange host tensors, or
// device tensors of one device backend, by copying between each other's buffers. It is a test double
// for everything above the transport (the exchange ops, the expert-parallel layer), in CI and on one
// GPU; it does not model a network and is not meant for production.
//
// Every collective is a rendezvous: the k-th collective call of each rank meets the k-th call of every
// other rank. When all have arrived each rank reads what it needs from the others' buffers, the ranks
// meet again, and each then writes its own results (so in-place AllReduceSum is safe). A rank that
// closes its transport, aborts, calls a different collective or does not arrive within the timeout
// makes every rank's collective fail with an error naming that rank (wrapping ErrTransport).
type Group struct {
	world   int
	timeout time.Duration

	mu       sync.Mutex
	rounds   map[int]*round
	next     []int  // per rank: index of its next collective
	closed   []bool // per rank: Close was called
	failed   chan struct{}
	failErr  error
	failOnce sync.Once
}

// round is one collective: the calls of all ranks and two barriers.
type round struct {
	calls    []*call
	arrived  int
	ready    chan struct{} // closed when every rank has arrived
	read     int
	readDone chan struct{} // closed when every rank has finished reading
	left     int
}

type callKind int

const (
	kindAllGather callKind = iota
	kindAllToAllV
	kindAllReduce
	kindBarrier
)

func (k callKind) String() string {
	return [...]string{"AllGather", "AllToAllV", "AllReduceSum", "Barrier"}[k]
}

// call is what a rank brings to a round.
type call struct {
	kind  callKind
	send  *tensor.Dense // the buffer others read from
	sends []Segment     // AllToAllV: this rank's send segments
}

// NewGroup makes an in-process group of world ranks. timeout bounds every wait for other ranks
// (0: one minute).
func NewGroup(world int, timeout time.Duration) (*Group, error) {
	if world < 1 {
		return nil, fmt.Errorf("ep: world size must be >= 1, got %d: %w", world, ops.ErrConfig)
	}
	if timeout <= 0 {
		timeout = time.Minute
	}
	return &Group{world: world, timeout: timeout, rounds: map[int]*round{}, next: make([]int, world),
		closed: make([]bool, world), failed: make(chan struct{})}, nil
}

// Rank returns the transport of rank r. Each rank's transport must be used by one goroutine at a time.
func (g *Group) Rank(r int) (Transport, error) {
	if r < 0 || r >= g.world {
		return nil, fmt.Errorf("ep: rank %d outside [0,%d): %w", r, g.world, ops.ErrConfig)
	}
	return &inProcess{g: g, rank: r}, nil
}

// fail records the group's first failure and wakes every waiting rank.
func (g *Group) fail(err error) {
	g.failOnce.Do(func() {
		g.mu.Lock()
		g.failErr = err
		g.mu.Unlock()
		close(g.failed)
	})
}

func (g *Group) failure() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failErr
}

type inProcess struct {
	g    *Group
	rank int
}

func (t *inProcess) Rank() int  { return t.rank }
func (t *inProcess) World() int { return t.g.world }

func (t *inProcess) Abort(cause error) {
	t.g.fail(fmt.Errorf("ep: rank %d aborted: %v: %w", t.rank, cause, ErrTransport))
}

func (t *inProcess) Close() error {
	g := t.g
	g.mu.Lock()
	if g.closed[t.rank] {
		g.mu.Unlock()
		return nil
	}
	g.closed[t.rank] = true
	// A round that still waits for this rank can never complete.
	waiting := false
	for _, r := range g.rounds {
		if r.calls[t.rank] == nil {
			waiting = true
		}
	}
	g.mu.Unlock()
	if waiting {
		g.fail(fmt.Errorf("ep: rank %d left the group (closed its transport) while other ranks wait for it in a collective: %w", t.rank, ErrTransport))
	}
	return nil
}

// wait blocks until ch is closed, the group fails or the timeout passes (then the group fails).
func (t *inProcess) wait(ch chan struct{}, what string, seq int) error {
	timer := time.NewTimer(t.g.timeout)
	defer timer.Stop()
	select {
	case <-ch:
		return nil
	case <-t.g.failed:
		return t.g.failure()
	case <-timer.C:
		t.g.fail(fmt.Errorf("ep: collective %d timed out after %v: %s (%w)", seq, t.g.timeout, t.g.missing(seq, what), ErrTransport))
		return t.g.failure()
	}
}

// missing describes which ranks a round still waits for.
func (g *Group) missing(seq int, what string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.rounds[seq]
	var absent []int
	for i := 0; i < g.world; i++ {
		if r == nil || (what == "arrive" && r.calls[i] == nil) {
			absent = append(absent, i)
		}
	}
	if what == "arrive" {
		return fmt.Sprintf("%s never entered it (dead, stuck, or running a different program)", rankList(absent))
	}
	return "a rank did not finish reading (stuck inside the collective)"
}

// run performs one collective: arrive, read (others' buffers into mine), meet, write (mine only).
func (t *inProcess) run(c *call, read func(r *round) error, write func() error) error {
	g := t.g
	if err := g.failure(); err != nil {
		return err
	}
	g.mu.Lock()
	if g.closed[t.rank] {
		g.mu.Unlock()
		return fmt.Errorf("ep: rank %d: transport is closed: %w", t.rank, ErrTransport)
	}
	seq := g.next[t.rank]
	g.next[t.rank]++
	r := g.rounds[seq]
	if r == nil {
		r = &round{calls: make([]*call, g.world), ready: make(chan struct{}), readDone: make(chan struct{})}
		g.rounds[seq] = r
	}
	r.calls[t.rank] = c
	r.arrived++
	if r.arrived == g.world {
		close(r.ready)
	}
	var gone []int
	for i, cl := range g.closed {
		if cl && r.calls[i] == nil {
			gone = append(gone, i)
		}
	}
	g.mu.Unlock()
	if len(gone) > 0 {
		g.fail(fmt.Errorf("ep: collective %d (%v) cannot complete: %s left the group (closed the transport): %w", seq, c.kind, rankList(gone), ErrTransport))
		return g.failure()
	}
	if err := t.wait(r.ready, "arrive", seq); err != nil {
		return err
	}
	for i, other := range r.calls {
		if other.kind != c.kind {
			err := fmt.Errorf("ep: collective %d: rank %d called %v, rank %d called %v (ranks must run the same collectives in the same order): %w",
				seq, t.rank, c.kind, i, other.kind, ErrTransport)
			g.fail(err)
			return err
		}
	}
	if err := read(r); err != nil {
		err = fmt.Errorf("ep: rank %d, collective %d (%v): %w (%w)", t.rank, seq, c.kind, err, ErrTransport)
		g.fail(err)
		return err
	}
	g.mu.Lock()
	r.read++
	if r.read == g.world {
		close(r.readDone)
	}
	g.mu.Unlock()
	if err := t.wait(r.readDone, "read", seq); err != nil {
		return err
	}
	g.mu.Lock()
	r.left++
	if r.left == g.world {
		delete(g.rounds, seq)
	}
	g.mu.Unlock()
	if write != nil {
		if err := write(); err != nil {
			err = fmt.Errorf("ep: rank %d, collective %d (%v): %w (%w)", t.rank, seq, c.kind, err, ErrTransport)
			g.fail(err)
			return err
		}
	}
	return nil
}

func (t *inProcess) Barrier() error {
	return t.run(&call{kind: kindBarrier}, func(*round) error { return nil }, nil)
}

func (t *inProcess) AllGather(send, recv *tensor.Dense) error {
	if send == nil || recv == nil {
		return fmt.Errorf("ep: all-gather of a nil tensor: %w", ops.ErrShape)
	}
	n := send.Shape().TotalSize()
	if recv.Shape().TotalSize() != t.g.world*n || send.Dtype() != recv.Dtype() {
		return fmt.Errorf("ep: all-gather: send %v %v and recv %v %v, want recv of %d elements of the same dtype: %w",
			send.Dtype(), send.Shape(), recv.Dtype(), recv.Shape(), t.g.world*n, ops.ErrShape)
	}
	return t.run(&call{kind: kindAllGather, send: send}, func(r *round) error {
		for p, c := range r.calls {
			if c.send.Shape().TotalSize() != n || c.send.Dtype() != send.Dtype() {
				return fmt.Errorf("rank %d sends %v %v, this rank %v %v: %w", p, c.send.Dtype(), c.send.Shape(), send.Dtype(), send.Shape(), ops.ErrShape)
			}
			if err := copyElems(recv, p*n, c.send, 0, n); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

func (t *inProcess) AllToAllV(send *tensor.Dense, sends []Segment, recv *tensor.Dense, recvs []Segment) error {
	h, err := CheckAllToAllV(send, sends, recv, recvs, t.g.world)
	if err != nil {
		return err
	}
	return t.run(&call{kind: kindAllToAllV, send: send, sends: sends}, func(r *round) error {
		// Pull: the i-th segment this rank receives from p is the i-th segment p sends to this rank.
		next := make([]int, t.g.world)
		for _, rs := range recvs {
			if rs.Rows == 0 {
				continue
			}
			src := r.calls[rs.Peer]
			if src.send.Dtype() != recv.Dtype() || src.send.Shape()[1] != h {
				return fmt.Errorf("rank %d sends %v rows of width %d, this rank receives %v rows of width %d: %w",
					rs.Peer, src.send.Dtype(), src.send.Shape()[1], recv.Dtype(), h, ops.ErrShape)
			}
			ss, ok := nthTo(src.sends, t.rank, next[rs.Peer])
			if !ok {
				return fmt.Errorf("receives segment %d from rank %d, which sends only %d segments here: %w",
					next[rs.Peer], rs.Peer, next[rs.Peer], ops.ErrShape)
			}
			next[rs.Peer]++
			if ss.Rows != rs.Rows {
				return fmt.Errorf("segment %d from rank %d: rank %d sends %d rows, this rank expects %d: %w",
					next[rs.Peer]-1, rs.Peer, rs.Peer, ss.Rows, rs.Rows, ops.ErrShape)
			}
			if err := copyRows(recv, rs.Offset, src.send, ss.Offset, rs.Rows, h); err != nil {
				return err
			}
		}
		for p, c := range r.calls {
			if extra := countTo(c.sends, t.rank) - next[p]; extra > 0 {
				return fmt.Errorf("rank %d sends %d segments more than this rank receives from it: %w", p, extra, ops.ErrShape)
			}
		}
		return nil
	}, nil)
}

// nthTo returns the n-th non-empty segment addressed to peer.
func nthTo(segs []Segment, peer, n int) (Segment, bool) {
	for _, s := range segs {
		if s.Peer == peer && s.Rows > 0 {
			if n == 0 {
				return s, true
			}
			n--
		}
	}
	return Segment{}, false
}

func countTo(segs []Segment, peer int) int {
	n := 0
	for _, s := range segs {
		if s.Peer == peer && s.Rows > 0 {
			n++
		}
	}
	return n
}

func (t *inProcess) AllReduceSum(x *tensor.Dense) error {
	if x == nil || (x.Dtype() != tensor.Float32 && x.Dtype() != tensor.Float64) {
		return fmt.Errorf("ep: all-reduce needs a float32 or float64 tensor, got %v: %w", dtypeOf(x), ops.ErrDtype)
	}
	var sum *tensor.Dense
	return t.run(&call{kind: kindAllReduce, send: x}, func(r *round) error {
		// Every rank sums all contributions in rank order: the same bits everywhere.
		for p, c := range r.calls {
			if !c.send.Shape().Eq(x.Shape()) || c.send.Dtype() != x.Dtype() {
				return fmt.Errorf("rank %d reduces %v %v, this rank %v %v: %w", p, c.send.Dtype(), c.send.Shape(), x.Dtype(), x.Shape(), ops.ErrShape)
			}
			h, err := toHost(c.send)
			if err != nil {
				return err
			}
			if sum == nil {
				sum = tensor.New(tensor.Of(x.Dtype()), tensor.WithShape(x.Shape().Clone()...))
			}
			switch s := sum.Data().(type) {
			case []float32:
				for i, v := range h.Data().([]float32) {
					s[i] += v
				}
			case []float64:
				for i, v := range h.Data().([]float64) {
					s[i] += v
				}
			}
		}
		return nil
	}, func() error {
		return copyElems(x, 0, sum, 0, x.Shape().TotalSize())
	})
}

// rankList names ranks: "rank 2" or "ranks 1, 3".
func rankList(ids []int) string {
	if len(ids) == 1 {
		return fmt.Sprintf("rank %d", ids[0])
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return "ranks " + strings.Join(s, ", ")
}
