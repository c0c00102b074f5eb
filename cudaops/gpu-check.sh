#!/usr/bin/env bash
# Runs the GPU checks and benchmarks on a machine with an NVIDIA GPU, from prebuilt binaries:
#   go test -c -tags expertrt_cuda -o .devbin/tests.test ./tests
#   go build -tags expertrt_cuda -o .devbin/bench ./bench
#   go build -tags expertrt_cuda -o .devbin/mixtral-layer ./examples/mixtral-layer   (stages train and bf16: HF parity)
# Usage: cudaops/gpu-check.sh STAGE... with stages: tests oracle memcheck racecheck engine train layer policies
# bench torch ncu gemm gemm-split gemm-sk gemm-sweep gemm-rs gemm-full gemm-bf16 gemm-bf16-bench gemm-wgmma bf16 seam ptx-nvcc swiglu (seam: the kernel declarations, per-kernel
# faults, device options and the graph's fused route, about 2 minutes; ptx-nvcc: which PTX modules the
# host's nvcc compiles to other code; gemm: the GEMM kernels' tests, sanitizers, bench and the PyTorch
# baseline, under 3 minutes; gemm-sweep: every tile configuration timed, GEMM_SWEEP=name,... limits it,
# about 1-2 minutes; gemm-rs: the register-staged fp32 tiles' tests, sanitizers and sweep, about 2.5
# minutes; gemm-split: split-K of the grouped-rows products (tests, sanitizers, forced-split bench rows
# and the PyTorch fp32 baseline), about 3 minutes; gemm-sk: stream-K grouped rows (tests, sanitizers,
# bench rows on and off, PyTorch fp32), about 3 minutes; gemm-full: every GEMM test case on every configuration; gemm-bf16: the bfloat16
# GEMM tiles' tests and sanitizers, about 2 minutes; gemm-bf16-bench: their sweep and bench against
# PyTorch bfloat16, about 1.5 minutes; gemm-wgmma: the Hopper wgmma TF32 tiles (ptxas sm_90a, tests,
# sanitizers, sweep against mma.sync and PyTorch TF32), about 3 minutes; train and layer: the
# whole-layer training acceptance tests and the whole-layer benchmarks against PyTorch, about 3 minutes
# together; policies: the routing policies' tests, sanitizers and GPU target, about 3 minutes; bf16: mixed
# precision, about 2.5 minutes, see the stage).
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
# sb LABEL ENV ARGS... runs the bench with ENV (VAR=value ...) and ARGS plus $BS, appending its rows,
# labelled, to $S/bench.jsonl (stages gemm-split and gemm-sk).
sb() {
  local label=$1 env=$2; shift 2
  env $env timeout 60 $B -device cuda "$@" $BS | python3 -c "import sys,json; sys.path.insert(0,'bench'); from jsonrows import rows; [print(json.dumps(dict(r, label='$label'))) for r in rows('/dev/stdin')]" >> "$S/bench.jsonl" || echo "bench failed: $label $*"
}
# label_table DIR TITLE prints the labelled bench rows of DIR/bench.jsonl against PyTorch's DIR/torch.json
# (stages gemm-split and gemm-sk).
label_table() {
  python3 - "$1" "$2" <<'PY'
import sys
sys.path.insert(0, "bench")
from jsonrows import rows
s = sys.argv[1]
torch = {(r["op"], r["tokens"], r["hidden"], r["experts"], bool(r["skew"]), r["tf32"]): r for r in rows(s + "/torch.json")}
print(sys.argv[2] + ": ours vs PyTorch per-expert cuBLAS; ratio = torch ms / ours ms (target fp32 >= 0.9)")
print(f"{'label':13s} {'op':16s} {'T':>6s} prec {'variant':22s}  ours ms  TFLOP/s  torch ms  ratio")
for r in rows(s + "/bench.jsonl"):
    tf = "tf32" in r.get("device_desc", "")
    t = torch.get((r["op"], r["tokens"], r["hidden"], r["experts"], bool(r.get("skew")), tf))
    tm = f"{t['median_ms']:9.4f} {t['median_ms']/r['median_ms']:6.2f}" if t else "        -      -"
    print(f"{r['label']:13s} {r['op']:16s} {r['tokens']:6d} {'tf32' if tf else 'fp32'} {r.get('gemm_variant') or 'planner':22s} {r['median_ms']:8.4f} {r.get('tflop_per_s', 0):8.2f} {tm}")
PY
}
# gemm_table prints ours vs PyTorch and the sweep from the JSON of the gemm and gemm-sweep stages in $G.
gemm_table() {
  python3 - "$G" <<'PY'
import json, sys, os
g = sys.argv[1]
sys.path.insert(0, "bench")  # bench/jsonrows.py (this script runs from the repository root)
from jsonrows import rows
def key(r, tf32):
    return (r["op"], r["tokens"], r["hidden"], r.get("ffn", 0), r["experts"], bool(r.get("skew")), tf32)
ours = {key(r, "tf32" in r.get("device_desc", "")): r for r in rows(g + "/bench.jsonl")}
torch = {}
for r in rows(g + "/torch.json"):
    torch[(r["op"], r["tokens"], r["hidden"], r["ffn"], r["experts"], bool(r["skew"]), r["tf32"])] = r
print("GEMM: ours (planner's choice) vs PyTorch per-expert cuBLAS, same FLOPs; ratio = torch ms / ours ms (target fp32 >= 0.9, skewed/small experts >= 0.7; tf32 >= 0.7)")
print(f"{'op':16s} {'T':>6s} {'H':>5s} {'F':>5s} {'E':>3s} skew prec   ours ms  TFLOP/s %peak  torch ms  TFLOP/s  ratio")
for k in sorted(ours, key=lambda k: (k[6], k[1], k[2], k[5], k[0])):
    r = ours[k]; t = torch.get(k)
    tm = f"{t['median_ms']:9.4f} {t['tflop_per_s']:8.2f} {t['median_ms']/r['median_ms']:6.2f}" if t else "        -        -      -"
    print(f"{k[0]:16s} {k[1]:6d} {k[2]:5d} {k[3]:5d} {k[4]:3d} {'yes ' if k[5] else 'no  '} {'tf32' if k[6] else 'fp32'} {r['median_ms']:9.4f} {r.get('tflop_per_s',0):8.2f} {r.get('pct_fp32_peak',0):5.1f} {tm}")
sw = rows(g + "/sweep.jsonl")
if sw:
    print("sweep (TFLOP/s per tile configuration; the planner's default should be the best of its class):")
    groups = {}
    for r in sw:
        groups.setdefault((r["op"], r["hidden"], r["experts"], "tf32" in r.get("device_desc", ""), r["tokens"]), []).append(r)
    for k, rs in sorted(groups.items()):
        rs.sort(key=lambda r: -r.get("tflop_per_s", 0))
        print(f"  {k[0]:16s} T={k[4]} H={k[1]} E={k[2]} {'tf32' if k[3] else 'fp32'}: " + "  ".join(f"{r['gemm_variant']}={r.get('tflop_per_s',0):.1f}" for r in rs))
    # eff for gemm.variants: each configuration's TFLOP/s over the best of its class, averaged over the
    # Mixtral-shape (T=4096, H=1024, E=8) sweeps of the class.
    eff = {}
    for k, rs in groups.items():
        if k[1] != 1024 or k[4] != 4096:
            continue
        best = max(r.get("tflop_per_s", 0) for r in rs) or 1
        for r in rs:
            eff.setdefault(r["gemm_variant"], []).append(r.get("tflop_per_s", 0) / best)
    print("suggested eff (mean TFLOP/s relative to the best of the class, Mixtral-shape sweeps): " +
          "  ".join(f"{v}={sum(x)/len(x):.2f}" for v, x in sorted(eff.items(), key=lambda kv: -sum(kv[1])/len(kv[1]))))
PY
}
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
    train)
      # Whole-layer training on the GPU against the CPU (issue 7): one Adam step (parameters within 1e-4 /
      # 1e-10) and 100-step loss curves through ops.Trainer; every gradient of the training graph (input,
      # router, W1, W3, W2; normwise 1e-4 / 1e-10); no host synchronisation inside a step (device counters);
      # kernel timing; device memory after step 10 and step 200; zero-element operands. Then HF parity of
      # the forward and grad subcommands with -device cuda (run from tests/, where the fixtures are).
      timeout 200 $T -test.run 'TestCUDATrainLayerMatchesCPU|TestCUDALayerGradientsMatchCPU|TestCUDATrainStepHostSyncs|TestCUDAHostWaitCounts|TestCUDAKernelTiming|TestCUDATrainLayerMemory|TestCUDAZeroElementOperands' -test.v -test.count=1 2>&1 | tee "$OUT/train.log" | grep -E '^(--- |ok|PASS|FAIL)|^    --- FAIL|in use after|100 steps|after one step|host synchronisations|panic|_test.go:[0-9]+: .*(differ|want|tie|implausible)' | tail -45
      if [ -x .devbin/mixtral-layer ]; then
        (cd tests && EXPERTRT_PARITY_DEVICE=cuda EXPERTRT_MIXTRAL_LAYER_BIN="$(pwd)/../.devbin/mixtral-layer" timeout 150 "../$T" -test.run 'TestHFParityForwardAndGrad$' -test.v -test.count=1) 2>&1 | tee "$OUT/train-hf.log" | grep -E '^(--- |ok|PASS|FAIL)|^    --- |-device|worst error|panic' | tail -24
      else
        echo "HF parity with -device cuda NOT run: build .devbin/mixtral-layer with -tags expertrt_cuda"
      fi
      ;;
    swiglu)
      # The SwiGLU epilogue fused into the gate/up grouped GEMM (gemm_swiglu, issue 8 item 5): its tests on
      # every configuration (fp32 SIMT, TF32, fp64) and the layer with Config.FusedSwiGLU against the
      # unfused layer (fp32, fp64, mixed bf16), memcheck and racecheck on the short kernel tests, then the
      # measurement that decides the default: the unfused ops (two grouped products + SwiGLU) against the
      # fused launch, and layer, layer-bwd, train-step with the switch off and on, at T=4096 and 16384
      # (H=1024, F=3584, E=8, k=2), fp32 and bf16. About 2.5 minutes.
      W="$OUT/swiglu"; mkdir -p "$W"; : > "$W/ops.jsonl"; : > "$W/layer.jsonl"
      timeout 240 $T -test.run 'TestCUDAGroupedSwiGLU|TestCUDASwiGLUFusedLayer' -test.v -test.count=1 2>&1 | tee "$W/tests.log" | grep -E '^(--- |ok|PASS|FAIL)|^    --- FAIL|panic|_test.go:[0-9]+: .*(differ|want|fault)' | grep -v 'h differs from the unfused SwiGLU in 0 of' | tail -30
      # Sanitizers: the planner's choice and the Mixtral-shape defaults forced (-test.run splits the
      # pattern at every slash, so alternatives go inside each level).
      SAN='^TestCUDAGroupedSwiGLU(Validation)?$/^(float32|float64)$/^tf32=(false|true)$/^(auto|f32_128x64x16_s3|tf32_128x128x16_w4_s4)$'
      timeout 200 compute-sanitizer --tool memcheck --leak-check no $T -test.run "$SAN" -test.short 2>&1 | tee "$W/memcheck.log" | grep -E 'ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -5
      timeout 200 compute-sanitizer --tool racecheck $T -test.run "$SAN" -test.short 2>&1 | tee "$W/racecheck.log" | grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -5
      SW="-hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json"
      for dt in float32 bfloat16; do
        for tok in 4096 16384; do
          timeout 60 $B -device cuda -op swiglu-ffn,swiglu-ffn-fused -dtype $dt -tokens $tok $SW >> "$W/ops.jsonl" 2>> "$W/bench.err" || echo "swiglu ops bench failed ($dt, T=$tok): $(tail -2 "$W/bench.err")"
          for fused in 0 1; do
            EXPERTRT_FUSED_SWIGLU=$fused timeout 90 $B -device cuda -op layer,layer-bwd,train-step -dtype $dt -tokens $tok -kernel-reps 2 $SW >> "$W/layer.jsonl" 2>> "$W/bench.err" || echo "layer bench failed ($dt, T=$tok, fused=$fused): $(tail -2 "$W/bench.err")"
          done
        done
      done
      python3 - "$W" <<'PY' 2>&1 | tee "$W/summary.txt"
