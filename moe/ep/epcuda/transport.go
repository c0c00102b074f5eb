//go:build expertrt_cuda

// Package epcuda is the NCCL transport of expert parallelism (package moe/ep) on a cudaops device:
// one process per GPU, ranks joined through NCCL (cudaops/nccl), collectives enqueued on the device's
// stream with grouped ncclSend/ncclRecv (all-to-all with per-peer counts), ncclAllGather and
// ncclAllReduce.
//
// Launch one process per GPU the way torchrun or mpirun do (RANK, WORLD_SIZE, LOCAL_RANK) and make
// each process see its own GPU as device 0 (CUDA_VISIBLE_DEVICES=$LOCAL_RANK): the cudaops backend
// registered with ops drives device 0. NCCL still reaches the other GPUs over NVLink (peer access
// does not need them visible). Ranks meet through an id file or NCCL_COMM_ID (see OptionsFromEnv).
//
// Host tensors are staged through device memory, so a layer computing on the CPU can exchange its
// rows through NCCL as well (each host buffer costs a copy each way).
//
// No call waits forever: every collective is waited for by polling the stream (never a blocking
// synchronise) and NCCL's asynchronous error state; after Options.Timeout the communicator is
// aborted (ncclCommAbort, which also stops device kernels waiting for a dead peer) and this and every
// later call fail with an error wrapping ep.ErrTransport.
package epcuda

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/cudaops/nccl"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// Options configure a Transport.
type Options struct {
	Rank, World int
	// IDFile is the rendezvous file (rank 0 writes NCCL's unique id, the others read it); "" requires
	// NCCL_COMM_ID in the environment.
	IDFile string
	// Run tags one launch: ranks use only an id file written with the same tag.
	Run string
	// Library is the path of libnccl.so.2 ("" searches, see nccl.Load).
	Library string
	// Timeout bounds each collective and the communicator's creation (0: two minutes).
	Timeout time.Duration
}

// Environment variables read by OptionsFromEnv (besides the launcher's RANK/WORLD_SIZE/LOCAL_RANK).
const (
	EnvIDFile  = "EXPERTRT_NCCL_ID_FILE"
	EnvRun     = "EXPERTRT_NCCL_RUN"
	EnvTimeout = "EXPERTRT_EP_TIMEOUT"
)

// OptionsFromEnv builds Options from the launcher's variables (ep.LaunchFromEnv), EXPERTRT_NCCL_ID_FILE,
// EXPERTRT_NCCL_RUN, EXPERTRT_NCCL_LIB and EXPERTRT_EP_TIMEOUT (a Go duration such as 30s). ok is false
// when no launcher variables are set.
func OptionsFromEnv() (o Options, ok bool, err error) {
	l, ok, err := ep.LaunchFromEnv()
	if err != nil || !ok {
		return o, ok, err
	}
	o = Options{Rank: l.Rank, World: l.World, IDFile: os.Getenv(EnvIDFile), Run: os.Getenv(EnvRun),
		Library: os.Getenv(nccl.LibraryEnv)}
	if s := os.Getenv(EnvTimeout); s != "" {
		if o.Timeout, err = time.ParseDuration(s); err != nil || o.Timeout <= 0 {
			return o, true, fmt.Errorf("epcuda: %s=%q is not a positive duration: %w", EnvTimeout, s, ops.ErrConfig)
		}
	}
	return o, true, nil
}

// Transport is an ep.Transport over NCCL on one cudaops device.
type Transport struct {
	be   *cudaops.Backend
	dev  *cudaops.Device
	lib  *nccl.Library
	comm *nccl.Comm
	opts Options

	mu      sync.Mutex
	seq     int
	failed  error
	aborted bool
	closed  bool
	one     *tensor.Dense // int32 [1] on the device, for Barrier
}

var _ ep.Transport = (*Transport)(nil)

