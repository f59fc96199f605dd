#!/usr/bin/env bash
# Longer fuzzing than the test suite's bounded runs, of every loader bitvit has.
#   bash scripts/fuzz.sh [seconds per target, default 300] [seed, default random]
# Runs the AddressSanitizer + UBSan drivers ctest runs for 20-30 s each — safetensors, packed model,
# data readers (IDX plain and gzip, CIFAR, images), recipes and --set, checkpoints (pickle-level
# mutations) — and, where clang is installed (with Debian's libclang-rt-14-dev), the safetensors
# loader under libFuzzer's coverage guidance. Any crash or sanitizer report stops it with that
# driver's output and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-300}"
SEED="${2:-$RANDOM}"
bash scripts/build.sh --quiet --target fuzz-safetensors fuzz-torch-pickle fuzz-packed-model fuzz-data fuzz-config fuzz-checkpoint
for target in fuzz-safetensors fuzz-torch-pickle fuzz-packed-model fuzz-data fuzz-config fuzz-checkpoint; do
  echo "== $target, $SECONDS_EACH s, seed $SEED"
  ASAN_OPTIONS=detect_leaks=0 "build/tests/$target" --seconds "$SECONDS_EACH" --seed "$SEED"
done
if command -v clang++ >/dev/null; then
  OUT=build-fuzz
  mkdir -p "$OUT/corpus"
  clang++ -std=c++17 -O1 -g -DBITVIT_LIBFUZZER -fsanitize=fuzzer,address,undefined -Isrc \
    tests/fuzz-safetensors.cpp src/format/*.cpp -o "$OUT/fuzz-safetensors"
  "$OUT/fuzz-safetensors" -max_total_time="$SECONDS_EACH" -max_len=4096 "$OUT/corpus"
fi
