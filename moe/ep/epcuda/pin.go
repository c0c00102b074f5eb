//go:build expertrt_cuda

package epcuda

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
)

const envPinned = "EXPERTRT_EP_PINNED"

// ExecOnLocalGPU makes a process started once per GPU see only its own GPU, as device 0 (the device the
// registered cudaops backend drives). When the launcher left more than one GPU visible (torchrun sets
// LOCAL_RANK but not CUDA_VISIBLE_DEVICES), it re-executes the program with CUDA_VISIBLE_DEVICES set to
// the LOCAL_RANK-th visible GPU: the CUDA driver reads the variable when it initialises, which happens
// before main runs, so the process must start again. Call it first thing in main. It returns nil
// without doing anything when no launcher variables are set or one GPU is already selected.
func ExecOnLocalGPU() error {
	l, ok, err := ep.LaunchFromEnv()
	if err != nil || !ok || os.Getenv(envPinned) != "" {
		return err
	}
	vis := os.Getenv("CUDA_VISIBLE_DEVICES")
	var ids []string
	if vis != "" {
		ids = strings.Split(vis, ",")
		if len(ids) == 1 {
			return nil
		}
		if l.LocalRank >= len(ids) {
			return fmt.Errorf("epcuda: LOCAL_RANK %d but CUDA_VISIBLE_DEVICES=%s lists %d GPUs: %w", l.LocalRank, vis, len(ids), ops.ErrConfig)
		}
	}
	pick := strconv.Itoa(l.LocalRank)
	if ids != nil {
		pick = strings.TrimSpace(ids[l.LocalRank])
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("epcuda: re-executing on GPU %s: %w", pick, err)
	}
	env := append(os.Environ(), "CUDA_VISIBLE_DEVICES="+pick, envPinned+"=1")
	return syscall.Exec(exe, os.Args, env)
}