// New joins the NCCL communicator of opts.World ranks as opts.Rank on be's device (loading NCCL,
// sharing the unique id, ncclCommInitRank). It fails after opts.Timeout when other ranks do not
// join; the blocked initialisation then still holds the device, so the process should exit.
func New(be *cudaops.Backend, opts Options) (*Transport, error) {
	if opts.World < 1 || opts.Rank < 0 || opts.Rank >= opts.World {
		return nil, fmt.Errorf("epcuda: rank %d of a world of %d: %w", opts.Rank, opts.World, ops.ErrConfig)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Minute
	}
	dev, err := be.Device()
	if err != nil {
		return nil, err
	}
	lib, err := nccl.Load(opts.Library)
	if err != nil {
		return nil, err
	}
	id, err := lib.ShareID(opts.IDFile, opts.Rank, opts.World, opts.Run, opts.Timeout)
	if err != nil {
		return nil, err
	}
	type result struct {
		c   *nccl.Comm
		err error
	}
	done := make(chan result, 1)
	go func() {
		var c *nccl.Comm
		err := dev.WithStream(func(uintptr) error {
			var err error
			c, err = lib.InitRank(opts.World, opts.Rank, id)
			return err
		})
		done <- result{c, err}
	}()
	t := &Transport{be: be, dev: dev, lib: lib, opts: opts}
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("epcuda: rank %d of %d: creating the NCCL communicator: %w (%w)", opts.Rank, opts.World, r.err, ep.ErrTransport)
		}
		t.comm = r.c
	case <-time.After(opts.Timeout):
		return nil, fmt.Errorf("epcuda: rank %d of %d: the NCCL communicator was not created within %v: did every rank start, with the same WORLD_SIZE and id file? (%w)",
			opts.Rank, opts.World, opts.Timeout, ep.ErrTransport)
	}
	if t.one, err = be.New(tensor.Int32, 1); err != nil {
		_ = t.Close()
		return nil, err
	}
	return t, nil
}

// Rank and World are the communicator's.
func (t *Transport) Rank() int  { return t.opts.Rank }
func (t *Transport) World() int { return t.opts.World }

// Library returns the loaded NCCL.
func (t *Transport) Library() *nccl.Library { return t.lib }

// Device returns the transport's device.
func (t *Transport) Device() *cudaops.Device { return t.dev }

func (t *Transport) failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("epcuda: rank %d: transport is closed: %w", t.opts.Rank, ep.ErrTransport)
	}
	return t.failed
}

// fail records the transport's first failure and aborts the communicator (once), without the device
// lock, which a blocked NCCL call may hold: ncclCommAbort is meant to be called from another thread to
// stop hung operations. t.mu serialises it with asyncError (an aborted communicator is freed).
func (t *Transport) fail(err error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failed == nil {
		t.failed = err
	}
	if !t.aborted && t.comm != nil {
		t.aborted = true
		runtime.LockOSThread()
		_ = t.comm.Abort()
		runtime.UnlockOSThread()
	}
	return t.failed
}

// asyncError polls NCCL's background error state of a communicator that is still alive.
func (t *Transport) asyncError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aborted {
		if t.failed != nil {
			return t.failed
		}
		return fmt.Errorf("epcuda: rank %d: the communicator was aborted: %w", t.opts.Rank, ep.ErrTransport)
	}
	return t.comm.AsyncError()
}

// Abort fails the transport and aborts the communicator; the other ranks' next collectives time out.
func (t *Transport) Abort(cause error) {
	_ = t.fail(fmt.Errorf("epcuda: rank %d aborted: %v: %w", t.opts.Rank, cause, ep.ErrTransport))
}

// Close destroys the communicator (or aborts it when a collective failed).
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	aborted := t.aborted
	t.mu.Unlock()
	if t.comm == nil || aborted {
		return nil
	}
	return t.dev.WithStream(func(uintptr) error { return t.comm.Destroy() })
}

