//go:build expertrt_cuda

package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/expertrt/expertrt-go/cudaops"
	"github.com/expertrt/expertrt-go/cudaops/nccl"
	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/moe/ep/epcuda"
	"gorgonia.org/tensor"
)

// epBenchRow is one size of the all-to-all benchmark (nccl-tests' definitions: S = bytes each rank
// sends in total, itself included; algbw = S / time; busbw = algbw * (W-1)/W).
type epBenchRow struct {
	World      int     `json:"world"`
	Bytes      int64   `json:"bytes_per_rank"`
	MedianUs   float64 `json:"median_us"`
	MinUs      float64 `json:"min_us"`
	AlgGBs     float64 `json:"algbw_gb_s"`
	BusGBs     float64 `json:"busbw_gb_s"`
	Device     string  `json:"device"`
	NCCL       string  `json:"nccl"`
	Reps       int     `json:"reps"`
	SegmentsOp int     `json:"segments_per_peer"`
}

// runEPBench times the NCCL transport's AllToAllV (device buffers, equal rows per peer) on every rank
// of a group launched once per GPU; rank 0 prints one JSON line per size.
func runEPBench(args []string) error {
	fs := flag.NewFlagSet("mixtral-layer ep-bench", flag.ContinueOnError)
	sizes := fs.String("sizes", "1M,4M,16M,64M,256M", "bytes each rank sends per all-to-all (suffixes K, M, G = 2^10, 2^20, 2^30)")
	reps := fs.Int("reps", 20, "timed repetitions per size")
	warmup := fs.Int("warmup", 5, "untimed repetitions per size")
	segs := fs.Int("segments", 1, "segments per peer (an expert-parallel exchange sends one per local expert)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := epcuda.ExecOnLocalGPU(); err != nil {
		return err
	}
	opts, ok, err := epcuda.OptionsFromEnv()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("ep-bench runs once per GPU: set RANK, WORLD_SIZE (and LOCAL_RANK, CUDA_VISIBLE_DEVICES, %s)", epcuda.EnvIDFile)
	}
	be := cudaops.Registered()
	tr, err := epcuda.New(be, opts)
	if err != nil {
		return err
	}
	defer tr.Close()
	dev := tr.Device()
	W := tr.World()
	for _, s := range strings.Split(*sizes, ",") {
		bytes, err := parseBytes(s)
		if err != nil {
			return err
		}
		// Rows of 1024 float32 (4 KiB); each peer gets rows/W rows in `segs` segments.
		const h = 1024
		rows := int(bytes / (4 * h))
		perPeer := rows / W
		if perPeer < *segs || perPeer == 0 {
			return fmt.Errorf("size %s is too small for %d ranks and %d segments per peer", s, W, *segs)
		}
		rows = perPeer * W
		send, err := be.New(tensor.Float32, rows, h)
		if err != nil {
			return err
		}
		recv, err := be.New(tensor.Float32, rows, h)
		if err != nil {
			return err
		}
		var sends, recvs []ep.Segment
		for q := 0; q < W; q++ {
			at := q * perPeer
			for k := 0; k < *segs; k++ {
				n := perPeer / *segs
				if k == *segs-1 {
					n = perPeer - (*segs-1)*(perPeer / *segs)
				}
				sends = append(sends, ep.Segment{Peer: q, Offset: at, Rows: n})
				recvs = append(recvs, ep.Segment{Peer: q, Offset: at, Rows: n})
				at += n
			}
		}
		var times []float64
		for i := 0; i < *warmup+*reps; i++ {
			if err := tr.Barrier(); err != nil {
				return err
			}
			start := time.Now()
			if err := tr.AllToAllV(send, sends, recv, recvs); err != nil {
				return err
			}
			if i >= *warmup {
				times = append(times, float64(time.Since(start))/float64(time.Microsecond))
			}
		}
		_ = be.Free(send)
		_ = be.Free(recv)
		sort.Float64s(times)
		med := times[len(times)/2]
		sent := int64(rows) * h * 4
		row := epBenchRow{World: W, Bytes: sent, MedianUs: med, MinUs: times[0], Reps: *reps, SegmentsOp: *segs,
			AlgGBs: float64(sent) / (med * 1e3), Device: dev.Name(), NCCL: nccl.VersionString(tr.Library().Version())}
		row.BusGBs = row.AlgGBs * float64(W-1) / float64(W)
		if tr.Rank() == 0 {
			if err := json.NewEncoder(os.Stdout).Encode(row); err != nil {
				return err
			}
		}
	}
	return tr.Barrier()
}

func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
