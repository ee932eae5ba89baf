"""``collapse-bench validate PATH...``: is a result file fit for the leaderboard?

Checks, in order, stopping at a file's first failure (one line ``FILE: field: reason`` each):
no symlinks, size cap and strict JSON (:mod:`.submission`); the result JSON Schema, which types every
field the site reads (:func:`collapse_bench.results.validate_result`); a model sha256 and model dimensions
that are consistent with each other (and with the registry for known checkpoints); names (no control
characters, ``<``/``>``, backslashes or ``..``); the suite and every task exist in this repo or in
``released.json``, and each task hash equals :meth:`Task.task_hash` of this repo's YAML (or of a released
older config) over the recorded data hashes, which must be exactly the ones this repo vouches for
(:mod:`.evidence`); every number that reaches the site in its documented range (the metric specs,
:mod:`collapse_bench.metrics.spec`: metrics, per-layer series, per-seed values, curves); samples files present,
not symlinks, with the recorded sha256, strictly typed, and every metric they determine recomputed and equal (:mod:`.evidence`);
``complete`` recomputed; at most one row per (model sha256, suite, suite version). Verification files
(``*.verified.json``, written by ``reproduce --record``) are checked too (:func:`.verified.check_evidence`):
schema, names, and the sha256s of the submission beside them (an orphan or stale one fails).
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError
from ..io import atomic_write_bytes, sha256_json
from ..metrics import spec as metric_spec
from ..results import validate_result
from ..tasks import Task, TaskRegistry
from .evidence import check_complete, check_data, check_per_seed, check_samples_content
from .forked import fork_map
from .submission import (
    VERIFIED_SUFFIX,
    Submission,
    SubmissionError,
    check_names,
    check_samples,
    read_submission,
    row_key,
    submission_files,
)
from .verified import check_evidence

SLACK = 1e-9
MODEL_BOUNDS = ("hidden_size", "num_layers", "vocab_size")
# checkpoints whose shape this repo knows (registry aliases, by the sha256 of their GGUF)
KNOWN_MODELS: dict[str, dict[str, int]] = {
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53": {
        "hidden_size": 576,
        "num_layers": 30,
        "vocab_size": 49152,
    },
}


class Rules(list):
    """The range rules in registry order, with the first rule matching a metric id memoised per id."""

    def __init__(self, rules: list[dict[str, Any]]) -> None:
        super().__init__(rules)
        self._first: dict[str, dict[str, Any] | None] = {}

    def first(self, metric: str) -> dict[str, Any] | None:
        if metric not in self._first:
            self._first[metric] = next((r for r in self if fnmatch.fnmatchcase(metric, r["metric"])), None)
        return self._first[metric]


def ranges() -> Rules:
    """The range rules, one per metric spec in registry order (:mod:`collapse_bench.metrics.spec`): the first
    whose ``metric`` glob matches decides; a spec without a range allows any finite number. Built once per
    registry (keyed by the registry's module names, cheap to hash, unlike the ~100 specs themselves)."""
    return _ranges_of(metric_spec.SPEC_MODULES)


@functools.lru_cache(maxsize=8)
def _ranges_of(modules: tuple[str, ...]) -> Rules:
    rules = []
    for s in metric_spec.load_specs(modules):
        r = s.range or metric_spec.Range()
        rules.append({"metric": s.id, "min": r.lo, "max": r.hi, "min_exclusive": r.lo_open, "max_exclusive": r.hi_open})
    return Rules(rules)


def released_path() -> Path:
    return Path(str(resources.files(__package__).joinpath("released.json")))


def released() -> dict[str, Any]:
    return json.loads(released_path().read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=4)
def _registry() -> TaskRegistry:
    return TaskRegistry()


# --- ranges ------------------------------------------------------------------------------------------


def _bound(value: Any, model: dict[str, Any]) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    if value == "ln_vocab_size":
        return math.log(model["vocab_size"]) if model.get("vocab_size") else None
    if value in MODEL_BOUNDS:
        return model.get(value)
    raise ValueError(f"metric spec: unknown range bound {value!r}")


def range_problem(metric: str, value: float, model: dict[str, Any]) -> str | None:
    """Why ``value`` is outside the documented range of ``metric`` (first matching glob), or None."""
    rule = ranges().first(metric)
    if rule is not None:
        lo, hi = _bound(rule.get("min"), model), _bound(rule.get("max"), model)
        lo_open, hi_open = rule.get("min_exclusive", False), rule.get("max_exclusive", False)
        bad_lo = lo is not None and (value <= lo if lo_open else value < lo - SLACK * max(1.0, abs(lo)))
        bad_hi = hi is not None and (value >= hi if hi_open else value > hi + SLACK * max(1.0, abs(hi)))
        if bad_lo or bad_hi:
            left = f"{'(' if lo_open else '['}{_show(rule.get('min'), lo)}"
            right = f"{_show(rule.get('max'), hi)}{')' if hi_open else ']'}"
            return f"{value:g} is outside the documented range {left}, {right} of '{rule['metric']}' (metric spec)"
        return None
    return None


def _show(raw: Any, value: float | None) -> str:
    if raw is None or value is None:
        return "-inf" if raw is None else f"{raw}=?"
    return f"{raw}={value:g}" if isinstance(raw, str) else f"{value:g}"


def check_ranges(path: Path, doc: dict[str, Any]) -> None:
    model = doc["model"]
    for task, block in doc["tasks"].items():
        for metric, value in block["metrics"].items():
            problem = value is not None and range_problem(metric, value, model)
            if problem:
                raise SubmissionError(path, f"tasks/{task}/metrics/{metric}", problem)
        for metric, series in (block.get("per_layer") or {}).items():
            if metric in ("layers", "post_final_norm"):
                continue
            for i, value in enumerate(series):
                problem = value is not None and range_problem(metric, value, model)
                if problem:
                    raise SubmissionError(path, f"tasks/{task}/per_layer/{metric}/{i}", problem)
        for seed, row in (block.get("per_seed") or {}).items():
            for metric, value in row.items():
                problem = value is not None and range_problem(metric, value, model)
                if problem:
                    raise SubmissionError(path, f"tasks/{task}/per_seed/{seed}/{metric}", problem)
        for seed, curve in (block.get("curves") or {}).items():
            for metric, series in curve.items():
                for i, value in enumerate(series):
                    problem = range_problem(metric, value, model)
                    if problem:
                        raise SubmissionError(path, f"tasks/{task}/curves/{seed}/{metric}/{i}", problem)


def check_model(path: Path, model: dict[str, Any]) -> None:
    """Dimensions the ranges depend on must be consistent: an embedding matrix (vocab × hidden) and one
    hidden × hidden matrix per layer fit in the parameter count, and a known checkpoint has its known shape."""
    if not model.get("sha256"):
        raise SubmissionError(path, "model/sha256", "a submission needs the weights' content hash (null here)")
    known = KNOWN_MODELS.get(model["sha256"])
    for key, value in (known or {}).items():
        if model.get(key) != value:
            raise SubmissionError(path, f"model/{key}", f"{model.get(key)} is not the {value} of the checkpoint with this sha256")
    dims = [model.get(k) for k in ("hidden_size", "num_layers", "vocab_size", "num_parameters")]
    if all(isinstance(v, int) for v in dims):
        d, layers, vocab, params = (v for v in dims if isinstance(v, int))  # all four, checked above
        if vocab * d + layers * d * d > params:
            raise SubmissionError(
                path,
                "model/hidden_size",
                f"hidden_size {d} with {layers} layers and vocabulary {vocab} "
                f"needs more than the {params} parameters the model block records",
            )
    elif any(isinstance(v, int) for v in dims[:3]):
        raise SubmissionError(
            path, "model/num_parameters", "hidden_size, num_layers and vocab_size need num_parameters beside them"
        )


# --- suite and tasks vs this repo ---------------------------------------------------------------------


def task_config(task: Task) -> dict[str, Any]:
    """The hashed config of a task (the YAML with defaults filled in), as ``released.json`` keeps it."""
    return {
        "version": task.version,
        "kind": task.kind,
        "config": task.config,
        "params": task.params,
        "config_sha256": sha256_json({**task.config, "params": task.params}),
    }


def _released_task(name: str, entry: dict[str, Any]) -> Task:
    cfg = entry["config"]
    return Task(
        name,
        entry["version"],
        entry["kind"],
        cfg.get("description", ""),
        tuple(cfg.get("data") or ()),
        entry["params"],
        released_path(),
        cfg,
    )


def match_task(path: Path, name: str, block: dict[str, Any]) -> tuple[str, Task]:
    """Which version of task ``name`` the block's hash matches ("current v1" / "released v1 (0.1.0)"), and that task."""
    current = _registry().tasks.get(name)
    old = released()["tasks"].get(name, [])
    if current is None and not old:
        raise SubmissionError(path, f"tasks/{name}", f"unknown task '{name}' (not in this repo's tasks/ nor in released.json)")
    data = block["data"]
    tried = []
    if current is not None:
        tried.append(f"current v{current.version}")
        if current.version == block["version"] and current.kind == block["kind"] and current.task_hash(data) == block["hash"]:
            return f"{name}: current v{current.version}", current
    for entry in old:
        tried.append(f"released v{entry['version']} ({entry['released_in']})")
        task = _released_task(name, entry)
        if task.version == block["version"] and task.kind == block["kind"] and task.task_hash(data) == block["hash"]:
            return f"{name}: released v{task.version} ({entry['released_in']})", task
    raise SubmissionError(
        path,
        f"tasks/{name}/hash",
        f"does not match task '{name}' v{block['version']} recomputed from the recorded data hashes (tried {', '.join(tried)})",
    )


def check_suite(path: Path, doc: dict[str, Any]) -> tuple[str, list[str], dict[str, int]]:
    """(note, the suite version's task list, its per-task limits)."""
    suite = doc["suite"]
    name, version = suite["name"], suite["version"]
    current = _registry().suites.get(name)
    versions = [e["version"] for e in released()["suites"].get(name, [])]
    if current is None and not versions:
        raise SubmissionError(path, "suite/name", f"unknown suite '{name}'")
    if current is not None and current.version == version:
        matched, tasks, limits = f"suite {name}: current v{version}", list(current.tasks), dict(current.limits)
    elif version in versions:
        matched, limits = f"suite {name}: released v{version}", {}
        tasks = next(list(e["tasks"]) for e in released()["suites"][name] if e["version"] == version)
    else:
        known = sorted({*versions, *([current.version] if current else [])})
        raise SubmissionError(path, "suite/version", f"suite '{name}' v{version} is not a version of this repo (known: {known})")
    missing = [t for t in suite["tasks"] if t not in doc["tasks"]]
    if missing:
        raise SubmissionError(path, "suite/tasks", f"lists '{missing[0]}' but the result has no such task block")
    return matched, tasks, limits


# --- one file, many files -----------------------------------------------------------------------------


def validate_file(path: Path) -> Submission:
    """Every per-file check; raises :class:`SubmissionError` at the first failure."""
    doc = read_submission(path)
    validate_result(doc, str(path))  # JSON Schema; raises "FILE: field: message"
    check_model(path, doc["model"])
    check_names(path, doc)
    note, suite_tasks, limits = check_suite(path, doc)
    notes = [note]
    limit = doc["config"].get("limit")
    for name, block in doc["tasks"].items():
        matched, task = match_task(path, name, block)
        check_data(path, name, block, task, limit or limits.get(name))
        notes.append(matched)
    check_ranges(path, doc)
    for name, block in doc["tasks"].items():
        check_per_seed(path, name, block)
    files = check_samples(path, doc)
    check_samples_content(path, doc, files)
    if doc["model"].get("sha256_scheme") == "weights-json-v1":
        notes.append("legacy checkpoint hash weights-json-v1 (weights and *.json only; reproduce refuses it)")
    why = check_complete(path, doc, suite_tasks)
    if why is not None:
        notes.append(f"incomplete, not ranked: {why}")
    return Submission(path, doc, notes, complete=why is None)


def _check_one(f: Path) -> Submission | str:
    try:
        return validate_file(f)
    except CollapseBenchError as exc:
        return str(exc)


def _checked(files: list[Path]) -> list[Submission | str]:
    """:func:`validate_file` of each file (the submission, or its one-line error), in order, on every core
    (:func:`.forked.fork_map`): every file is checked on its own."""
    return fork_map(_check_one, files)


@dataclass
class Report:
    ok: list[Submission]
    failures: list[str]
    verified: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)  # accepted *.verified.json files