import sys, os
sys.path.insert(0, "bench")
from jsonrows import rows
w = sys.argv[1]
ops = {}
for r in rows(os.path.join(w, "ops.jsonl")):
    ops[(r.get("dtype"), r.get("tokens"), r.get("op"))] = r
print("gate+up+SwiGLU, ms (median): unfused (2 grouped GEMMs + swiglu) vs fused (1 launch)")
for (dt, tok, op), r in sorted(ops.items()):
    if op != "swiglu-ffn":
        continue
    f = ops.get((dt, tok, "swiglu-ffn-fused"))
    a = r.get("median_ms"); b = f.get("median_ms") if f else None
    print(f"  {dt:9s} T={tok:6d}  unfused {a:8.3f}  fused {b if b is None else round(b, 3)!s:>8s}  speedup {a / b if b else float('nan'):.3f}")
lay = {}
for r in rows(os.path.join(w, "layer.jsonl")):
    lay[(r.get("dtype"), r.get("tokens"), r.get("op"), bool(r.get("fused_swiglu")))] = r
print("layer ops, ms (median): switch off vs on")
for (dt, tok, op, fused), r in sorted(lay.items()):
    if fused:
        continue
    f = lay.get((dt, tok, op, True))
    a = r.get("median_ms"); b = f.get("median_ms") if f else None
    print(f"  {dt:9s} T={tok:6d} {op:10s}  off {a:8.3f}  on {b if b is None else round(b, 3)!s:>8s}  speedup {a / b if b else float('nan'):.3f}")
