"""``collapse-bench noise MODEL --suite S``: the noise floor of every metric of one checkpoint.

The suite runs once as recorded (run 0, the tasks' own seeds); runs k = 1..R re-run only its stochastic tasks
(kinds in ``STOCHASTIC_KINDS``) with every stochastic part re-seeded — the probe's position/reservoir ``seed`` + k,
each plasticity seed + 1000 k, the generation seed (``--seed``) k — so a metric's spread over the runs is its seed
noise. The lm_eval metrics are deterministic given the items (not re-run); their noise is item resampling, the SD
of the item-bootstrap replicates of run 0 (``stats.N_BOOT``; acc, and ECE over 15 equal-mass bins); their other
metrics get no floor.

Per metric: ``sd`` (ddof 1 over runs; the bootstrap SD for item metrics) and the minimum detectable effect of
a paired comparison of two checkpoints measured once each, at α = 0.05 two-sided and 80 % power, normal
approximation: MDE = (z₀.₉₇₅ + z₀.₈) · √2 · sd (one measurement per row; with n paired repeats
:func:`.leaderboard.paired.mde_paired` applies). A comparison on identical seeds has correlated noise, so
this is conservative.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .cliutil import add_common, positive_int
from .errors import CollapseBenchError
from .evaluate import EvaluateRequest, evaluate
from .io import atomic_write_json, check_writable, read_jsonl
from .leaderboard import stats
from .metrics.calibration_rows import acc_ece_rows
from .ood.samples import samples_path
from .tasks import Task, TaskRegistry

STOCHASTIC_KINDS = ("probe", "plasticity", "diversity")  # what a seed changes (lm_eval, lora: deterministic)
Z_80 = 2.8015852181129683  # z_0.975 + z_0.8 (scipy.stats.norm.ppf; tests/test_noise.py recomputes it)


def reseeded(task: Task, k: int) -> dict[str, Any]:
    """The param overrides of run ``k`` for one task (empty: nothing stochastic to re-seed)."""
    if task.kind == "probe":
        return {"seed": task.params["seed"] + k}
    if task.kind == "plasticity":
        return {"seeds": [s + 1000 * k for s in task.params["seeds"]]}
    return {}


def item_sd(samples: Path) -> dict[str, float]:
    """``<task>.acc`` / ``<task>.ece`` -> SD of their item-bootstrap replicates, from a samples file."""
    from .leaderboard.entry import outcomes_with_ids

    out: dict[str, float] = {}
    if not samples.is_file():
        return out
    for task, (conf, correct, _, _) in outcomes_with_ids(list(read_jsonl(samples))).items():
        if len(conf) < 2:
            continue
        acc, ece = acc_ece_rows(conf, correct, stats.bootstrap_indices(len(conf), stats.N_BOOT, stats.seed_of("noise", task)))
        out[f"{task}.acc"], out[f"{task}.ece"] = float(acc.std(ddof=1)), float(ece.std(ddof=1))
    return out


def noise_floor(runs: list[dict[str, Any]], items: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per ``<task>.<metric>``: values over runs, sd, source and the paired MDE (module docstring)."""
    values: dict[str, list[float]] = {}
    for result in runs:
        for task, block in result["tasks"].items():
            for metric, v in block["metrics"].items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    values.setdefault(f"{task}.{metric}", []).append(float(v))
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(values):
        vals = values[key]
        if key in items:
            sd, source = items[key], "item_bootstrap"
        elif len(vals) == len(runs) and len(vals) >= 2:  # a stochastic task's metric, in every run
            sd, source = float(np.std(vals, ddof=1)), "reseeded_runs"
        else:
            continue
        mde = Z_80 * math.sqrt(2) * sd
        out[key] = {"values": vals, "sd": sd, "source": source, "mde_paired_80": mde}
    return out


def run_noise(args: argparse.Namespace) -> dict[str, Any]:
    registry = TaskRegistry(args.tasks_dir or [])
    suite = registry.suite(args.suite)
    names = args.tasks.split(",") if args.tasks else list(suite.tasks)
    tasks = [registry.task(n) for n in names]
    out = Path(args.output)
    check_writable(out)
    work = out.with_name(out.stem + ".runs")
    runs = []
    for k in range(args.replicates + 1):
        target = work / f"run{k}.json"
        mine = [t for t in tasks if k == 0 or t.kind in STOCHASTIC_KINDS]
        if not mine:
            break
        if not target.is_file():  # resumable: finished runs are kept
            overrides = {t.name: o for t in mine if (o := reseeded(t, k))}
            req = EvaluateRequest(
                model=args.model,
                suite=args.suite,
                tasks=[t.name for t in mine],
                data_dir=args.data_dir,
                output=str(target),
                device=args.device,
                dtype=args.dtype,
                seed=k,
                limit=args.limit,
                progress=not args.no_progress,
                param_overrides=overrides,
                tasks_dirs=args.tasks_dir or [],
            )
            evaluate(req)
        runs.append(json.loads(target.read_text(encoding="utf-8")))
    floor = noise_floor(runs, item_sd(samples_path(work / "run0.json")))
    doc = {
        "model": runs[0]["model"]["name"],
        "sha256": runs[0]["model"]["sha256"],
        "suite": {"name": suite.name, "version": suite.version},
        "replicates": args.replicates,
        "tasks": {t: b["hash"] for t, b in sorted(runs[0]["tasks"].items())},  # run 0's configs: what the floor is of
        "method": "runs 1..R re-run the probe, plasticity and diversity tasks re-seeded (probe seed + k, plasticity "
        "seeds + 1000 k, generation --seed k); lm_eval acc/ece: SD of run 0's item-bootstrap replicates; "
        "MDE = (z0.975 + z0.8) * sqrt(2) * sd",
        "metrics": floor,
    }
    atomic_write_json(out, doc)
    return doc


def cmd_noise(args: argparse.Namespace) -> int:
    if args.replicates < 1:
        raise CollapseBenchError("--replicates must be at least 1")
    doc = run_noise(args)
    shown = sorted(doc["metrics"].items(), key=lambda kv: kv[0])
    print(f"noise floor of {doc['model']} on {doc['suite']['name']} ({doc['replicates']} re-seeded runs + run 0):")
    for key, m in shown:
        print(f"  {key:60s} sd {m['sd']:.4g}  MDE(80%) {m['mde_paired_80']:.4g}  [{m['source']}]")
    print(f"written: {args.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "noise",
        help="noise floor of every metric of one checkpoint (re-seeded runs)",
        description="Re-run a suite with every stochastic part re-seeded and record each metric's SD and the "
        "minimum detectable effect of a paired comparison (80 % power).",
    )
    p.add_argument("model", help="model name or path (as for evaluate)")
    p.add_argument("--suite", default="standard", help="suite (default: standard)")
    p.add_argument("--tasks", help="comma-separated subset of the suite's tasks")
    p.add_argument("--replicates", type=positive_int, default=3, metavar="R", help="re-seeded runs besides run 0 (default: 3)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N items per data source (quick checks)")
    p.add_argument("--output", required=True, metavar="PATH", help="noise-floor JSON (runs are kept in PATH.runs/, resumable)")
    add_common(p, "device", "dtype", "data_dir", "tasks_dir", "no_progress")
    p.set_defaults(func=cmd_noise)
