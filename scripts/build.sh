#!/usr/bin/env bash
# Configures and builds bitvit (Release) into ./build.
#   bash scripts/build.sh [--quiet] [--target T ...] [cmake configure arguments ...]
# --target builds only the named targets (the main job builds bitvit and bitvit-rt, not the tests);
# --quiet sends the build's output to build/build.log and shows it only if the build fails.
set -euo pipefail
cd "$(dirname "$0")/.."
quiet=0
targets=()
configure=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quiet) quiet=1 ;;
    --target) shift; targets+=("$1") ;;
    *) configure+=("$1") ;;
  esac
  shift
done
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${configure[@]}" >/dev/null
build=(cmake --build build --parallel "$(nproc)")
[ ${#targets[@]} -gt 0 ] && build+=(--target "${targets[@]}")
if [ $quiet -eq 1 ]; then
  mkdir -p build
  if ! "${build[@]}" > build/build.log 2>&1; then
    tail -n 40 build/build.log
    echo "build failed: the whole log is build/build.log" >&2
    exit 1
  fi
else
  "${build[@]}"
fi
