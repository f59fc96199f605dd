#!/usr/bin/env python3
"""Runs a Google Benchmark program and writes its figures, with the command, commit and CPU, into a
marked section of docs/results.md (replacing the previous figures of that benchmark).

    scripts/record-bench.py kernels   # binary, ternary×int8 and FP32 kernels vs LibTorch FP32 / BF16, one thread
    scripts/record-bench.py train     # training throughput of the small FP DeiTs, batch 128
    scripts/record-bench.py recipe-steps [--baseline OLD/build/bench/bench-train]
                                      # each seed recipe's training step vs the FP step, one thread; with a
                                      # baseline binary (an older commit's build), before/after, interleaved
    scripts/record-bench.py scaling   # `bitvit train` images/s, 1 rank x 1 thread vs 2 ranks x 1 thread
    scripts/record-bench.py models    # whole W1A1 models: runtime vs LibTorch FP32 / BF16 (bitvit bench)
    scripts/record-bench.py recipes   # every recipe's deployed DeiT-S, batch 1: runtime vs LibTorch FP32 / BF16
    scripts/record-bench.py swin      # Swin-T/224, fully binary and each seed method, batch 1 and 16 (issue 16)
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from compare import MODELS  # each architecture's shipped teacher, as the comparison table uses it

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results.md")
# What a measurement depends on: a change here marks its commit "+dirty" (docs and scripts do not).
CODE_PATHS = ["src", "bench", "recipes", "teachers", "CMakeLists.txt"]


def run(binary, extra):
    cmd = [os.path.join(ROOT, "build", "bench", binary), "--benchmark_format=json"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return " ".join(os.path.relpath(cmd[0], ROOT).split() + extra), json.loads(out)


def commit_of(path):
    """The short commit of the checkout that holds `path` (a worktree of an older commit, say)."""
    where = os.path.dirname(os.path.abspath(path))
    return subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def provenance(command):
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS], capture_output=True, text=True).stdout.strip()
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"Command: `{command}` · commit `{commit}{'+dirty' if dirty else ''}` · CPU: {cpu}, {os.cpu_count()} cores"


TIERS = ["scalar", "avx2", "avx512bw", "avx512vpopcntdq"]


def kernels_section(command, data):
    rates = {}
    for b in data["benchmarks"]:
        path, shape = b["name"].split("/", 1)
        shape = shape.rsplit("/real_time", 1)[0]
        rates.setdefault(shape, {})[path] = b["ops/s"]
    int8_variants = sorted({p[len("t2i8_"):] for r in rates.values() for p in r if p.startswith("t2i8_")})
    f32_tiers = [t for t in TIERS if any("f32_" + t in r for r in rates.values())]
    lines = [provenance(command), "",
             "XNOR rows are K − 2·popcount(a ^ b) (±1 × ±1); AND rows are popcount(a & b) ({0, 1} × bits).", "",
             "| layer (M×N×K) | product | FP32 (OpenBLAS) GOPS | BF16 (oneDNN) GOPS | " +
             " | ".join(f"{t} GOPS" for t in TIERS) + " | best binary ÷ FP32 | best binary ÷ BF16 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for shape, r in rates.items():
        for product, prefix in (("XNOR", "b1b1_"), ("AND", "and1_")):
            tiers = [r.get(prefix + t) for t in TIERS]
            if not any(tiers):
                continue
            best = max(t for t in tiers if t)
            cells = " | ".join(f"{t / 1e9:.0f}" if t else "—" for t in tiers)
            lines.append(f"| {shape} | {product} | {r['fp32_torch'] / 1e9:.0f} | {r['bf16_torch'] / 1e9:.0f} | {cells} | "
                         f"{best / r['fp32_torch']:.1f}× | {best / r['bf16_torch']:.1f}× |")
    lines += ["", "Ternary weights × int8 activations (TerViT's W2A8 product) on the int8 kernel variants, and the "
              "runtime's own FP32 GEMM tiers (bit-exact with their reference: the same chain of fused multiply-adds):", "",
              "| layer (M×N×K) | FP32 (OpenBLAS) GOPS | BF16 (oneDNN) GOPS | " +
              " | ".join(f"ternary×int8 {v} GOPS" for v in int8_variants) + " | best ternary×int8 ÷ FP32 | " +
              " | ".join(f"runtime FP32 {t} GOPS" for t in f32_tiers) + " |",
              "|---" * (5 + len(int8_variants) + len(f32_tiers)) + "|"]
    for shape, r in rates.items():
        int8 = [r.get("t2i8_" + v) for v in int8_variants]
        if not any(int8):
            continue
        best = max(v for v in int8 if v)
        lines.append(f"| {shape} | {r['fp32_torch'] / 1e9:.0f} | {r['bf16_torch'] / 1e9:.0f} | " +
                     " | ".join(f"{v / 1e9:.0f}" if v else "—" for v in int8) + f" | {best / r['fp32_torch']:.1f}× | " +
                     " | ".join(f"{r['f32_' + t] / 1e9:.0f}" if r.get("f32_" + t) else "—" for t in f32_tiers) + " |")
    peak = rates.get("vpdpbusd_zmm", {}).get("peak"), rates.get("vfmadd_zmm", {}).get("peak")
    if all(peak):
        lines += ["", f"Instruction ceilings (register-only loops of 12 independent accumulators, `peak/*` rows): "
                  f"VPDPBUSD zmm {peak[0] / 1e9:.0f} GOPS (int8), VFMADD zmm {peak[1] / 1e9:.0f} GFLOPS (FP32): an int8 GEMM "
                  f"can beat an FP32 GEMM by at most {peak[0] / peak[1]:.1f}× on this CPU."]
    xnor_peak = rates.get("xnor_popcount_zmm", {}).get("peak")
    if xnor_peak:
        lines += ["", f"The binary GEMM's own step (VPXORQ + VPOPCNTQ + VPADDQ zmm, 512 ±1 multiply-adds, same loop): "
                  f"{xnor_peak / 1e9:.0f} GOPS, the ceiling of any XNOR–popcount kernel on this CPU"
                  + (f" ({xnor_peak / peak[1]:.1f}× the FP32 FMA ceiling)." if peak[1] else ".")]
    return "\n".join(lines)


def train_section(command, data):
    lines = [provenance(command), "", "| model | threads | batch | images/s |", "|---|---|---|---|"]
    for b in data["benchmarks"]:
        parts = b["name"].split("/")
        lines.append(f"| {parts[1]} | {int(b['threads'])} | {parts[2]} | {b['images/s']:.0f} |")
    return "\n".join(lines)


# Training figures move by ±20 % within minutes on a shared 2-core machine, and other tenants only
# ever slow a run down. So every comparison is measured in one run, its sides alternated row by row
# ROUNDS times, and each side is reported by its best round (its median and range beside it).
ROUNDS = 5
RECIPE_STEP_ARGS = ["--benchmark_min_time=1.5"]
SHORT_MODELS = {"deit": "deit_micro_patch4_28", "swin": "swin_micro_patch2_window7_28"}


def alternate(keys, sides, measure):
    """measure(side, key) -> images/s for every key, the sides in turn, ROUNDS times: {side: {key: [rates]}}."""
    runs = {side: {key: [] for key in keys} for side in sides}
    for _ in range(ROUNDS):
        for key in keys:
            for side in sides:
                runs[side][key].append(measure(side, key))
    return runs


def rate_cell(rates):
    return f"{max(rates):.1f} ({statistics.median(rates):.0f}; {min(rates):.0f}–{max(rates):.0f})"


def recipe_step_rows(binary):
    """The recipe_step benchmarks of `binary`: names such as recipe_step/bivit_w1a1_deit/128/real_time."""
    out = subprocess.run([binary, "--benchmark_list_tests=true", "--benchmark_filter=recipe_step"], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return out.split()


def recipe_step_rate(binary, name):
    out = subprocess.run([binary, "--benchmark_format=json", "--benchmark_filter=^" + re.escape(name) + "$"] +
                         RECIPE_STEP_ARGS, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out)["benchmarks"][0]["images/s"]


def recipe_and_model(name):
    recipe, model = name.split("/")[1].rsplit("_", 1)
    return recipe.replace("_", "-"), SHORT_MODELS[model]


def recipe_steps_section(baseline):
    """Each recipe's step against the FP step of the same model; with a baseline binary, before/after."""
    current = os.path.join(ROOT, "build", "bench", "bench-train")
    sides = [current] + ([os.path.abspath(baseline)] if baseline else [])
    names = recipe_step_rows(current)
    runs = alternate(names, sides, recipe_step_rate)
    fp_best = {recipe_and_model(n)[1]: max(r) for n, r in runs[current].items() if recipe_and_model(n)[0] == "fp"}
    command = "build/bench/bench-train --benchmark_filter=^recipe_step/<row>$ " + " ".join(RECIPE_STEP_ARGS)
    header = "| model | recipe | images/s: best (median; range) | ÷ FP step |"
    rule = "|---|---|---|---|"
    if baseline:
        before = commit_of(baseline)
        header += f" before, commit `{before}` | speed-up |"
        rule += "---|---|"
        command += f", each row alternated with the same benchmark built at commit {before}"
    lines = [provenance(command + f"; {ROUNDS} rounds"), "", header, rule]
    for name in names:
        recipe, model = recipe_and_model(name)
        rates = runs[current][name]
        row = f"| {model} | {recipe} | {rate_cell(rates)} | {max(rates) / fp_best[model]:.2f} |"
        if baseline:
            old = runs[sides[1]][name]
            row += f" {rate_cell(old)} | {max(rates) / max(old):.2f}× |"
        lines.append(row)
    return "\n".join(lines)


