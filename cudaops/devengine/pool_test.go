package devengine

import (
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// fakeRaw hands out addresses from a fake address space of limit bytes (the pool never touches
// memory), 256-byte aligned, never reusing an address unless reuse is set (then the last freed address
// comes back first).
type fakeRaw struct {
	next, limit, used uintptr
	live              map[uintptr]uintptr
	allocs, frees     int
	reuse             bool
	freed             []uintptr
}

func newFakeRaw(limit uintptr) *fakeRaw {
	return &fakeRaw{next: 0x7000_0000_0000, limit: limit, live: map[uintptr]uintptr{}}
}

func (r *fakeRaw) Alloc(n int64) (uintptr, error) {
	if r.used+uintptr(n) > r.limit {
		return 0, fmt.Errorf("fake: %d bytes: %w", n, ErrOutOfMemory)
	}
	p := r.next
	if r.reuse && len(r.freed) > 0 {
		p = r.freed[len(r.freed)-1]
		r.freed = r.freed[:len(r.freed)-1]
	} else {
		r.next += (uintptr(n) + 255) &^ 255
	}
	r.used += uintptr(n)
	r.live[p] = uintptr(n)
	r.allocs++
	return p, nil
}

func (r *fakeRaw) Free(p uintptr) error {
	n, ok := r.live[p]
	if !ok {
		return fmt.Errorf("fake: double free of %#x", p)
	}
	delete(r.live, p)
	r.freed = append(r.freed, p)
	r.used -= n
	r.frees++
	return nil
}

func (r *fakeRaw) Sync() error { return nil }

func TestSizeClass(t *testing.T) {
	for _, c := range []struct{ n, want int64 }{{0, 512}, {1, 512}, {512, 512}, {513, 1024}, {1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {5 << 20, 6 << 20}} {
		if got := sizeClass(c.n); got != c.want {
			t.Errorf("sizeClass(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestPoolTagsAndReuse(t *testing.T) {
	raw := newFakeRaw(1 << 30)
	p := NewPool("test", raw)
	a, err := p.Alloc(1000)
	if err != nil {
		t.Fatal(err)
	}
	if tagOf(a) == 0 {
		t.Fatalf("tensor memory %#x is not tagged", a)
	}
	if r, err := p.Resolve(a+8, 992); err != nil || r != Untag(a)+8 {
		t.Fatalf("Resolve inside the block: %#x, %v", r, err)
	}
	if _, err := p.Resolve(a, 1001); !errors.Is(err, ops.ErrShape) {
		t.Errorf("Resolve past the end: %v, want ErrShape", err)
	}
	if _, err := p.Resolve(Untag(a), 8); !errors.Is(err, ops.ErrMixedBackends) {
		t.Errorf("Resolve of the untagged address: %v, want ErrMixedBackends", err)
	}
	if err := p.Free(a); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Resolve(a, 8); !errors.Is(err, ErrReleased) {
		t.Errorf("Resolve after Free: %v, want ErrReleased", err)
	}
	b, err := p.Alloc(900) // same size class: the same block, a new tag
	if err != nil {
		t.Fatal(err)
	}
	if Untag(b) != Untag(a) || tagOf(b) == tagOf(a) {
		t.Fatalf("reuse: %#x then %#x; want the same block with another tag", a, b)
	}
	if _, err := p.Resolve(a, 8); !errors.Is(err, ErrReleased) {
		t.Errorf("stale address after reuse: %v, want ErrReleased", err)
	}
	if !p.Owns(a) || !p.Owns(b) || p.Owns(Untag(b)) {
		t.Errorf("Owns: stale %t live %t untagged %t; want true true false", p.Owns(a), p.Owns(b), p.Owns(Untag(b)))
	}
	if err := p.Free(b + 8); err == nil {
		t.Errorf("Free of an interior address: no error")
	}
	if err := p.Free(a); err == nil {
		t.Errorf("Free of a stale address: no error")
	}
	s, err := p.Scratch(100)
	if err != nil {
		t.Fatal(err)
	}
	if tagOf(s) != 0 {
		t.Errorf("scratch memory is tagged")
	}
	if _, err := p.Resolve(s, 8); err == nil {
		t.Errorf("scratch memory resolves as tensor memory")
	}
	if err := p.PutScratch(s); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.DriverAllocs != 2 || st.LiveBytes != 1024 || st.CachedBytes != 512 {
		t.Errorf("stats %+v; want 2 driver allocations, 1024 live, 512 cached", st)
	}
	if err := p.ReleaseCache(); err != nil {
		t.Fatal(err)
	}
	if raw.frees != 1 || p.Stats().CachedBytes != 0 {
		t.Errorf("ReleaseCache: %d frees, %+v", raw.frees, p.Stats())
	}
	if !p.Owns(s | 1<<tagShift) {
		t.Errorf("a tagged address in a retired block must still be this device's")
	}
	if err := p.ReleaseAll(); err != nil {
		t.Fatal(err)
	}
	if len(raw.live) != 0 {
		t.Errorf("ReleaseAll left %d raw blocks", len(raw.live))
	}
	if _, err := p.Resolve(b, 8); !errors.Is(err, ErrReleased) {
		t.Errorf("after ReleaseAll: %v, want ErrReleased", err)
	}
}

func TestPoolSteps(t *testing.T) {
	p := NewPool("test", newFakeRaw(1<<30))
	before, _ := p.Alloc(64) // outside the step: the caller's
	if err := p.BeginStep(); err != nil {
		t.Fatal(err)
	}
	var inStep []uintptr
	for i := 0; i < 5; i++ {
		a, err := p.Alloc(int64(100 * (i + 1)))
		if err != nil {
			t.Fatal(err)
		}
		inStep = append(inStep, a)
	}
	kept := tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{0}))
	if err := p.Persist(inStep[2], 4, kept); err != nil {
		t.Fatal(err)
	}
	if err := p.Free(inStep[4]); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.StepBytes != 3*512 {
		t.Errorf("StepBytes %d, want %d", st.StepBytes, 3*512)
	}
	if err := p.EndStep(); err != nil {
		t.Fatal(err)
	}
	for i, a := range inStep {
		_, err := p.Resolve(a, 4)
		if i == 2 {
			if err != nil {
				t.Errorf("persisted block: %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrReleased) {
			t.Errorf("step block %d after EndStep: %v, want ErrReleased", i, err)
		}
	}
	if _, err := p.Resolve(before, 4); err != nil {
		t.Errorf("block from before the step: %v", err)
	}
	if st := p.Stats(); st.StepBytes != 0 {
		t.Errorf("StepBytes %d after EndStep", st.StepBytes)
	}
	runtime.KeepAlive(kept)
	// The persisted block is released once its tensor is collected.
	kept = nil
	for i := 0; i < 20; i++ {
		runtime.GC()
		if _, err := p.Resolve(inStep[2], 4); errors.Is(err, ErrReleased) {
			return
		}
	}
	t.Errorf("the persisted block outlived its tensor")
}

// TestPoolReclaimsCollectedTensors: with the device full of tensors nobody references any more, an
// allocation collects them and succeeds instead of reporting out-of-memory.
func TestPoolReclaimsCollectedTensors(t *testing.T) {
	raw := newFakeRaw(8 << 20)
	p := NewPool("test", raw)
	for i := 0; i < 100; i++ {
		a, err := p.Alloc(2 << 20)
		if err != nil {
			t.Fatalf("allocation %d: %v (stats %+v)", i, err, p.Stats())
		}
		owner := tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{float32(i)}))
		if err := p.Adopt(a, owner); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stats %+v", p.Stats())
	// Memory owned by the caller (Alloc without a tensor) is never taken back.
	if _, err := p.Alloc(2 << 20); err != nil {
		t.Fatal(err)
	}
	held := make([]uintptr, 0, 4)
	var err error
	for i := 0; i < 8 && err == nil; i++ {
		var a uintptr
		if a, err = p.Alloc(2 << 20); err == nil {
			held = append(held, a)
		}
	}
	if !errors.Is(err, ErrOutOfMemory) {
		t.Errorf("allocating past the device with every block held: %v, want ErrOutOfMemory (after %d more blocks)", err, len(held))
	}
}

// TestPoolReclaimBeforeCleanups: the out-of-memory path takes back the blocks of collected tensors
// even before their cleanups ran (here they are held up by the pool's lock), and the late cleanups are
// harmless.
func TestPoolReclaimBeforeCleanups(t *testing.T) {
	p := NewPool("test", newFakeRaw(1<<30))
	var addrs []uintptr
	func() {
		for i := 0; i < 10; i++ {
			a, err := p.Alloc(4096)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Adopt(a, tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{1}))); err != nil {
				t.Fatal(err)
			}
			addrs = append(addrs, a)
		}
	}()
	alive := tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{2}))
	keep, err := p.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Adopt(keep, alive); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	runtime.GC()
	p.reclaimLocked()
	got := p.stats.Reclaimed
	p.mu.Unlock()
	if got != 10 {
		t.Errorf("reclaimed %d blocks, want 10", got)
	}
	for _, a := range addrs {
		if _, err := p.Resolve(a, 8); !errors.Is(err, ErrReleased) {
			t.Errorf("reclaimed block %#x: %v, want ErrReleased", a, err)
		}
	}
	// The same blocks are handed out again; the late cleanups must not release them.
	var again []uintptr
	for range addrs {
		a, err := p.Alloc(4096)
		if err != nil {
			t.Fatal(err)
		}
		again = append(again, a)
	}
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	for _, a := range again {
		if _, err := p.Resolve(a, 8); err != nil {
			t.Errorf("a late cleanup released a block handed out again: %v", err)
		}
	}
	if _, err := p.Resolve(keep, 8); err != nil {
		t.Errorf("the block of a live tensor was reclaimed: %v", err)
	}
	runtime.KeepAlive(alive)
}

