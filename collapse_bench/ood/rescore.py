"""``collapse-bench rescore RESULT``: recompute calibration from a result's saved per-sample records, on
CPU and without the model; the samples file's sha256 is checked first. Exit 0 when every recomputed
number equals the stored one exactly, 1 otherwise (the differences are printed). A result written before
``sce``, ``aurc`` and ``eaurc`` existed is compared without them (:func:`~..metrics.calibration.as_recorded`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError
from ..io import json_differences


def rescore(result_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(recomputed calibration blocks by task, stored ones) for every multiple-choice task with samples."""
    from ..metrics.calibration import as_recorded, calibration_block
    from .samples import load_for_result

    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CollapseBenchError(f"result file not found: {result_path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CollapseBenchError(f"{result_path}: not a result JSON ({exc})") from None
    if not isinstance(result, dict) or not isinstance(result.get("tasks"), dict):
        raise CollapseBenchError(f"{result_path}: not a collapse-bench result (no tasks block)")
    records = load_for_result(result_path, result)
    fresh, stored = {}, {}
    for name, recs in records.items():
        mc = [r for r in recs if "loglik" in r]
        if mc and "calibration" in result["tasks"][name]:
            stored[name] = result["tasks"][name]["calibration"]
            fresh[name] = as_recorded(calibration_block(mc), stored[name])
    if not fresh:
        raise CollapseBenchError(f"{result_path}: no multiple-choice task with saved samples to rescore")
    return fresh, stored


def differences(fresh: Any, stored: Any, where: str = "") -> list[str]:
    """Paths where two JSON-like values differ (exact comparison, floats included)."""
    return [
        where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) + f": stored {b!r}, recomputed {a!r}"
        for path, a, b in json_differences(fresh, stored)
    ]


def cmd_rescore(args: argparse.Namespace) -> int:
    path = Path(args.result)
    fresh, stored = rescore(path)
    diffs = []
    for name in fresh:
        diffs += differences(fresh[name], stored[name], name)
        prim = fresh[name]["primary"]
        shown = ", ".join(
            f"{k}={prim[k]:.4g}" if isinstance(prim[k], float) else f"{k}={prim[k]}"
            for k in ("n", "accuracy", "ece", "ece_width", "brier", "nll", "auroc", "temperature_opt", "sce", "aurc", "eaurc")
            if k in prim
        )
        print(f"{name}: {shown}")
    if args.json:
        print(json.dumps(fresh, indent=2, sort_keys=True))
    if diffs:
        print(f"{len(diffs)} value(s) differ from the stored result:")
        for d in diffs[:20]:
            print(f"  {d}")
        return 1
    print(f"calibration of {len(fresh)} task(s) reproduced exactly from {path.name}'s samples file")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "rescore",
        help="recompute calibration from a result's saved samples (CPU, no model)",
        description="Recompute calibration metrics from the per-sample records saved next to RESULT "
        "(sha256-checked) and compare them with the stored numbers.",
    )
    p.add_argument("result", metavar="RESULT", help="a result JSON written by `collapse-bench evaluate`")
    p.add_argument("--json", action="store_true", help="also print the recomputed calibration blocks as JSON")
    p.set_defaults(func=cmd_rescore)
