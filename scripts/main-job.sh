#!/usr/bin/env bash
# The main job: installs dependencies, builds, trains the shipped full-precision DeiT recipe on
# Fashion-MNIST and prints its test accuracy. Extra arguments go to `bitvit train`, e.g.
#   bash scripts/main-job.sh --epochs 3 --train-subset 6000     # a ~5-minute look
# A run directory that already holds a checkpoint is resumed, so an interrupted job continues.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
RUN_DIR="${RUN_DIR:-runs/main}"
if [ -f "$RUN_DIR/checkpoint.pt" ]; then
  ./build/bitvit train --resume "$RUN_DIR" "$@"
else
  ./build/bitvit train --recipe recipes/fp.toml --out "$RUN_DIR" "$@"
fi
./build/bitvit info "$RUN_DIR/checkpoint.pt"
