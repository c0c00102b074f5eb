package devengine

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"weak"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// ErrOutOfMemory is wrapped by Raw.Alloc when the device is full, and by the pool when it stays full
// after reclaiming collected tensors and returning its cache.
var ErrOutOfMemory = errors.New("device out of memory")

// ErrReleased is wrapped by operand checks that meet a tensor whose memory went back to the pool: it
// was freed, or it was allocated in a training step that has ended (Pool.Persist keeps a tensor beyond
// its step).
var ErrReleased = errors.New("tensor memory was released")

// Raw is the device's own allocator under the pool (cuMemAlloc/cuMemFree on CUDA).
type Raw interface {
	// Alloc returns n > 0 bytes of device memory, 256-byte aligned, at an address below 2^48. A full
	// device gives an error wrapping ErrOutOfMemory.
	Alloc(n int64) (uintptr, error)
	// Free returns memory from Alloc to the device.
	Free(p uintptr) error
	// Sync waits until no queued device work uses any memory (before memory goes back to the device).
	Sync() error
}

const (
	tagShift = 48
	tagMask  = 1<<15 - 1
	addrMask = uintptr(1)<<tagShift - 1

	minClass   = 512
	smallLimit = 1 << 20
	largeStep  = 2 << 20
	maxRetired = 1 << 16
)

// Untag returns the real device address of a (possibly tagged) address.
func Untag(p uintptr) uintptr { return p & addrMask }

func tagOf(p uintptr) uint32 { return uint32(p>>tagShift) & tagMask }

// sizeClass rounds a request up to its class: powers of two from 512 B to 1 MiB, then multiples of 2 MiB.
func sizeClass(n int64) int64 {
	if n <= minClass {
		return minClass
	}
	if n <= smallLimit {
		c := int64(minClass)
		for c < n {
			c <<= 1
		}
		return c
	}
	return (n + largeStep - 1) / largeStep * largeStep
}

// ownership says who releases a live block.
type ownership uint8

const (
	ownScratch ownership = iota // internal, untagged, released by PutScratch
	ownManual                   // released by Free only (Engine.Alloc outside a step)
	ownGC                       // released when every owning tensor is collected, or by Free
	ownStep                     // released at EndStep, or by Free
)

type owner struct {
	w       weak.Pointer[tensor.Dense]
	cleanup runtime.Cleanup
	gone    bool
}

type block struct {
	base   uintptr // real address
	class  int64   // bytes obtained from Raw
	size   int64   // bytes requested by the current holder
	live   bool
	gen    uint32 // generation: the tag of the current (or last) holder, 1..tagMask
	tagged bool   // handed out with a tagged address (tensor memory) rather than as scratch
	own    ownership
	owners []owner
}

// Stats counts pool traffic.
type Stats struct {
	DriverAllocs int64 // Raw.Alloc calls that succeeded
	CacheHits    int64 // requests served from the cache
	LiveBytes    int64 // bytes (size classes) in blocks handed out
	CachedBytes  int64 // bytes in cached blocks
	StepBytes    int64 // the part of LiveBytes that belongs to the current training step
	Reclaimed    int64 // blocks taken back from collected tensors on out-of-memory retries
}

// Pool is a caching allocator over a Raw allocator with tagged addresses, training-step scopes and
// ownership by tensors (see the package documentation). It is safe for concurrent use; Raw is called
// with the pool's lock held.
type Pool struct {
	name string
	raw  Raw

	mu      sync.Mutex
	blocks  []*block           // every block obtained from raw, sorted by base
	free    map[int64][]*block // cached blocks by size class
	retired []span             // ranges returned to raw: tagged addresses there are still this device's
	inStep  bool
	stats   Stats
}

// span is a range returned to raw, with the last generation handed out there.
type span struct {
	lo, hi uintptr
	gen    uint32
}

// NewPool returns an empty pool over raw; name appears in error messages.
func NewPool(name string, raw Raw) *Pool {
	return &Pool{name: name, raw: raw, free: map[int64][]*block{}}
}

// Name is the device name given to NewPool.
func (p *Pool) Name() string { return p.name }

// Alloc hands out n bytes of tensor memory at a tagged address: owned by the current training step,
// or, outside a step, by the caller until Free.
func (p *Pool) Alloc(n int64) (uintptr, error) {
	b, err := p.get(n, true)
	if err != nil {
		return 0, err
	}
	return b.addr(), nil
}

