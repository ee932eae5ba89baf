"""A whole lineage in one load vs one ``evaluate`` per stage, measured side by side in one run (issue 18).

(a) N separate ``collapse-bench evaluate STAGE`` processes, one per stage of a chain run, in order;
(b) one ``collapse-bench evaluate --lineage RUN`` process (model built once, each stage's weights swapped in).
Each mode starts from an empty reference cache of its own (``COLLAPSE_BENCH_REFERENCE_CACHE``), so both run the same
probe passes (the base's first, then each stage's, whose cache is the next stage's parent). The printed figures are
wall seconds of the whole processes; the results of the two modes are compared block by block (durations aside).
Target: (b)/(a) <= 0.8 for N = 3 on SmolLM2 ``probe_standard``.

Usage: python benchmarks/lineage_eval.py RUN_DIR [--stages 3] [--tasks probe_standard] [--data-dir DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from collapse_bench.lineagefile import chain_stages, stage_label


def blocks(doc: dict) -> dict:
    return {n: {k: v for k, v in t.items() if k != "duration_s"} for n, t in doc["tasks"].items()}


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--tasks", default="probe_standard")
    ap.add_argument("--data-dir")
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()
    stages = chain_stages(args.run_dir)[: args.stages]
    work = Path(tempfile.mkdtemp(prefix="lineage-bench-"))
    run = work / "run"  # the first N stages only, linked (the stage dirs are read, never written)
    run.mkdir()
    for ckpt in stages:
        stage_dir = ckpt.parent if ckpt.name == "model" else ckpt
        (run / stage_label(ckpt)).symlink_to(stage_dir.resolve())
    common = ["--tasks", args.tasks, "--device", "cpu", "--no-progress"]
    common += ["--data-dir", args.data_dir] if args.data_dir else []
    common += ["--limit", str(args.limit)] if args.limit else []
    cli = [sys.executable, "-m", "collapse_bench", "evaluate"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    sep_env = {**env, "COLLAPSE_BENCH_REFERENCE_CACHE": str(work / "cache-sep")}
    separate = 0.0
    for ckpt in chain_stages(run):
        label = stage_label(ckpt)
        separate += timed([*cli, str(ckpt), *common, "--output", str(work / "sep" / f"{label}.json")], sep_env)
    one_env = {**env, "COLLAPSE_BENCH_REFERENCE_CACHE": str(work / "cache-one")}
    one = timed([*cli, "--lineage", str(run), *common, "--output", str(work / "one")], one_env)

    same = True
    for path in sorted((work / "sep").glob("*.json")):
        a, b = json.loads(path.read_text()), json.loads((work / "one" / path.name).read_text())
        same &= blocks(a) == blocks(b) and a["model"] == b["model"]
    print(f"stages: {len(stages)}, tasks: {args.tasks}, limit: {args.limit}")
    print(f"(a) {len(stages)} separate evaluates: {separate:8.1f} s")
    print(f"(b) one evaluate --lineage:       {one:8.1f} s")
    print(f"ratio (b)/(a): {one / separate:.3f} (target <= 0.8); results identical: {same}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
