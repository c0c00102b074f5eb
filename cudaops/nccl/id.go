//go:build expertrt_cuda

package nccl

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/expertrt/expertrt-go/ops"
)

// Rendezvous: every rank of a communicator needs rank 0's unique id. Two ways are supported:
//
//   - NCCL_COMM_ID=host:port in every rank's environment (NCCL's own mechanism): each rank computes the
//     same id, and rank 0's ncclCommInitRank listens on that address.
//   - An id file on a file system all ranks see: rank 0 creates the id and writes the file (atomically,
//     by rename), the other ranks wait for it. The file records the world size and a run tag, so a rank
//     started with another WORLD_SIZE fails at once with a clear error, and a file left by an earlier
//     run (another tag) is not used.

const idMagic = "expertrt-nccl-id v1"

// ShareID returns the unique id of a communicator of world ranks on every rank: through NCCL_COMM_ID
// when it is set, else through the id file at path (rank 0 writes it; others wait up to timeout).
// run is a tag that identifies one launch (e.g. a timestamp the launcher exports to all ranks); ranks
// accept only a file with their own tag ("" accepts any).
func (l *Library) ShareID(path string, rank, world int, run string, timeout time.Duration) (UniqueID, error) {
	if os.Getenv("NCCL_COMM_ID") != "" {
		return l.NewUniqueID()
	}
	if path == "" {
		return UniqueID{}, fmt.Errorf("nccl: no rendezvous: set NCCL_COMM_ID=host:port or give an id file path (EXPERTRT_NCCL_ID_FILE): %w", ops.ErrConfig)
	}
	if rank == 0 {
		id, err := l.NewUniqueID()
		if err != nil {
			return UniqueID{}, err
		}
		return id, WriteIDFile(path, world, run, id)
	}
	return WaitIDFile(path, world, run, timeout)
}

// WriteIDFile writes id for a world of ranks and a run tag to path, atomically (temporary file and
// rename in the same directory).
func WriteIDFile(path string, world int, run string, id UniqueID) error {
	if strings.ContainsAny(run, "\n\r") {
		return fmt.Errorf("nccl: run tag %q must be one line: %w", run, ops.ErrConfig)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".nccl-id-*")
	if err != nil {
		return fmt.Errorf("nccl: writing id file: %w", err)
	}
	_, werr := fmt.Fprintf(f, "%s\nworld %d\nrun %s\nid %s\n", idMagic, world, run, hex.EncodeToString(id[:]))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("nccl: writing id file %s: %w", path, werr)
	}
	return nil
}

// errStale marks an id file of another run (keep waiting).
var errStale = errors.New("id file of another run")

// ReadIDFile reads an id file for a world of ranks and a run tag. A missing file gives an error
// wrapping fs.ErrNotExist; a file of another run one that WaitIDFile treats as not written yet; a file
// for another world size (or not an id file) one wrapping ops.ErrConfig.
func ReadIDFile(path string, world int, run string) (UniqueID, error) {
	f, err := os.Open(path)
	if err != nil {
		return UniqueID{}, err
	}
	defer f.Close()
	var id UniqueID
	fields := map[string]string{}
	sc := bufio.NewScanner(f)
	first := true
	for sc.Scan() {
		line := sc.Text()
		if first {
			if line != idMagic {
				return id, fmt.Errorf("nccl: %s is not an id file (first line %q, want %q): %w", path, line, idMagic, ops.ErrConfig)
			}
			first = false
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		fields[k] = v
	}
	if err := sc.Err(); err != nil {
		return id, fmt.Errorf("nccl: reading %s: %w", path, err)
	}
	if first {
		return id, fmt.Errorf("nccl: %s is empty: %w", path, ops.ErrConfig)
	}
	if run != "" && fields["run"] != run {
		return id, fmt.Errorf("nccl: %s belongs to run %q, this rank is in run %q: %w", path, fields["run"], run, errStale)
	}
	w, err := strconv.Atoi(fields["world"])
	if err != nil {
		return id, fmt.Errorf("nccl: %s: bad world size %q: %w", path, fields["world"], ops.ErrConfig)
	}
	if w != world {
		return id, fmt.Errorf("nccl: rank 0 created a communicator of %d ranks (%s), this rank was started with a world size of %d: every rank needs the same WORLD_SIZE: %w", w, path, world, ops.ErrConfig)
	}
	raw, err := hex.DecodeString(fields["id"])
	if err != nil || len(raw) != len(id) {
		return id, fmt.Errorf("nccl: %s: the id is not %d hex bytes: %w", path, len(id), ops.ErrConfig)
	}
	copy(id[:], raw)
	return id, nil
}

// WaitIDFile polls for the id file until it is there (for this run) or timeout passes.
func WaitIDFile(path string, world int, run string, timeout time.Duration) (UniqueID, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		id, err := ReadIDFile(path, world, run)
		switch {
		case err == nil:
			return id, nil
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, errStale):
			last = err
		default:
			return id, err
		}
		if time.Now().After(deadline) {
			return id, fmt.Errorf("nccl: rank 0's id file did not appear within %v (%v): is rank 0 running, with the same id file and run tag?: %w",
				timeout, last, ops.ErrConfig)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
