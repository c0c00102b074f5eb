#!/usr/bin/env bash
# Expert parallelism on NCCL: GPU checks from prebuilt binaries (build them on the build host):
#   go test -c -tags expertrt_cuda -o .devbin/tests.test ./tests
#   go build -tags expertrt_cuda -o .devbin/mixtral-layer ./examples/mixtral-layer
# Usage: cudaops/gpu-ep.sh STAGE... with stages:
#   world1  NCCL with a world of one rank on GPU 0, in-process ranks sharing it           ~30 s
#   multi   2/4/8 ranks equal the single-GPU layer, a dying rank is detected (>= 2 GPUs)  ~1-2 min
#   train   training launched once per GPU, loss curve checked against the single-rank run ~1 min
#   bench   all-to-all bandwidth: our NCCL transport vs torch all_to_all_single, same bytes ~1 min
# One process per GPU (RANK, WORLD_SIZE, LOCAL_RANK, CUDA_VISIBLE_DEVICES), ranks meet through an id
# file. NVLink multicast stays off (NCCL_NVLS_ENABLE=0): nothing here calls cuMulticastCreate.
# Logs go to $OUT (default ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
T=.devbin/tests.test
M=.devbin/mixtral-layer
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PATH=/usr/local/cuda/bin:$PATH

# libnccl.so.2: the system's, or the one of PyTorch's nvidia-nccl wheel.
if [ -z "${EXPERTRT_NCCL_LIB:-}" ]; then
  lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
  if [ -n "$lib" ] && [ -f "$lib" ]; then export EXPERTRT_NCCL_LIB=$lib; fi
fi
echo "NCCL library: ${EXPERTRT_NCCL_LIB:-default search}" | tee "$OUT/ep-env.txt"
python3 -c 'import torch; print("torch", torch.__version__, "nccl", torch.cuda.nccl.version(), "gpus", torch.cuda.device_count())' 2>&1 | tee -a "$OUT/ep-env.txt"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/ep-env.txt"
nvidia-smi topo -m 2>/dev/null | tee -a "$OUT/ep-env.txt" | head -12
NGPU=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)

# launch W LOG CMD...: one process per GPU 0..W-1; logs LOG.rankR; fails if any rank fails.
launch() {
  local w=$1 log=$2; shift 2
  local run="ep-$$-$(date +%s%N)" idf="/tmp/expertrt-nccl-id-$$-$RANDOM" pids=() rc=0
  rm -f "$idf"
  for ((r = 0; r < w; r++)); do
    RANK=$r WORLD_SIZE=$w LOCAL_RANK=$r CUDA_VISIBLE_DEVICES=$r EXPERTRT_NCCL_ID_FILE=$idf EXPERTRT_NCCL_RUN=$run \
      timeout 300 "$@" > "$log.rank$r" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  rm -f "$idf"
  return $rc
}

for stage in "$@"; do
  echo "=== $stage"
  case $stage in
    world1)
      timeout 300 $T -test.run 'TestCUDAEPWorldOne|TestCUDAEPInProcessDevice' -test.v -test.count=1 2>&1 | tee "$OUT/ep-world1.log" | grep -E '^(--- |ok|FAIL|PASS)|NCCL|bitwise|panic' | head -40
      ;;
    multi)
      if [ "$NGPU" -lt 2 ]; then echo "multi: $NGPU GPU(s): needs 2 or more (not run)"; continue; fi
      timeout 600 $T -test.run 'TestCUDAEPMultiGPU|TestCUDAEPDeadRank' -test.v -test.count=1 2>&1 | tee "$OUT/ep-multi.log" | grep -E '^(\s*--- |ok|FAIL|PASS)|rank [0-9]+ (passed|failed)|EP-DEAD|panic' | head -60
      ;;
    train)
      for w in 1 2 4 8; do
        [ "$w" -gt "$NGPU" ] && break
        launch $w "$OUT/ep-train-w$w.log" $M ep -steps 100 -tokens 256 -hidden 64 -ffn 128 -experts 8 -check -json
        rc=$?
        echo "world $w: rc=$rc $(tail -1 "$OUT/ep-train-w$w.log.rank0" | python3 -c 'import json,sys
try:
    d = json.loads(sys.stdin.read())
    print("loss %.5f -> %.5f, rank load %s, max rel diff to single rank %s, %.1fs" % (d["initial_loss"], d["final_loss"], [round(x, 3) for x in d["rank_load"]], d.get("check_max_rel_diff"), d["seconds"]))
except Exception as e:
    print("no summary:", e)')"
        [ $rc -ne 0 ] && tail -5 "$OUT"/ep-train-w$w.log.rank*
      done
      ;;
    bench)
      : > "$OUT/ep-bench.jsonl"
      for w in 2 4 8; do
        [ "$w" -gt "$NGPU" ] && break
        launch $w "$OUT/ep-bench-go-w$w.log" $M ep-bench -sizes 1M,16M,64M,256M -reps 20 || echo "ep-bench failed for $w ranks"
        grep '^{' "$OUT/ep-bench-go-w$w.log.rank0" | sed 's/^{/{"impl":"expertrt-go epcuda AllToAllV",/' >> "$OUT/ep-bench.jsonl"
        timeout 300 torchrun --standalone --nproc_per_node "$w" bench/ep_alltoall_torch.py --sizes 1M,16M,64M,256M --reps 20 > "$OUT/ep-bench-torch-w$w.log" 2>&1 || echo "torch baseline failed for $w ranks"
        grep '^{' "$OUT/ep-bench-torch-w$w.log" >> "$OUT/ep-bench.jsonl"
      done
      python3 - "$OUT/ep-bench.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['impl'][:38]:38s} W={r['world']} {r['bytes_per_rank']/2**20:7.0f} MiB/rank  {r['median_us']:9.1f} us  algbw {r['algbw_gb_s']:7.1f} GB/s  busbw {r['busbw_gb_s']:7.1f} GB/s  {r['device']} NCCL {r['nccl']}")
PY
      ;;
    *)
      echo "unknown stage $stage (world1 multi train bench)"
      ;;
  esac
done
