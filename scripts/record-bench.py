#!/usr/bin/env python3
"""Runs a Google Benchmark program and writes its figures, with the command, commit and CPU, into a
marked section of docs/results.md (replacing the previous figures of that benchmark).

    scripts/record-bench.py kernels   # binary GEMM tiers vs LibTorch FP32 / BF16, one thread
    scripts/record-bench.py train     # training throughput of the small FP DeiTs, batch 128
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results.md")


def run(binary, extra):
    cmd = [os.path.join(ROOT, "build", "bench", binary), "--benchmark_format=json"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return " ".join(os.path.relpath(cmd[0], ROOT).split() + extra), json.loads(out)


def provenance(command):
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results.md"], capture_output=True, text=True).stdout.strip()
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
    return "\n".join(lines)


def train_section(command, data):
    lines = [provenance(command), "", "| model | threads | batch | images/s |", "|---|---|---|---|"]
    for b in data["benchmarks"]:
        parts = b["name"].split("/")
        lines.append(f"| {parts[1]} | {int(b['threads'])} | {parts[2]} | {b['images/s']:.0f} |")
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
        command, data = run("bench-train", ["--benchmark_min_time=5"])
        write_section("train", train_section(command, data))
    else:
        sys.exit(f"unknown benchmark '{which}' (kernels, train)")
    print(f"wrote the {which} figures into {os.path.relpath(RESULTS, ROOT)}")