// Scratch hands out n bytes of internal memory at an untagged address, for kernels' temporary
// buffers; PutScratch returns it. Scratch memory never belongs to a step and never backs a tensor.
func (p *Pool) Scratch(n int64) (uintptr, error) {
	b, err := p.get(n, false)
	if err != nil {
		return 0, err
	}
	return b.base, nil
}

// PutScratch returns memory from Scratch.
func (p *Pool) PutScratch(addr uintptr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.find(addr)
	if b == nil || !b.live || b.tagged || b.base != addr {
		return fmt.Errorf("%s: PutScratch(%#x): not a scratch block of this device", p.name, addr)
	}
	p.releaseLocked(b)
	return nil
}

func (b *block) addr() uintptr {
	if !b.tagged {
		return b.base
	}
	return b.base | uintptr(b.gen)<<tagShift
}

func (p *Pool) get(n int64, tagged bool) (*block, error) {
	if n < 0 {
		return nil, fmt.Errorf("%s: alloc: negative size %d: %w", p.name, n, ops.ErrShape)
	}
	c := sizeClass(n)
	p.mu.Lock()
	b, err := p.takeLocked(c)
	if errors.Is(err, ErrOutOfMemory) {
		// Tensors awaiting the collector still hold blocks: collect, take back the blocks of every
		// tensor found unreachable (their cleanups may not have run yet), and retry.
		p.mu.Unlock()
		runtime.GC()
		p.mu.Lock()
		p.reclaimLocked()
		b, err = p.takeLocked(c)
	}
	if errors.Is(err, ErrOutOfMemory) {
		// The cache may hold the memory in other size classes: give it back to the device and retry.
		if serr := p.raw.Sync(); serr != nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("%s: alloc %d bytes: synchronising before releasing the cache: %w", p.name, c, serr)
		}
		p.releaseCachedLocked()
		b, err = p.takeLocked(c)
	}
	if err != nil {
		st := p.stats
		p.mu.Unlock()
		return nil, fmt.Errorf("%s: alloc %d bytes (live %d, cached %d): %w", p.name, c, st.LiveBytes, st.CachedBytes, err)
	}
	b.live = true
	b.size = n
	b.tagged = tagged
	b.gen = b.gen%tagMask + 1
	b.owners = nil
	switch {
	case !tagged:
		b.own = ownScratch
	case p.inStep:
		b.own = ownStep
		p.stats.StepBytes += b.class
	default:
		b.own = ownManual
	}
	p.stats.LiveBytes += b.class
	p.mu.Unlock()
	return b, nil
}

// takeLocked returns a cached block of class c or a new one from raw.
func (p *Pool) takeLocked(c int64) (*block, error) {
	if fl := p.free[c]; len(fl) > 0 {
		b := fl[len(fl)-1]
		p.free[c] = fl[:len(fl)-1]
		p.stats.CacheHits++
		p.stats.CachedBytes -= c
		return b, nil
	}
	addr, err := p.raw.Alloc(c)
	if err != nil {
		return nil, err
	}
	if addr == 0 || addr&^addrMask != 0 {
		_ = p.raw.Free(addr)
		return nil, fmt.Errorf("device address %#x cannot be tagged (it needs the bits above 2^48)", addr)
	}
	// Memory the device hands out again continues the generations of the blocks retired there, so a
	// stale tensor of a retired block never matches a tag of the new one (until the tags wrap).
	b := &block{base: addr, class: c}
	for _, s := range p.retired {
		if s.lo < addr+uintptr(c) && addr < s.hi && s.gen > b.gen {
			b.gen = s.gen
		}
	}
	i := sort.Search(len(p.blocks), func(i int) bool { return p.blocks[i].base > addr })
	p.blocks = append(p.blocks, nil)
	copy(p.blocks[i+1:], p.blocks[i:])
	p.blocks[i] = b
	p.stats.DriverAllocs++
	return b, nil
}

// find returns the block containing the real address a, or nil.
func (p *Pool) find(a uintptr) *block {
	i := sort.Search(len(p.blocks), func(i int) bool { return p.blocks[i].base > a }) - 1
	if i < 0 {
		return nil
	}
	if b := p.blocks[i]; a < b.base+uintptr(b.class) {
		return b
	}
	return nil
}

