//go:build expertrt_cuda

// Package nccl calls NVIDIA's NCCL (libnccl.so.2) from Go. The library is loaded at run time with
// dlopen through a small cgo shim that carries this project's own declarations of the calls it uses,
// so building needs no NCCL headers or library, and a binary runs wherever NCCL is installed; Load
// returns a clear error (wrapping ops.ErrUnsupported) where it is not.
//
// Calls used: ncclGetVersion, ncclGetErrorString, ncclGetLastError, ncclGetUniqueId, ncclCommInitRank,
// ncclCommDestroy, ncclCommAbort, ncclCommGetAsyncError, ncclGroupStart/End, ncclSend, ncclRecv,
// ncclAllGather and ncclAllReduce. NCCL 2.7 or newer is required (point-to-point send/receive, which
// all-to-alls with per-peer counts are made of).
//
// Device buffers and streams are passed as raw addresses (uintptr): this package does not import the
// CUDA driver bindings, so its tests run on machines without a GPU. The caller makes the CUDA context
// of its device current on the calling OS thread (NCCL uses the current device) and keeps a group's
// calls (GroupStart ... GroupEnd) on one OS thread: NCCL's group state is per thread.
//
// Load sets NCCL_NVLS_ENABLE=0 in the process environment unless it is already set: the collectives
// used here gain nothing from NVLink SHARP (multicast objects), and on shared hosts creating multicast
// objects can take the host's GPUs out of service.
package nccl

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

// Own declarations of the NCCL ABI (nccl.h): enums are int, ncclComm_t and cudaStream_t are pointers,
// ncclUniqueId is 128 bytes passed by value.
typedef struct { char internal[128]; } ert_nccl_id;
typedef void* ert_comm;
typedef void* ert_stream;

typedef int (*ert_get_version_fn)(int*);
typedef const char* (*ert_error_string_fn)(int);
typedef const char* (*ert_last_error_fn)(ert_comm);
typedef int (*ert_unique_id_fn)(ert_nccl_id*);
typedef int (*ert_init_rank_fn)(ert_comm*, int, ert_nccl_id, int);
typedef int (*ert_comm_fn)(ert_comm);
typedef int (*ert_async_error_fn)(ert_comm, int*);
typedef int (*ert_group_fn)(void);
typedef int (*ert_send_fn)(const void*, size_t, int, int, ert_comm, ert_stream);
typedef int (*ert_recv_fn)(void*, size_t, int, int, ert_comm, ert_stream);
typedef int (*ert_all_gather_fn)(const void*, void*, size_t, int, ert_comm, ert_stream);
typedef int (*ert_all_reduce_fn)(const void*, void*, size_t, int, int, ert_comm, ert_stream);

typedef struct {
	void* handle;
	ert_get_version_fn get_version;
	ert_error_string_fn error_string;
	ert_last_error_fn last_error;
	ert_unique_id_fn unique_id;
	ert_init_rank_fn init_rank;
	ert_comm_fn destroy;
	ert_comm_fn abort_comm;
	ert_async_error_fn async_error;
	ert_group_fn group_start;
	ert_group_fn group_end;
	ert_send_fn send;
	ert_recv_fn recv;
	ert_all_gather_fn all_gather;
	ert_all_reduce_fn all_reduce;
} ert_nccl;

// ert_nccl_open loads the library and resolves every symbol; on failure it returns NULL with a message
// in err.
static ert_nccl* ert_nccl_open(const char* path, char* err, size_t errlen) {
	void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char* e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
		return NULL;
	}
	ert_nccl* l = (ert_nccl*)calloc(1, sizeof(ert_nccl));
	if (!l) {
		snprintf(err, errlen, "out of memory");
		dlclose(h);
		return NULL;
	}
	l->handle = h;
#define ERT_SYM(field, name)                                             \
	l->field = (void*)dlsym(h, name);                                    \
	if (!l->field) {                                                     \
		snprintf(err, errlen, "%s has no symbol %s", path, name);       \
		dlclose(h);                                                      \
		free(l);                                                         \
		return NULL;                                                     \
	}
	ERT_SYM(get_version, "ncclGetVersion")
	ERT_SYM(error_string, "ncclGetErrorString")
	ERT_SYM(last_error, "ncclGetLastError")
	ERT_SYM(unique_id, "ncclGetUniqueId")
	ERT_SYM(init_rank, "ncclCommInitRank")
	ERT_SYM(destroy, "ncclCommDestroy")
	ERT_SYM(abort_comm, "ncclCommAbort")
	ERT_SYM(async_error, "ncclCommGetAsyncError")
	ERT_SYM(group_start, "ncclGroupStart")
	ERT_SYM(group_end, "ncclGroupEnd")
	ERT_SYM(send, "ncclSend")
	ERT_SYM(recv, "ncclRecv")
	ERT_SYM(all_gather, "ncclAllGather")
	ERT_SYM(all_reduce, "ncclAllReduce")
