package ep_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// eachRank runs fn on every rank of a fresh in-process group and returns the ranks' errors.
func eachRank(t *testing.T, world int, timeout time.Duration, fn func(tr ep.Transport) error) []error {
	t.Helper()
	grp, err := ep.NewGroup(world, timeout)
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := 0; r < world; r++ {
		tr, err := grp.Rank(r)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer tr.Close()
			errs[r] = fn(tr)
		}()
	}
	wg.Wait()
	return errs
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

func f32(shape []int, vals ...float32) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(vals))
}

func TestInProcessCollectives(t *testing.T) {
	const world = 3
	errs := eachRank(t, world, 5*time.Second, func(tr ep.Transport) error {
		r := tr.Rank()
		// AllGather of int32.
		recv := tensor.New(tensor.Of(tensor.Int32), tensor.WithShape(world*2))
		if err := tr.AllGather(tensor.New(tensor.WithShape(2), tensor.WithBacking([]int32{int32(10 * r), int32(10*r + 1)})), recv); err != nil {
			return err
		}
		if got := fmt.Sprint(recv.Data()); got != "[0 1 10 11 20 21]" {
			return fmt.Errorf("all-gather gave %s", got)
		}
		// AllReduceSum in place.
		x := f32([]int{2}, float32(r), float32(r*r))
		if err := tr.AllReduceSum(x); err != nil {
			return err
		}
		if got := fmt.Sprint(x.Data()); got != "[3 5]" {
			return fmt.Errorf("all-reduce gave %s", got)
		}
		// AllToAllV: rank r sends its row i (value 100r+i) to rank i, and rows land in rank order.
		send := f32([]int{world, 1}, float32(100*r), float32(100*r+1), float32(100*r+2))
		out := f32([]int{world + 1, 1}, -1, -1, -1, -1)
		var sends, recvs []ep.Segment
		for q := 0; q < world; q++ {
			sends = append(sends, ep.Segment{Peer: q, Offset: q, Rows: 1})
			recvs = append(recvs, ep.Segment{Peer: q, Offset: q, Rows: 1})
		}
		if err := tr.AllToAllV(send, sends, out, recvs); err != nil {
			return err
		}
		want := fmt.Sprint([]float32{float32(r), float32(100 + r), float32(200 + r), -1})
		if got := fmt.Sprint(out.Data()); got != want {
			return fmt.Errorf("all-to-all gave %s, want %s (rows outside receive segments untouched)", got, want)
		}
		return tr.Barrier()
	})
	noErrors(t, errs)
}

// failsWith checks that every listed rank failed with an error wrapping ErrTransport whose message
// mentions each of the given fragments.
func failsWith(t *testing.T, errs []error, ranks []int, fragments ...string) {
	t.Helper()
	for _, r := range ranks {
		err := errs[r]
		if !errors.Is(err, ep.ErrTransport) {
			t.Fatalf("rank %d: error %v, want one wrapping ErrTransport", r, err)
		}
		for _, f := range fragments {
			if !strings.Contains(err.Error(), f) {
				t.Fatalf("rank %d: error %q does not mention %q", r, err, f)
			}
		}
	}
}

// TestDeadRank: a rank that leaves (closes its transport) makes the others fail at once, naming it.
func TestDeadRank(t *testing.T) {
	start := time.Now()
	errs := eachRank(t, 3, time.Minute, func(tr ep.Transport) error {
		if tr.Rank() == 2 {
			return errors.New("rank 2 crashed") // its deferred Close runs now
		}
		for i := 0; i < 3; i++ {
			if err := tr.Barrier(); err != nil {
				return err
			}
		}
		return nil
	})
	failsWith(t, errs, []int{0, 1}, "rank 2 left the group")
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the survivors needed %v to notice", d)
	}
}

// TestStuckRank: a rank that neither arrives nor leaves makes the others fail after the timeout.
func TestStuckRank(t *testing.T) {
	release := make(chan struct{})
	start := time.Now()
	var errs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		errs = eachRank(t, 3, 200*time.Millisecond, func(tr ep.Transport) error {
			if tr.Rank() == 1 {
				<-release // stuck until the others have failed
				return nil
			}
			return tr.Barrier()
		})
	}()
	deadline := time.After(10 * time.Second)
	for {
		time.Sleep(20 * time.Millisecond)
		if time.Since(start) > time.Second {
			break
		}
	}
	close(release)
	select {
	case <-done:
	case <-deadline:
		t.Fatal("ranks hang")
	}
	failsWith(t, errs, []int{0, 2}, "timed out", "rank 1 never entered")
}

// TestCollectiveMismatch: ranks calling different collectives fail instead of exchanging garbage.
func TestCollectiveMismatch(t *testing.T) {
	errs := eachRank(t, 2, 5*time.Second, func(tr ep.Transport) error {
		if tr.Rank() == 0 {
			return tr.Barrier()
		}
		return tr.AllReduceSum(f32([]int{1}, 1))
	})
	failsWith(t, errs, []int{0, 1}, "Barrier", "AllReduceSum")
}

// TestSegmentMismatch: a receiver expecting more rows than the sender sends fails on every rank.
func TestSegmentMismatch(t *testing.T) {
	errs := eachRank(t, 2, 5*time.Second, func(tr ep.Transport) error {
		send := f32([]int{2, 1}, 1, 2)
		recv := f32([]int{2, 1}, 0, 0)
		rows := 1
		if tr.Rank() == 1 {
			rows = 2
		}
		peer := 1 - tr.Rank()
		return tr.AllToAllV(send, []ep.Segment{{Peer: peer, Rows: 1}}, recv, []ep.Segment{{Peer: peer, Rows: rows}})
	})
	failsWith(t, errs, []int{0, 1}, "rows")
}