PY
      ;;
    layer)
      # Whole-layer benchmarks (issue 7): layer, layer-bwd, train-step of the moe layer graph at T=4096 and
      # 16384 (H=1024, F=3584, E=8, k=2, fp32, TF32 off) with the per-kernel breakdown, T=4096 again with
      # TF32, PyTorch's MixtralSparseMoeBlock on the same card in the same run, and the comparison table.
      L="$OUT/layer"; mkdir -p "$L"; : > "$L/bench.jsonl"
      LSHAPE="-hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 20 -warmup 3 -kernel-reps 5 -json"
      for tok in 4096 16384; do
        timeout 150 $B -device cuda -op layer,layer-bwd,train-step -tokens $tok $LSHAPE >> "$L/bench.jsonl" 2> "$L/bench-$tok.err" || echo "layer bench failed at T=$tok: $(tail -3 "$L/bench-$tok.err")"
      done
      EXPERTRT_GEMM_TF32=1 timeout 100 $B -device cuda -op layer,layer-bwd,train-step -tokens 4096 $LSHAPE >> "$L/bench.jsonl" 2> "$L/bench-tf32.err" || echo "layer bench (TF32) failed: $(tail -3 "$L/bench-tf32.err")"
      timeout 150 python3 bench/pytorch_layer.py --tokens 4096,16384 --reps 20 --warmup 5 --json "$L/torch.json" > "$L/torch.log" 2>&1 || echo "torch baseline failed: $(tail -3 "$L/torch.log")"
      timeout 90 python3 bench/pytorch_layer.py --tokens 4096 --tf32 --reps 20 --warmup 5 --json "$L/torch-tf32.json" > "$L/torch-tf32.log" 2>&1 || echo "torch TF32 baseline failed: $(tail -3 "$L/torch-tf32.log")"
      TJ="--torch $L/torch.json"; [ -s "$L/torch-tf32.json" ] && TJ="$TJ --torch $L/torch-tf32.json"
      python3 bench/compare_layer.py "$L/bench.jsonl" $TJ --kernels 2>&1 | tee "$L/compare.txt"
      python3 bench/compare_layer.py "$L/bench.jsonl" $TJ --markdown > "$L/compare.md" 2>&1
      ;;
    policies)
      # Routing policies (route.cu's sigmoid router, policies.cu, the drop-aware permute kernels): the
      # conformance cases, CPU parity at DeepSeek-V3 size, transformers' fixtures, the sanitizers, and
      # the GPU target: the sigmoid grouped route within 1.5x of the softmax route at T=4096, E=256, k=8.
      # Policies/Random and Policies/FiniteDifferences run the grouped matmul on capacity plans
      # (offsets[E] < rows): they need GEMM kernels that accept offsets[E] <= rows (gemm.cuh).
      timeout 240 $T -test.run 'TestCUDAConformance$/Policies|TestCUDAPolicies|TestCUDADeepSeekV3Fixtures|TestCUDASigmoidRoute' -test.v -test.count=1 2>&1 | tee "$OUT/policies.log" | grep -E '^(--- |ok|PASS|FAIL)|^    --- FAIL|_test.go:[0-9]+:|policies.go:[0-9]+:|panic' | tail -40
      timeout 300 compute-sanitizer --tool memcheck --leak-check no $T -test.run 'TestCUDAConformance$/Policies|TestCUDAPolicies|TestCUDASigmoidRoute' -test.short 2>&1 | tee "$OUT/policies-memcheck.log" | grep -E 'ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -5
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
sys.path.insert(0, "bench")  # bench/jsonrows.py (this script runs from the repository root)
from jsonrows import rows
base = {}
for r in rows(sys.argv[1]):
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
sys.path.insert(0, "bench")  # bench/jsonrows.py (this script runs from the repository root)
from jsonrows import rows
for r in rows(sys.argv[1], sys.argv[2], required=True):
    tag = "variant" if "[" in r.get("device_desc", "") else "ours"
    note = r.get("device_desc", "").partition("[")[2].rstrip("]")
    print(f"{tag} {r['op']:18s} T={r['tokens']:6d} E={r['experts']:3d}  {r['median_ms']*1e3:9.1f} us  {r['gb_per_s']:7.1f} GB/s  copy {r['copy_gb_per_s']:7.1f} GB/s  ratio {r['ratio_to_copy']:.3f}  {note}")
