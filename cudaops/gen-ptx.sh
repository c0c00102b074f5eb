#!/usr/bin/env bash
# Compiles every kernel family cudaops/*.cu to PTX (compute_80: runs on A100, H100 and H200 through the
# driver's JIT). Usage: gen-ptx.sh [outdir] (default: ptx/ next to this script). Run by `go generate ./cudaops`.
# A family with a <name>.variants file (one configuration per line: name, a number for the Go side, nvcc
# flags; # comments) is compiled once per line into <outdir>/<name>/<variant>.ptx instead.
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-ptx}"
mkdir -p "$out"
for f in *.cu; do
  base="${f%.cu}"
  if [ -f "$base.variants" ]; then
    rm -rf "${out:?}/$base"
    mkdir -p "$out/$base"
    grep -v '^[[:space:]]*\(#\|$\)' "$base.variants" | while read -r name _ flags; do
      # shellcheck disable=SC2086 # flags are separate words
      nvcc -ptx -arch=compute_80 -std=c++14 -O3 $flags -o "$out/$base/$name.ptx" "$f"
    done
  else
    nvcc -ptx -arch=compute_80 -std=c++14 -O3 -o "$out/$base.ptx" "$f"
  fi
done
