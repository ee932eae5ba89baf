"""What ``validate`` recomputes instead of trusting: suite completeness, data hashes, metrics from samples.

* **Completeness.** A row is *complete* (ranked) only when its task set equals the suite version's task
  list (extra tasks of kind ``lora`` allowed) and ``config.limit`` is null; a row that claims
  ``suite.complete: true`` otherwise is refused. Incomplete rows are valid but unranked.
* **Data.** Every ``tasks.<t>.data`` entry must be one this repo can vouch for, and the set must be exactly
  the task's: ``builtin:<name>@v<n>`` regenerated here, ``world:…`` (plasticity) regenerated here,
  ``lm_eval:<file>`` hashed from this repo's lm-eval YAMLs, ``<dataset>/<split>.jsonl`` equal to the hash
  pinned in ``collapse_bench/data/pinned.json`` (the leaderboard's data mirror). Anything else is refused.
* **Samples.** Samples files are parsed strictly (typed fields, finite numbers); for every multiple-choice
  task the calibration block and the metrics it determines (acc, acc_norm, their stderr, ECE variants, Brier,
  NLL, AUROC, selective accuracy, temperature, SCE, AURC, E-AURC: ``calibration.METRICS``) are recomputed from
  the records and must equal the recorded ones (to 1e-9 relative: the same numpy code, so only a different
  BLAS/numpy could move the last bits), as must the record and doc counts. A calibration variant written
  before SCE/AURC/E-AURC existed (none of them recorded) is compared without them (``calibration.as_recorded``).
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from ..data.sources import mirror_key
from ..io import json_differences, sha256_json
from ..results.complete import OPTIONAL_KINDS, result_incompleteness
from ..tasks import Task
from ..tasks.lmeval_yaml import config_hashes, index
from ..tasks.loader import include_dir
from .submission import SubmissionError

REL_EQUAL = 1e-9


# --- completeness -------------------------------------------------------------------------------------


def check_complete(path: Path, doc: dict[str, Any], suite_tasks: list[str]) -> str | None:
    """The recomputed reason for incompleteness (None = complete); a false ``complete: true`` claim is refused."""
    why = result_incompleteness(doc, suite_tasks)
    if why is not None and doc["suite"].get("complete") is True:
        raise SubmissionError(path, "suite/complete", f"claims a complete suite run, but {why}")
    listed = {t for t in doc["suite"]["tasks"] if doc["tasks"][t]["kind"] not in OPTIONAL_KINDS}
    if why is None and listed != set(suite_tasks):
        raise SubmissionError(path, "suite/tasks", "does not list the suite version's tasks")
    return why


# --- data ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def pinned() -> dict[str, Any]:
    """``{"files": {"<dataset>/<split>.jsonl": {"sha256", "rows"}}}`` of the leaderboard's data mirror."""
    text = resources.files("collapse_bench.data").joinpath("pinned.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _builtin(name: str) -> tuple[str, str]:
    from ..data.builtin import builtin_rows
    from ..data.sources import builtin_key

    return builtin_key(name), sha256_json(builtin_rows(name))


@functools.cache
def _world(seed: int, entities: int, limit: int | None) -> dict[str, str]:
    from ..plasticity.data import world_data

    return world_data(seed, entities, limit).data_hashes


def _lm_eval_files(task: Task) -> dict[str, str]:
    src = include_dir(task)
    found = index(src)
    name = task.params.get("lm_eval_task") or task.name
    if name not in found:
        return {}
    return config_hashes(src, found[name])


def expected_data(task: Task, limit: int | None) -> dict[str, str | None]:
    """key -> sha256 that this repo vouches for (None: a mirror file that is not pinned)."""
    out: dict[str, str | None] = {}
    if task.kind == "lm_eval":
        out.update(_lm_eval_files(task))
    if task.kind == "plasticity" and task.params.get("source") == "world":
        out.update(_world(task.params["world_seed"], task.params["world_entities"], limit))
    files = pinned()["files"]
    for ref in task.data:
        if "builtin" in ref:
            key, digest = _builtin(ref["builtin"])
            out[key] = digest
        elif "dataset" in ref:
            key = mirror_key(ref)
            out[key] = (files.get(key) or {}).get("sha256")
        else:
            out[f"task:{ref.get('path')}"] = None  # a user task's own file: nothing to vouch for
    return out


def check_data(path: Path, name: str, block: dict[str, Any], task: Task, limit: int | None) -> None:
    """The block's data hashes are exactly the ones this repo vouches for."""
    want, have = expected_data(task, limit), block["data"]
    for key in sorted(set(want) | set(have)):
        fld = f"tasks/{name}/data/{key}"
        if key not in want:
            raise SubmissionError(path, fld, f"task '{name}' reads no such data (unknown data key)")
        if key not in have:
            raise SubmissionError(path, f"tasks/{name}/data", f"lacks '{key}', which task '{name}' reads")
        if want[key] is None:
            raise SubmissionError(
                path, fld, "is not a file of the leaderboard's pinned data mirror (collapse_bench/data/pinned.json)"
            )
        if have[key] != want[key]:
            what = (
                "one regenerated here"
                if key.startswith(("builtin:", "world:"))
                else "hash of this repo's file"
                if key.startswith("lm_eval:")
                else "one pinned for the leaderboard's data mirror"
            )
            raise SubmissionError(path, fld, f"sha256 {str(have[key])[:12]}… is not the {what} ({str(want[key])[:12]}…)")


# --- samples ------------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def record_problem(rec: Any) -> str | None:
    """Why a samples record is malformed (typed, finite), or None. Two shapes: multiple choice, generation."""
    if not isinstance(rec, dict) or not isinstance(rec.get("task"), str) or not _is_int(rec.get("doc_id")):
        return "a record needs a string 'task' and an integer 'doc_id'"
    if rec.get("id") is not None and not isinstance(rec["id"], (str, int)):
        return "'id' must be a string, an integer or null"
    if "loglik" in rec:
        ll, chars, nbytes = rec.get("loglik"), rec.get("choice_chars"), rec.get("choice_bytes")
        if not isinstance(ll, list) or len(ll) < 2 or not all(_is_num(v) for v in ll):
            return "'loglik' must be a list of at least two finite numbers"
        for key, val in (("choice_chars", chars), ("choice_bytes", nbytes)):
            if not isinstance(val, list) or len(val) != len(ll) or not all(_is_int(v) and v >= 0 for v in val):
                return f"'{key}' must list a non-negative integer per choice"
        if not _is_int(rec.get("gold")) or not 0 <= rec["gold"] < len(ll):
            return "'gold' must be an integer index into the choices"
        if rec.get("correct") not in (0, 1) or isinstance(rec.get("correct"), bool):
            return "'correct' must be 0 or 1"
        pred = max(range(len(ll)), key=lambda k: (ll[k], -k))
        if rec["correct"] != int(pred == rec["gold"]):
            return "'correct' disagrees with argmax 'loglik' == 'gold'"
        allowed = {"task", "doc_id", "id", "gold", "loglik", "choice_chars", "choice_bytes", "correct"}
    else:
        for key in ("filter", "response"):
            if not isinstance(rec.get(key), str):
                return f"a generation record needs a string '{key}'"
        if not isinstance(rec.get("samples"), list) or not all(isinstance(s, str) for s in rec["samples"]):
            return "'samples' must be a list of strings"
        if rec.get("target") is not None and not isinstance(rec["target"], (str, int, float)):
            return "'target' must be a string, a number or null"
        allowed = {"task", "doc_id", "id", "filter", "target", "response", "samples"}
    unknown = sorted(set(rec) - allowed)
    return f"unknown field '{unknown[0]}'" if unknown else None


def read_records(result: Path, samples: Path) -> list[dict[str, Any]]:
    """Every record of a samples file, strictly parsed (one error line naming file, line and reason)."""
    out = []
    try:
        text = samples.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubmissionError(result, f"samples {samples.name}", f"not UTF-8 text (byte {exc.start})") from None

    def no_constants(token: str) -> Any:
        raise ValueError(f"non-finite number {token}")

    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line, parse_constant=no_constants)
        except ValueError as exc:
            raise SubmissionError(result, f"samples {samples.name}:{lineno}", f"malformed record ({str(exc)[:120]})") from None
        problem = record_problem(rec)
        if problem:
            raise SubmissionError(result, f"samples {samples.name}:{lineno}", problem)
        out.append(rec)
    return out


