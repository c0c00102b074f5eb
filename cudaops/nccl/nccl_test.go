//go:build expertrt_cuda

package nccl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expertrt/expertrt-go/ops"
)

// These tests need no GPU and no NCCL: the package loads NCCL only when asked.

func TestVersionString(t *testing.T) {
	for code, want := range map[int]string{2708: "2.7.8", 21903: "2.19.3", 22803: "2.28.3", 30001: "3.0.1"} {
		if got := VersionString(code); got != want {
			t.Errorf("VersionString(%d) = %s, want %s", code, got, want)
		}
	}
}

func TestLoadMissingLibrary(t *testing.T) {
	t.Setenv("NCCL_NVLS_ENABLE", "")
	path := filepath.Join(t.TempDir(), "libnccl.so.2")
	_, err := Load(path)
	if !errors.Is(err, ops.ErrUnsupported) {
		t.Fatalf("Load of a missing file: %v, want ErrUnsupported", err)
	}
	for _, s := range []string{path, LibraryEnv} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not mention %q", err, s)
		}
	}
	if v := os.Getenv("NCCL_NVLS_ENABLE"); v != "0" {
		t.Fatalf("NCCL_NVLS_ENABLE=%q after Load, want 0", v)
	}
	// A file that is not a shared library.
	if err := os.WriteFile(path, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(LibraryEnv, path)
	if _, err := Load(""); !errors.Is(err, ops.ErrUnsupported) {
		t.Fatalf("Load of a bad file through %s: %v, want ErrUnsupported", LibraryEnv, err)
	}
}

func TestLoadInstalled(t *testing.T) {
	t.Setenv("NCCL_NVLS_ENABLE", "0")
	l, err := Load("")
	if err != nil {
		t.Skipf("no NCCL on this machine: %v", err)
	}
	t.Logf("NCCL %s from %s", VersionString(l.Version()), l.Path())
	if l.Version() < MinVersion {
		t.Fatalf("version %d accepted below the minimum", l.Version())
	}
}

func TestIDFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "id")
	var id UniqueID
	for i := range id {
		id[i] = byte(i * 7)
	}
	if err := WriteIDFile(path, 4, "run-1", id); err != nil {
		t.Fatal(err)
	}
	got, err := ReadIDFile(path, 4, "run-1")
	if err != nil || got != id {
		t.Fatalf("read back %x, %v", got[:8], err)
	}
	if _, err := ReadIDFile(path, 4, ""); err != nil {
		t.Fatalf("an empty run tag accepts any file: %v", err)
	}
	// Another world size: an immediate configuration error, also through WaitIDFile.
	_, err = WaitIDFile(path, 2, "run-1", time.Minute)
	if !errors.Is(err, ops.ErrConfig) || !strings.Contains(err.Error(), "4 ranks") || !strings.Contains(err.Error(), "world size of 2") {
		t.Fatalf("world mismatch: %v", err)
	}
	// A file of another run is waited past, and a missing file too: both time out with a clear error.
	start := time.Now()
	_, err = WaitIDFile(path, 4, "run-2", 100*time.Millisecond)
	if !errors.Is(err, ops.ErrConfig) || !strings.Contains(err.Error(), "run-2") || time.Since(start) > 5*time.Second {
		t.Fatalf("stale file: %v", err)
	}
	_, err = WaitIDFile(filepath.Join(dir, "none"), 4, "", 50*time.Millisecond)
	if !errors.Is(err, ops.ErrConfig) || !strings.Contains(err.Error(), "did not appear") {
		t.Fatalf("missing file: %v", err)
	}
	// A file that appears while a rank waits.
	later := filepath.Join(dir, "later")
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = WriteIDFile(later, 3, "r", id)
	}()
	if got, err := WaitIDFile(later, 3, "r", 5*time.Second); err != nil || got != id {
		t.Fatalf("waiting for a late file: %v", err)
	}
	if err := os.WriteFile(path, []byte("something else\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadIDFile(path, 4, ""); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("not an id file: %v", err)
	}
	if err := WriteIDFile(path, 4, "two\nlines", id); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("multi-line run tag: %v", err)
	}
}

func TestShareIDNeedsRendezvous(t *testing.T) {
	t.Setenv("NCCL_COMM_ID", "")
	var l Library // not loaded: ShareID must fail before calling NCCL
	if _, err := l.ShareID("", 1, 2, "", time.Second); !errors.Is(err, ops.ErrConfig) {
		t.Fatalf("ShareID without NCCL_COMM_ID or a file: %v, want ErrConfig", err)
	}
}
