//go:build !expertrt_cuda

package main

import (
	"fmt"

	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
)

// runEPLaunched needs NCCL, which this build leaves out.
func runEPLaunched(_ epFlags, _ moe.Config, l ep.Launch) error {
	return fmt.Errorf("rank %d of %d: launched once per GPU (RANK/WORLD_SIZE are set), but this binary was built without -tags expertrt_cuda, which the NCCL transport needs; unset RANK and WORLD_SIZE to run in-process ranks with -expert-parallel N: %w",
		l.Rank, l.World, ops.ErrUnsupported)
}

// runEPBench times NCCL all-to-alls; it needs the CUDA build.
func runEPBench([]string) error {
	return fmt.Errorf("ep-bench needs a binary built with -tags expertrt_cuda (NCCL on GPUs): %w", ops.ErrUnsupported)
}