def validate_paths(paths: Iterable[str | Path], existing: dict[tuple[str, str, int], Path] | None = None) -> Report:
    """Validate every result file and every verification (``*.verified.json``, :func:`.verified.check_evidence`)
    under ``paths``; ``existing`` maps row key -> file already accepted (duplicates of those, and of earlier files
    in sorted order, fail)."""
    seen = dict(existing or {})
    ok, failures = [], []
    try:
        given = submission_files(paths)  # given files as they are, a dir's results
        found = [*given, *submission_files(paths, suffix=VERIFIED_SUFFIX)]  # and a dir's verifications
        evidence = dict.fromkeys(f for f in found if f.name.endswith(VERIFIED_SUFFIX))
        files = [f for f in given if f not in evidence]
    except CollapseBenchError as exc:
        return Report([], [str(exc)])
    for f, got in zip(files, _checked(files)):
        try:
            if isinstance(got, str):
                raise CollapseBenchError(got)
            sub = got
            key = row_key(sub.doc)
            if key in seen and seen[key].resolve() != f.resolve():
                raise SubmissionError(
                    f,
                    "model/sha256",
                    f"duplicate of {seen[key]}: one row per model sha256, suite and "
                    "suite version (replace that file to update the row)",
                )
            seen[key] = f
            ok.append(sub)
        except CollapseBenchError as exc:
            failures.append(str(exc))
    verified = []
    for f in evidence:
        try:
            verified.append((f, check_evidence(f)))
        except CollapseBenchError as exc:
            failures.append(str(exc))
    return Report(ok, failures, verified)