# Data-parallel scaling: `bitvit train` itself (data loading, all-reduce, optimiser) on SCALING_IMAGES,
# batch 128 in all (64 per rank on two), one LibTorch thread per rank. The second epoch is timed: the
# first also holds what a run pays once (rank 0's pass that initialises the quantizers, broadcasts).
SCALING_IMAGES = 1024
SCALING_RUNS = [("fp", "deit_micro_patch4_28"), ("bnn", "deit_micro_patch4_28"),
                ("fp", "swin_micro_patch2_window7_28"), ("bnn", "swin_micro_patch2_window7_28")]


def scaling_args(recipe, model, nproc, teacher):
    return ["train", "--recipe", f"recipes/{recipe}.toml", "--model", model, "--fp-checkpoint", teacher,
            "--train-subset", str(SCALING_IMAGES), "--test-subset", "100", "--batch-size", "128", "--threads", "1",
            "--nproc", str(nproc), "--stop-after", "2"]


def scaling_rate(nproc, run):
    """images/s of the second epoch's training loop of `run` (recipe, model) with `nproc` local ranks."""
    recipe, model = run
    out = tempfile.mkdtemp(prefix="bitvit-scaling-")
    try:
        subprocess.run([os.path.join(ROOT, "build", "bitvit")] + scaling_args(recipe, model, nproc, MODELS[model]["teacher"]) +
                       ["--out", os.path.join(out, "run")], check=True, capture_output=True, text=True, cwd=ROOT)
        with open(os.path.join(out, "run", "metrics.jsonl")) as f:
            return json.loads(f.readlines()[1])["images_per_sec"]
    finally:
        shutil.rmtree(out)