PY
      ;;
    torch)
      timeout 300 python3 bench/pytorch_baseline.py --json "$OUT/torch.json" 2>&1 | tee "$OUT/torch.log"
      ;;
    gemm)
      # GEMM kernels (cudaops/gemm.cu): tests on every tile configuration (-test.short cases), the
      # sanitizers, our bench at the issue-8 shapes, the PyTorch baseline; a table last (with the sweep
      # when gemm-sweep ran before in the same $OUT). Logs and JSON under $OUT/gemm/.
      G="$OUT/gemm"; mkdir -p "$G"
      timeout 150 $T -test.run 'TestCUDAGemm' -test.short -test.v -test.count=1 > "$G/tests.log" 2>&1
      echo "gemm tests: exit $? ($(grep -c '^--- FAIL' "$G/tests.log") failed subtests)"
      grep -E '^(--- FAIL|FAIL|ok|PASS)|gemm-accuracy|panic' "$G/tests.log" | head -12; grep -o 'gemm-jit.*' "$G/tests.log" | tr '\n' ';'; echo
      # Sanitizers: the planner's choices on the test shapes (auto), the large-problem defaults forced
      # (fp32 f32_128x64x16_s3, TF32 tf32_128x256x32_s3), the bad-offsets faults. (-test.run splits the
      # pattern at every slash into one pattern per subtest level, so alternatives go inside each level.)
      SAN='^TestCUDAGemm(Grouped|Dense|TF32|BadOffsets)$/^(float32|float64|auto|tf32_128x256x32_s3)$/^(auto|f32_128x64x16_s3)$'
      for tool in memcheck racecheck synccheck; do
        extra=""; [ $tool = memcheck ] && extra="--leak-check no"
        timeout 100 compute-sanitizer --tool $tool $extra $T -test.run "$SAN" -test.short > "$G/$tool.log" 2>&1
        echo "$tool: exit $? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$G/$tool.log" | sort | uniq -c | tr '\n' ' ')"
      done
      : > "$G/bench.jsonl"
      GOPS=groupedmm,groupedmm-bwd,groupedmm-bwd-x,groupedmm-bwd-w
      for shp in "4096 1024 3584 8 2 x" "4096 1024 3584 8 2 -skew" "16384 1024 3584 8 2 x" "4096 2048 1408 64 6 x" "4096 2048 1408 64 6 -skew"; do
        set -- $shp; skew=$6; [ "$skew" = x ] && skew=""
        ops=$GOPS; [ "$2" = 1024 ] && [ -z "$skew" ] && ops=$GOPS,matmul,matmul-bwd,matmul-dense
        timeout 90 $B -device cuda -op $ops -tokens $1 -hidden $2 -ffn $3 -experts $4 -top-k $5 $skew -reps 20 -warmup 3 -json >> "$G/bench.jsonl" || echo "bench failed: $shp"
        if [ "$1" = 4096 ] && [ -z "$skew" ]; then
          EXPERTRT_GEMM_TF32=1 timeout 90 $B -device cuda -op $ops -tokens $1 -hidden $2 -ffn $3 -experts $4 -top-k $5 -reps 20 -warmup 3 -json >> "$G/bench.jsonl" || echo "tf32 bench failed: $shp"
        fi
      done
      timeout 150 python3 bench/pytorch_gemm.py --reps 20 --warmup 3 --json "$G/torch.json" > "$G/torch.log" 2>&1 || echo "torch baseline failed: $(tail -2 "$G/torch.log")"
      gemm_table
      ;;
    gemm-split)
      # Split-K of the grouped-rows products (issue 8's dX = dY·Wᵀ; gemm_reduce_rows), about 3 minutes: the
      # split tests (TestCUDAGemmGroupedSplit, -test.short) and the unsplit grouped tests of the auto and
      # RS tiles, memcheck on the split tests, then fp32 bench rows at T=4096 and 16384
      # (H=1024 F=3584 E=8 k=2): the planner's choice ("auto"), unsplit (EXPERTRT_GEMM_SPLITS=1), and dX
      # forced on f32_128x64x16_s3 and f32_256x128x8_rs_s2 with 2, 3 and 4 splits; TF32 auto and unsplit at
      # T=4096; the PyTorch fp32 baseline last, with a table. Logs and JSON under $OUT/gemm-split/.
      S="$OUT/gemm-split"; mkdir -p "$S"
      timeout 80 $T -test.run 'TestCUDAGemmGroupedSplit$' -test.short -test.v -test.count=1 > "$S/tests.log" 2>&1
      rc=$?
      timeout 40 $T -test.run 'TestCUDAGemmGrouped$/^(float32|float64)$/^(auto|f32_256x128x8_rs_s2)$' -test.short -test.v -test.count=1 >> "$S/tests.log" 2>&1
      echo "split gemm tests: exit $rc, unsplit grouped tests: exit $? ($(grep -c -- '--- PASS' "$S/tests.log") passed, $(grep -c -- '--- FAIL' "$S/tests.log") failed (sub)tests)"
      grep -E -- '--- FAIL|^(ok|FAIL|PASS)|panic' "$S/tests.log" | head -12
      grep -E '_test.go:[0-9]+' "$S/tests.log" | head -8
      # memcheck only: the split changes no shared-memory use (racecheck: gemm-rs, gemm)
      timeout 60 compute-sanitizer --tool memcheck --leak-check no $T -test.run 'TestCUDAGemmGroupedSplit/^float32$/^(auto|f32_256x128x8_rs_s2)$/^splits3$' -test.short > "$S/memcheck.log" 2>&1
      echo "memcheck: exit $? $(grep -E 'ERROR SUMMARY' "$S/memcheck.log" | sort | uniq -c | tr '\n' ' ')"
      : > "$S/bench.jsonl"
      BS="-hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json"
      for T_ in 4096 16384; do
        sb auto "X=1" -op groupedmm,groupedmm-bwd,groupedmm-bwd-x -tokens $T_
        sb unsplit "EXPERTRT_GEMM_SPLITS=1" -op groupedmm-bwd,groupedmm-bwd-x -tokens $T_
      done
      for sp in 2 3 4; do
        sb "split$sp" "EXPERTRT_GEMM_SPLITS=$sp" -op groupedmm-bwd-x -tokens 4096 -gemm-variants f32_128x64x16_s3,f32_256x128x8_rs_s2
      done
      sb tf32-auto "EXPERTRT_GEMM_TF32=1" -op groupedmm-bwd-x -tokens 4096
      sb tf32-unsplit "EXPERTRT_GEMM_TF32=1 EXPERTRT_GEMM_SPLITS=1" -op groupedmm-bwd-x -tokens 4096
      timeout 100 python3 bench/pytorch_gemm.py --no-tf32 --reps 20 --warmup 3 --json "$S/torch.json" > "$S/torch.log" 2>&1 || echo "torch baseline failed: $(tail -2 "$S/torch.log")"
      label_table "$S" "split-K (grouped rows)"
      ;;
    gemm-sk)
      # Stream-K grouped rows (issue 8's dX = dY·Wᵀ; gemm_entry's GROUP_ROWS_SK and gemm_sk_fixup), about 4
      # minutes: TestCUDAGemmGroupedStreamK (Options.GemmStreamK on) and the grouped tests with the
      # planner's choice, memcheck and racecheck on the stream-K tests, then fp32 bench rows at T=4096 and
      # 16384 (H=1024 F=3584 E=8 k=2) and the small-expert shape: the planner's choice ("auto", never
      # stream-K) and stream-K on, dX forced on f32_128x64x16_s3 and f32_256x128x8_rs_s2 with stream-K off and on;
      # the PyTorch fp32 baseline last, with a table. Logs and JSON under $OUT/gemm-sk/.
      S="$OUT/gemm-sk"; mkdir -p "$S"
      timeout 200 $T -test.run 'TestCUDAGemmGroupedStreamK$' -test.v -test.count=1 > "$S/tests.log" 2>&1
      rc=$?
      timeout 60 $T -test.run 'TestCUDAGemmGrouped$/^(float32|float64)$/^(auto|f32_256x128x8_rs_s2)$' -test.short -test.v -test.count=1 >> "$S/tests.log" 2>&1
      echo "stream-K gemm tests: exit $rc, grouped tests (planner): exit $? ($(grep -c -- '--- PASS' "$S/tests.log") passed, $(grep -c -- '--- FAIL' "$S/tests.log") failed (sub)tests)"
      grep -E -- '--- FAIL|^(ok|FAIL|PASS)|panic' "$S/tests.log" | head -12
      grep -E '_test.go:[0-9]+' "$S/tests.log" | head -8
      for tool in memcheck racecheck; do
        timeout 150 compute-sanitizer --tool $tool $([ $tool = memcheck ] && echo --leak-check no) $T -test.run 'TestCUDAGemmGroupedStreamK/^float32/f32_256x128x8_rs_s2$' -test.short > "$S/$tool.log" 2>&1
        echo "$tool: exit $? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$S/$tool.log" | sort | uniq -c | tr '\n' ' ')"
      done
      : > "$S/bench.jsonl"
      BS="-hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json"
      for T_ in 4096 16384; do
        sb auto "X=1" -op groupedmm,groupedmm-bwd-x -tokens $T_
        sb sk-on "EXPERTRT_GEMM_STREAMK=1" -op groupedmm,groupedmm-bwd-x -tokens $T_
        sb sk-off "X=1" -op groupedmm-bwd-x -tokens $T_ -gemm-variants f32_128x64x16_s3,f32_256x128x8_rs_s2
        sb sk-on "EXPERTRT_GEMM_STREAMK=1" -op groupedmm-bwd-x -tokens $T_ -gemm-variants f32_128x64x16_s3,f32_256x128x8_rs_s2
      done
      BS="-hidden 2048 -ffn 1408 -experts 64 -top-k 6 -reps 10 -warmup 2 -json"
      sb auto "X=1" -op groupedmm,groupedmm-bwd-x -tokens 4096
      sb sk-on "EXPERTRT_GEMM_STREAMK=1" -op groupedmm,groupedmm-bwd-x -tokens 4096
      timeout 100 python3 bench/pytorch_gemm.py --no-tf32 --reps 20 --warmup 3 --json "$S/torch.json" > "$S/torch.log" 2>&1 || echo "torch baseline failed: $(tail -2 "$S/torch.log")"
      label_table "$S" "stream-K (grouped rows)"
      ;;
    gemm-sweep)
      # Every GEMM tile configuration timed at the issue-8 shapes (GEMM_SWEEP=name,name,... times only
      # those), with the eff each configuration would get in gemm.variants. A second call after gemm.
      G="$OUT/gemm"; mkdir -p "$G"
      SW="${GEMM_SWEEP:-all}"
      : > "$G/sweep.jsonl"
      timeout 120 $B -device cuda -gemm-variants "$SW" -op groupedmm,groupedmm-bwd-x,groupedmm-bwd-w,matmul-dense -tokens 4096 -hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json >> "$G/sweep.jsonl" || echo "sweep failed"
      timeout 120 $B -device cuda -gemm-variants "$SW" -op groupedmm-bwd-x,matmul-dense -tokens 16384 -hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json >> "$G/sweep.jsonl" || echo "sweep failed (T=16384)"
      timeout 120 $B -device cuda -gemm-variants "$SW" -op groupedmm,groupedmm-bwd-x,groupedmm-bwd-w -tokens 4096 -hidden 2048 -ffn 1408 -experts 64 -top-k 6 -reps 10 -warmup 2 -json >> "$G/sweep.jsonl" || echo "sweep failed (small experts)"
      EXPERTRT_GEMM_TF32=1 timeout 120 $B -device cuda -gemm-variants "$SW" -op groupedmm,groupedmm-bwd-x,groupedmm-bwd-w,matmul-dense -tokens 4096 -hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json >> "$G/sweep.jsonl" || echo "tf32 sweep failed"
      gemm_table
      ;;
    gemm-rs)
      # Register-staged SIMT tiles (GEMM_RS, gemm.variants' _rs lines; issue 8's dY·Wᵀ at cuBLAS speed),
      # about 2.5 minutes: the GEMM tests forced on every _rs configuration (float32, -test.short), memcheck
      # and racecheck on f32_256x128x8_rs_s2, then an fp32 sweep of the _rs lines against the KC lines
      # (GEMM_SWEEP=name,... overrides the list) at T=4096 and 16384 (H=1024 F=3584 E=8 k=2) and the
      # small-expert shape. Logs and JSON under $OUT/gemm-rs/.
      R="$OUT/gemm-rs"; mkdir -p "$R"
      timeout 100 $T -test.run 'TestCUDAGemm(Grouped|Dense)$/^float32$/_rs_' -test.short -test.v -test.count=1 > "$R/tests.log" 2>&1
      echo "rs gemm tests: exit $? ($(grep -c -- '--- PASS' "$R/tests.log") passed, $(grep -c -- '--- FAIL' "$R/tests.log") failed (sub)tests)"
      grep -E -- '--- FAIL|^(ok|FAIL|PASS)|panic' "$R/tests.log" | head -12
      grep -E '_test.go:[0-9]+' "$R/tests.log" | head -8
      for tool in memcheck racecheck; do
        extra=""; [ $tool = memcheck ] && extra="--leak-check no"
        timeout 60 compute-sanitizer --tool $tool $extra $T -test.run 'TestCUDAGemm(Grouped|Dense)$/^float32$/^f32_256x128x8_rs_s2$' -test.short > "$R/$tool.log" 2>&1
        echo "$tool: exit $? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$R/$tool.log" | sort | uniq -c | tr '\n' ' ')"
      done
      SW="${GEMM_SWEEP:-f32_128x64x16_s3,f32_128x128x16_s3,f32_64x64x16_s3,f32_256x128x8_rs_s2}"
      : > "$R/sweep.jsonl"
      timeout 90 $B -device cuda -gemm-variants "$SW" -op groupedmm,groupedmm-bwd-x,groupedmm-bwd-w -tokens 4096 -hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json >> "$R/sweep.jsonl" || echo "sweep failed (T=4096)"
      timeout 60 $B -device cuda -gemm-variants "$SW" -op groupedmm,groupedmm-bwd-x -tokens 16384 -hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json >> "$R/sweep.jsonl" || echo "sweep failed (T=16384)"
      timeout 60 $B -device cuda -gemm-variants "$SW" -op groupedmm,groupedmm-bwd-x,groupedmm-bwd-w -tokens 4096 -hidden 2048 -ffn 1408 -experts 64 -top-k 6 -reps 10 -warmup 2 -json >> "$R/sweep.jsonl" || echo "sweep failed (small experts)"
      python3 - "$R/sweep.jsonl" <<'PY'
