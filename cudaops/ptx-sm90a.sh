#!/usr/bin/env bash
# Rewrites the header of a PTX file that nvcc 11.8 compiled with -arch=compute_90 (".version 7.8",
# ".target sm_90") to PTX ISA 8.0 for sm_90a, the only target with Hopper's wgmma instructions (nvcc 11.8
# passes inline asm through unchecked). Called by gen-ptx.sh for -DGEMM_WGMMA=1 variants; fails, leaving
# the file unchanged, when the header is not exactly the one it rewrites (another nvcc release: compile
# those variants with sm_90a directly instead).
set -euo pipefail
f="$1"
if [ "$(grep -cx '\.version 7\.8' "$f")" != 1 ] || [ "$(grep -cx '\.target sm_90' "$f")" != 1 ]; then
  echo "ptx-sm90a: $f: want exactly one '.version 7.8' and one '.target sm_90' line (nvcc 11.8, -arch=compute_90)" >&2
  exit 1
fi
sed -i -e 's/^\.version 7\.8$/.version 8.0/' -e 's/^\.target sm_90$/.target sm_90a/' "$f"