def scaling_section():
    runs = alternate(SCALING_RUNS, [1, 2], scaling_rate)
    command = "build/bitvit " + " ".join(scaling_args("<recipe>", "<model>", "{1,2}", "<its teacher>")) + f"; {ROUNDS} rounds"
    lines = [provenance(command), "",
             "| model | recipe | 1 rank × 1 thread, images/s: best (median; range) | 2 ranks × 1 thread | scaling |",
             "|---|---|---|---|---|"]
    for run in SCALING_RUNS:
        one, two = runs[1][run], runs[2][run]
        lines.append(f"| {run[1]} | {run[0]} | {rate_cell(one)} | {rate_cell(two)} | {max(two) / max(one):.2f}× |")
    return "\n".join(lines)


# (architecture, batches) of the whole-model benchmark, all with BiViT's fully binary recipe.
MODEL_RUNS = [("deit_micro_patch4_28", "1,64"), ("deit_tiny_patch16_224", "1,16"), ("deit_small_patch16_224", "1,16")]


def bench(args):
    """Runs `bitvit bench` with these arguments and returns (command as run from ROOT, its JSON report:
    rows per engine, batch and thread count; ratios per batch, each engine at its best thread count)."""
    out_json = os.path.join(ROOT, "build", "record-bench.json")
    cmd = [os.path.join(ROOT, "build", "bitvit"), "bench"] + args
    subprocess.run(cmd + ["--json", out_json], check=True, capture_output=True, text=True, cwd=ROOT)
    report = json.load(open(out_json))
    os.remove(out_json)
    return " ".join(["build/bitvit"] + cmd[1:]), report