import sys
sys.path.insert(0, "bench")
from jsonrows import rows
groups = {}
for r in rows(sys.argv[1]):
    groups.setdefault((r["op"], r["tokens"], r["hidden"], r["experts"]), []).append(r)
print("fp32 sweep, TFLOP/s per configuration (cuBLAS per-expert on the H200, run 8: dX 42.9 at T=4096, 49.6 at T=16384):")
for k, rs in sorted(groups.items()):
    rs.sort(key=lambda r: -r.get("tflop_per_s", 0))
    print(f"  {k[0]:16s} T={k[1]:5d} H={k[2]} E={k[3]}: " + "  ".join(f"{r['gemm_variant']}={r.get('tflop_per_s', 0):.1f}" for r in rs))
PY
      ;;
    gemm-bf16)
      # bfloat16 GEMM tiles (Bf16Tile, issue 11), correctness, about 2 minutes; logs under
      # $OUT/gemm-bf16/: every bf16 configuration forced on odd and aligned shapes (TestCUDAGemmBF16),
      # the conformance suite's bfloat16 products, the layer-size parity (TestCUDABF16GEMM) and
      # mixed-precision training (TestCUDABF16Training); memcheck and racecheck on the planner's choice
      # (auto) of TestCUDAGemmBF16's shapes (-test.short: the first two). Speed: gemm-bf16-bench.
      X="$OUT/gemm-bf16"; mkdir -p "$X"
      timeout 150 $T -test.run 'TestCUDAGemmBF16|TestCUDABF16GEMM|TestCUDABF16Training|TestCUDAConformance$/BF16$/GEMM$' -test.v -test.count=1 > "$X/tests.log" 2>&1
      echo "bf16 gemm tests: exit $? ($(grep -c -- '--- FAIL' "$X/tests.log") failed (sub)tests)"
      grep -E -- '--- (FAIL|PASS)|^(ok|FAIL|PASS)|cost .* -> |panic|gemm-jit' "$X/tests.log" | head -24
      grep -E '_test.go:[0-9]+|bf16.go:[0-9]+' "$X/tests.log" | head -12
      for tool in memcheck racecheck; do
        extra=""; [ $tool = memcheck ] && extra="--leak-check no"
        timeout 60 compute-sanitizer --tool $tool $extra $T -test.run 'TestCUDAGemmBF16$/^auto$' -test.short > "$X/$tool.log" 2>&1
        echo "$tool: exit $? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$X/$tool.log" | sort | uniq -c | tr '\n' ' ')"
      done
      ;;
    gemm-wgmma)
      # Hopper wgmma TF32 tiles (gemm_wgmma.cuh; sm_90a PTX, compute capability 9.0 only), about 3
      # minutes; logs under $OUT/gemm-wgmma/: CUDA's ptxas -arch=sm_90a -v on each wgmma module
      # (registers, spills, and any warning, e.g. wgmma serialisation), the forced-variant tests
      # (TestCUDAGemmWGMMA) and TF32 tests (TestCUDAGemmTF32: every TF32 variant, auto included),
      # memcheck/racecheck/synccheck on the first wgmma variant (short cases), and a TF32 sweep of the
      # wgmma variants against the best mma.sync tile and PyTorch TF32 at the Mixtral shape.
      X="$OUT/gemm-wgmma"; mkdir -p "$X"
      for f in cudaops/ptx/gemm/wg_*.ptx.gz; do
        n=$(basename "$f" .ptx.gz); zcat "$f" > "$X/$n.ptx"
        timeout 60 ptxas -arch=sm_90a -O3 -v -o "$X/$n.cubin" "$X/$n.ptx" > "$X/$n.ptxas.log" 2>&1
        echo "ptxas $n: exit $?"; grep -Ei 'registers|spill|warn|error' "$X/$n.ptxas.log" | head -12
      done
      timeout 120 $T -test.run 'TestCUDAGemmWGMMA|TestCUDAGemmTF32' -test.short -test.v -test.count=1 > "$X/tests.log" 2>&1
      echo "wgmma tests: exit $? ($(grep -c -- '--- FAIL' "$X/tests.log") failed (sub)tests)"
      grep -E -- '--- (FAIL|PASS|SKIP)|^(ok|FAIL|PASS)|gemm-accuracy|panic' "$X/tests.log" | head -24
      grep -E '_test.go:[0-9]+' "$X/tests.log" | head -12
      WG1=$(grep -o '^wg_[^ ]*' cudaops/gemm.variants | head -1)
      for tool in memcheck racecheck synccheck; do
        extra=""; [ $tool = memcheck ] && extra="--leak-check no"
        timeout 40 compute-sanitizer --tool $tool $extra $T -test.run "TestCUDAGemmWGMMA\$/^$WG1\$" -test.short > "$X/$tool.log" 2>&1
        echo "$tool: exit $? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$X/$tool.log" | sort | uniq -c | tr '\n' ' ')"
      done
      WGS=$(grep -o '^wg_[^ ]*' cudaops/gemm.variants | tr '\n' ',')tf32_128x128x16_w4_s4
      EXPERTRT_GEMM_TF32=1 timeout 60 $B -device cuda -gemm-variants "$WGS" -op groupedmm,groupedmm-bwd-x,groupedmm-bwd-w,matmul-dense -tokens 4096 -hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json > "$X/sweep.jsonl" || echo "wgmma sweep failed"
      EXPERTRT_GEMM_TF32=1 timeout 40 $B -device cuda -op groupedmm,groupedmm-bwd-x,groupedmm-bwd-w,matmul-dense -tokens 4096 -hidden 1024 -ffn 3584 -experts 8 -top-k 2 -reps 10 -warmup 2 -json > "$X/auto.jsonl" || echo "wgmma auto bench failed"
      timeout 60 python3 bench/pytorch_gemm.py --quick --reps 10 --warmup 2 --json "$X/torch.json" > "$X/torch.log" 2>&1 || echo "torch baseline failed: $(tail -2 "$X/torch.log")"
      python3 - "$X" <<'PY'