// run issues one collective (GroupStart, issue, GroupEnd on one locked thread) and waits for it with
// the timeout, polling the stream and NCCL's asynchronous error state.
func (t *Transport) run(name string, issue func(stream uintptr) error) error {
	if err := t.failure(); err != nil {
		return err
	}
	t.mu.Lock()
	t.seq++
	seq := t.seq
	t.mu.Unlock()
	what := fmt.Sprintf("epcuda: rank %d of %d, collective %d (%s)", t.opts.Rank, t.opts.World, seq, name)
	deadline := time.Now().Add(t.opts.Timeout)
	issued := make(chan error, 1)
	go func() {
		issued <- t.dev.WithStream(func(s uintptr) error {
			if err := t.lib.GroupStart(); err != nil {
				return err
			}
			ierr := issue(s)
			if err := t.lib.GroupEnd(); ierr == nil {
				ierr = err
			}
			return ierr
		})
	}()
	timer := time.NewTimer(t.opts.Timeout)
	defer timer.Stop()
	select {
	case err := <-issued:
		if err != nil {
			return t.fail(fmt.Errorf("%s: %w (%w)", what, err, ep.ErrTransport))
		}
	case <-timer.C:
		return t.fail(fmt.Errorf("%s: NCCL did not accept the operations within %v: a peer rank died or does not take part; communicator aborted (%w)",
			what, t.opts.Timeout, ep.ErrTransport))
	}
	for spin := 0; ; spin++ {
		idle, err := t.dev.StreamIdle()
		if err != nil {
			return t.fail(fmt.Errorf("%s: %w (%w)", what, err, ep.ErrTransport))
		}
		if aerr := t.asyncError(); aerr != nil {
			return t.fail(fmt.Errorf("%s: %w (%w)", what, aerr, ep.ErrTransport))
		}
		if idle {
			return nil
		}
		if time.Now().After(deadline) {
			return t.fail(fmt.Errorf("%s: did not complete within %v: a peer rank died or is stuck; communicator aborted (%w)",
				what, t.opts.Timeout, ep.ErrTransport))
		}
		if spin < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(time.Duration(min(spin-99, 20)) * 50 * time.Microsecond)
		}
	}
}

// ncclType maps a tensor dtype to NCCL's.
func ncclType(dt tensor.Dtype) (nccl.DataType, error) {
	switch dt {
	case tensor.Float32:
		return nccl.Float32, nil
	case tensor.Float64:
		return nccl.Float64, nil
	case tensor.Int32:
		return nccl.Int32, nil
	}
	return 0, fmt.Errorf("epcuda: NCCL exchange of %v tensors: %w", dt, ops.ErrDtype)
}

// buffer is a tensor as NCCL sees it: device memory of this backend, a staged copy of host memory.
type buffer struct {
	t    *tensor.Dense // on the device
	host *tensor.Dense // the caller's host tensor when staged
}

// device returns x as device memory, copying host data in when in is set (the collective reads it).
func (t *Transport) device(x *tensor.Dense, in bool) (buffer, error) {
	if x == nil {
		return buffer{}, fmt.Errorf("epcuda: nil buffer: %w", ops.ErrShape)
	}
	if t.be.Owns(x) {
		if x.IsMaterializable() {
			return buffer{}, fmt.Errorf("epcuda: a non-contiguous device view cannot be exchanged: %w", ops.ErrShape)
		}
		return buffer{t: x}, nil
	}
	b, err := ops.BackendFor(x)
	if err != nil {
		return buffer{}, err
	}
	if b.Name() != ops.CPU().Name() {
		return buffer{}, fmt.Errorf("epcuda: a %s tensor cannot go through NCCL on %s: %w", b.Name(), t.be.Name(), ops.ErrMixedBackends)
	}
	var d *tensor.Dense
	if in {
		d, err = t.be.FromHost(x)
	} else {
		d, err = t.be.New(x.Dtype(), x.Shape().Clone()...)
	}
	return buffer{t: d, host: x}, err
}

// back copies a staged result into the caller's host tensor.
func (t *Transport) back(b buffer) error {
	if b.host == nil {
		return nil
	}
	h, err := t.be.ToHost(b.t)
	if err != nil {
		return err
	}
	if len(h.Raw) != len(b.host.Raw) {
		return fmt.Errorf("epcuda: staged result of %d bytes for a host tensor of %d: %w", len(h.Raw), len(b.host.Raw), ops.ErrShape)
	}
	copy(b.host.Raw, h.Raw)
	return nil
}

