#!/usr/bin/env bash
# The test command: installs dependencies, builds, runs the whole test suite. Also builds the
# runtime and data readers with training switched off, proving they need no LibTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
cmake -S . -B build-no-torch -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITVIT_BUILD_TRAINING=OFF >/dev/null
cmake --build build-no-torch --parallel "$(nproc)"
(cd build-no-torch && ctest --output-on-failure --timeout 300)
cd build && ctest --output-on-failure --timeout 900
