package ep

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// opBase answers the Op methods every op of this package answers the same way. ReturnsPtr and
// CallsExtern are false so that Gorgonia never inserts a host allocation for a device result; ops
// allocate through their backend. String spells out every parameter: it is the hash.
type opBase struct{}

func (opBase) ReturnsPtr() bool     { return false }
func (opBase) CallsExtern() bool    { return false }
func (opBase) OverwritesInput() int { return -1 }

func hashString(s string, h hash.Hash) { fmt.Fprint(h, s) }

func hash32(s string) uint32 {
	h := fnv.New32a()
	hashString(s, h)
	return h.Sum32()
}

// Types are built afresh on every call: Gorgonia's type system recycles the types it is given.
func floatT(dims int) hm.Type { return G.TensorType{Dims: dims, Of: hm.TypeVariable('a')} }
func int32T(dims int) hm.Type { return G.TensorType{Dims: dims, Of: tensor.Int32} }

// dense checks that v is a *tensor.Dense of dtype dt (zero Dtype: float32 or float64) and the given
// shape (-1 matches any size).
func dense(op, name string, v G.Value, dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("ep: %s: %s must be a *tensor.Dense, got %T: %w", op, name, v, ops.ErrShape)
	}
	switch {
	case dt.Type == nil && d.Dtype() != tensor.Float32 && d.Dtype() != tensor.Float64:
		return nil, fmt.Errorf("ep: %s: %s must be float32 or float64, got %v: %w", op, name, d.Dtype(), ops.ErrDtype)
	case dt.Type != nil && d.Dtype() != dt:
		return nil, fmt.Errorf("ep: %s: %s must be %v, got %v: %w", op, name, dt, d.Dtype(), ops.ErrDtype)
	}
	s := d.Shape()
	if len(s) != len(shape) {
		return nil, fmt.Errorf("ep: %s: %s must have rank %d, got shape %v: %w", op, name, len(shape), s, ops.ErrShape)
	}
	for i, want := range shape {
		if want >= 0 && s[i] != want {
			return nil, fmt.Errorf("ep: %s: %s has shape %v, want %v (-1: any): %w", op, name, s, shape, ops.ErrShape)
		}
	}
	return d, nil
}

// shapeArg reads input i of InferShape.
func shapeArg(ds []G.DimSizer, i int) (tensor.Shape, error) {
	if i >= len(ds) {
		return nil, fmt.Errorf("ep: InferShape needs %d inputs, got %d: %w", i+1, len(ds), ops.ErrShape)
	}
	s, ok := ds[i].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("ep: InferShape input %d is %T, not a tensor.Shape: %w", i, ds[i], ops.ErrShape)
	}
	return s, nil
}

// setup is the static description of one expert-parallel layer that every op of it carries: sizes
// fixed at graph build. It is part of each op's hash.
type setup struct {
	world, rank int
	experts     int // E (global)
	tokens      int // T per rank
	topK        int // K
	recvRows    int // R, rows of a rank's receive buffers
}

func (s setup) local() int { return s.experts / s.world }

func (s setup) String() string {
	return fmt.Sprintf("W=%d,rank=%d,E=%d,T=%d,K=%d,R=%d", s.world, s.rank, s.experts, s.tokens, s.topK, s.recvRows)
}

// countsArg reads the all-gathered counts [W,E] (host int32) and derives this rank's layout.
func (s setup) countsArg(op string, v G.Value) (layout, error) {
	c, err := dense(op, "counts", v, tensor.Int32, s.world, s.experts)
	if err != nil {
		return layout{}, err
	}
	vals, err := hostInt32s(c)
	if err != nil {
		return layout{}, err
	}
	return newLayout(vals, s.world, s.rank, s.experts)
}