func (t *Transport) AllGather(send, recv *tensor.Dense) error {
	if send == nil || recv == nil || send.Dtype() != recv.Dtype() || recv.Shape().TotalSize() != t.opts.World*send.Shape().TotalSize() {
		return fmt.Errorf("epcuda: all-gather of %v into %v over %d ranks: %w", shapeOf(send), shapeOf(recv), t.opts.World, ops.ErrShape)
	}
	dt, err := ncclType(send.Dtype())
	if err != nil {
		return err
	}
	s, err := t.device(send, true)
	if err != nil {
		return err
	}
	r, err := t.device(recv, false)
	if err != nil {
		return err
	}
	n := send.Shape().TotalSize()
	ps, err := t.addr("all-gather send", s.t)
	if err != nil {
		return err
	}
	pr, err := t.addr("all-gather receive", r.t)
	if err != nil {
		return err
	}
	if err := t.run("AllGather", func(stream uintptr) error {
		return t.comm.AllGather(ps, pr, n, dt, stream)
	}); err != nil {
		return err
	}
	return t.back(r)
}

func (t *Transport) AllToAllV(send *tensor.Dense, sends []ep.Segment, recv *tensor.Dense, recvs []ep.Segment) error {
	h, err := ep.CheckAllToAllV(send, sends, recv, recvs, t.opts.World)
	if err != nil {
		return err
	}
	dt, err := ncclType(send.Dtype())
	if err != nil {
		return err
	}
	s, err := t.device(send, true)
	if err != nil {
		return err
	}
	// A staged receive buffer starts as a copy: rows outside the receive segments stay unchanged.
	r, err := t.device(recv, true)
	if err != nil {
		return err
	}
	row := uintptr(h) * uintptr(send.Dtype().Size())
	ps, err := t.addr("all-to-all send", s.t)
	if err != nil {
		return err
	}
	pr, err := t.addr("all-to-all receive", r.t)
	if err != nil {
		return err
	}
	if err := t.run("AllToAllV", func(stream uintptr) error {
		for _, g := range sends {
			if g.Rows > 0 {
				if err := t.comm.Send(ps+uintptr(g.Offset)*row, g.Rows*h, dt, g.Peer, stream); err != nil {
					return err
				}
			}
		}
		for _, g := range recvs {
			if g.Rows > 0 {
				if err := t.comm.Recv(pr+uintptr(g.Offset)*row, g.Rows*h, dt, g.Peer, stream); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return t.back(r)
}

func (t *Transport) AllReduceSum(x *tensor.Dense) error {
	if x == nil || (x.Dtype() != tensor.Float32 && x.Dtype() != tensor.Float64) {
		return fmt.Errorf("epcuda: all-reduce needs a float32 or float64 tensor: %w", ops.ErrDtype)
	}
	dt, _ := ncclType(x.Dtype())
	b, err := t.device(x, true)
	if err != nil {
		return err
	}
	n := x.Shape().TotalSize()
	p, err := t.addr("all-reduce buffer", b.t)
	if err != nil {
		return err
	}
	if err := t.run("AllReduceSum", func(stream uintptr) error {
		return t.comm.AllReduce(p, p, n, dt, nccl.Sum, stream)
	}); err != nil {
		return err
	}
	return t.back(b)
}

func (t *Transport) Barrier() error {
	p, err := t.addr("barrier word", t.one)
	if err != nil {
		return err
	}
	return t.run("Barrier", func(stream uintptr) error {
		return t.comm.AllReduce(p, p, 1, nccl.Int32, nccl.Sum, stream)
	})
}

// addr is the device address NCCL gets for a device tensor: the engine resolves it (tensor addresses
// carry a generation tag that the driver must never see) and refuses released memory.
func (t *Transport) addr(what string, d *tensor.Dense) (uintptr, error) {
	eng, err := t.be.Engine()
	if err != nil {
		return 0, err
	}
	p, _, err := eng.Resolve("epcuda", what, d)
	return p, err
}

func shapeOf(t *tensor.Dense) tensor.Shape {
	if t == nil {
		return nil
	}
	return t.Shape()
}
