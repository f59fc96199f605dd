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
    scripts/compare.py --profile quick --ablations   # then the seed methods' ablations (subset regime)
    scripts/compare.py --profile quick --report      # the table of the runs finished so far, training nothing

Each ablation is its seed recipe with exactly one change (ABLATIONS), written as a derived recipe into
the run directory and trained in the subset regime of the same profile; its row is compared with the
seed recipe's own subset row. Runs are resumable: a finished run is reused, an interrupted one resumed (run it again after a kill).
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys

if sys.version_info < (3, 11):
    sys.exit("compare.py needs Python 3.11 or newer (for tomllib); Debian 12's python3 is 3.11")
import tomllib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BITVIT = os.path.join(ROOT, "build", "bitvit")
RESULTS = os.path.join(ROOT, "docs", "results.md")
RECIPES = ["lsq-w8a8", "bnn", "bibert", "bit", "reactnet", "twn", "bivit", "bivit-w1a1", "tervit", "bi-vit", "gsb",
           "bi-vit-binary-embed"]

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


def bibert_attention(recipe):
    """Every stage's attention map becomes BiBERT's softmax-free Bool(scores): 1{q·kᵀ/√d > 0}."""
    for stage in recipe["stage"]:
        stage.setdefault("model", {})["softmax"] = False
        stage["quantizers"]["attn.probs"] = "bool"


def replace_quantizer(old, new):
    """Swaps every site quantized by `old` to `new`, in every stage (resolved entries are tables)."""
    def change(recipe):
        for stage in recipe["stage"]:
            for site, q in stage["quantizers"].items():
                if (q["name"] if isinstance(q, dict) else q) == old:
                    stage["quantizers"][site] = new
    return change


def last_stage_only(recipe):
    """One stage with the final stage's quantizers, as long as all stages together, started from FP."""
    stages = recipe["stage"]
    merged = dict(stages[-1], name="one-stage", init="fp", epochs=sum(s["epochs"] for s in stages))
    recipe["stage"] = [merged]


def set_distill(key, value):
    def change(recipe):
        for stage in recipe["stage"]:
            stage["distill"][key] = value
    return change


# The seed methods' own claims, each as (name, seed recipe, the one change, what the change tests).
ABLATIONS = [
    ("bivit-bool-attention", "bivit", bibert_attention,
     "SAB (1{P ≥ 0.25·max_row P}) → BiBERT's softmax-free Bool attention (1{scores > 0})"),
    ("bivit-fixed-scale", "bivit", replace_quantizer("pws", "row_centred"),
     "PWS → fixed scales (same row-centred sign, scale mean_row\\|W\\| detached)"),
    ("bivit-one-stage", "bivit", last_stage_only,
     "cross-layer (attention, then MLP) → one stage binarizing both, same total epochs"),
    ("tervit-direct", "tervit", last_stage_only,
     "progressive (8-bit, then ternary) → ternary from FP directly, same total epochs"),
    ("bi-vit-no-rank", "bi-vit", set_distill("rank", 0.0),
     "ranking-aware attention distillation on → off"),
]


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # TOML basic strings use JSON's escapes
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def toml_text(recipe):
    """Writes a parsed recipe back as TOML: top-level tables, then [[stage]] with their sub-tables."""
    out = []
    def table(header, body):
        out.append(header)
        out.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items())
        out.append("")
    for section, body in recipe.items():
        if section != "stage":
            table(f"[{section}]", body)
    for stage in recipe.get("stage", []):
        table("[[stage]]", {k: v for k, v in stage.items() if not isinstance(v, dict)})
        for sub, body in stage.items():
            if isinstance(body, dict):
                table(f"[stage.{sub}]", body)
    return "\n".join(out)


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


def is_finished(run_dir):
    """Whether a run has trained every epoch its stored config asks for."""
    config_path = os.path.join(run_dir, "config.toml")
    if not os.path.exists(os.path.join(run_dir, "checkpoint.pt")) or not os.path.exists(config_path):
        return False
    with open(config_path, "rb") as f:
        config = tomllib.load(f)
    total = sum(s["epochs"] for s in config["stage"]) if config.get("stage") else config["train"]["epochs"]
    return len(finished_epochs(run_dir)) >= total


