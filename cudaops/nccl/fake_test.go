//go:build expertrt_cuda

package nccl

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/expertrt/expertrt-go/ops"
)

// A stand-in libnccl.so.2 (compiled with the system C compiler) checks the binding's ABI without a GPU:
// that every argument arrives where NCCL's declarations put it (the 128-byte id by value, counts,
// datatypes, peers, the stream handle) and that results come back. It implements a world of one rank
// over host memory: a send to self is queued and the matching receive copies it.
const fakeNCCL = `
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
typedef struct { char internal[128]; } id_t_;
typedef struct { int nranks, rank, group, nq; const void* q[64]; size_t qn[64]; char last[256]; } comm_t_;
static char err_last[256];
static void* expect_stream(void) { const char* s = getenv("FAKE_NCCL_STREAM"); return s ? (void*)strtoull(s, 0, 0) : 0; }
static size_t size_of(int dt) { switch (dt) { case 2: return 4; case 7: return 4; case 8: return 8; } return 0; }
static int fail(comm_t_* c, const char* msg) { snprintf(c ? c->last : err_last, 256, "%s", msg); return 4; }
int ncclGetVersion(int* v) { const char* s = getenv("FAKE_NCCL_VERSION"); *v = s ? atoi(s) : 22803; return 0; }
const char* ncclGetErrorString(int r) { return r == 4 ? "invalid argument" : r == 6 ? "remote process exited or there was a network error" : "unknown"; }
const char* ncclGetLastError(comm_t_* c) { return c ? c->last : err_last; }
int ncclGetUniqueId(id_t_* id) { for (int i = 0; i < 128; i++) id->internal[i] = (char)(i * 3 + 1); return 0; }
int ncclCommInitRank(comm_t_** comm, int n, id_t_ id, int rank) {
	for (int i = 0; i < 128; i++) if (id.internal[i] != (char)(i * 5 + 2)) return fail(0, "unique id corrupted");
	if (n != 1 || rank != 0) return fail(0, "this fake supports a world of one");
	*comm = calloc(1, sizeof(comm_t_)); (*comm)->nranks = n; (*comm)->rank = rank; return 0;
}
int ncclCommDestroy(comm_t_* c) { free(c); return 0; }
int ncclCommAbort(comm_t_* c) { free(c); return 0; }
int ncclCommGetAsyncError(comm_t_* c, int* r) { const char* s = getenv("FAKE_NCCL_ASYNC"); *r = s ? atoi(s) : 0; if (*r) fail(c, "peer 3 is gone"); return 0; }
int ncclGroupStart(void) { return 0; }
int ncclGroupEnd(void) { return 0; }
int ncclSend(const void* buf, size_t n, int dt, int peer, comm_t_* c, void* stream) {
	if (stream != expect_stream()) return fail(c, "stream mismatch");
	if (peer != 0 || size_of(dt) == 0) return fail(c, "bad peer or datatype");
	c->q[c->nq] = buf; c->qn[c->nq] = n * size_of(dt); c->nq++; return 0;
}
int ncclRecv(void* buf, size_t n, int dt, int peer, comm_t_* c, void* stream) {
	if (stream != expect_stream()) return fail(c, "stream mismatch");
	if (peer != 0 || size_of(dt) == 0 || c->nq == 0) return fail(c, "bad peer, datatype, or nothing sent");
	if (c->qn[0] != n * size_of(dt)) return fail(c, "send and receive sizes differ");
	memcpy(buf, c->q[0], c->qn[0]);
	for (int i = 1; i < c->nq; i++) { c->q[i-1] = c->q[i]; c->qn[i-1] = c->qn[i]; }
	c->nq--; return 0;
}
int ncclAllGather(const void* s, void* r, size_t n, int dt, comm_t_* c, void* stream) {
	if (stream != expect_stream() || size_of(dt) == 0) return fail(c, "stream or datatype");
	memmove(r, s, n * size_of(dt)); return 0;
}
int ncclAllReduce(const void* s, void* r, size_t n, int dt, int op, comm_t_* c, void* stream) {
	if (stream != expect_stream() || size_of(dt) == 0 || op != 0) return fail(c, "stream, datatype or op");
	memmove(r, s, n * size_of(dt)); return 0;
}
`

func buildFake(t *testing.T) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%s) to build the stand-in NCCL: %v", cc, err)
	}
	dir := t.TempDir()
	src, lib := filepath.Join(dir, "fake.c"), filepath.Join(dir, "libnccl.so.2")
	if err := os.WriteFile(src, []byte(fakeNCCL), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-O1", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("compiling the stand-in NCCL: %v\n%s", err, out)
	}
	return lib
}