def best(report, batch):
    """The ratios at one batch size, and the rows they compare (each engine at its best thread count)."""
    ratios = {q["versus"]: q for q in report["ratios"] if q["batch"] == batch}
    def row(engine, threads):
        return next(r for r in report["rows"] if r["batch"] == batch and r["threads"] == threads and r["engine"].startswith(engine))
    fp32, bf16 = ratios["libtorch fp32"], ratios["libtorch bf16"]
    return (row("runtime", fp32["runtime_threads"]), row("libtorch fp32", fp32["versus_threads"]),
            row("libtorch bf16", bf16["versus_threads"]), fp32, bf16)


def ms_cell(row):
    return f"{row['ms']:.2f} ({row['threads']} thr; {row['ms_min']:.2f}–{row['ms_max']:.2f})"


def ratio_cell(q):
    return f"{q['median']:.1f}× ({q['min']:.1f}–{q['max']:.1f}{', noisy' if q['noisy'] else ''})"


def size_cell(report):
    mb = lambda b: f"{b / 1e6:.2f}"
    return f"{mb(report['packed_bytes'])} / {mb(report['fp32_bytes'])} MB ({report['fp32_bytes'] / report['packed_bytes']:.1f}×)"


RATIO_NOTE = ("Each engine is timed in interleaved rounds (`--rounds`, default 5) and compared at its best thread "
              "count; a time is the median of its rounds with the fastest and slowest round in brackets, a ratio the "
              "median of the per-round ratios with their range, flagged noisy when the rounds disagree by more than "
              "the engines' own spread explains.")


def whole_model_table(runs, first_column):
    """`bitvit bench` once per (recipe, model, batches) run, a row per batch size: runtime vs LibTorch.
    Returns the commands run and the table's lines; first_column names each row by recipe or model."""
    commands, rows = [], []
    for recipe, model, batches in runs:
        command, report = bench(["--recipe", f"recipes/{recipe}.toml", "--model", model, "--batch", batches, "--threads", "1,0"])
        commands.append(command)
        for batch in map(int, batches.split(",")):
            runtime, fp32, bf16, vs_fp32, vs_bf16 = best(report, batch)
            name = recipe if first_column == "recipe" else model
            rows.append(f"| {name} | {batch} | {runtime['engine']} {ms_cell(runtime)} | {ms_cell(fp32)} | {ms_cell(bf16)} | "
                        f"{ratio_cell(vs_fp32)} | {ratio_cell(vs_bf16)} | {runtime['images_per_sec']:.1f} | {size_cell(report)} |")
    header = [f"| {first_column} | batch | runtime ms/batch | LibTorch FP32 ms | LibTorch BF16 ms | runtime vs FP32 | "
              "runtime vs BF16 | runtime images/s | file / FP32 size |", "|---|---|---|---|---|---|---|---|---|"]
    return commands, header + rows


