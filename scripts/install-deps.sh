#!/usr/bin/env bash
# Installs every Debian package bitvit needs to build, test and run its main job. Idempotent: when
# all packages are already installed it changes nothing and needs no network.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev            # LibTorch 1.13 (CPU), for the training library
  libopenblas0-pthread    # LibTorch on Debian's reference BLAS trains ~15x slower
  libgloo-dev             # c10d ProcessGroupGloo headers (data-parallel training)
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libtomlplusplus-dev zlib1g-dev libstb-dev
  dataset-fashion-mnist   # /usr/share/datasets/fashion-mnist: the default data set
  python3                 # scripts/compare.py (3.11: tomllib), tested by tests/scripts/test-compare-evidence.sh
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
echo "install-deps: done"
