#!/usr/bin/env bash
# GPU-tag part of CI (no GPU needed): installs the CUDA build toolchain, type-checks and builds everything
# under the expertrt_cuda tag, and fails when the committed PTX is stale (see the PTX stage below).
# Called from .ci/run. Run from anywhere inside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cudaops/install-toolchain.sh
echo "== go vet -tags expertrt_cuda ./..."
go vet -tags expertrt_cuda ./...
echo "== go build -tags expertrt_cuda ./..."
go build -tags expertrt_cuda ./...
echo "== go test -tags expertrt_cuda ./cudaops/nccl (NCCL binding: runs without a GPU or NCCL)"
go test -tags expertrt_cuda ./cudaops/nccl
echo "== go test -c -tags expertrt_cuda ./tests ./bench (compile only)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -tags expertrt_cuda -o "$tmp/tests.test" ./tests
go test -c -tags expertrt_cuda -o "$tmp/bench.test" ./bench
echo "== bf16.cu emulated on the CPU against the CPU reference (go test -tags expertrt_bf16emu)"
go test -tags expertrt_bf16emu ./cudaops/internal/bf16emu
# The GEMM kernels compiled as host C++ (internal/gemmemu) on a subset of the configurations: the fp32
# default, the register-staged, TF32 mma.sync, bfloat16, wgmma (on the emulator's model of wgmma) and
# fp64 tiles, grouped-rows split-K and stream-K, the SwiGLU epilogue, edge tiles of few rows (fp32 default and RS), launches in a mode their kernel does not run, and that
# the emulator units match the sources.
# About 6 minutes on two cores; every configuration: go test -tags expertrt_gemmemu -short -timeout 40m (about 16 minutes).
echo "== GEMM kernels emulated on the CPU, a subset of the configurations (go test -tags expertrt_gemmemu)"
go test -tags expertrt_gemmemu ./cudaops/internal/gemmemu -short -count=1 -timeout 30m -run \
  'TestGenerated|TestConfigMatches|TestGroupRowsSplit|TestBadOffsets/(f32_128x64x16_s3|wg_tf32_128x256x32_s4)$|TestKernels/(f32_128x64x16_s3|f32_256x128x8_rs_s2|tf32_128x128x16_w4_s4|bf16_128x128x32_w4_s4|wg_tf32_128x256x32_s4|f64_128x64x8_s3)$|TestSwiGLU/(f32_128x64x16_s3|tf32_128x128x16_w4_s4)|TestTailTiles/(f32_128x64x16_s3|f32_256x128x8_rs_s2)$|TestGroupRowsStreamK/(f32_256x128x8_rs_s2|f64_64x64x8_s3)$|TestGroupRowsStreamKBadOffsets|TestModeMismatchFaults'
echo "== Hopper wgmma GEMM variants ($(grep -c -- '-DGEMM_WGMMA=1' cudaops/gemm.variants) lines of gemm.variants): sm_90a PTX that nothing on this host"
echo "   assembles or runs; their PTX header, kernel declarations and planned launches are checked by go test"
echo "   ./cudaops/... (above), their sources by the hash and regeneration below; the GEMM emulator (above)"
echo "   runs them on a model of wgmma that shares the kernel's reading of the descriptors; the hardware's"
echo "   by TestCUDAGemmWGMMA on a compute capability 9.0 GPU (gpu-check.sh gemm-wgmma)"
echo "== PTX is up to date (nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
# The committed PTX must come from the current sources (sources.sha256, whatever nvcc compiled it) and
# hold the code this nvcc generates from them; nvcc's banner comment is not compared (ptx-diff.sh). A
# file whose committed code came from another nvcc release and differs is reported, not failed: another
# CUDA 11/12 nvcc may generate different code for the same sources.
bash cudaops/gen-ptx.sh "$tmp/ptx"
if ! cmp -s cudaops/ptx/sources.sha256 "$tmp/ptx/sources.sha256"; then
  echo "cudaops/*.cu, *.cuh, *.variants or gen-ptx.sh changed since cudaops/ptx was generated: run 'go generate ./cudaops' and commit cudaops/ptx" >&2
  diff cudaops/ptx/sources.sha256 "$tmp/ptx/sources.sha256" >&2 || true
  exit 1
fi
stale=0
if ! diffs=$(bash cudaops/ptx-diff.sh cudaops/ptx "$tmp/ptx"); then
  while IFS=$'\t' read -r file committed fresh; do
    if [ "$committed" = - ] || [ "$fresh" = - ] || [ "$committed" = "$fresh" ]; then
      echo "cudaops/ptx/$file differs from the PTX nvcc $fresh compiles from cudaops/*.cu (committed: nvcc $committed)" >&2
      stale=1
    else
      echo "note: cudaops/ptx/$file (nvcc $committed) holds other code than nvcc $fresh generates from the same sources"
    fi
  done <<<"$diffs"
fi
if [ "$stale" -ne 0 ]; then
  echo "run 'go generate ./cudaops' and commit cudaops/ptx" >&2
  exit 1
fi
echo "cudaops CI check passed"
