package ep

import (
	"fmt"
	"os"
	"strconv"

	"github.com/expertrt/expertrt-go/ops"
)

// Launch is this process's place in a group started once per GPU.
type Launch struct {
	Rank, World int
	// LocalRank is the rank among the processes of this host: the GPU this process should use.
	LocalRank int
}

// LaunchFromEnv reads the variables launchers set for each process: torchrun's RANK, WORLD_SIZE and
// LOCAL_RANK (LOCAL_RANK defaults to RANK), or Open MPI's OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE
// and OMPI_COMM_WORLD_LOCAL_RANK. ok is false when neither set is present; inconsistent values are
// errors wrapping ops.ErrConfig.
func LaunchFromEnv() (l Launch, ok bool, err error) {
	names := [][3]string{
		{"RANK", "WORLD_SIZE", "LOCAL_RANK"},
		{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
	}
	for _, n := range names {
		rs, ws := os.Getenv(n[0]), os.Getenv(n[1])
		if rs == "" && ws == "" {
			continue
		}
		if rs == "" || ws == "" {
			return l, true, fmt.Errorf("ep: %s=%q and %s=%q: both are needed: %w", n[0], rs, n[1], ws, ops.ErrConfig)
		}
		if l.Rank, err = strconv.Atoi(rs); err != nil {
			return l, true, fmt.Errorf("ep: %s=%q is not an integer: %w", n[0], rs, ops.ErrConfig)
		}
		if l.World, err = strconv.Atoi(ws); err != nil {
			return l, true, fmt.Errorf("ep: %s=%q is not an integer: %w", n[1], ws, ops.ErrConfig)
		}
		l.LocalRank = l.Rank
		if ls := os.Getenv(n[2]); ls != "" {
			if l.LocalRank, err = strconv.Atoi(ls); err != nil {
				return l, true, fmt.Errorf("ep: %s=%q is not an integer: %w", n[2], ls, ops.ErrConfig)
			}
		}
		if l.World < 1 || l.Rank < 0 || l.Rank >= l.World || l.LocalRank < 0 || l.LocalRank > l.Rank {
			return l, true, fmt.Errorf("ep: rank %d (local %d) of a world of %d from %s/%s/%s: want 0 <= local rank <= rank < world: %w",
				l.Rank, l.LocalRank, l.World, n[0], n[2], n[1], ops.ErrConfig)
		}
		return l, true, nil
	}
	return l, false, nil
}