def models_section():
    """BiViT's fully binary recipe on each architecture of MODEL_RUNS."""
    commands, table = whole_model_table([("bivit-w1a1", model, batches) for model, batches in MODEL_RUNS], "model")
    lines = [provenance(commands[0] + " (and --model " + ", ".join(m for m, _ in MODEL_RUNS[1:]) + ")"), "", RATIO_NOTE, ""]
    return "\n".join(lines + table)


# The Swin benchmark (issue 16): Swin-T at 224, fully binary first, then every seed method's recipe.
SWIN_MODEL, SWIN_BATCHES = "swin_tiny_patch4_window7_224", "1,16"
SWIN_RECIPES = ["bivit-w1a1", "bivit", "tervit", "bi-vit", "bi-vit-binary-embed", "gsb"]


def swin_section():
    _, table = whole_model_table([(recipe, SWIN_MODEL, SWIN_BATCHES) for recipe in SWIN_RECIPES], "recipe")
    lines = [provenance(f"build/bitvit bench --recipe recipes/<recipe>.toml --model {SWIN_MODEL} --batch {SWIN_BATCHES} "
                        f"--threads 1,0 (recipes {', '.join(SWIN_RECIPES)})"), "", RATIO_NOTE, ""]
    return "\n".join(lines + table)


def recipes_section(model="deit_small_patch16_224"):
    """Every shipped recipe's deployed form on one architecture, batch 1, each engine at its best thread count."""
    recipes = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "recipes")) if f.endswith(".toml") and f != "fp.toml")
    lines = [provenance(f"build/bitvit bench --recipe recipes/<recipe>.toml --model {model} --batch 1 --threads 1,0 "
                        "(each recipe)"), "", RATIO_NOTE, "",
             "| recipe | runtime ms | LibTorch FP32 ms | LibTorch BF16 ms | runtime vs FP32 | runtime vs BF16 | "
             "file / FP32 size |", "|---|---|---|---|---|---|---|"]
    for recipe in recipes:
        _, report = bench(["--recipe", f"recipes/{recipe}.toml", "--model", model, "--batch", "1", "--threads", "1,0"])
        runtime, fp32, bf16, vs_fp32, vs_bf16 = best(report, 1)
        lines.append(f"| {recipe} | {ms_cell(runtime)} | {ms_cell(fp32)} | {ms_cell(bf16)} | {ratio_cell(vs_fp32)} | "
                     f"{ratio_cell(vs_bf16)} | {size_cell(report)} |")
    return "\n".join(lines)


def write_section(key, body):
    begin, end = f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# Results\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    open(RESULTS, "w").write(text)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "kernels"
    if which == "kernels":
        command, data = run("bench-kernels", ["--benchmark_min_time=0.5"])
        write_section("kernels", kernels_section(command, data))
    elif which == "train":
        command, data = run("bench-train", ["--benchmark_filter=train_step", "--benchmark_min_time=5"])
        write_section("train", train_section(command, data))
    elif which == "recipe-steps":
        baseline = sys.argv[sys.argv.index("--baseline") + 1] if "--baseline" in sys.argv else None
        write_section("recipe-steps", recipe_steps_section(baseline))
    elif which == "scaling":
        write_section("scaling", scaling_section())
    elif which == "models":
        write_section("models", models_section())
    elif which == "recipes":
        write_section("recipes", recipes_section())
    elif which == "swin":
        write_section("swin", swin_section())
    else:
        sys.exit(f"unknown benchmark '{which}' (kernels, train, recipe-steps, scaling, models, recipes, swin)")
    print(f"wrote the {which} figures into {os.path.relpath(RESULTS, ROOT)}")
