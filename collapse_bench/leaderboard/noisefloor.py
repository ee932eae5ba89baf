"""Committed noise floors (``collapse-bench noise`` outputs saved as ``submissions/**/<name>.noise.json``) and the
floor each paired comparison metric gets.

A floor belongs to one checkpoint (``sha256``) and records, per task it ran, the task's config hash (``tasks``)
and per ``<task>.<metric>`` the SD and the paired MDE at 80 % power (:mod:`collapse_bench.noise`). A comparison
metric ``<task>.<metric>`` of a row gets the floor of the row's lineage root (its base checkpoint) when that
floor was measured on the same task config (equal task hash): ``noise_sd``, ``mde_80`` and ``beyond_mde``
(|Δ| > MDE), else nulls. The floor of the base stands in for its descendants' noise (same architecture,
same protocol); the docs say so.

A metric with no per-item or per-seed evidence in the result (the probe's geometry, diversity over generations)
gets its noise from the floor's re-seeded runs — the probe re-run on other positions / reservoir draws, the
generations re-sampled with other seeds:
  * a paired comparison: Δ ± z₀.₉₇₅ · √2 · sd, p = 2 Φ(−|Δ| / (√2 · sd)) (two independent measurements; on
    identical seeds the noise is correlated, so this is conservative, as the MDE);
  * score replicates (:meth:`NoiseFloor.replicates`): value + Z Cᵀ / √(R − 1), Z ~ N(0, 1)^(B × R) one matrix per
    (row, task), C the R × M matrix of the floor's run values of the task's M metrics, centred per metric — Gaussian
    replicates whose covariance is the floor's sample covariance (each metric's SD is its ``sd``; metrics of one
    task move together as they did over the runs). Parametric: R is small (2–3 runs), the docs say so.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    runs: dict[str, tuple[float, ...]] = field(default_factory=dict)  # re-seeded metrics -> values, one per run

    def of(self, task: str, metric: str, task_hash: str | None) -> tuple[float, float] | None:
        if task_hash is None or self.task_hashes.get(task) != task_hash:
            return None
        return self.metrics.get(f"{task}.{metric}")

    def replicates(
        self, task: str, values: dict[str, float], task_hash: str | None, n_boot: int, seed: int
    ) -> dict[str, np.ndarray]:
        """metric -> ``n_boot`` Gaussian replicates of a row's ``values`` of one task with the floor's run
        covariance (module docstring); only metrics the floor re-ran on this task config."""
        if task_hash is None or self.task_hashes.get(task) != task_hash:
            return {}
        keys = sorted(m for m in values if f"{task}.{m}" in self.runs)
        if not keys:
            return {}
        centred = np.array([self.runs[f"{task}.{m}"] for m in keys], dtype=np.float64).T  # R × M
        centred -= centred.mean(axis=0)
        z = np.random.default_rng(seed).standard_normal((n_boot, centred.shape[0]))
        reps = np.array([values[m] for m in keys], dtype=np.float64) + z @ centred / math.sqrt(centred.shape[0] - 1)
        return {m: reps[:, j] for j, m in enumerate(keys)}


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
    runs: dict[str, tuple[float, ...]] = {}
    for key, m in metrics.items():
        if not (isinstance(m, dict) and _finite(m.get("sd")) and _finite(m.get("mde_paired_80"))):
            raise CollapseBenchError(f"{rel}: metrics.{key} needs finite, non-negative `sd` and `mde_paired_80`")
        out[str(key)] = (float(m["sd"]), float(m["mde_paired_80"]))
        if m.get("source") == "reseeded_runs":
            runs[str(key)] = _runs(rel, str(key), m)
    lengths: dict[str, int] = {}
    for key, vals in runs.items():  # one task's metrics come from the same runs
        task = key.split(".", 1)[0]
        if lengths.setdefault(task, len(vals)) != len(vals):
            raise CollapseBenchError(f"{rel}: metrics.{key} has {len(vals)} runs, other metrics of {task} {lengths[task]}")
    return NoiseFloor(rel, doc["sha256"], dict(tasks), out, runs)


def _runs(rel: str, key: str, m: dict[str, Any]) -> tuple[float, ...]:
    """The run values of a re-seeded metric, checked against its ``sd`` (a floor whose SD is not its runs' SD
    is refused: both are used)."""
    vals = m.get("values")
    if (
        not isinstance(vals, list)
        or len(vals) < 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals)
    ):
        raise CollapseBenchError(f"{rel}: metrics.{key}: a re-seeded metric needs `values`, ≥ 2 finite numbers")
    sd = float(np.std(np.asarray(vals, dtype=np.float64), ddof=1))
    if not math.isclose(sd, float(m["sd"]), rel_tol=1e-9, abs_tol=1e-15):
        raise CollapseBenchError(f"{rel}: metrics.{key}: `sd` {m['sd']!r} is not the SD of its `values` ({sd!r})")
    return tuple(float(v) for v in vals)


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
