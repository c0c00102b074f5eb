#!/usr/bin/env bash
# GPU-tag part of CI (no GPU needed): installs the CUDA build toolchain, type-checks and builds everything
# under the expertrt_cuda tag, and fails when the committed PTX differs from a fresh `go generate ./cudaops`.
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
echo "== PTX is up to date (nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
bash cudaops/gen-ptx.sh "$tmp/ptx"
if ! diff -r -q cudaops/ptx "$tmp/ptx"; then
  echo "cudaops/ptx differs from the PTX compiled from cudaops/*.cu: run 'go generate ./cudaops' and commit" >&2
  exit 1
fi
echo "cudaops CI check passed"