// TestPoolTagsSurviveDriverReuse: when the device hands out an address again after the pool returned
// it, a stale tensor of the old block still does not match the new block's tags.
func TestPoolTagsSurviveDriverReuse(t *testing.T) {
	raw := newFakeRaw(1 << 30)
	raw.reuse = true
	p := NewPool("test", raw)
	var stale []uintptr
	for i := 0; i < 3; i++ {
		a, err := p.Alloc(1000)
		if err != nil {
			t.Fatal(err)
		}
		stale = append(stale, a)
		if err := p.Free(a); err != nil {
			t.Fatal(err)
		}
		if err := p.ReleaseCache(); err != nil {
			t.Fatal(err)
		}
	}
	a, err := p.Alloc(1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stale {
		if Untag(s) != Untag(a) {
			t.Fatalf("the fake device did not reuse the address")
		}
		if _, err := p.Resolve(s, 8); !errors.Is(err, ErrReleased) {
			t.Errorf("stale tag %d on a reused address: %v, want ErrReleased", tagOf(s), err)
		}
	}
	if _, err := p.Resolve(a, 8); err != nil {
		t.Errorf("the live block: %v", err)
	}
}

// TestPoolZeroByteOperands: zero-byte tensors resolve, including a view that starts right after the
// last byte of a block whose requested size fills its class (where the next block begins).
func TestPoolZeroByteOperands(t *testing.T) {
	p := NewPool("test", newFakeRaw(1<<30))
	empty, err := p.Alloc(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Resolve(empty, 0); err != nil {
		t.Errorf("Resolve of a zero-byte allocation: %v", err)
	}
	full, err := p.Alloc(512) // fills its 512-byte class
	if err != nil {
		t.Fatal(err)
	}
	next, err := p.Alloc(512) // the fake allocator places it right behind full
	if err != nil {
		t.Fatal(err)
	}
	if Untag(next) != Untag(full)+512 {
		t.Fatalf("blocks at %#x and %#x are not adjacent", Untag(full), Untag(next))
	}
	if r, err := p.Resolve(full+512, 0); err != nil || r != Untag(full)+512 {
		t.Errorf("Resolve of a zero-byte view at the end of a block: %#x, %v", r, err)
	}
	if _, err := p.Resolve(full+512-8, 16); !errors.Is(err, ops.ErrShape) {
		t.Errorf("Resolve of bytes running past the end: %v, want ErrShape", err)
	}
}