func TestBindingABI(t *testing.T) {
	lib := buildFake(t)
	const stream = 0x5150
	t.Setenv("FAKE_NCCL_STREAM", "0x5150")
	t.Setenv("FAKE_NCCL_ASYNC", "")
	l, err := Load(lib)
	if err != nil {
		t.Fatal(err)
	}
	if l.Version() != 22803 || VersionString(l.Version()) != "2.28.3" || l.Path() != lib {
		t.Fatalf("version %d from %s", l.Version(), l.Path())
	}
	id, err := l.NewUniqueID()
	if err != nil || id[0] != 1 || id[127] != byte((127*3+1)%256) {
		t.Fatalf("unique id %x..., %v", id[:4], err)
	}
	// The stand-in accepts only the id pattern i*5+2: the 128 bytes must arrive by value, intact.
	var good UniqueID
	for i := range good {
		good[i] = byte(i*5 + 2)
	}
	if _, err := l.InitRank(1, 0, id); err == nil || !strings.Contains(err.Error(), "unique id corrupted") {
		t.Fatalf("InitRank with another id: %v", err)
	}
	var nerr *Error
	if _, err := l.InitRank(1, 0, id); !errors.As(err, &nerr) || nerr.Code != 4 || nerr.Call != "ncclCommInitRank" {
		t.Fatalf("error %#v, want an *Error for ncclCommInitRank code 4", err)
	}
	if _, err := l.InitRank(2, 2, good); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("rank 2 of 2: %v, want ErrConfig", err)
	}
	c, err := l.InitRank(1, 0, good)
	if err != nil {
		t.Fatal(err)
	}
	if c.Rank() != 0 || c.World() != 1 {
		t.Fatalf("rank %d of %d", c.Rank(), c.World())
	}

	src := []float64{1.5, -2, 3.25}
	dst := make([]float64, 3)
	addr := func(p unsafe.Pointer) uintptr { return uintptr(p) }
	if err := l.GroupStart(); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(addr(unsafe.Pointer(&src[0])), 3, Float64, 0, stream); err != nil {
		t.Fatal(err)
	}
	if err := c.Recv(addr(unsafe.Pointer(&dst[0])), 3, Float64, 0, stream); err != nil {
		t.Fatal(err)
	}
	if err := l.GroupEnd(); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(src)
	if dst[0] != 1.5 || dst[1] != -2 || dst[2] != 3.25 {
		t.Fatalf("send/recv moved %v", dst)
	}
	// Arguments the stand-in rejects come back as errors with NCCL's last message.
	if err := c.Send(addr(unsafe.Pointer(&src[0])), 3, Float64, 0, stream+1); err == nil || !strings.Contains(err.Error(), "stream mismatch") {
		t.Fatalf("wrong stream: %v", err)
	}
	i32 := []int32{7, 8}
	o32 := make([]int32, 2)
	if err := c.AllGather(addr(unsafe.Pointer(&i32[0])), addr(unsafe.Pointer(&o32[0])), 2, Int32, stream); err != nil || o32[1] != 8 {
		t.Fatalf("all-gather: %v %v", o32, err)
	}
	f32 := []float32{4, 5}
	if err := c.AllReduce(addr(unsafe.Pointer(&f32[0])), addr(unsafe.Pointer(&f32[0])), 2, Float32, Sum, stream); err != nil || f32[1] != 5 {
		t.Fatalf("all-reduce: %v %v", f32, err)
	}
	if err := c.AllReduce(addr(unsafe.Pointer(&f32[0])), addr(unsafe.Pointer(&f32[0])), 2, Float32, RedOp(2), stream); err == nil {
		t.Fatal("all-reduce with max accepted by a stand-in that takes only sum: op not passed through")
	}
	runtime.KeepAlive(i32)
	runtime.KeepAlive(o32)
	runtime.KeepAlive(f32)
	if err := c.AsyncError(); err != nil {
		t.Fatalf("async error: %v", err)
	}
	t.Setenv("FAKE_NCCL_ASYNC", "6")
	if err := c.AsyncError(); err == nil || !strings.Contains(err.Error(), "peer 3 is gone") {
		t.Fatalf("async error 6: %v", err)
	}
	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}

	// An old NCCL is refused with a clear error.
	t.Setenv("FAKE_NCCL_VERSION", "2604")
	if _, err := Load(lib); !errors.Is(err, ops.ErrUnsupported) || !strings.Contains(err.Error(), "2.6.4") {
		t.Fatalf("NCCL 2.6.4: %v", err)
	}
}

func TestShareIDThroughFile(t *testing.T) {
	lib := buildFake(t)
	t.Setenv("NCCL_COMM_ID", "")
	l, err := Load(lib)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id")
	id0, err := l.ShareID(path, 0, 2, "run", 0)
	if err != nil {
		t.Fatal(err)
	}
	id1, err := l.ShareID(path, 1, 2, "run", 1e9)
	if err != nil || id1 != id0 {
		t.Fatalf("rank 1 read %x... (%v), rank 0 wrote %x...", id1[:4], err, id0[:4])
	}
	t.Setenv("NCCL_COMM_ID", "127.0.0.1:29500")
	if id, err := l.ShareID("", 1, 2, "", 0); err != nil || id != id0 {
		t.Fatalf("with NCCL_COMM_ID every rank asks NCCL: %v", err)
	}
}