import sys
x = sys.argv[1]
sys.path.insert(0, "bench")  # bench/jsonrows.py (this script runs from the repository root)
from jsonrows import rows
key = lambda r: (r["op"], r["tokens"], r["hidden"], r.get("ffn", 0), r["experts"])
torch = {key(r): r for r in rows(x + "/torch.json") if r.get("tf32") and not r.get("skew")}
print("TF32 at T=4096 H=1024 F=3584 E=8 k=2: TFLOP/s per configuration (auto = the planner's choice); ratio = torch ms / ours ms (target >= 0.7)")
for name, rs in (("sweep", rows(x + "/sweep.jsonl")), ("auto", rows(x + "/auto.jsonl"))):
    for r in rs:
        t = torch.get(key(r))
        ratio = f"{t['median_ms'] / r['median_ms']:.2f} (torch {t['tflop_per_s']:.1f})" if t else "-"
        print(f"  {r['op']:16s} {r.get('gemm_variant') or 'auto':24s} {r['median_ms']:8.4f} ms {r.get('tflop_per_s', 0):7.1f} TFLOP/s  ratio {ratio}")
PY
      ;;
    gemm-bf16-bench)
      # bfloat16 GEMM speed, about 1.5 minutes (JSON under $OUT/gemm-bf16/): the planner's choice at the
      # Mixtral shape (T=4096 H=1024 F=3584 E=8 k=2) and the small-expert one (H=2048 F=1408 E=64 k=6),
      # every bf16 configuration swept there (GEMM_SWEEP=name,... limits it), PyTorch bfloat16 per-expert
      # matmuls (cuBLAS bf16 tensor cores), and a table.
      X="$OUT/gemm-bf16"; mkdir -p "$X"
      : > "$X/bench.jsonl"; : > "$X/sweep.jsonl"
      for shp in "4096 1024 3584 8 2" "4096 2048 1408 64 6"; do
        set -- $shp
        timeout 40 $B -device cuda -dtype bfloat16 -op groupedmm,groupedmm-bwd-x,groupedmm-bwd-w,matmul-dense -tokens $1 -hidden $2 -ffn $3 -experts $4 -top-k $5 -reps 20 -warmup 3 -json >> "$X/bench.jsonl" || echo "bf16 bench failed: $shp"
        timeout 60 $B -device cuda -dtype bfloat16 -gemm-variants "${GEMM_SWEEP:-all}" -op groupedmm,groupedmm-bwd-x,groupedmm-bwd-w -tokens $1 -hidden $2 -ffn $3 -experts $4 -top-k $5 -reps 10 -warmup 2 -json >> "$X/sweep.jsonl" || echo "bf16 sweep failed: $shp"
      done
      timeout 60 python3 bench/pytorch_gemm.py --bf16 --reps 20 --warmup 3 --json "$X/torch.json" > "$X/torch.log" 2>&1 || echo "torch bf16 baseline failed: $(tail -2 "$X/torch.log")"
      python3 - "$X" <<'PY'
