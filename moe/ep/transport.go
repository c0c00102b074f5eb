package ep

import (
	"errors"
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Transport moves rows between the ranks of one expert-parallel group. Every method is a collective:
// all ranks call the same methods in the same order (a rank that calls a different collective, or
// stops calling, makes the others fail — never hang — within the transport's timeout). A failed
// transport stays failed: every later call returns an error wrapping ErrTransport.
//
// Buffers are *tensor.Dense of one backend: host tensors, or device tensors of the backend the
// implementation supports (it may stage host tensors through device memory). Send and receive buffers
// of one call must not overlap.
type Transport interface {
	// Rank is this rank's index in [0, World()).
	Rank() int
	// World is the number of ranks.
	World() int
	// AllGather writes every rank's send [n] into recv [World*n], rank p's block at p*n. All ranks pass
	// the same n and dtype.
	AllGather(send, recv *tensor.Dense) error
	// AllToAllV sends rows of send [N,H] and receives rows into recv [M,H] (one dtype and H on every
	// rank). The segments this rank sends to peer q and those q receives from this rank are matched in
	// list order and must have equal row counts (segments of zero rows are ignored); a rank may send to
	// itself. Rows of recv outside every receive segment are left unchanged.
	AllToAllV(send *tensor.Dense, sends []Segment, recv *tensor.Dense, recvs []Segment) error
	// AllReduceSum replaces t (float) by the elementwise sum over ranks of t. Every rank gets the same
	// bits.
	AllReduceSum(t *tensor.Dense) error
	// Barrier returns when every rank has entered it.
	Barrier() error
	// Abort fails the group: collectives in progress or to come fail on every rank with an error
	// naming this rank and cause.
	Abort(cause error)
	// Close releases the transport. Other ranks' collectives that still wait for this rank fail.
	Close() error
}

// Segment is a run of Rows rows starting at row Offset of a buffer, sent to or received from Peer.
type Segment struct {
	Peer, Offset, Rows int
}

// ErrTransport is wrapped by every error that comes from a failed collective: a peer that died,
// aborted, timed out or called a different collective.
var ErrTransport = errors.New("expert-parallel transport failed")

// ErrCapacity is wrapped by the error every rank returns when one rank would receive more rows than
// its receive buffers hold (Options.RecvRows).
var ErrCapacity = errors.New("receive capacity exceeded")

// checkSegments validates segment lists against buffer row counts and the world size.
func checkSegments(what string, segs []Segment, rows, world int) error {
	for i, s := range segs {
		if s.Peer < 0 || s.Peer >= world {
			return fmt.Errorf("ep: %s segment %d: peer %d outside [0,%d): %w", what, i, s.Peer, world, ops.ErrConfig)
		}
		if s.Rows < 0 || s.Offset < 0 || s.Offset+s.Rows > rows {
			return fmt.Errorf("ep: %s segment %d: rows [%d,%d) outside a buffer of %d rows: %w", what, i, s.Offset, s.Offset+s.Rows, rows, ops.ErrShape)
		}
	}
	return nil
}

// checkRows validates the two buffers of an AllToAllV: matrices of one float or int32 dtype and width.
func checkRows(send, recv *tensor.Dense) (h int, err error) {
	if send == nil || recv == nil || send.Dims() != 2 || recv.Dims() != 2 {
		return 0, fmt.Errorf("ep: all-to-all buffers must be matrices, got %v and %v: %w", shapeOf(send), shapeOf(recv), ops.ErrShape)
	}
	if send.Dtype() != recv.Dtype() {
		return 0, fmt.Errorf("ep: all-to-all buffers have dtypes %v and %v: %w", send.Dtype(), recv.Dtype(), ops.ErrDtype)
	}
	if send.Shape()[1] != recv.Shape()[1] {
		return 0, fmt.Errorf("ep: all-to-all buffers have widths %d and %d: %w", send.Shape()[1], recv.Shape()[1], ops.ErrShape)
	}
	return send.Shape()[1], nil
}

func shapeOf(t *tensor.Dense) tensor.Shape {
	if t == nil {
		return nil
	}
	return t.Shape()
}

// CheckAllToAllV validates the arguments of Transport.AllToAllV for implementations: two matrices of
// one dtype and width H (returned), segments inside the buffers and peers inside [0, world).
func CheckAllToAllV(send *tensor.Dense, sends []Segment, recv *tensor.Dense, recvs []Segment, world int) (int, error) {
	h, err := checkRows(send, recv)
	if err != nil {
		return 0, err
	}
	if err := checkSegments("send", sends, send.Shape()[0], world); err != nil {
		return 0, err
	}
	if err := checkSegments("receive", recvs, recv.Shape()[0], world); err != nil {
		return 0, err
	}
	return h, nil
}
