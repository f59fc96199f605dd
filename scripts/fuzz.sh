#!/usr/bin/env bash
# Coverage-guided fuzzing of the safetensors loader with libFuzzer (needs clang and Debian's
# libclang-rt-14-dev). Usage: scripts/fuzz.sh [seconds, default 60]. Without clang, the ASan driver
# that ctest runs (build/tests/fuzz-safetensors --seconds N) does mutation fuzzing instead.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-60}"
OUT=build-fuzz
mkdir -p "$OUT/corpus"
clang++ -std=c++17 -O1 -g -DBITVIT_LIBFUZZER -fsanitize=fuzzer,address,undefined -Isrc \
  tests/fuzz-safetensors.cpp src/format/safetensors.cpp src/format/atomic-file.cpp -o "$OUT/fuzz-safetensors"
"$OUT/fuzz-safetensors" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 "$OUT/corpus"