// releaseLocked returns a live block to the cache and stops the cleanups of its owners.
func (p *Pool) releaseLocked(b *block) {
	for i := range b.owners {
		if !b.owners[i].gone {
			b.owners[i].cleanup.Stop()
		}
	}
	b.owners = nil
	if b.own == ownStep {
		p.stats.StepBytes -= b.class
	}
	b.live = false
	p.stats.LiveBytes -= b.class
	p.stats.CachedBytes += b.class
	p.free[b.class] = append(p.free[b.class], b)
}

func (p *Pool) releaseCachedLocked() {
	keep := p.blocks[:0]
	for _, b := range p.blocks {
		if b.live {
			keep = append(keep, b)
			continue
		}
		_ = p.raw.Free(b.base)
		p.stats.CachedBytes -= b.class
		if len(p.retired) < maxRetired {
			p.retired = append(p.retired, span{b.base, b.base + uintptr(b.class), b.gen})
		}
	}
	for i := len(keep); i < len(p.blocks); i++ {
		p.blocks[i] = nil
	}
	p.blocks = keep
	p.free = map[int64][]*block{}
}

// Reclaim takes back now the memory of every tensor-owned block whose owning tensors are unreachable
// (after a garbage collection; their cleanups would release them later) and returns how many blocks it
// took back. Allocation does this by itself when the device is full; Reclaim makes LiveBytes exact, e.g.
// for a memory measurement after runtime.GC().
func (p *Pool) Reclaim() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	before := p.stats.Reclaimed
	p.reclaimLocked()
	return int(p.stats.Reclaimed - before)
}

// reclaimLocked takes back every tensor-owned block whose owners are all unreachable (after a GC:
// their weak pointers read nil before their cleanups run).
func (p *Pool) reclaimLocked() {
	for _, b := range p.blocks {
		if !b.live || b.own != ownGC {
			continue
		}
		dead := true
		for i := range b.owners {
			if !b.owners[i].gone && b.owners[i].w.Value() != nil {
				dead = false
				break
			}
		}
		if dead {
			p.releaseLocked(b)
			p.stats.Reclaimed++
		}
	}
}

// ownerKey identifies one owner of one holding of a block (the cleanup's argument).
type ownerKey struct {
	base uintptr
	gen  uint32
	idx  int
}

// Adopt makes t an owner of the block at addr (a block from Alloc, outside a step): the block is
// released once every owner is garbage-collected (or by Free). Inside a step the block stays the step's
// and Adopt does nothing: step memory must stay valid until EndStep whatever references it.
func (p *Pool) Adopt(addr uintptr, t *tensor.Dense) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := p.liveLocked(addr, 0)
	if err != nil {
		return err
	}
	if b.own == ownStep {
		return nil
	}
	p.addOwnerLocked(b, t)
	return nil
}

func (p *Pool) addOwnerLocked(b *block, t *tensor.Dense) {
	b.own = ownGC
	key := ownerKey{base: b.base, gen: b.gen, idx: len(b.owners)}
	b.owners = append(b.owners, owner{
		w:       weak.Make(t),
		cleanup: runtime.AddCleanup(t, p.ownerGone, key),
	})
}

// ownerGone is the cleanup of an owning tensor.
func (p *Pool) ownerGone(k ownerKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.find(k.base)
	if b == nil || !b.live || b.gen != k.gen || b.own != ownGC || k.idx >= len(b.owners) {
		return // released meanwhile (freed, reclaimed, or handed out again)
	}
	b.owners[k.idx].gone = true
	for _, o := range b.owners {
		if !o.gone {
			return
		}
	}
	p.releaseLocked(b)
}

// Free releases the block at addr (the tagged address Alloc returned) now, whoever owns it.
func (p *Pool) Free(addr uintptr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := p.liveLocked(addr, 0)
	if err != nil {
		return fmt.Errorf("free: %w", err)
	}
	if b.base != Untag(addr) {
		return fmt.Errorf("%s: free of %#x: not the start of its block (a view?)", p.name, addr)
	}
	p.releaseLocked(b)
	return nil
}