func TestAbort(t *testing.T) {
	errs := eachRank(t, 2, time.Minute, func(tr ep.Transport) error {
		if tr.Rank() == 0 {
			tr.Abort(errors.New("out of memory"))
			return nil
		}
		return tr.Barrier()
	})
	failsWith(t, errs[1:], []int{0}, "rank 0 aborted", "out of memory")
}

func TestBadTransportArguments(t *testing.T) {
	if _, err := ep.NewGroup(0, 0); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("NewGroup(0): %v, want ErrConfig", err)
	}
	grp, err := ep.NewGroup(2, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := grp.Rank(2); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("Rank(2) of 2: %v, want ErrConfig", err)
	}
	tr, _ := grp.Rank(0)
	send, recv := f32([]int{2, 1}, 1, 2), f32([]int{2, 1}, 0, 0)
	if err := tr.AllToAllV(send, []ep.Segment{{Peer: 5, Rows: 1}}, recv, nil); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("peer 5: %v, want ErrConfig", err)
	}
	if err := tr.AllToAllV(send, []ep.Segment{{Peer: 1, Offset: 1, Rows: 2}}, recv, nil); !errors.Is(err, ops.ErrShape) {
		t.Fatalf("rows past the buffer: %v, want ErrShape", err)
	}
	if err := tr.AllToAllV(send, nil, f32([]int{1, 2}, 0, 0), nil); !errors.Is(err, ops.ErrShape) {
		t.Fatalf("widths 1 and 2: %v, want ErrShape", err)
	}
	if err := tr.AllGather(f32([]int{2}, 1, 2), f32([]int{3}, 0, 0, 0)); !errors.Is(err, ops.ErrShape) {
		t.Fatalf("all-gather into 3 of 2x2: %v, want ErrShape", err)
	}
}

// TestLayerConfigErrors: configurations that cannot be split, and ranks that disagree on the layer,
// fail with ErrConfig on every rank (never a hang or garbage).
func TestLayerConfigErrors(t *testing.T) {
	grp, _ := ep.NewGroup(4, time.Second)
	tr, _ := grp.Rank(0)
	cfg := testConfig(tensor.Float64, 6)
	if _, err := ep.NewLayer(G.NewGraph(), cfg, tr, ep.Options{}); !errors.Is(err, ops.ErrConfig) || !strings.Contains(err.Error(), "6 experts") {
		t.Fatalf("E=6 over 4 ranks: %v, want ErrConfig", err)
	}
	if _, err := ep.NewLayer(G.NewGraph(), testConfig(tensor.Float64, 8), nil, ep.Options{}); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("nil transport: %v, want ErrConfig", err)
	}
	if _, err := ep.NewLayer(G.NewGraph(), testConfig(tensor.Float64, 8), tr, ep.Options{RecvRows: -1}); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("RecvRows -1: %v, want ErrConfig", err)
	}
	bad := testConfig(tensor.Float64, 8)
	bad.TopK = 9
	if _, err := ep.NewLayer(G.NewGraph(), bad, tr, ep.Options{}); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("K=9 of 8: %v, want ErrConfig", err)
	}
	if _, err := ep.LocalWeights(moe0(t).Weights(), 0, 3); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("LocalWeights of 8 experts over 3: %v, want ErrConfig", err)
	}

	// Ranks that build different layers: E differs, or T differs.
	for _, tc := range []struct {
		name     string
		modify   func(r int, experts, tokens *int)
		fragment string
	}{
		{"experts", func(r int, e, _ *int) {
			if r == 1 {
				*e = 4
			}
		}, "experts 4 on rank 1, 8 on rank 0"},
		{"tokens", func(r int, _, tok *int) {
			if r == 0 {
				*tok = 3
			}
		}, "tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := eachRank(t, 2, 5*time.Second, func(tr ep.Transport) error {
				experts, tokens := 8, 4
				tc.modify(tr.Rank(), &experts, &tokens)
				cfg := testConfig(tensor.Float64, experts)
				x := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(tokens, cfg.Hidden))
				up := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(tokens, cfg.Hidden))
				_, err := runRank(cfg, tr, ep.Options{}, x, up)
				return err
			})
			for r, err := range errs {
				if !errors.Is(err, ops.ErrConfig) && !errors.Is(err, ep.ErrTransport) {
					t.Fatalf("rank %d: %v, want ErrConfig", r, err)
				}
			}
			if !errors.Is(errs[0], ops.ErrConfig) || !strings.Contains(errs[0].Error(), tc.fragment) {
				t.Fatalf("rank 0: %v, want ErrConfig mentioning %q", errs[0], tc.fragment)
			}
		})
	}
}

// TestLayerDeadRank: a rank that dies before its forward pass makes the others' RunAll fail with an
// error naming it, well before the group's timeout.
func TestLayerDeadRank(t *testing.T) {
	start := time.Now()
	errs := eachRank(t, 3, time.Minute, func(tr ep.Transport) error {
		if tr.Rank() == 1 {
			return errors.New("killed")
		}
		cfg := testConfig(tensor.Float64, 6)
		x := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(4, cfg.Hidden))
		_, err := runRank(cfg, tr, ep.Options{}, x, x.Clone().(*tensor.Dense))
		return err
	})
	failsWith(t, errs, []int{0, 2}, "rank 1 left the group")
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the survivors needed %v to notice", d)
	}
}

func moe0(t *testing.T) *moe.Layer {
	t.Helper()
	l, err := moe.NewLayer(G.NewGraph(), testConfig(tensor.Float64, 8))
	if err != nil {
		t.Fatal(err)
	}
	return l
}
