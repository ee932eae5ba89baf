"""Committed noise floors (``collapse-bench noise`` outputs saved as ``submissions/**/<name>.noise.json``) and the
floor each paired comparison metric gets.

A floor belongs to one checkpoint (``sha256``) and records, per task it ran, the task's config hash (``tasks``)
and per ``<task>.<metric>`` the SD and the paired MDE at 80 % power (:mod:`collapse_bench.noise`). A comparison
metric ``<task>.<metric>`` of a row gets the floor of the row's lineage root (its base checkpoint) when that
floor was measured on the same task config (equal task hash): ``noise_sd``, ``mde_80`` and ``beyond_mde``
(|Δ| > MDE), else nulls. The floor of the base stands in for its descendants' noise (same architecture,
same protocol); the docs say so.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError
from .entry import Entry, display_name
from .submission import NOISE_SUFFIX, submission_files

SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class NoiseFloor:
    path: str  # relative to the submissions dir
    sha256: str
    task_hashes: dict[str, str]
    metrics: dict[str, tuple[float, float]]  # <task>.<metric> -> (sd, mde_paired_80)

    def of(self, task: str, metric: str, task_hash: str | None) -> tuple[float, float] | None:
        if task_hash is None or self.task_hashes.get(task) != task_hash:
            return None
        return self.metrics.get(f"{task}.{metric}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def read_floor(path: Path, root: Path) -> NoiseFloor:
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CollapseBenchError(f"{rel}: not a readable noise floor ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sha256"), str) or not SHA.match(doc["sha256"]):
        raise CollapseBenchError(f"{rel}: a noise floor needs the checkpoint's 64-hex `sha256`")
    tasks, metrics = doc.get("tasks"), doc.get("metrics")
    if not isinstance(tasks, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tasks.items()):
        raise CollapseBenchError(f"{rel}: `tasks` must map each task to its config hash")
    if not isinstance(metrics, dict):
        raise CollapseBenchError(f"{rel}: `metrics` must be an object")
    out: dict[str, tuple[float, float]] = {}
    for key, m in metrics.items():
        if not (isinstance(m, dict) and _finite(m.get("sd")) and _finite(m.get("mde_paired_80"))):
            raise CollapseBenchError(f"{rel}: metrics.{key} needs finite, non-negative `sd` and `mde_paired_80`")
        out[str(key)] = (float(m["sd"]), float(m["mde_paired_80"]))
    return NoiseFloor(rel, doc["sha256"], dict(tasks), out)


def load_noise_floors(submissions: Path) -> dict[str, NoiseFloor]:
    """sha256 -> floor of every ``*.noise.json`` under ``submissions`` (two floors of one checkpoint: refused)."""
    floors: dict[str, NoiseFloor] = {}
    for f in submission_files([submissions], suffix=NOISE_SUFFIX):
        floor = read_floor(f, submissions)
        if floor.sha256 in floors:
            raise CollapseBenchError(f"{floor.path}: a second noise floor of {floor.sha256[:12]} ({floors[floor.sha256].path})")
        floors[floor.sha256] = floor
    return floors


def annotate(rows: list[dict[str, Any]], floor: NoiseFloor | None, task_hashes: dict[str, str | None]) -> None:
    """Add ``noise_sd``, ``mde_80`` and ``beyond_mde`` to each comparison metric row (module docstring)."""
    for row in rows:
        got = floor.of(row["task"], row["metric"], task_hashes.get(row["task"])) if floor else None
        row["noise_sd"], row["mde_80"] = got if got else (None, None)
        row["beyond_mde"] = None if got is None or row["delta"] is None else bool(abs(row["delta"]) > got[1])


FLOOR_EXAMPLES = ("probe_standard.effective_rank", "plasticity_standard_gsm8k.gain", "mmlu.acc")


def row_floors(entries: list[Entry], floors: dict[str, NoiseFloor]) -> list[dict[str, Any]]:
    """The committed noise floors that apply to these rows (one index table): a row's checkpoint (sha256) with at
    least one task of the same hash; with the floor's size and the minimum detectable paired effect of a few metrics."""
    out = []
    for entry in entries:
        floor = floors.get(str(entry.doc["model"].get("sha256")))
        hashes = {t: b.get("hash") for t, b in entry.doc["tasks"].items()}
        same = sum(floor.task_hashes.get(t) == h for t, h in hashes.items()) if floor is not None else 0
        if floor is None or not same:
            continue
        examples = [(k, floor.metrics[k][1]) for k in FLOOR_EXAMPLES if k in floor.metrics]
        model = display_name(entry.result.model)
        out.append({"path": floor.path, "model": model, "n": len(floor.metrics), "mde": examples, "tasks": (same, len(hashes))})
    return out