import json, os, sys
x = sys.argv[1]
sys.path.insert(0, "bench")  # bench/jsonrows.py (this script runs from the repository root)
from jsonrows import rows
key = lambda r: (r["op"], r["tokens"], r["hidden"], r.get("ffn", 0), r["experts"], bool(r.get("skew")))
torch = {key(r): r for r in rows(x + "/torch.json")}
print("bf16 GEMM: ours (planner's choice) vs PyTorch bf16 per-expert cuBLAS; ratio = torch ms / ours ms (target >= 0.7); % of the 989 TFLOP/s bf16 dense peak")
for r in rows(x + "/bench.jsonl"):
    t = torch.get(key(r))
    tt = f"torch {t['median_ms']:8.4f} ms {t['tflop_per_s']:7.1f} TFLOP/s  ratio {t['median_ms']/r['median_ms']:.2f}" if t else "torch -"
    print(f"  {r['op']:16s} T={r['tokens']} H={r['hidden']} F={r.get('ffn',0)} E={r['experts']:3d}  ours {r['median_ms']:8.4f} ms {r.get('tflop_per_s',0):7.1f} TFLOP/s ({100*r.get('tflop_per_s',0)/989:4.1f}% of 989)  {tt}")
groups = {}
for r in rows(x + "/sweep.jsonl"):
    groups.setdefault((r["op"], r["hidden"], r["experts"]), []).append(r)
print("bf16 sweep (TFLOP/s per configuration; set eff in gemm.variants so that the planner picks the best at H=1024 E=8):")
eff = {}
for k, rs in sorted(groups.items()):
    rs.sort(key=lambda r: -r.get("tflop_per_s", 0))
    print(f"  {k[0]:16s} H={k[1]} E={k[2]}: " + "  ".join(f"{r.get('gemm_variant', '?')}={r.get('tflop_per_s',0):.1f}" for r in rs))
    if k[1] == 1024:
        best = rs[0].get("tflop_per_s", 0) or 1
        for r in rs:
            eff.setdefault(r.get("gemm_variant", "?"), []).append(r.get("tflop_per_s", 0) / best)
print("suggested bf16 eff: " + "  ".join(f"{v}={sum(e)/len(e):.2f}" for v, e in sorted(eff.items(), key=lambda kv: -sum(kv[1])/len(kv[1]))))
PY
      ;;
    bf16)
      # Mixed precision (issue 11), logs under $OUT/bf16/: the conformance suite's bfloat16 cases and the
      # parity tests at layer sizes (the GEMMs' own stage is gemm-bf16), the sanitizers on bf16.cu, our bfloat16
      # dispatch/combine bench against a device copy and PyTorch bfloat16, and the Hugging Face parity
      # fixture (transformers in bfloat16 on this GPU) with the CPU parity test run on it.
      X="$OUT/bf16"; mkdir -p "$X"
      timeout 240 $T -test.run 'TestCUDAConformance$/BF16|TestCUDABF16' -test.v -test.count=1 > "$X/tests.log" 2>&1
      echo "bf16 tests: exit $?"; grep -E '^(--- |    --- |        --- (FAIL|PASS))|^(ok|FAIL|PASS)|one bfloat16 unit|cost .* -> |panic|ErrUnsupported|tensor-core' "$X/tests.log" | head -40
      # memcheck on every kernel of bf16.cu; racecheck/synccheck where a warp reduces (combine_gradw).
      for tool in memcheck racecheck synccheck; do
        extra=""; SAN='TestCUDAConformance$/BF16/Permute$'
        [ $tool = memcheck ] && extra="--leak-check no" && SAN='TestCUDAConformance$/BF16/(Cast|Permute|SwiGLU|Add)$'
        timeout 90 compute-sanitizer --tool $tool $extra $T -test.run "$SAN" -test.short > "$X/$tool.log" 2>&1
        echo "$tool: exit $? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$X/$tool.log" | sort | uniq -c | tr '\n' ' ')"
      done
      : > "$X/bench.jsonl"
      for tk in 4096 16384; do
        timeout 60 $B -device cuda -dtype bfloat16 -op dispatch,dispatch-bwd,combine,combine-bwd-x,combine-bwd-w -tokens $tk -hidden 4096 -experts 16 -top-k 2 -reps 50 -warmup 5 -json >> "$X/bench.jsonl" || echo "bf16 bench failed (T=$tk)"
        timeout 60 $B -device cuda -op dispatch,combine -tokens $tk -hidden 4096 -experts 16 -top-k 2 -reps 50 -warmup 5 -json >> "$X/bench.jsonl" || echo "fp32 bench failed (T=$tk)"
      done
      timeout 120 python3 bench/pytorch_baseline.py --dtype bfloat16 --quick --json "$X/torch.json" > "$X/torch.log" 2>&1 || echo "torch bf16 baseline failed: $(tail -2 "$X/torch.log")"
      python3 - "$X" <<'PY'