// liveLocked checks that [addr, addr+bytes) is inside the live tagged block addr names, with the
// current tag.
func (p *Pool) liveLocked(addr uintptr, bytes int64) (*block, error) {
	tag, real := tagOf(addr), Untag(addr)
	if tag == 0 {
		return nil, fmt.Errorf("%s: %#x is not device memory of %s (a host buffer?): %w", p.name, addr, p.name, ops.ErrMixedBackends)
	}
	b := p.find(real)
	if bytes == 0 && real > 0 && (b == nil || b.gen != tag) {
		// A zero-byte tensor may sit at the very end of its block (a view past the last element).
		if prev := p.find(real - 1); prev != nil && prev.gen == tag && real == prev.base+uintptr(prev.size) {
			b = prev
		}
	}
	if b == nil {
		if p.retiredLocked(real) {
			return nil, fmt.Errorf("%s: memory at %#x: %w", p.name, addr, ErrReleased)
		}
		return nil, fmt.Errorf("%s: %#x is not memory of this device: %w", p.name, addr, ops.ErrMixedBackends)
	}
	if !b.live || !b.tagged || b.gen != tag {
		return nil, fmt.Errorf("%s: memory at %#x: %w (freed, or its training step ended; Persist keeps a tensor beyond its step)", p.name, addr, ErrReleased)
	}
	if bytes < 0 || real+uintptr(bytes) > b.base+uintptr(b.size) {
		return nil, fmt.Errorf("%s: %d bytes at %#x run past the end of their block (%d bytes at %#x): %w", p.name, bytes, addr, b.size, b.base, ops.ErrShape)
	}
	return b, nil
}

func (p *Pool) retiredLocked(real uintptr) bool {
	for _, s := range p.retired {
		if real >= s.lo && real < s.hi {
			return true
		}
	}
	return false
}

// Resolve checks that [addr, addr+bytes) is live tensor memory of this device with the current tag and
// returns the real address for kernels. Errors wrap ops.ErrMixedBackends (not this device's memory: a
// host buffer, or another device's), ErrReleased (memory of a freed tensor or of a finished step) or
// ops.ErrShape (the range runs past its block).
func (p *Pool) Resolve(addr uintptr, bytes int64) (uintptr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.liveLocked(addr, bytes); err != nil {
		return 0, err
	}
	return Untag(addr), nil
}

// Owns reports whether addr is a tagged address of this device, live or released: a released tensor
// still belongs here (operand checks then report ErrReleased) rather than to the host.
func (p *Pool) Owns(addr uintptr) bool {
	if tagOf(addr) == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	real := Untag(addr)
	if b := p.find(real); b != nil {
		return true
	}
	return p.retiredLocked(real)
}

// containsReal reports whether the real address a lies in memory this pool obtained from its device.
func (p *Pool) containsReal(a uintptr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.find(Untag(a)) != nil || p.retiredLocked(Untag(a))
}

// BeginStep starts a training step: until EndStep, every tensor allocation belongs to the step.
func (p *Pool) BeginStep() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inStep {
		return fmt.Errorf("%s: BeginStep: a step is already running (steps do not nest): %w", p.name, ops.ErrConfig)
	}
	p.inStep = true
	return nil
}

// EndStep ends the training step: every block allocated since BeginStep and not persisted goes back to
// the pool. Tensors over that memory are stale from now on (operand checks report ErrReleased).
func (p *Pool) EndStep() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.inStep {
		return fmt.Errorf("%s: EndStep without BeginStep: %w", p.name, ops.ErrConfig)
	}
	p.inStep = false
	for _, b := range p.blocks {
		if b.live && b.own == ownStep {
			p.releaseLocked(b)
		}
	}
	return nil
}

// InStep reports whether a training step is running.
func (p *Pool) InStep() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inStep
}

// Persist moves the block under t (allocated in the current step) out of the step: it then lives until t
// (and every other tensor persisted over the same block) is garbage-collected, or is freed. Persisting
// a tensor whose memory does not belong to a step is allowed and adds t as an owner when the block is
// owned by tensors.
func (p *Pool) Persist(addr uintptr, bytes int64, t *tensor.Dense) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := p.liveLocked(addr, bytes)
	if err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	switch b.own {
	case ownStep:
		p.stats.StepBytes -= b.class
		p.addOwnerLocked(b, t)
	case ownGC:
		p.addOwnerLocked(b, t)
	}
	return nil
}

// Stats returns the pool's counters.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// ReleaseCache waits for the device and returns every cached block to it.
func (p *Pool) ReleaseCache() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.raw.Sync(); err != nil {
		return fmt.Errorf("%s: release cache: %w", p.name, err)
	}
	p.releaseCachedLocked()
	return nil
}

// ReleaseAll returns every block, live or cached, to the device (when the device closes); tensors of
// the device must not be used afterwards (their checks report ErrReleased).
func (p *Pool) ReleaseAll() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.raw.Sync()
	for _, b := range p.blocks {
		if b.live {
			p.releaseLocked(b)
		}
	}
	p.releaseCachedLocked()
	p.inStep = false
	return err
}
