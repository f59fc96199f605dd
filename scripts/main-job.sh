#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine:
#   1. install the Debian packages and build;
#   2. train the full-precision DeiT teacher (recipes/fp.toml) on Fashion-MNIST;
#   3. binarize it with BiViT's fully binary recipe (recipes/bivit-w1a1.toml: W1A1 linears, binary
#      q/k/v and softmax-aware binary attention), distilling from the teacher;
#   4. export the binary model to a packed file and check it against LibTorch (bitvit verify);
#   5. run it in the bit-wise runtime (accuracy, images/s) and time it against LibTorch FP32 and BF16
#      on the same architecture (bitvit bench), with its size against FP32.
# Extra arguments go to both `bitvit train` runs, e.g. a ~10-minute look:
#   bash scripts/main-job.sh --train-subset 6000 --set train.epoch_scale=0.1
# Run directories that already hold a checkpoint are resumed, so an interrupted job continues.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
RUN_DIR="${RUN_DIR:-runs/main}"
BITVIT=./build/bitvit

train() {  # train <recipe> <run dir> [extra args]
  local recipe=$1 dir=$2
  shift 2
  if [ -f "$dir/checkpoint.pt" ]; then
    "$BITVIT" train --resume "$dir" "$@"
  else
    "$BITVIT" train --recipe "$recipe" --out "$dir" "$@"
  fi
}

echo "== 1/4 full-precision teacher: recipes/fp.toml -> $RUN_DIR/fp"
train recipes/fp.toml "$RUN_DIR/fp" "$@"
echo "== 2/4 binary model: recipes/bivit-w1a1.toml -> $RUN_DIR/binary"
train recipes/bivit-w1a1.toml "$RUN_DIR/binary" --fp-checkpoint "$RUN_DIR/fp/checkpoint.pt" "$@"
echo "== 3/4 export and parity with LibTorch"
"$BITVIT" export "$RUN_DIR/binary/checkpoint.pt" -o "$RUN_DIR/binary.safetensors" --method bivit-w1a1
"$BITVIT" verify "$RUN_DIR/binary/checkpoint.pt" "$RUN_DIR/binary.safetensors"
echo "== 4/4 the runtime: accuracy, size and speed against full precision"
"$BITVIT" run "$RUN_DIR/binary.safetensors"
"$BITVIT" eval "$RUN_DIR/fp/checkpoint.pt" | head -3
"$BITVIT" bench --packed "$RUN_DIR/binary.safetensors" --batch 1,64 --threads 1,0
