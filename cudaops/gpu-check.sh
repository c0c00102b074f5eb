#!/usr/bin/env bash
# Runs the GPU checks and benchmarks on a machine with an NVIDIA GPU, from prebuilt binaries:
#   go test -c -tags expertrt_cuda -o .devbin/tests.test ./tests
#   go build -tags expertrt_cuda -o .devbin/bench ./bench
# Usage: cudaops/gpu-check.sh STAGE... with stages: tests oracle memcheck racecheck engine policies bench torch ncu.
# Logs go to $OUT (default ./gpu-out), at most one file per stage.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
T=.devbin/tests.test
B=.devbin/bench
export PATH=/usr/local/cuda/bin:$PATH
# GPU tests fail instead of skipping when no device opens (a broken driver must not look like a pass).
export EXPERTRT_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
for stage in "$@"; do
  echo "=== $stage"
  case $stage in
    tests)
      timeout 300 $T -test.run 'TestCUDA' -test.v -test.count=1 2>&1 | tee "$OUT/tests.log" | grep -E '^(=== RUN|--- FAIL|--- PASS: TestCUDA[A-Za-z]* |FAIL|ok|PASS)|cuda_|panic|plan-timing' | grep -v '=== RUN' | tail -40
      ;;
    oracle)
      rm -rf /tmp/oracle && mkdir -p /tmp/oracle
      (EXPERTRT_ORACLE_DIR=/tmp/oracle timeout 120 $T -test.run 'TestCUDAWriteOracle' -test.v &&
        timeout 300 python3 tests/pytorch/oracle.py /tmp/oracle) 2>&1 | tee "$OUT/oracle.log" | tail -8
      ;;
    memcheck)
      timeout 400 compute-sanitizer --tool memcheck --leak-check no $T -test.run 'TestCUDAConformance$|TestCUDAFused|TestCUDAPlanPaths|TestCUDAGraphGradient|TestCUDAFaultSentinels' -test.short 2>&1 | tee "$OUT/memcheck.log" | grep -E 'ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -10
      ;;
    racecheck)
      timeout 180 compute-sanitizer --tool racecheck $T -test.run 'TestCUDAConformance$/(Random|PlanPatterns|KnownAnswers)|TestCUDAFused|TestCUDAPlanPaths' -test.short 2>&1 | tee "$OUT/racecheck.log" | grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -10
      timeout 90 compute-sanitizer --tool synccheck $T -test.run 'TestCUDAConformance$/(Random|PlanPatterns)|TestCUDAPlanPaths' -test.short 2>&1 | tee -a "$OUT/racecheck.log" | grep -E 'SUMMARY|^(ok|PASS|FAIL)' | tail -5
      ;;
    engine)
      # The tensor engine, the training kernels and the fault sentinels, then the sanitizers on every
      # kernel of elementwise.cu, task_losses.cu and optim.cu (racecheck/synccheck on those with shared
      # memory).
      timeout 240 $T -test.run 'TestCUDAEngine|TestCUDATraining|TestCUDAFaultSentinels|TestCUDAPlanFaultSentinel' -test.v -test.count=1 2>&1 | tee "$OUT/engine.log" | grep -E '^(--- |ok|PASS|FAIL)|^    --- (FAIL|SKIP)|pool after|panic|_test.go|test.go:[0-9]+:' | tail -40
      timeout 300 compute-sanitizer --tool memcheck --leak-check no $T -test.run 'TestCUDAEngine$/(Binary|Scalar|Unary|Map|Compare|Sum|Transpose|Concat|Memory)$|TestCUDATraining$/(MSE|CrossEntropy|SwiGLU|GradNormScale|Adam|SGD|Faults)$' -test.short 2>&1 | tee "$OUT/engine-memcheck.log" | grep -E 'ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -5
      timeout 200 compute-sanitizer --tool racecheck $T -test.run 'TestCUDAEngine$/(Sum|Determinism)$|TestCUDATraining$/(MSE|CrossEntropy|GradNormScale)$' -test.short 2>&1 | tee "$OUT/engine-racecheck.log" | grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -5
      timeout 120 compute-sanitizer --tool synccheck $T -test.run 'TestCUDAEngine$/(Sum|Determinism)$|TestCUDATraining$/(MSE|CrossEntropy|GradNormScale)$' -test.short 2>&1 | tee -a "$OUT/engine-racecheck.log" | grep -E 'SUMMARY|^(ok|PASS|FAIL)' | tail -5
      ;;
    policies)
      # Routing policies (route.cu's sigmoid router, policies.cu, the drop-aware permute kernels): the
      # conformance cases, CPU parity at DeepSeek-V3 size, transformers' fixtures, the sanitizers, and
      # the GPU target: the sigmoid grouped route within 1.5x of the softmax route at T=4096, E=256, k=8.
      timeout 240 $T -test.run 'TestCUDAConformance$/Policies|TestCUDAPolicies|TestCUDADeepSeekV3Fixtures' -test.v -test.count=1 2>&1 | tee "$OUT/policies.log" | grep -E '^(--- |ok|PASS|FAIL)|^    --- FAIL|_test.go:[0-9]+:|policies.go:[0-9]+:|panic' | tail -40
      timeout 300 compute-sanitizer --tool memcheck --leak-check no $T -test.run 'TestCUDAConformance$/Policies|TestCUDAPolicies' -test.short 2>&1 | tee "$OUT/policies-memcheck.log" | grep -E 'ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -5
      timeout 200 compute-sanitizer --tool racecheck $T -test.run 'TestCUDAConformance$/Policies/(SigmoidKnown|CapacityKnown|Random|CapacityTies)|TestCUDAPolicies' -test.short 2>&1 | tee "$OUT/policies-racecheck.log" | grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -5
      timeout 120 compute-sanitizer --tool synccheck $T -test.run 'TestCUDAConformance$/Policies/(CapacityKnown|Random|CapacityTies)' -test.short 2>&1 | tee -a "$OUT/policies-racecheck.log" | grep -E 'SUMMARY|^(ok|PASS|FAIL)' | tail -5
      : > "$OUT/policies-bench.jsonl"
      for dt in float32 float64; do
        timeout 60 $B -device cuda -op route -dtype $dt -tokens 4096 -hidden 1 -experts 256 -top-k 8 -reps 200 -warmup 20 -json >> "$OUT/policies-bench.jsonl"
        timeout 60 $B -device cuda -op route,plan -dtype $dt -tokens 4096 -hidden 1 -experts 256 -top-k 8 -scoring sigmoid -groups 8 -topk-groups 4 -scale 2.5 -reps 200 -warmup 20 -json >> "$OUT/policies-bench.jsonl"
        timeout 60 $B -device cuda -op plan,e2e -dtype $dt -tokens 4096 -hidden 4096 -experts 64 -top-k 8 -capacity-factor 1.25 -drop-policy probs -reps 50 -warmup 5 -json >> "$OUT/policies-bench.jsonl"
      done
      python3 - "$OUT/policies-bench.jsonl" <<'PY'
