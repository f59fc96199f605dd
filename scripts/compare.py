#!/usr/bin/env python3
"""The comparison table: every shipped recipe trained from the same full-precision teacher on
Fashion-MNIST, on the full training set and on a stratified 10 % subset (GSB's small-data regime),
then test accuracy, packed size and OPs written into docs/results.md with the command and commit.
Every trained model is also exported to a packed file and run in the bit-wise runtime on the same
test images (`bitvit verify`): the table shows the file's size and the runtime's top-1 agreement
with LibTorch and its accuracy.

    scripts/compare.py --profile smoke   # minutes: nano model, tiny subsets (checks the pipeline)
    scripts/compare.py --profile quick   # shortened schedules (train.epoch_scale), see PROFILES
    scripts/compare.py --profile full    # the recipes as shipped

Runs are resumable: a finished run is reused, an interrupted one resumed (run it again after a kill).
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BITVIT = os.path.join(ROOT, "build", "bitvit")
RESULTS = os.path.join(ROOT, "docs", "results.md")
RECIPES = ["lsq-w8a8", "bnn", "bibert", "bit", "reactnet", "twn", "bivit", "bivit-w1a1", "tervit", "bi-vit", "gsb"]

# Per profile: overrides for the teacher run (None: use runs/fp, the shipped FP recipe's run), and for
# the full-set and subset rows.
PROFILES = {
    "smoke": {
        "teacher": ["--set", "model.name=deit_nano_patch7_28", "--train-subset", "2000", "--test-subset", "500", "--epochs", "2"],
        "common": ["--set", "model.name=deit_nano_patch7_28", "--test-subset", "500"],
        "full": ["--set", "train.epoch_scale=0.1", "--train-subset", "1000"],
        "subset": ["--set", "train.epoch_scale=0.1", "--train-subset", "300"],
    },
    "quick": {
        "teacher": None,
        "common": ["--set", "train.data_parallel=2"],
        "full": ["--set", "train.epoch_scale=0.05"],
        "subset": ["--set", "train.epoch_scale=0.3", "--train-subset", "6000"],
    },
    "full": {
        "teacher": None,
        "common": ["--set", "train.data_parallel=2"],
        "full": [],
        "subset": ["--train-subset", "6000"],
    },
}


def sh(args, log=None):
    print("+", " ".join(args), flush=True)
    if log:
        with open(log, "a") as f:
            subprocess.run(args, check=True, stdout=f, stderr=subprocess.STDOUT)
    else:
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def finished_epochs(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]


def train(run_dir, args):
    """Trains into run_dir (or resumes it) and returns its metrics lines."""
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    log = run_dir + ".log"
    if os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
        sh([BITVIT, "train", "--resume", run_dir], log)  # a finished run returns at once
    else:
        sh([BITVIT, "train", "--out", run_dir] + args, log)
    return finished_epochs(run_dir)


def train_images(run_dir):
    """The training-set size a run used, from its stored config."""
    text = open(os.path.join(run_dir, "config.toml")).read()
    subset = int(re.search(r"^train_subset = (\d+)", text, re.M).group(1))
    return f"{subset:,} images" if subset else "all 60,000"


def ops_of(checkpoint):
    out = sh([BITVIT, "ops", checkpoint])
    ops = re.search(r"= OPs ([0-9.]+) G", out).group(1)
    size = re.search(r"packed ([0-9.]+) MB", out).group(1)
    return float(ops) * 1e3, float(size)


def deploy(run_dir, profile):
    """Exports a run's model, checks the runtime against LibTorch on the test set, and returns
    (file MB, top-1 agreement %, runtime accuracy %)."""
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    packed = run_dir + ".safetensors"
    sh([BITVIT, "export", checkpoint, "-o", packed])
    verify = [BITVIT, "verify", checkpoint, packed] + (["--subset", "500"] if profile == "smoke" else [])
    out = sh(verify)
    agreement = float(re.search(r"top-1 agreement: ([0-9.]+)%", out).group(1))
    runtime_acc = float(re.search(r"runtime ([0-9.]+)%", out).group(1))
    return os.path.getsize(packed) / 1e6, agreement, runtime_acc


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--recipes", nargs="*", default=RECIPES)
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    base = os.path.join(ROOT, "runs", "compare-" + args.profile)

    if profile["teacher"] is None:
        teacher = os.path.join(ROOT, "runs", "fp")  # the shipped FP recipe's run: trained or resumed to the end
        train(teacher, ["--recipe", os.path.join(ROOT, "recipes", "fp.toml")])
    else:
        teacher = os.path.join(base, "fp")
        train(teacher, ["--recipe", os.path.join(ROOT, "recipes", "fp.toml")] + profile["teacher"])
    teacher_ckpt = os.path.join(teacher, "checkpoint.pt")

    rows = []
    fp_metrics = finished_epochs(teacher)[-1]
    fp_ops, fp_size = ops_of(teacher_ckpt)
    rows.append(("fp", train_images(teacher), fp_metrics["test_acc"], fp_size, fp_ops,
                 deploy(teacher, args.profile), "recipes/fp.toml"))
    for recipe in args.recipes:
        for regime in ("full", "subset"):
            run_dir = os.path.join(base, f"{recipe}-{regime}")
            cmd = ["--recipe", os.path.join(ROOT, "recipes", recipe + ".toml"), "--fp-checkpoint", teacher_ckpt] + \
                profile["common"] + profile[regime]
            metrics = train(run_dir, cmd)
            ops, size = ops_of(os.path.join(run_dir, "checkpoint.pt"))
            rows.append((recipe, train_images(run_dir), metrics[-1]["test_acc"], size, ops, deploy(run_dir, args.profile),
                         " ".join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in cmd)))

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"Command: `scripts/compare.py --profile {args.profile}` · commit `{commit}` · "
             f"teacher `{os.path.relpath(teacher_ckpt, ROOT)}` · test accuracy on the "
             f"{'500-image test subset' if args.profile == 'smoke' else 'full 10,000-image test set'}", "",
             "| recipe | training set | test acc | Δ vs FP | packed MB (accounting) | file MB | OPs (M) | "
             "runtime agreement | runtime acc | bitvit train arguments |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fp_acc = rows[0][2]
    for recipe, regime, acc, size, ops, (file_mb, agreement, runtime_acc), cmd in rows:
        lines.append(f"| {recipe} | {regime} | {100 * acc:.2f} % | "
                     f"{100 * (acc - fp_acc):+.2f} | {size:.3f} | {file_mb:.3f} | {ops:.2f} | {agreement:.2f} % | "
                     f"{runtime_acc:.2f} % | `{cmd}` |")
    print("\n".join(lines))
    if args.profile == "smoke":
        return 0  # a pipeline check: its numbers do not belong in the results
    begin, end = f"<!-- compare:{args.profile}:begin -->", f"<!-- compare:{args.profile}:end -->"
    text = open(RESULTS).read()
    block = begin + "\n" + "\n".join(lines) + "\n" + end
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n## Comparison table, profile {args.profile}\n\n{block}\n"
    open(RESULTS, "w").write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