#undef ERT_SYM
	return l;
}

static int ert_get_version(ert_nccl* l, int* v) { return l->get_version(v); }
static const char* ert_error_string(ert_nccl* l, int r) { return l->error_string(r); }
static const char* ert_last_error(ert_nccl* l, ert_comm c) { return l->last_error(c); }
static int ert_unique_id(ert_nccl* l, ert_nccl_id* id) { return l->unique_id(id); }
static int ert_init_rank(ert_nccl* l, ert_comm* c, int n, ert_nccl_id* id, int rank) { return l->init_rank(c, n, *id, rank); }
static int ert_destroy(ert_nccl* l, ert_comm c) { return l->destroy(c); }
static int ert_abort(ert_nccl* l, ert_comm c) { return l->abort_comm(c); }
static int ert_async_error(ert_nccl* l, ert_comm c, int* r) { return l->async_error(c, r); }
static int ert_group_start(ert_nccl* l) { return l->group_start(); }
static int ert_group_end(ert_nccl* l) { return l->group_end(); }
static int ert_send(ert_nccl* l, size_t buf, size_t n, int dt, int peer, ert_comm c, size_t s) {
	return l->send((const void*)buf, n, dt, peer, c, (ert_stream)s);
}
static int ert_recv(ert_nccl* l, size_t buf, size_t n, int dt, int peer, ert_comm c, size_t s) {
	return l->recv((void*)buf, n, dt, peer, c, (ert_stream)s);
}
static int ert_all_gather(ert_nccl* l, size_t snd, size_t rcv, size_t n, int dt, ert_comm c, size_t s) {
	return l->all_gather((const void*)snd, (void*)rcv, n, dt, c, (ert_stream)s);
}
static int ert_all_reduce(ert_nccl* l, size_t snd, size_t rcv, size_t n, int dt, int op, ert_comm c, size_t s) {
	return l->all_reduce((const void*)snd, (void*)rcv, n, dt, op, c, (ert_stream)s);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/expertrt/expertrt-go/ops"
)

// MinVersion is the oldest NCCL this package accepts (2.7.0: ncclSend/ncclRecv), as a version code.
const MinVersion = 2700

// LibraryEnv names the environment variable that points Load at a specific libnccl.so.2.
const LibraryEnv = "EXPERTRT_NCCL_LIB"

// DataType is ncclDataType_t.
type DataType int

const (
	Int32   DataType = 2
	Float32 DataType = 7
	Float64 DataType = 8
)

// RedOp is ncclRedOp_t.
type RedOp int

// Sum is ncclSum.
const Sum RedOp = 0

// Library is a loaded NCCL. It is never unloaded (NCCL keeps process-wide state).
type Library struct {
	l       *C.ert_nccl
	path    string
	version int
}

// Error is a failed NCCL call.
type Error struct {
	Call   string // the NCCL function
	Code   int    // ncclResult_t
	Reason string // ncclGetErrorString, plus ncclGetLastError when NCCL has a message
}

func (e *Error) Error() string {
	return fmt.Sprintf("nccl: %s: %s (ncclResult_t %d)", e.Call, e.Reason, e.Code)
}

// InProgress is ncclInProgress: an operation of a non-blocking communicator has not finished.
const InProgress = 7

// candidates lists where Load looks for the library when no path is given.
func candidates() []string {
	if p := os.Getenv(LibraryEnv); p != "" {
		return []string{p}
	}
	c := []string{"libnccl.so.2"}
	for _, pat := range []string{
		"/usr/lib/x86_64-linux-gnu/libnccl.so.2",
		"/usr/lib/aarch64-linux-gnu/libnccl.so.2",
		"/usr/local/cuda/lib64/libnccl.so.2",
		"/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
		"/usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
		"/usr/lib/python3/dist-packages/nvidia/nccl/lib/libnccl.so.2",
		"/opt/*/.venv/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
		"/opt/conda/lib/libnccl.so.2",
	} {
		if m, _ := filepath.Glob(pat); len(m) > 0 {
			c = append(c, m...)
		}
	}
	return c
}