def record_release(version: str) -> int:
    """Append this repo's current task configs and suites to ``released.json`` (a maintainer step at a release)."""
    reg, rel = _registry(), released()
    added = 0
    for name in sorted(reg.tasks):
        entry = {**task_config(reg.tasks[name]), "released_in": version}
        if not any(e["version"] == entry["version"] for e in rel["tasks"].setdefault(name, [])):
            rel["tasks"][name].append(entry)
            added += 1
    for name in sorted(reg.suites):
        s = reg.suites[name]
        if not any(e["version"] == s.version for e in rel["suites"].setdefault(name, [])):
            rel["suites"][name].append({"version": s.version, "tasks": list(s.tasks), "released_in": version})
            added += 1
    atomic_write_bytes(released_path(), (json.dumps(rel, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return added


def cmd_validate(args: argparse.Namespace) -> int:
    if args.record_release:
        print(f"released.json: {record_release(args.record_release)} entries added")
        return 0
    if not args.paths:
        raise CollapseBenchError("give at least one result file or directory")
    report = validate_paths(args.paths)
    for sub in report.ok:
        print(f"OK {sub.path} ({'; '.join(sub.notes)})")
    for path, doc in report.verified:
        print(f"OK {path} (verification of {doc['submission']['file']}: {doc['comparison']['metrics']} metrics reproduced)")
    for line in report.failures:  # one line per rejected file, in the CLI's error format
        print(f"collapse-bench: error: {line}", file=sys.stderr)
    extra = f", {len(report.verified)} verification{'s' * (len(report.verified) != 1)}" if report.verified else ""
    print(f"{len(report.ok)} valid{extra}, {len(report.failures)} rejected")
    return 1 if report.failures else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check result files for the leaderboard",
        description="Validate result files (or directories of them) for submission; one line per failure.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="result files or directories (searched for *.json)")
    p.add_argument("--record-release", metavar="VERSION", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_validate)