import json, os, sys
x = sys.argv[1]
sys.path.insert(0, "bench")  # bench/jsonrows.py (this script runs from the repository root)
from jsonrows import rows
torch = {(r["op"], r["tokens"]): r for r in rows(x + "/torch.json")}
print("bf16 permutations (H=4096, E=16, k=2): ours vs a device copy (target >= 0.9) and vs PyTorch bfloat16")
for r in rows(x + "/bench.jsonl"):
    t = torch.get((r["op"], r["tokens"])) if r["dtype"] == "bfloat16" else None
    tt = f"torch {t['median_ms']*1e3:8.1f} us ({t['median_ms']/r['median_ms']:.2f}x)" if t else ""
    print(f"  {r['dtype']:8s} {r['op']:14s} T={r['tokens']:6d} {r['median_ms']*1e3:8.1f} us {r['gb_per_s']:7.1f} GB/s  copy {r['copy_gb_per_s']:7.1f} GB/s  ratio {r['ratio_to_copy']:.3f}  {tt}")
PY
      rm -rf "$X/fixtures"
      if timeout 120 python3 tests/fixtures/gen_mixtral_bf16_fixtures.py "$X/fixtures" > "$X/fixture.log" 2>&1; then
        tail -3 "$X/fixture.log"
        rm -rf tests/fixtures/mixtral_bf16_e8k2 && cp -r "$X/fixtures/mixtral_bf16_e8k2" tests/fixtures/
        (cd tests && EXPERTRT_MIXTRAL_LAYER_BIN=../.devbin/mixtral-layer timeout 60 ../$T -test.run 'TestHFParityBF16' -test.v -test.count=1) > "$X/parity.log" 2>&1
        echo "HF bf16 parity (CPU): exit $?"; grep -E 'relative error|^(--- |ok|FAIL|PASS)' "$X/parity.log" | head -24
      else
        echo "fixture generation failed: $(tail -3 "$X/fixture.log")"
      fi
      ;;
    gemm-full)
      timeout 400 $T -test.run 'TestCUDAGemm' -test.v -test.count=1 > "$OUT/gemm-full.log" 2>&1
      echo "gemm full tests: exit $?"; grep -E '^(--- FAIL|FAIL|ok|PASS)|gemm-accuracy|panic' "$OUT/gemm-full.log" | head -20
      ;;
    seam)
      # The CUDA seam (issue 9): every test opens the device, which checks the kernel declarations
      # against the PTX; device faults naming their kernel; option handles (plan modes, sync checks,
      # TF32); the graph's route as one fused launch; no host waits in a training step. Then memcheck
      # on the per-kernel fault words, the fused route and the plan handles, and the bench with options
      # of the registered device (environment) and a GEMM sweep on handles. About 2 minutes.
      timeout 240 $T -test.run 'TestCUDAFaultSentinels|TestCUDAGraphRouteIsFused|TestCUDAPolicies|TestCUDAPlanPaths|TestCUDAConformance$|TestCUDAGemmTF32|TestCUDAKernelTiming|TestCUDATrainStepHostSyncs' -test.short -test.v -test.count=1 2>&1 | tee "$OUT/seam.log" | grep -E '^(--- |ok|PASS|FAIL)|^    --- FAIL|panic|_test.go:[0-9]+:' | tail -40
      timeout 240 compute-sanitizer --tool memcheck --leak-check no $T -test.run 'TestCUDAGraphRouteIsFused|TestCUDAFaultSentinels|TestCUDAPlanPaths' -test.short 2>&1 | tee "$OUT/seam-memcheck.log" | grep -E 'ERROR SUMMARY|^(ok|PASS|FAIL)|--- FAIL' | tail -5
      {
        timeout 60 $B -device cuda -op route,e2e -tokens 4096 -hidden 4096 -experts 16 -top-k 2 -reps 50 -warmup 5 -json
        EXPERTRT_CUDA_PLAN=multi EXPERTRT_CUDA_STREAM_DISPATCH=1 timeout 60 $B -device cuda -op plan,e2e -tokens 4096 -hidden 4096 -experts 16 -top-k 2 -reps 20 -warmup 3 -json
        timeout 120 $B -device cuda -gemm-variants all -op groupedmm -tokens 4096 -hidden 1024 -ffn 1024 -experts 8 -top-k 2 -reps 5 -warmup 1 -json
      } > "$OUT/seam-bench.jsonl" 2> "$OUT/seam-bench.err" || echo "seam bench failed: $(tail -3 "$OUT/seam-bench.err")"
      python3 - "$OUT/seam-bench.jsonl" <<'PY'
import json, sys
sys.path.insert(0, "bench")  # bench/jsonrows.py (this script runs from the repository root)
from jsonrows import rows
for r in rows(sys.argv[1], required=True):
        print(f"  {r.get('op','?'):10s} {r.get('gemm_variant') or '':22s} {r.get('median_ms', 0)*1000:9.1f} us  {r.get('device_desc','')[-70:]}")
PY
      ;;
    ptx-nvcc)
      # The PTX this host's nvcc (CUDA 13) compiles from the same sources, against the committed PTX
      # (nvcc 11.8), by code (ptx-diff.sh): which modules another nvcc generates differently. CPU only.
      case $OUT in /*) P="$OUT/ptx-nvcc" ;; *) P="$(pwd)/$OUT/ptx-nvcc" ;; esac
      rm -rf "$P" && timeout 300 bash cudaops/gen-ptx.sh "$P" > "$OUT/ptx-nvcc.log" 2>&1 || echo "gen-ptx failed: $(tail -3 "$OUT/ptx-nvcc.log")"
      bash cudaops/ptx-diff.sh cudaops/ptx "$OUT/ptx-nvcc" | tee -a "$OUT/ptx-nvcc.log" | head -30
      echo "ptx-nvcc: $(bash cudaops/ptx-diff.sh cudaops/ptx "$OUT/ptx-nvcc" | grep -vc sources.sha256) files with other code"
      ;;
    ncu)
      timeout 300 ncu --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum \
        -k 'regex:^(dispatch|combine|route|plan)' --launch-skip 0 --launch-count 40 \
        $B -device cuda -op route,plan,dispatch,dispatch-bwd,combine,combine-bwd,combine-bwd-x,combine-bwd-w -tokens 4096 -hidden 4096 -experts 16 -top-k 2 -reps 2 -warmup 0 > "$OUT/ncu.log" 2>&1
      grep -E '^\s+(dispatch|combine|route|plan)[a-z_0-9]*|gpu__time_duration|dram__throughput|dram__bytes' "$OUT/ncu.log" | head -120
      ;;
  esac
done