import json, sys
txt = open(sys.argv[1]).read(); dec = json.JSONDecoder(); i = 0; rows = []
while i < len(txt):
    while i < len(txt) and txt[i].isspace(): i += 1
    if i >= len(txt): break
    o, i = dec.raw_decode(txt, i)
    rows += o if isinstance(o, list) else o.get("results", [o])
base = {}
for r in rows:
    print(f"{r['op']:6s} {r['dtype']:8s} T={r['tokens']} E={r['experts']} k={r['top_k']} {r['scoring']:13s} {r['median_ms']*1e3:9.1f} us  {r.get('routing','')}  max/mean {r.get('max_over_mean_load',0):.2f} dropped {r.get('dropped_slots',0)}")
    if r['op'] == 'route' and r['experts'] == 256:
        base.setdefault(r['dtype'], {})[r['scoring']] = r['median_ms']
for dt, m in base.items():
    if 'softmax-topk' in m and 'sigmoid' in m:
        q = m['sigmoid'] / m['softmax-topk']
        print(f"GPU target {dt}: sigmoid grouped route / softmax route = {q:.2f} ({'met' if q <= 1.5 else 'MISSED'}: <= 1.5)")
PY
      ;;
    bench)
      : > "$OUT/bench.jsonl"
      for shp in "4096 16" "4096 64" "16384 16" "16384 64"; do
        set -- $shp
        timeout 120 $B -device cuda -op dispatch,dispatch-bwd,combine,combine-bwd,combine-bwd-x,combine-bwd-w,plan,e2e,e2e-bwd -tokens $1 -hidden 4096 -experts $2 -top-k 2 -reps 50 -warmup 5 -json >> "$OUT/bench.jsonl" || echo "bench failed for $shp"
      done
      timeout 60 $B -device cuda -op route,route-bwd,plan -tokens 8192 -hidden 4096 -experts 32 -top-k 2 -reps 100 -warmup 10 -json >> "$OUT/bench.jsonl"
      # Comparisons (device_desc names the switch): the three-launch plan, streaming dispatch stores.
      : > "$OUT/bench-variants.jsonl"
      EXPERTRT_CUDA_PLAN=multi timeout 60 $B -device cuda -op plan,e2e -tokens 4096 -hidden 4096 -experts 16 -top-k 2 -reps 50 -warmup 5 -json >> "$OUT/bench-variants.jsonl"
      EXPERTRT_CUDA_PLAN=multi timeout 60 $B -device cuda -op plan -tokens 8192 -hidden 4096 -experts 32 -top-k 2 -reps 100 -warmup 10 -json >> "$OUT/bench-variants.jsonl"
      EXPERTRT_CUDA_STREAM_DISPATCH=1 timeout 60 $B -device cuda -op dispatch,e2e -tokens 4096 -hidden 4096 -experts 16 -top-k 2 -reps 50 -warmup 5 -json >> "$OUT/bench-variants.jsonl"
      python3 - "$OUT/bench.jsonl" "$OUT/bench-variants.jsonl" <<'PY'