// Load opens NCCL: path, or when path is empty the file named by $EXPERTRT_NCCL_LIB, else
// libnccl.so.2 on the loader's search path, else the usual install locations (system packages, CUDA,
// the nvidia-nccl Python wheels). It checks the version (MinVersion or newer).
func Load(path string) (*Library, error) {
	if os.Getenv("NCCL_NVLS_ENABLE") == "" {
		if err := os.Setenv("NCCL_NVLS_ENABLE", "0"); err != nil {
			return nil, fmt.Errorf("nccl: setting NCCL_NVLS_ENABLE=0: %w", err)
		}
	}
	tries := []string{path}
	if path == "" {
		tries = candidates()
	}
	var msgs []string
	for _, p := range tries {
		l, err := open(p)
		if err == nil {
			return l, nil
		}
		msgs = append(msgs, err.Error())
		if errors.Is(err, errTooOld) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("nccl: cannot load NCCL (tried %s); install NCCL 2.7 or newer or set %s to the path of libnccl.so.2 (the nvidia-nccl-cu12/cu13 Python wheels ship it under nvidia/nccl/lib): %w",
		strings.Join(msgs, "; "), LibraryEnv, ops.ErrUnsupported)
}

var errTooOld = errors.New("NCCL too old")

func open(path string) (*Library, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var buf [512]C.char
	l := C.ert_nccl_open(cpath, &buf[0], C.size_t(len(buf)))
	if l == nil {
		return nil, fmt.Errorf("%s: %s", path, C.GoString(&buf[0]))
	}
	lib := &Library{l: l, path: path}
	var v C.int
	if r := C.ert_get_version(l, &v); r != 0 {
		return nil, lib.err("ncclGetVersion", int(r), nil)
	}
	lib.version = int(v)
	if lib.version < MinVersion {
		return nil, fmt.Errorf("nccl: %s is NCCL %s, this package needs 2.7.0 or newer (ncclSend/ncclRecv): %w (%w)",
			path, VersionString(lib.version), errTooOld, ops.ErrUnsupported)
	}
	return lib, nil
}

// Path is the file the library was loaded from (as given to dlopen).
func (l *Library) Path() string { return l.path }

// Version is NCCL's version code (ncclGetVersion: 22803 for 2.28.3).
func (l *Library) Version() int { return l.version }

// VersionString formats a version code as major.minor.patch. Codes below 10000 use the old encoding
// (major*1000 + minor*100 + patch, up to 2.8), larger ones major*10000 + minor*100 + patch.
func VersionString(code int) string {
	if code >= 10000 {
		return fmt.Sprintf("%d.%d.%d", code/10000, code%10000/100, code%100)
	}
	return fmt.Sprintf("%d.%d.%d", code/1000, code%1000/100, code%100)
}

// err builds the error of a failed call; comm (may be nil) adds NCCL's last error message.
func (l *Library) err(call string, code int, comm *Comm) error {
	reason := C.GoString(C.ert_error_string(l.l, C.int(code)))
	var c C.ert_comm
	if comm != nil {
		c = comm.c
	}
	if last := C.GoString(C.ert_last_error(l.l, c)); last != "" {
		reason += ": " + last
	}
	return &Error{Call: call, Code: code, Reason: reason}
}

// UniqueID is ncclUniqueId.
type UniqueID [128]byte

// NewUniqueID calls ncclGetUniqueId. Without NCCL_COMM_ID in the environment this starts NCCL's
// bootstrap root in this process: it must stay alive while the other ranks initialise.
func (l *Library) NewUniqueID() (UniqueID, error) {
	var id C.ert_nccl_id
	if r := C.ert_unique_id(l.l, &id); r != 0 {
		return UniqueID{}, l.err("ncclGetUniqueId", int(r), nil)
	}
	var out UniqueID
	copy(out[:], C.GoBytes(unsafe.Pointer(&id), C.int(len(out))))
	return out, nil
}

// Comm is an NCCL communicator (ncclComm_t).
type Comm struct {
	lib         *Library
	c           C.ert_comm
	rank, world int
}

// InitRank joins the communicator of world ranks identified by id as rank (ncclCommInitRank). It
// blocks until every rank has joined. The CUDA device current on the calling thread becomes the
// communicator's device.
func (l *Library) InitRank(world, rank int, id UniqueID) (*Comm, error) {
	if world < 1 || rank < 0 || rank >= world {
		return nil, fmt.Errorf("nccl: rank %d of a world of %d: %w", rank, world, ops.ErrConfig)
	}
	var cid C.ert_nccl_id
	C.memcpy(unsafe.Pointer(&cid), unsafe.Pointer(&id[0]), C.size_t(len(id)))
	var c C.ert_comm
	if r := C.ert_init_rank(l.l, &c, C.int(world), &cid, C.int(rank)); r != 0 {
		return nil, l.err("ncclCommInitRank", int(r), nil)
	}
	return &Comm{lib: l, c: c, rank: rank, world: world}, nil
}

// Rank and World are the communicator's.
func (c *Comm) Rank() int  { return c.rank }
func (c *Comm) World() int { return c.world }

// Destroy frees the communicator after its operations completed (ncclCommDestroy).
func (c *Comm) Destroy() error {
	if r := C.ert_destroy(c.lib.l, c.c); r != 0 {
		return c.lib.err("ncclCommDestroy", int(r), c)
	}
	return nil
}

// Abort stops the communicator's operations still running on the device and frees it
// (ncclCommAbort). Kernels waiting for a dead peer return, so the stream can complete.
func (c *Comm) Abort() error {
	if r := C.ert_abort(c.lib.l, c.c); r != 0 {
		return c.lib.err("ncclCommAbort", int(r), nil)
	}
	return nil
}

// AsyncError reports an error NCCL detected in the background (a peer's connection failing, a
// network error), or nil (ncclCommGetAsyncError).
func (c *Comm) AsyncError() error {
	var res C.int
	if r := C.ert_async_error(c.lib.l, c.c, &res); r != 0 {
		return c.lib.err("ncclCommGetAsyncError", int(r), c)
	}
	if res != 0 && res != InProgress {
		return c.lib.err("asynchronous error", int(res), c)
	}
	return nil
}

// GroupStart and GroupEnd bracket several operations that NCCL issues together (ncclGroupStart,
// ncclGroupEnd); they must run on one OS thread.
func (l *Library) GroupStart() error {
	if r := C.ert_group_start(l.l); r != 0 {
		return l.err("ncclGroupStart", int(r), nil)
	}
	return nil
}

func (l *Library) GroupEnd() error {
	if r := C.ert_group_end(l.l); r != 0 {
		return l.err("ncclGroupEnd", int(r), nil)
	}
	return nil
}

// Send enqueues count elements at device address buf to peer on stream (ncclSend).
func (c *Comm) Send(buf uintptr, count int, dt DataType, peer int, stream uintptr) error {
	if r := C.ert_send(c.lib.l, C.size_t(buf), C.size_t(count), C.int(dt), C.int(peer), c.c, C.size_t(stream)); r != 0 {
		return c.lib.err("ncclSend", int(r), c)
	}
	return nil
}

// Recv enqueues receiving count elements from peer into device address buf on stream (ncclRecv).
func (c *Comm) Recv(buf uintptr, count int, dt DataType, peer int, stream uintptr) error {
	if r := C.ert_recv(c.lib.l, C.size_t(buf), C.size_t(count), C.int(dt), C.int(peer), c.c, C.size_t(stream)); r != 0 {
		return c.lib.err("ncclRecv", int(r), c)
	}
	return nil
}

// AllGather enqueues ncclAllGather: count elements from every rank into recv [world*count].
func (c *Comm) AllGather(send, recv uintptr, count int, dt DataType, stream uintptr) error {
	if r := C.ert_all_gather(c.lib.l, C.size_t(send), C.size_t(recv), C.size_t(count), C.int(dt), c.c, C.size_t(stream)); r != 0 {
		return c.lib.err("ncclAllGather", int(r), c)
	}
	return nil
}

// AllReduce enqueues ncclAllReduce of count elements (send and recv may be the same address).
func (c *Comm) AllReduce(send, recv uintptr, count int, dt DataType, op RedOp, stream uintptr) error {
	if r := C.ert_all_reduce(c.lib.l, C.size_t(send), C.size_t(recv), C.size_t(count), C.int(dt), C.int(op), c.c, C.size_t(stream)); r != 0 {
		return c.lib.err("ncclAllReduce", int(r), c)
	}
	return nil
}
