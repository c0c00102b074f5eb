#!/usr/bin/env bash
# Compiles every kernel family cudaops/*.cu to PTX (compute_80: runs on A100, H100 and H200 through the
# driver's JIT). Usage: gen-ptx.sh [outdir] (default: ptx/ next to this script). Run by `go generate ./cudaops`.
# A family with a <name>.variants file (one configuration per line: name, a number for the Go side, nvcc
# flags; # comments) is compiled once per line into <outdir>/<name>/<variant>.ptx.gz instead (gzip -n:
# reproducible; its modules are large, and the Go binaries embed them compressed).
# <outdir>/sources.sha256 records the inputs (every .cu, .cuh and .variants file, and this script with
# its flags), so ci-check.sh can tell stale PTX from PTX that another nvcc release compiled differently.
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-ptx}"
mkdir -p "$out"
for f in *.cu; do
  base="${f%.cu}"
  if [ -f "$base.variants" ]; then
    rm -rf "${out:?}/$base"
    mkdir -p "$out/$base"
    # One nvcc per configuration, as many at a time as there are CPUs.
    # Lines with -DGEMM_WGMMA=1 (Hopper warpgroup MMA) are compiled for compute_90 and their PTX header
    # rewritten to ISA 8.0 / sm_90a, the only target that has wgmma: nvcc 11.8 writes inline asm through
    # unchecked, so the text step is all it takes (the driver JIT-compiles sm_90a PTX on sm_90 devices
    # only; the loader loads these modules nowhere else); ptx-sm90a.sh fails the run if nvcc wrote
    # another header than the one it rewrites.
    grep -v '^[[:space:]]*\(#\|$\)' "$base.variants" | while read -r name _ flags; do
      case " $flags " in
      *" -DGEMM_WGMMA=1 "*)
        echo "nvcc -ptx -arch=compute_90 -std=c++14 -O3 $flags -o '$out/$base/$name.ptx' '$f' && bash ptx-sm90a.sh '$out/$base/$name.ptx' && gzip -n -9 -f '$out/$base/$name.ptx'" ;;
      *)
        echo "nvcc -ptx -arch=compute_80 -std=c++14 -O3 $flags -o '$out/$base/$name.ptx' '$f' && gzip -n -9 -f '$out/$base/$name.ptx'" ;;
      esac
    done | xargs -P "$(nproc)" -I{} sh -c '{}'
    n=$(grep -cv '^[[:space:]]*\(#\|$\)' "$base.variants")
    [ "$(ls "$out/$base" | wc -l)" -eq "$n" ] || { echo "gen-ptx: $base: not every variant compiled" >&2; exit 1; }
  else
    nvcc -ptx -arch=compute_80 -std=c++14 -O3 -o "$out/$base.ptx" "$f"
  fi
done
# shellcheck disable=SC2012
ls *.cu *.cuh *.variants gen-ptx.sh ptx-sm90a.sh | LC_ALL=C sort | xargs sha256sum >"$out/sources.sha256"