def _close(a: Any, b: Any) -> bool:
    """Equal leaves: numbers to REL_EQUAL relative (+1e-12 absolute), anything else exactly."""
    if _is_num(a) and _is_num(b):
        return abs(a - b) <= REL_EQUAL * max(abs(a), abs(b)) + 1e-12
    return bool(a == b)


def _first_difference(fresh: Any, stored: Any, where: str) -> str | None:
    """The field of the first leaf (sorted keys) where ``fresh`` and ``stored`` differ under :func:`_close`."""
    for path, _, _ in json_differences(fresh, stored, _close):
        return "/".join([where, *map(str, path)])
    return None


def _stderr(p: float, n: int) -> float | None:
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else None


def mc_expected(records: list[dict[str, Any]], recorded: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(calibration block, metrics) that the records of one multiple-choice task determine; the block in the shape
    of the ``recorded`` one when given (:func:`~..metrics.calibration.as_recorded`), the metrics all of them."""
    from ..metrics.calibration import METRICS, as_recorded, calibration_block

    full = calibration_block(records)
    cal, prim, norm = as_recorded(full, recorded), full["primary"], full["length_normalised"]
    n = prim["n"]
    metrics = {
        "acc": prim["accuracy"],
        "acc_norm": norm["accuracy"],
        "acc_stderr": _stderr(prim["accuracy"], n),
        "acc_norm_stderr": _stderr(norm["accuracy"], n),
        **{k: prim[k] for k in METRICS},  # every one, so that a recorded metric is checked even if its block lacks it
    }
    return cal, metrics


def check_samples_content(path: Path, doc: dict[str, Any], files: dict[str, Path]) -> None:
    """Records typed and finite; counts and every samples-determined metric equal to the recorded ones."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(set(files.values())):
        for rec in read_records(path, name):
            by_task.setdefault(rec["task"], []).append(rec)
    referenced = {t for t, b in doc["tasks"].items() if isinstance(b.get("samples"), dict)}
    stray = sorted(set(by_task) - referenced)
    if stray:
        raise SubmissionError(path, f"tasks/{stray[0]}", "the samples file holds records of a task that does not reference it")
    for name in sorted(referenced):
        block, recs = doc["tasks"][name], by_task.get(name, [])
        fld = f"tasks/{name}"
        if block["samples"].get("records") != len(recs):
            raise SubmissionError(
                path,
                f"{fld}/samples/records",
                f"records {block['samples'].get('records')} but the samples file holds {len(recs)} for this task",
            )
        counts = block.get("counts") or {}
        held = len({r["doc_id"] for r in recs}) + int(counts.get("skipped_no_gold") or 0)
        if counts.get("docs") is not None and counts["docs"] != held:
            raise SubmissionError(path, f"{fld}/counts/docs", f"{counts['docs']} docs but the samples hold {held}")
        mc = [r for r in recs if "loglik" in r]
        if not mc:
            continue
        if len(mc) != len(recs):
            raise SubmissionError(path, fld, "mixes multiple-choice and generation records")
        cal, metrics = mc_expected(mc, block.get("calibration"))
        where = _first_difference(cal, block.get("calibration"), f"{fld}/calibration")
        if where:
            raise SubmissionError(path, where, "differs from the value recomputed from the samples file")
        for key, value in metrics.items():
            if key in block["metrics"] and not _close(value, block["metrics"][key]):
                raise SubmissionError(
                    path,
                    f"{fld}/metrics/{key}",
                    f"{block['metrics'][key]!r} differs from {value!r} recomputed from the samples file",
                )


# --- per-seed consistency (plasticity) ------------------------------------------------------------------


def check_per_seed(path: Path, name: str, block: dict[str, Any]) -> None:
    """What per-seed values determine must agree with them: each seed's ``gain`` = (b0 − bK) / b0 and its
    curve's first/last bits per byte; each summary metric the mean (``*_std`` the sample SD, ddof 1) of the
    seeds' values. The site's CIs are bootstrapped from ``per_seed``, so these close the forging route."""
    seeds = block.get("per_seed") or {}
    curves = block.get("curves") or {}
    fld = f"tasks/{name}/per_seed"
    for seed, row in seeds.items():
        b0, bk = row.get("bpb_initial"), row.get("bpb_final")
        if _is_num(b0) and _is_num(bk) and _is_num(row.get("gain")) and b0 > 0 and not _close(row["gain"], (b0 - bk) / b0):
            raise SubmissionError(path, f"{fld}/{seed}/gain", "is not (bpb_initial - bpb_final) / bpb_initial of the same seed")
        bpb = (curves.get(seed) or {}).get("bpb")
        if bpb and _is_num(b0) and _is_num(bk) and not (_close(bpb[0], b0) and _close(bpb[-1], bk)):
            raise SubmissionError(
                path, f"tasks/{name}/curves/{seed}/bpb", "does not start at bpb_initial and end at bpb_final of that seed"
            )
    if not seeds:
        return
    metrics = block["metrics"]
    for key in sorted({k for row in seeds.values() for k in row}):
        vals = [row.get(key) for row in seeds.values()]
        if not all(_is_num(v) for v in vals):
            continue
        mean = sum(vals) / len(vals)
        if key in metrics and metrics[key] is not None and not _close(metrics[key], mean):
            raise SubmissionError(
                path, f"tasks/{name}/metrics/{key}", f"{metrics[key]!r} is not the mean {mean!r} of the per-seed values"
            )
        std_key = f"{key}_std"
        if len(vals) > 1 and metrics.get(std_key) is not None:
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
            if not _close(metrics[std_key], sd) and abs(metrics[std_key] - sd) > 1e-9 * max(1.0, abs(mean)):
                raise SubmissionError(
                    path,
                    f"tasks/{name}/metrics/{std_key}",
                    f"{metrics[std_key]!r} is not the sample SD {sd!r} of the per-seed values",
                )