def train_minutes(run_dir):
    """Wall time of a run's epochs as its metrics record them (training and test evaluation), in minutes."""
    return sum(m["seconds"] for m in finished_epochs(run_dir)) / 60


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
    cached = run_dir + ".verify.json"  # reused while newer than the checkpoint and the bitvit binary
    if os.path.exists(cached) and os.path.getmtime(cached) > max(os.path.getmtime(checkpoint), os.path.getmtime(BITVIT)):
        c = json.load(open(cached))
        return c["file_mb"], c["agreement"], c["runtime_acc"]
    sh([BITVIT, "export", checkpoint, "-o", packed])
    verify = [BITVIT, "verify", checkpoint, packed] + (["--subset", "500"] if profile == "smoke" else [])
    out = sh(verify)
    result = {"file_mb": os.path.getsize(packed) / 1e6,
              "agreement": float(re.search(r"top-1 agreement: ([0-9.]+)%", out).group(1)),
              "runtime_acc": float(re.search(r"runtime ([0-9.]+)%", out).group(1))}
    json.dump(result, open(cached, "w"))
    return result["file_mb"], result["agreement"], result["runtime_acc"]


def train_row(base, name, recipe_path, teacher_ckpt, regime_args):
    """Trains (or reuses) one run and returns its table fields."""
    run_dir = os.path.join(base, name)
    cmd = ["--recipe", recipe_path, "--fp-checkpoint", teacher_ckpt] + regime_args
    metrics = train(run_dir, cmd)
    ops, size = ops_of(os.path.join(run_dir, "checkpoint.pt"))
    return run_dir, metrics[-1]["test_acc"], size, ops, \
        " ".join(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in cmd)


