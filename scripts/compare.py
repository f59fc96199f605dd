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
    scripts/compare.py --profile full --regimes subset --seeds 3 --runs-dir /data/runs   # error bars, runs kept outside

Every row distils from one teacher (--teacher; default the model's shipped one in teachers/). --model
swin_micro_patch2_window7_28 makes the Swin table (the recipes' [stage.swin] tables apply; its own runs
directory and results section):

    scripts/compare.py --model swin_micro_patch2_window7_28 --profile quick

Each run records, in its directory, the commit and wall time of every invocation that trained it
(provenance.jsonl); the table names the commits and the hash of the config each run trained with.

A finished run is archived as evidence (--evidence-dir, default docs/evidence/compare-<profile>[-<model>]/;
the smoke profile's inside its runs directory): its config, per-epoch metrics, provenance and facts.json
(OPs, packed size, the runtime's verification, and the key it was made under: the SHA-256 of the recipe as
training resolves it, the training arguments, the teacher's SHA-256). The tables are made from the
evidence, and a run whose evidence is committed is not trained again on another machine while its key
still matches (a changed recipe or teacher makes it stale: trained again). So a comparison too long for one
machine's session goes on in the next from a fresh checkout.
With --seeds N every row is trained N times (train.seed = 0 … N−1): the table shows mean ± standard
deviation, the ablations the paired difference per seed and its spread, and the seed methods their
paired difference against bnn. --plot draws test accuracy per epoch for each regime (gnuplot; apt-get install gnuplot-nox).

Each ablation is its seed recipe with exactly one change (ABLATIONS), written as a derived recipe into
the run directory and trained in the subset regime of the same profile; its row is compared with the
seed recipe's own subset row. Runs are resumable: a finished run is reused, an interrupted one resumed (run it again after a kill).
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

if sys.version_info < (3, 11):
    sys.exit("compare.py needs Python 3.11 or newer (for tomllib); Debian 12's python3 is 3.11")
import tomllib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BITVIT = os.environ.get("BITVIT") or os.path.join(ROOT, "build", "bitvit")  # $BITVIT: another build's binary
RESULTS = os.path.join(ROOT, "docs", "results.md")
EVIDENCE = os.path.join(ROOT, "docs", "evidence")
# What a measurement depends on: a change here marks its commit "+dirty" (docs and scripts do not).
CODE_PATHS = ["src", "bench", "recipes", "teachers", "CMakeLists.txt"]
# The architectures a table can be made for (--model): each with its shipped teacher and the small
# model of the smoke profile. The recipes are written for the DeiT; on a Swin their [stage.swin]
# tables apply (docs/training.md, "Recipes").
MODELS = {
    "deit_micro_patch4_28": {"teacher": "teachers/deit_micro_patch4_28-fp.pt", "smoke": "deit_nano_patch7_28"},
    "swin_micro_patch2_window7_28": {"teacher": "teachers/swin_micro_patch2_window7_28-fp.pt",
                                     "smoke": "swin_nano_patch2_window7_28"},
}
DEFAULT_MODEL = "deit_micro_patch4_28"
RECIPES = ["lsq-w8a8", "bnn", "bibert", "bit", "reactnet", "twn", "bivit", "bivit-w1a1", "tervit", "bi-vit", "gsb",
           "bi-vit-binary-embed"]
SEED_METHODS = ["bivit", "bivit-w1a1", "tervit", "bi-vit", "gsb", "bi-vit-binary-embed"]  # the papers' methods

# Per profile (every run also gets --model, the smoke profile's the small one): overrides for the teacher run (None: the --teacher checkpoint, by default the shipped one),
# for every row, and for the full-set and subset rows; full_set_recipes limits the full-set regime's
# default recipes (the full profile's full-set rows take hours each: only the fully binary candidates
# and TerViT).
PROFILES = {
    "smoke": {
        "teacher": ["--train-subset", "2000", "--test-subset", "500", "--epochs", "2"],
        "common": ["--test-subset", "500"],
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
        "full_set_recipes": ["bnn", "bibert", "bit", "bivit-w1a1", "bi-vit", "gsb", "tervit"],
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

# The sweep of ranking-aware distillation's weight and top-k around Bi-ViT's shipped default (rank 1,
# top 8), each one change; Δ > 0 says the alternative beats the default (--sweep).
SWEEP = [(f"bi-vit-rank-{w}", "bi-vit", set_distill("rank", w), f"rank weight 1 → {w}") for w in (0.1, 0.3, 3.0)] + \
        [(f"bi-vit-top{k}", "bi-vit", set_distill("rank_top_k", k), f"rank top-k 8 → {k}") for k in (4, 16)]


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


def commit_id():
    """HEAD's short hash, with +dirty when tracked files other than docs/results.md differ from it."""
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                           capture_output=True, text=True).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def provenance(run_dir):
    """Every invocation that trained run_dir: commit, start time, wall seconds (its provenance.jsonl)."""
    path = os.path.join(run_dir, "provenance.jsonl")
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []


def train(run_dir, args, key=None):
    """Trains into run_dir (or resumes it) and returns its metrics lines. A run already finished is
    not touched; every invocation that trains appends its commit and wall time to the provenance.
    With a key (run_key), the run directory keeps it (key.json) and a run begun under another key is
    refused, not reused: its recipe, arguments or teacher have changed since."""
    key_path = os.path.join(run_dir, "key.json")
    if key is not None and os.path.exists(key_path) and json.load(open(key_path)) != key:
        sys.exit(f"compare.py: {run_dir} was begun from another recipe, arguments or teacher than this row's now; "
                 "move it away (or pass another --runs-dir) to train the row afresh")
    if key is not None and not os.path.exists(key_path):
        os.makedirs(run_dir, exist_ok=True)
        with open(key_path, "w") as f:
            json.dump(key, f)
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    if is_finished(run_dir):
        return finished_epochs(run_dir)
    resume = os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.monotonic()
    sh([BITVIT, "train", "--resume", run_dir] if resume else [BITVIT, "train", "--out", run_dir] + args, run_dir + ".log")
    with open(os.path.join(run_dir, "provenance.jsonl"), "a") as f:
        f.write(json.dumps({"commit": commit_id(), "started": started, "resumed": resume,
                            "wall_seconds": round(time.monotonic() - clock, 1)}) + "\n")
    return finished_epochs(run_dir)


def is_finished(run_dir):
    """Whether a run (or its evidence) has trained every epoch its stored config asks for."""
    config_path = os.path.join(run_dir, "config.toml")
    kept = any(os.path.exists(os.path.join(run_dir, f)) for f in ("checkpoint.pt", FACTS))
    if not kept or not os.path.exists(config_path):
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


def run_identity(run_dir):
    """`commit(s) · config hash`: the commits that trained the run and the SHA-256 of the resolved config
    it trained with (its config.toml), so two rows can be seen to differ only where they should."""
    commits = list(dict.fromkeys(p["commit"] for p in provenance(run_dir))) or ["unrecorded"]
    digest = hashlib.sha256(open(os.path.join(run_dir, "config.toml"), "rb").read()).hexdigest()[:10]
    return f"{', '.join(commits)} · {digest}"


def ops_of(checkpoint):
    out = sh([BITVIT, "ops", checkpoint])
    ops = re.search(r"= OPs ([0-9.]+) G", out).group(1)
    size = re.search(r"packed ([0-9.]+) MB", out).group(1)
    return float(ops) * 1e3, float(size)


def deploy(checkpoint, stem, profile):
    """Exports a checkpoint to <stem>.safetensors, checks the runtime against LibTorch on the test set,
    and returns (file MB, top-1 agreement %, runtime accuracy %, LibTorch accuracy %)."""
    packed = stem + ".safetensors"
    cached = stem + ".verify.json"  # reused while newer than the checkpoint and the bitvit binary
    if os.path.exists(cached) and os.path.getmtime(cached) > max(os.path.getmtime(checkpoint), os.path.getmtime(BITVIT)):
        c = json.load(open(cached))
        if "torch_acc" in c:
            return c["file_mb"], c["agreement"], c["runtime_acc"], c["torch_acc"]
    sh([BITVIT, "export", checkpoint, "-o", packed])
    out = sh([BITVIT, "verify", checkpoint, packed] + (["--subset", "500"] if profile == "smoke" else []))
    result = {"file_mb": os.path.getsize(packed) / 1e6,
              "agreement": float(re.search(r"top-1 agreement: ([0-9.]+)%", out).group(1)),
              "runtime_acc": float(re.search(r"runtime ([0-9.]+)%", out).group(1)),
              "torch_acc": float(re.search(r"LibTorch ([0-9.]+)%", out).group(1))}
    json.dump(result, open(cached, "w"))
    return result["file_mb"], result["agreement"], result["runtime_acc"], result["torch_acc"]


def model_args(args):
    """--model for every run: the table's architecture, or its small twin in the smoke profile."""
    return ["--model", MODELS[args.model]["smoke"] if args.profile == "smoke" else args.model]


def seed_args(seed):
    return [] if seed == 0 else ["--set", f"train.seed={seed}"]


def run_name(name, seed):
    return name if seed == 0 else f"{name}-seed{seed}"


FACTS = "facts.json"  # in an evidence directory: what the tables need that only the checkpoint could give


def run_key(args, recipe_path, run_args):
    """What a run's result depends on besides the code: the recipe as training resolves it (bases
    merged), the training arguments (no paths), the teacher. Evidence made under another key is stale."""
    resolved = sh([BITVIT, "config", recipe_path])
    return {"recipe_sha256": hashlib.sha256(resolved.encode()).hexdigest(), "args": run_args,
            "teacher_sha256": args.teacher_sha256}


def current_evidence(record, key):
    """Whether `record` holds a finished run's evidence made under `key` (says so when it is stale)."""
    path = os.path.join(record, FACTS)
    if not os.path.exists(path):
        return False
    if json.load(open(path)).get("key") != key:
        print(f"compare.py: {os.path.relpath(record, ROOT)} was made from another recipe, arguments or teacher: "
              "stale, so its run is trained (or, with --report, shown) afresh", file=sys.stderr)
        return False
    return is_finished(record)


def archive(run_dir, record, key, profile):
    """Copies a finished run's evidence into `record` (replaced whole, through a temporary directory):
    config, metrics, provenance, and facts.json with its OPs, packed size and runtime verification."""
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    ops, size = ops_of(checkpoint)
    file_mb, agreement, runtime_acc, torch_acc = deploy(checkpoint, run_dir, profile)
    staging = record + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for f in ("config.toml", "metrics.jsonl", "provenance.jsonl"):
        shutil.copy2(os.path.join(run_dir, f), staging)
    facts = {"key": key, "ops_m": ops, "packed_mb": size, "file_mb": file_mb, "agreement": agreement,
             "runtime_acc": runtime_acc, "torch_acc": torch_acc}
    with open(os.path.join(staging, FACTS), "w") as f:
        json.dump(facts, f, indent=1)
    shutil.rmtree(record, ignore_errors=True)
    os.replace(staging, record)


def run_facts(record):
    """facts.json of a run's evidence."""
    return json.load(open(os.path.join(record, FACTS)))


def train_runs(args, base, name, recipe_path, regime_args):
    """Trains (or resumes) a row's runs, one per seed, unless their evidence is current, and archives each
    finished one; returns the evidence directories, or None when --report finds a run unfinished."""
    runs = []
    for seed in range(args.seeds):
        run_args = model_args(args) + regime_args + seed_args(seed)
        key = run_key(args, recipe_path, run_args)
        record = os.path.join(args.evidence_dir, run_name(name, seed))
        runs.append((os.path.join(base, run_name(name, seed)), record, run_args, key, current_evidence(record, key)))
    if args.report and not all(current or is_finished(run_dir) for run_dir, _, _, _, current in runs):
        return None
    for run_dir, record, run_args, key, current in runs:
        if not current:
            train(run_dir, ["--recipe", recipe_path, "--fp-checkpoint", args.teacher_checkpoint] + run_args, key)
            archive(run_dir, record, key, args.profile)
    return [record for _, record, _, _, _ in runs]


def final_acc(run_dir):
    return finished_epochs(run_dir)[-1]["test_acc"]


def mean_std(values):
    """Mean and sample standard deviation (0 for one value), in the values' unit."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, var ** 0.5


def pm(values, scale=100, digits=2):
    """`m ± s` over seeds, or the one value."""
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def verdict(diffs, claim_sign):
    """Whether paired differences (one per seed) support a claim that their sign is claim_sign: the mean
    must exceed twice the differences' own standard deviation. One seed cannot decide."""
    if len(diffs) < 2:
        return "one seed: undecided"
    mean, std = mean_std(diffs)
    if abs(mean) <= 2 * std:
        return "not resolved (|mean| ≤ 2 sd)"
    return "supported" if mean * claim_sign > 0 else "contradicted"


def teacher_row(args, base):
    """The FP row: the teacher's accuracy and its deployed form."""
    ckpt = args.teacher_checkpoint
    deployed = deploy(ckpt, os.path.join(base, "fp"), args.profile)
    run_dir = os.path.dirname(ckpt)
    trained_here = os.path.exists(os.path.join(run_dir, "config.toml"))
    images = train_images(run_dir) if trained_here else "see teachers/README.md"
    ops, size = ops_of(ckpt)
    return {"recipe": "fp", "images": images, "accs": [deployed[3] / 100], "size": size, "ops": ops, "deployed": [deployed],
            "minutes": train_minutes(run_dir) if trained_here else None, "identity": os.path.relpath(ckpt, ROOT),
            "cmd": "recipes/fp.toml"}


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


def comparison_table(args, profile, base):
    rows = [teacher_row(args, base)]
    for regime in args.regimes:
        default = profile.get("full_set_recipes", RECIPES) if regime == "full" else RECIPES
        for recipe in args.recipes or default:
            regime_args = profile["common"] + profile[regime]
            dirs = train_runs(args, base, f"{recipe}-{regime}", os.path.join(ROOT, "recipes", recipe + ".toml"), regime_args)
            if dirs is None:
                rows.append({"recipe": recipe, "images": regime, "accs": None})
                continue
            facts = [run_facts(d) for d in dirs]
            rows.append({"recipe": recipe, "images": train_images(dirs[0]), "accs": [final_acc(d) for d in dirs],
                         "size": facts[0]["packed_mb"], "ops": facts[0]["ops_m"],
                         "deployed": [(f["file_mb"], f["agreement"], f["runtime_acc"], f["torch_acc"]) for f in facts],
                         "minutes": sum(map(train_minutes, dirs)) / len(dirs), "identity": run_identity(dirs[0]),
                         "cmd": " ".join(["--recipe", f"recipes/{recipe}.toml"] + model_args(args) + regime_args)})

    seeds = f"{args.seeds} seeds (train.seed 0…{args.seeds - 1}): mean ± sd" if args.seeds > 1 else "one seed"
    lines = [f"Command: `{' '.join(['scripts/compare.py'] + sys.argv[1:])}` · commit `{commit_id()}` · "
             f"model `{model_args(args)[1]}` · teacher `{os.path.relpath(args.teacher_checkpoint, ROOT)}` · {seeds} · test accuracy on the "
             f"{'500-image test subset' if args.profile == 'smoke' else 'full 10,000-image test set'}", "",
             "| recipe | training set | test acc % | Δ vs FP | packed MB (accounting) | file MB | OPs (M) | "
             "runtime agreement (worst) | runtime acc % | training min | trained at · config hash | bitvit train arguments |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fp_acc = rows[0]["accs"][0]
    for r in rows:
        if r["accs"] is None:
            lines.append(f"| {r['recipe']} | {r['images']} | — | — | — | — | — | — | — | — | — | not trained yet |")
            continue
        agreement = min(d[1] for d in r["deployed"])
        runtime = [d[2] / 100 for d in r["deployed"]]
        minutes = "—" if r["minutes"] is None else f"{r['minutes']:.1f}"
        lines.append(f"| {r['recipe']} | {r['images']} | {pm(r['accs'])} | {100 * (mean_std(r['accs'])[0] - fp_acc):+.2f} | "
                     f"{r['size']:.3f} | {r['deployed'][0][0]:.3f} | {r['ops']:.2f} | {agreement:.2f} % | {pm(runtime)} | "
                     f"{minutes} | {r['identity']} | `{r['cmd']}` |")
    trained = sum(r["minutes"] * len(r["accs"]) for r in rows[1:] if r["accs"] is not None)
    lines += ["", f"Training time of the quantized runs shown (sum of their epochs' wall time, evaluation "
                  f"included, on this shared machine): {trained / 60:.1f} h."]
    if args.seeds > 1:
        lines += versus_bnn(rows)
    return lines


def versus_bnn(rows):
    """The seed methods against the plain binary baseline, paired by seed within each regime."""
    lines = ["", "Each seed method against `bnn` in the same regime, paired by seed (method − bnn, points):", "",
             "| recipe | training set | paired Δ mean ± sd | per seed | above bnn by > 2 sd? |", "|---|---|---|---|---|"]
    for regime_rows in ([r for r in rows[1:] if r["accs"] is not None and r["images"] == images]
                        for images in dict.fromkeys(r["images"] for r in rows[1:])):
        bnn = next((r for r in regime_rows if r["recipe"] == "bnn"), None)
        if bnn is None:
            continue
        for r in regime_rows:
            if r["recipe"] in SEED_METHODS:
                diffs = [a - b for a, b in zip(r["accs"], bnn["accs"])]
                lines.append(f"| {r['recipe']} | {r['images']} | {pm(diffs)} | {', '.join(f'{100 * d:+.2f}' for d in diffs)} | "
                             f"{verdict(diffs, +1)} |")
    return lines


def ablation_table(args, profile, base, entries=ABLATIONS, claim_sign=-1):
    """Each entry's derived recipe against its seed recipe, paired by seed. claim_sign −1: the claim is
    that the seed's component helps (the change lowers accuracy); +1: that the change beats the seed."""
    regime = profile["common"] + profile["subset"]
    lines = [f"Command: `{' '.join(['scripts/compare.py'] + sys.argv[1:])}` · commit `{commit_id()}` · "
             f"model `{model_args(args)[1]}` · teacher `{os.path.relpath(args.teacher_checkpoint, ROOT)}` · "
             f"subset regime (`{' '.join(regime)}`), "
             f"{args.seeds} seed{'s' if args.seeds > 1 else ''}; each derived recipe is the seed recipe with the one change "
             f"named, stored beside its runs as `<ablation>.toml`. Δ is ablated − seed recipe, paired by seed; the "
             + ("method's claim is that its component helps (Δ < 0)" if claim_sign < 0 else "claim tested is that the change "
                "beats the shipped default (Δ > 0)") + ", supported only where |mean Δ| > 2 sd.", "",
             "| ablation | seed recipe | change | seed acc % | ablated acc % | Δ mean ± sd | per seed | claim | ablated OPs (M) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, seed_recipe, change, what in entries:
        seed_dirs = train_runs(args, base, f"{seed_recipe}-subset", os.path.join(ROOT, "recipes", seed_recipe + ".toml"), regime)
        # The recipe as training resolves it (base merged, extended stages expanded), so the one
        # change reaches every stage and the derived file stands on its own.
        recipe = tomllib.loads(sh([BITVIT, "config", os.path.join(ROOT, "recipes", seed_recipe + ".toml")]))
        change(recipe)
        derived = os.path.join(base, name + ".toml")
        os.makedirs(base, exist_ok=True)
        with open(derived, "w") as f:
            f.write(f"# recipes/{seed_recipe}.toml with one change: {what}\n\n" + toml_text(recipe))
        ablated_dirs = None if seed_dirs is None else train_runs(args, base, name, derived, regime)
        if ablated_dirs is None:
            lines.append(f"| {name} | {seed_recipe} | {what} | — | — | — | — | — | not trained yet |")
            continue
        seed_accs, ablated_accs = list(map(final_acc, seed_dirs)), list(map(final_acc, ablated_dirs))
        diffs = [a - s for a, s in zip(ablated_accs, seed_accs)]
        ops = run_facts(ablated_dirs[0])["ops_m"]
        lines.append(f"| {name} | {seed_recipe} | {what} | {pm(seed_accs)} | {pm(ablated_accs)} | {pm(diffs)} | "
                     f"{', '.join(f'{100 * d:+.2f}' for d in diffs)} | {verdict(diffs, claim_sign)} | {ops:.2f} |")
    return lines


def plot_curves(args, base, lines_out):
    """Test accuracy per epoch of every finished seed-0 run, one PNG per regime, into docs/ (a smoke
    run's beside its runs: its numbers do not belong in the docs)."""
    if shutil.which("gnuplot") is None:
        sys.exit("compare.py --plot needs gnuplot: apt-get install gnuplot-nox")
    for regime in args.regimes:
        evidence = args.evidence_dir
        runs = sorted(d for d in os.listdir(evidence) if d.endswith(f"-{regime}") and os.path.isdir(os.path.join(evidence, d)))
        series = [(d[: -len(regime) - 1], [m["test_acc"] for m in finished_epochs(os.path.join(evidence, d))]) for d in runs]
        series = [(name, accs) for name, accs in series if accs]
        if not series:
            continue
        png = os.path.join(base if args.profile == "smoke" else os.path.join(ROOT, "docs"), f"{os.path.basename(base)}-{regime}.png")
        data = "".join("".join(f"{e + 1} {100 * a:.3f}\n" for e, a in enumerate(accs)) + "e\n" for _, accs in series)
        plots = ", ".join(f"'-' using 1:2 with linespoints title '{name}'" for name, _ in series)
        script = (f"set terminal png size 1000,640\nset output '{png}'\nset key outside right\nset grid\n"
                  f"set xlabel 'epoch'\nset ylabel 'test accuracy (%)'\n"
                  f"set title '{model_args(args)[1]}, profile {args.profile}, {regime} regime: test accuracy per epoch (seed 0)'\n"
                  f"plot {plots}\n{data}")
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        lines_out.append(f"![test accuracy per epoch, {regime} regime]({os.path.relpath(png, os.path.join(ROOT, 'docs'))})")


def check_teacher(base, teacher_ckpt):
    """Every run of a profile starts from one teacher: its checkpoint's SHA-256 is kept in
    <base>/teacher.json, and a different teacher stops the script before any finished run from the old
    one is reused as a row (evidence carries the teacher's SHA-256 in its key). Returns the SHA-256."""
    digest = hashlib.sha256(open(teacher_ckpt, "rb").read()).hexdigest()
    record = os.path.join(base, "teacher.json")
    if os.path.exists(record):
        kept = json.load(open(record))
        if kept["sha256"] != digest:
            sys.exit(f"compare.py: the runs in {base} were trained from another teacher "
                     f"({kept['checkpoint']}, sha256 {kept['sha256'][:12]}…) than {teacher_ckpt} "
                     f"(sha256 {digest[:12]}…); pass --teacher {kept['checkpoint']} or --runs-dir elsewhere to start afresh")
        return digest
    os.makedirs(base, exist_ok=True)
    json.dump({"checkpoint": os.path.relpath(teacher_ckpt, ROOT), "sha256": digest}, open(record, "w"))
    return digest


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--recipes", nargs="*", default=None, help="default: every shipped recipe (the full profile's "
                        "full-set regime: the fully binary candidates and TerViT)")
    parser.add_argument("--regimes", nargs="+", choices=["full", "subset"], default=["full", "subset"],
                        help="training-set regimes of the comparison rows (subset alone first gives a whole table sooner)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per row (train.seed 0 … N−1) for mean ± sd")
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL,
                        help="the architecture every row trains (its own runs directory, teacher and results section)")
    parser.add_argument("--teacher", default=None,
                        help="the FP checkpoint every row distils from (default: the model's shipped teacher)")
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "runs"),
                        help="where the runs live (default runs/ in the checkout): compare-<profile>/ below it "
                             "(compare-<profile>-<model>/ for another model than the DeiT)")
    parser.add_argument("--evidence-dir", default=None,
                        help="where finished runs are archived and read back from (default docs/evidence/compare-<profile>"
                             "[-<model>]/, to commit; the smoke profile's inside its runs directory)")
    parser.add_argument("--ablations", action="store_true", help="run the ablation table instead of the comparison")
    parser.add_argument("--sweep", action="store_true",
                        help="run Bi-ViT's ranking-distillation sweep (weight, top-k) instead of the comparison (SWEEP)")
    parser.add_argument("--plot", action="store_true", help="also draw docs/compare-<profile>-<regime>.png (gnuplot)")
    parser.add_argument("--report", action="store_true",
                        help="tabulate the finished runs only, training nothing (rows still running say so)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    profile = PROFILES[args.profile]
    suffix = "" if args.model == DEFAULT_MODEL else "-" + args.model
    base = os.path.join(os.path.abspath(args.runs_dir), "compare-" + args.profile + suffix)

    if profile["teacher"] is None:
        args.teacher_checkpoint = os.path.abspath(args.teacher or os.path.join(ROOT, MODELS[args.model]["teacher"]))
        if not os.path.exists(args.teacher_checkpoint):
            sys.exit(f"compare.py: no teacher at {args.teacher}")
    else:  # the smoke profile trains its own small teacher
        teacher = os.path.join(base, "fp")
        train(teacher, ["--recipe", os.path.join(ROOT, "recipes", "fp.toml")] + model_args(args) + profile["teacher"])
        args.teacher_checkpoint = os.path.join(teacher, "checkpoint.pt")

    args.teacher_sha256 = check_teacher(base, args.teacher_checkpoint)
    if args.evidence_dir is None:
        args.evidence_dir = os.path.join(base, "evidence") if args.profile == "smoke" else os.path.join(EVIDENCE, os.path.basename(base))
    args.evidence_dir = os.path.abspath(args.evidence_dir)
    on = "" if args.model == DEFAULT_MODEL else f" ({args.model})"
    if args.sweep:
        lines = ablation_table(args, profile, base, SWEEP, +1)
        marker, title = f"compare:{args.profile}{suffix}:sweep", f"Ranking-aware distillation sweep, profile {args.profile}{on}"
    elif args.ablations:
        lines = ablation_table(args, profile, base)
        marker, title = f"compare:{args.profile}{suffix}:ablations", f"Ablations, profile {args.profile}{on}"
    else:
        lines = comparison_table(args, profile, base)
        marker, title = f"compare:{args.profile}{suffix}", f"Comparison table, profile {args.profile}{on}"
        if args.plot:
            lines.append("")
            plot_curves(args, base, lines)
    print("\n".join(lines))
    if args.profile != "smoke":  # a smoke run checks the pipeline: its numbers do not belong in the results
        splice_results(marker, title, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
