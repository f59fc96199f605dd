#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine:
#   1. install the Debian packages and build the two programs it uses (bitvit, bitvit-rt);
#   2. binarize the shipped full-precision DeiT teacher (teachers/, 92.32 % on Fashion-MNIST) with
#      BiViT's fully binary recipe (recipes/bivit-w1a1.toml: W1A1 linears, binary q/k/v, softmax-aware
#      binary attention), distilling from it;
#   3. export the binary model to a packed file and check it against LibTorch (bitvit verify);
#   4. run it in the bit-wise runtime (accuracy), evaluate the teacher, and time the runtime against
#      LibTorch FP32 and BF16 on the same architecture (bitvit bench);
#   5. print one summary: accuracies, agreement, sizes, speed, the files made.
#
#   bash scripts/main-job.sh                 # the recipe as shipped: 2 × 10 epochs on 60,000 images
#   bash scripts/main-job.sh --quick         # a smoke run: 2 × 1 epoch on a 6,000-image subset
#   bash scripts/main-job.sh --train-teacher # first train the teacher too (recipes/fp.toml, about 3 h on 2 cores)
# Any other arguments go to `bitvit train` (e.g. --set optim.lr=1e-3). Run directories that already
# hold a checkpoint are resumed, so an interrupted job continues; RUN_DIR (default runs/main) moves them.
set -euo pipefail
cd "$(dirname "$0")/.."
start_seconds=$SECONDS
quick=0
train_teacher=0
train_args=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --train-teacher) train_teacher=1 ;;
    *) train_args+=("$arg") ;;
  esac
done
[ $quick -eq 1 ] && train_args+=(--train-subset 6000 --set train.epoch_scale=0.1)

bash scripts/install-deps.sh
echo "== building bitvit and bitvit-rt (about 5 minutes on 2 cores; log in build/build.log)"
bash scripts/build.sh --quiet --target bitvit bitvit-rt
RUN_DIR="${RUN_DIR:-runs/main}"
BITVIT=./build/bitvit
mkdir -p "$RUN_DIR"

train() {  # train <recipe> <run dir> [extra args]: resumes a run directory that holds a checkpoint
  local recipe=$1 dir=$2
  shift 2
  if [ -f "$dir/checkpoint.pt" ]; then
    "$BITVIT" train --resume "$dir"
  else
    "$BITVIT" train --recipe "$recipe" --out "$dir" "$@"
  fi
}

TEACHER=teachers/deit_micro_patch4_28-fp.pt
if [ $train_teacher -eq 1 ]; then
  echo "== the full-precision teacher: recipes/fp.toml -> $RUN_DIR/fp"
  train recipes/fp.toml "$RUN_DIR/fp" "${train_args[@]}"
  TEACHER="$RUN_DIR/fp/checkpoint.pt"
fi
echo "== 1/4 binary model: recipes/bivit-w1a1.toml, distilled from $TEACHER -> $RUN_DIR/binary"
train recipes/bivit-w1a1.toml "$RUN_DIR/binary" --fp-checkpoint "$TEACHER" "${train_args[@]}"
echo "== 2/4 export, and parity with LibTorch on the 10,000 test images"
"$BITVIT" export "$RUN_DIR/binary/checkpoint.pt" -o "$RUN_DIR/binary.safetensors" --method bivit-w1a1 | tee "$RUN_DIR/export.txt"
"$BITVIT" verify "$RUN_DIR/binary/checkpoint.pt" "$RUN_DIR/binary.safetensors" | tee "$RUN_DIR/verify.txt"
echo "== 3/4 the runtime on the test set, and the teacher for comparison"
"$BITVIT" run "$RUN_DIR/binary.safetensors" | tee "$RUN_DIR/run.txt"
"$BITVIT" eval "$TEACHER" | tee "$RUN_DIR/teacher-eval.txt"
echo "== 4/4 speed and size against LibTorch FP32 and BF16"
"$BITVIT" bench --packed "$RUN_DIR/binary.safetensors" --batch 1,64 --threads 1,0 --json "$RUN_DIR/bench.json" | tee "$RUN_DIR/bench.txt"

# The summary, from what the commands printed.
field() { grep -m1 "$2" "$RUN_DIR/$1" | sed -E "s/$3/\1/"; }
fp_acc=$(field teacher-eval.txt '^accuracy:' '^accuracy: ([0-9.]+%).*')
rt_acc=$(field run.txt '^accuracy:' '^accuracy: ([0-9.]+%).*')
torch_acc=$(field verify.txt '^accuracy:' '^accuracy: LibTorch ([0-9.]+%).*')
agreement=$(field verify.txt '^top-1 agreement:' '^top-1 agreement: (.*)$')
sizes=$(field bench.txt '^packed file:' '^packed file: (.*)$')
ratio() { grep -m1 "^batch $1: runtime .* libtorch $2" "$RUN_DIR/bench.txt" | sed -E 's/^batch [0-9]+: runtime \(([0-9]+) threads\) ([0-9.]+x) .*rounds ([0-9.x-]+).*/\2 (runtime on \1 threads; rounds \3)/'; }
minutes=$(( (SECONDS - start_seconds + 30) / 60 ))
cat <<SUMMARY

================================ bitvit main job: summary ================================
full-precision teacher   $TEACHER: $fp_acc top-1 on the 10,000 test images
binary model (W1A1)      $rt_acc in the bit-wise runtime ($torch_acc in LibTorch)
runtime vs LibTorch      same top-1 prediction on $agreement
size                     $sizes
speed, batch 1           $(ratio 1 fp32) vs LibTorch FP32
                         $(ratio 1 bf16) vs LibTorch BF16
speed, batch 64          $(ratio 64 fp32) vs LibTorch FP32
                         $(ratio 64 bf16) vs LibTorch BF16
files                    $RUN_DIR/binary/checkpoint.pt (training checkpoint)
                         $RUN_DIR/binary.safetensors (packed model: bitvit-rt run / info / bench)
                         $RUN_DIR/*.txt, bench.json (what each step printed)
wall time                $minutes min
SUMMARY
if [ $quick -eq 1 ]; then
  echo "note: --quick is a smoke run (one epoch per stage on 6,000 images), not the method's accuracy:"
  echo "      the shipped schedule (bash scripts/main-job.sh) trains 2 x 10 epochs on all 60,000 images;"
  echo "      docs/results.md records what the recipes reach."
fi
echo "=========================================================================================="
