#!/usr/bin/env bash
# Installs what building the GPU path (build tag "expertrt_cuda") needs on Debian 12 or Ubuntu:
# nvcc (for go generate ./cudaops), cuda.h and libcuda.so (for cgo linking of gorgonia.org/cu).
# Idempotent: it does nothing when nvcc and cuda.h are already there. No GPU is needed to build.
set -euo pipefail

if command -v nvcc >/dev/null 2>&1 && [ -f /usr/include/cuda.h ] && ldconfig -p 2>/dev/null | grep -q 'libcuda.so '; then
  echo "CUDA toolchain present: $(nvcc --version | tail -n 1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

. /etc/os-release
case "${ID:-}" in
  debian)
    # nvidia-cuda-toolkit lives in Debian's non-free component.
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      $SUDO sed -i 's/^Components: main$/Components: main contrib non-free non-free-firmware/' /etc/apt/sources.list.d/debian.sources
    elif [ -f /etc/apt/sources.list ]; then
      $SUDO sed -i -E 's/^(deb .* main)$/\1 contrib non-free non-free-firmware/' /etc/apt/sources.list
    fi
    ;;
  ubuntu)
    # nvidia-cuda-toolkit lives in Ubuntu's multiverse component.
    $SUDO apt-get install -y --no-install-recommends software-properties-common >/dev/null 2>&1 || true
    $SUDO add-apt-repository -y multiverse >/dev/null 2>&1 || true
    ;;
  *)
    echo "install-toolchain.sh: unsupported distribution '${ID:-unknown}'; install nvcc and cuda.h by hand" >&2
    exit 1
    ;;
esac

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends nvidia-cuda-toolkit nvidia-cuda-dev
echo "CUDA toolchain installed: $(nvcc --version | tail -n 1)"
