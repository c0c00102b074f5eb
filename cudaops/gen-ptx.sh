#!/usr/bin/env bash
# Compiles every kernel family cudaops/*.cu to PTX (compute_80: runs on A100, H100 and H200 through the
# driver's JIT). Usage: gen-ptx.sh [outdir] (default: ptx/ next to this script). Run by `go generate ./cudaops`.
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-ptx}"
mkdir -p "$out"
for f in *.cu; do
  nvcc -ptx -arch=compute_80 -std=c++14 -O3 -o "$out/${f%.cu}.ptx" "$f"
done
