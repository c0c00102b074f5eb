//go:build expertrt_cuda

package main

import (
	"fmt"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/moe"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/moe/ep/epcuda"
	"gorgonia.org/tensor"
)

// runEPLaunched is one rank of a group launched once per GPU: the ranks exchange rows through NCCL on
// device 0 of this process (CUDA_VISIBLE_DEVICES selects the GPU; when the launcher left several
// visible, the process restarts itself on the LOCAL_RANK-th). The layer computes on the host
// until the device layer lands; its rows are staged through the GPU for NCCL.
func runEPLaunched(f epFlags, cfg moe.Config, l ep.Launch) error {
	if err := epcuda.ExecOnLocalGPU(); err != nil { // returns only when this process already has one GPU
		return err
	}
	opts, _, err := epcuda.OptionsFromEnv()
	if err != nil {
		return err
	}
	if opts.Timeout == 0 {
		opts.Timeout = f.timeout
	}
	tr, err := epcuda.New(cudaops.Registered(), opts)
	if err != nil {
		return fmt.Errorf("rank %d of %d: %w", l.Rank, l.World, err)
	}
	defer tr.Close()
	rk, err := newEPRank(cfg, f.tokens, tr, ep.Options{RecvRows: f.recvRows}, f.lr)
	if err != nil {
		tr.Abort(err)
		return err
	}
	defer rk.close()
	step := func(x, y *tensor.Dense, train bool) (epMetrics, error) {
		return rk.step(epSlice(x, l.Rank, l.World), epSlice(y, l.Rank, l.World), train)
	}
	if err := epTrain(f, cfg, l.World, "nccl", step, l.Rank == 0); err != nil {
		tr.Abort(err)
		return fmt.Errorf("rank %d of %d: %w", l.Rank, l.World, err)
	}
	return nil
}