import json, sys
txt = open(sys.argv[1]).read() + open(sys.argv[2]).read()
dec = json.JSONDecoder(); i = 0; rows = []
while i < len(txt):
    while i < len(txt) and txt[i].isspace(): i += 1
    if i >= len(txt): break
    o, i = dec.raw_decode(txt, i)
    rows += o if isinstance(o, list) else o.get("results", [o])
for r in rows:
    tag = "variant" if "[" in r.get("device_desc", "") else "ours"
    note = r.get("device_desc", "").partition("[")[2].rstrip("]")
    print(f"{tag} {r['op']:18s} T={r['tokens']:6d} E={r['experts']:3d}  {r['median_ms']*1e3:9.1f} us  {r['gb_per_s']:7.1f} GB/s  copy {r['copy_gb_per_s']:7.1f} GB/s  ratio {r['ratio_to_copy']:.3f}  {note}")
PY
      ;;
    torch)
      timeout 300 python3 bench/pytorch_baseline.py --json "$OUT/torch.json" 2>&1 | tee "$OUT/torch.log"
      ;;
    ncu)
      timeout 300 ncu --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum \
        -k 'regex:^(dispatch|combine|route|plan)' --launch-skip 0 --launch-count 40 \
        $B -device cuda -op route,plan,dispatch,dispatch-bwd,combine,combine-bwd,combine-bwd-x,combine-bwd-w -tokens 4096 -hidden 4096 -experts 16 -top-k 2 -reps 2 -warmup 0 > "$OUT/ncu.log" 2>&1
      grep -E '^\s+(dispatch|combine|route|plan)[a-z_0-9]*|gpu__time_duration|dram__throughput|dram__bytes' "$OUT/ncu.log" | head -120
      ;;
  esac
done