def splice_results(marker, title, lines):
    """Replaces the block between this marker's comments in docs/results.md (appends it the first time)."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    text = open(RESULTS).read()
    block = begin + "\n" + "\n".join(lines) + "\n" + end
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n{block}\n"
    open(RESULTS, "w").write(text)


def commit_id():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def comparison_table(args, profile, base, teacher):
    teacher_ckpt = os.path.join(teacher, "checkpoint.pt")
    fp_ops, fp_size = ops_of(teacher_ckpt)
    rows = [("fp", train_images(teacher), finished_epochs(teacher)[-1]["test_acc"], fp_size, fp_ops,
             deploy(teacher, args.profile), train_minutes(teacher), "recipes/fp.toml")]
    for recipe in args.recipes:
        for regime in args.regimes:
            if args.report and not is_finished(os.path.join(base, f"{recipe}-{regime}")):
                rows.append((recipe, regime, None, None, None, None, None, "not trained yet"))
                continue
            run_dir, acc, size, ops, cmd = train_row(base, f"{recipe}-{regime}", os.path.join(ROOT, "recipes", recipe + ".toml"),
                                                     teacher_ckpt, profile["common"] + profile[regime])
            rows.append((recipe, train_images(run_dir), acc, size, ops, deploy(run_dir, args.profile),
                         train_minutes(run_dir), cmd))

    lines = [f"Command: `scripts/compare.py --profile {args.profile}{' --report' if args.report else ''}` · "
             f"commit `{commit_id()}` · "
             f"teacher `{os.path.relpath(teacher_ckpt, ROOT)}` · test accuracy on the "
             f"{'500-image test subset' if args.profile == 'smoke' else 'full 10,000-image test set'}", "",
             "| recipe | training set | test acc | Δ vs FP | packed MB (accounting) | file MB | OPs (M) | "
             "runtime agreement | runtime acc | training min | bitvit train arguments |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    fp_acc = rows[0][2]
    for recipe, regime, acc, size, ops, deployed, minutes, cmd in rows:
        if acc is None:
            lines.append(f"| {recipe} | {regime} | — | — | — | — | — | — | — | — | {cmd} |")
            continue
        file_mb, agreement, runtime_acc = deployed
        lines.append(f"| {recipe} | {regime} | {100 * acc:.2f} % | "
                     f"{100 * (acc - fp_acc):+.2f} | {size:.3f} | {file_mb:.3f} | {ops:.2f} | {agreement:.2f} % | "
                     f"{runtime_acc:.2f} % | {minutes:.1f} | `{cmd}` |")
    trained = sum(r[6] for r in rows[1:] if r[6] is not None)
    lines += ["", f"Training time of the quantized rows shown (sum of their epochs' wall time, evaluation "
                  f"included, on this shared machine): {trained / 60:.1f} h."]
    return lines


def ablation_table(args, profile, base, teacher):
    teacher_ckpt = os.path.join(teacher, "checkpoint.pt")
    regime = profile["common"] + profile["subset"]
    lines = [f"Command: `scripts/compare.py --profile {args.profile} --ablations{' --report' if args.report else ''}` · "
             f"commit `{commit_id()}` · "
             f"teacher `{os.path.relpath(teacher_ckpt, ROOT)}` · subset regime (`{' '.join(regime)}`), one seed; "
             "each derived recipe is the seed recipe with the one change named, stored as `runs/compare-"
             f"{args.profile}/<ablation>.toml`", "",
             "| ablation | seed recipe | change | seed acc | ablated acc | Δ | ablated OPs (M) |",
             "|---|---|---|---|---|---|---|"]
    for name, seed, change, what in ABLATIONS:
        if args.report and not (is_finished(os.path.join(base, f"{seed}-subset")) and is_finished(os.path.join(base, name))):
            lines.append(f"| {name} | {seed} | {what} | — | — | — | not trained yet |")
            continue
        seed_acc = train(os.path.join(base, f"{seed}-subset"), ["--recipe", os.path.join(ROOT, "recipes", seed + ".toml"),
                                                                 "--fp-checkpoint", teacher_ckpt] + regime)[-1]["test_acc"]
        # The recipe as training resolves it (base merged, extended stages expanded), so the one
        # change reaches every stage and the derived file stands on its own.
        recipe = tomllib.loads(sh([BITVIT, "config", os.path.join(ROOT, "recipes", seed + ".toml")]))
        change(recipe)
        derived = os.path.join(base, name + ".toml")
        os.makedirs(base, exist_ok=True)
        with open(derived, "w") as f:
            f.write(f"# recipes/{seed}.toml with one change: {what}\n\n" + toml_text(recipe))
        _, acc, _, ops, _ = train_row(base, name, derived, teacher_ckpt, regime)
        lines.append(f"| {name} | {seed} | {what} | {100 * seed_acc:.2f} % | {100 * acc:.2f} % | "
                     f"{100 * (acc - seed_acc):+.2f} | {ops:.2f} |")
    return lines


def check_teacher(base, teacher_ckpt):
    """Every run of a profile starts from one teacher: its checkpoint's SHA-256 is kept in
    <base>/teacher.json, and a different teacher stops the script before any finished run from the old
    one is reused as a row."""
    digest = hashlib.sha256(open(teacher_ckpt, "rb").read()).hexdigest()
    record = os.path.join(base, "teacher.json")
    if os.path.exists(record):
        kept = json.load(open(record))
        if kept["sha256"] != digest:
            sys.exit(f"compare.py: the runs in {os.path.relpath(base, ROOT)} were trained from another teacher "
                     f"({kept['checkpoint']}, sha256 {kept['sha256'][:12]}…) than {os.path.relpath(teacher_ckpt, ROOT)} "
                     f"(sha256 {digest[:12]}…); move that directory away to start the table afresh")
        return
    os.makedirs(base, exist_ok=True)
    json.dump({"checkpoint": os.path.relpath(teacher_ckpt, ROOT), "sha256": digest}, open(record, "w"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--recipes", nargs="*", default=RECIPES)
    parser.add_argument("--regimes", nargs="+", choices=["full", "subset"], default=["full", "subset"],
                        help="training-set regimes of the comparison rows (subset alone first gives a whole table sooner)")
    parser.add_argument("--ablations", action="store_true", help="run the ablation table instead of the comparison")
    parser.add_argument("--report", action="store_true",
                        help="tabulate the finished runs only, training nothing (rows still running say so)")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    base = os.path.join(ROOT, "runs", "compare-" + args.profile)

    if profile["teacher"] is None:
        teacher = os.path.join(ROOT, "runs", "fp")  # the shipped FP recipe's run: trained or resumed to the end
        train(teacher, ["--recipe", os.path.join(ROOT, "recipes", "fp.toml")])
    else:
        teacher = os.path.join(base, "fp")
        train(teacher, ["--recipe", os.path.join(ROOT, "recipes", "fp.toml")] + profile["teacher"])

    check_teacher(base, os.path.join(teacher, "checkpoint.pt"))
    if args.ablations:
        lines = ablation_table(args, profile, base, teacher)
        marker, title = f"compare:{args.profile}:ablations", f"Ablations, profile {args.profile}"
    else:
        lines = comparison_table(args, profile, base, teacher)
        marker, title = f"compare:{args.profile}", f"Comparison table, profile {args.profile}"
    print("\n".join(lines))
    if args.profile != "smoke":  # a smoke run checks the pipeline: its numbers do not belong in the results
        splice_results(marker, title, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
