"""Verification evidence: ``reproduce --record`` writes ``<stem>.verified.json`` next to a submission once every
metric reproduced within tolerance; ``validate`` checks the file; the site marks the row "✓ verified".

The file records what was reproduced (the submission's file name, the sha256 of its bytes and of every samples file
it references), by whom (``--reproducer``, optional) and how (the harness, the reproduction's environment: torch,
transformers, lm-eval versions, device, dtype; the tolerance rules' source and digest), and the per-metric table
(recorded, reproduced, |Δ|, tolerance) with the largest |Δ| / tolerance. Files are named, never located: no absolute
path. A verification whose sha256s no longer match the files beside it is *stale*: ``validate`` rejects it and the
site ignores it. Writing is atomic and happens only after a passing reproduction; an existing file that still
verifies the same bytes is replaced only with ``--force`` (checked before anything is evaluated); a stale or
unreadable one is replaced.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError
from ..io import atomic_write_json, clip, is_absolute_path, sha256_file, sha256_json
from ..schemas import validate as validate_schema
from .submission import (
    VERIFIED_SUFFIX,
    SubmissionError,
    absolute_paths,
    name_problem,
    read_submission,
    samples_path,
    samples_refs,
)

SCHEMA_ID = "collapse-bench/verification"
SCHEMA_VERSION = 1
ENV_KEYS = ("torch", "transformers", "lm_eval", "python", "numpy", "device", "gpu", "cuda", "cpu", "torch_threads")
_SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
_VALUE = {"type": ["number", "string", "boolean", "null"]}
ROW_KEYS = ("task", "metric", "recorded", "reproduced", "delta", "tolerance", "ok")  # a row of reproduce's table
_ROW = {
    "type": "object",
    "additionalProperties": False,
    "required": list(ROW_KEYS),
    "properties": {
        "task": _TEXT,
        "metric": _TEXT,
        "recorded": _VALUE,
        "reproduced": _VALUE,
        "delta": {"type": ["number", "null"], "minimum": 0},
        "tolerance": {"type": "number", "minimum": 0},
        "ok": {"const": True},
    },
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "schema_version", "submission", "reproducer", "harness", "environment", "device", "dtype",
                 "tolerance", "comparison"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "schema_version": {"const": SCHEMA_VERSION},
        "submission": {
            "type": "object",
            "additionalProperties": False,
            "required": ["file", "sha256", "samples"],
            "properties": {"file": _TEXT, "sha256": _SHA, "samples": {"type": "object", "additionalProperties": _SHA}},
        },
        "reproducer": {"type": ["string", "null"], "minLength": 1, "maxLength": 100},
        "harness": {
            "type": "object",
            "required": ["name", "version"],
            "properties": {"name": {"const": "collapse-bench"}, "version": {"type": ["string", "null"], "maxLength": 100}},
            "additionalProperties": {"type": ["string", "boolean", "null"], "maxLength": 100},
        },
        "environment": {"type": "object", "additionalProperties": {"type": ["string", "integer", "null"], "maxLength": 200}},
        "device": _TEXT,
        "dtype": _TEXT,
        "tolerance": {
            "type": "object",
            "additionalProperties": False,
            "required": ["source", "sha256"],
            "properties": {"source": _TEXT, "sha256": _SHA},
        },
        "comparison": {
            "type": "object",
            "additionalProperties": False,
            "required": ["metrics", "max_delta_over_tolerance", "worst", "rows"],
            "properties": {
                "metrics": {"type": "integer", "minimum": 1},
                "max_delta_over_tolerance": {"type": "number", "minimum": 0, "maximum": 1},
                "worst": {"type": ["string", "null"], "maxLength": 400},
                "rows": {"type": "array", "minItems": 1, "maxItems": 100000, "items": _ROW},
            },
        },
    },
}  # fmt: skip


def evidence_path(submission: Path) -> Path:
    """``<stem>.verified.json`` beside ``<stem>.json``."""
    return submission.with_name(submission.name.removesuffix(".json") + VERIFIED_SUFFIX)


def _ratio(row: dict[str, Any]) -> float:
    delta, tol = row["delta"], row["tolerance"]
    if delta is None or delta == 0:
        return 0.0
    return delta / tol if tol > 0 else math.inf


def worst(rows: list[dict[str, Any]]) -> tuple[float, str | None]:
    """(max |Δ| / tolerance, its ``task.metric``; None when every |Δ| is 0) over the diff rows."""
    best = max(rows, key=_ratio)
    ratio = _ratio(best)
    return ratio, f"{best['task']}.{best['metric']}" if ratio > 0 else None


def samples_hashes(submission: Path, doc: dict[str, Any]) -> dict[str, str]:
    """File name -> sha256 of every samples file the submission references (as found beside it)."""
    out = {}
    for fpath, ref in samples_refs(doc):
        target = samples_path(submission, "/".join(fpath), ref)
        out[target.name] = sha256_file(target) if target.is_file() else ""
    return dict(sorted(out.items()))


def evidence(
    submission: Path,
    rows: list[dict[str, Any]],
    reproduced: dict[str, Any],
    rules: list[dict[str, Any]],
    tolerance: str | None = None,
    reproducer: str | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """The evidence document of a passing reproduction of ``submission`` (``rows``: :func:`.reproduce.diff_metrics`;
    ``reproduced``: the new result; ``rules``/``tolerance``: the tolerance rules and the --tolerance FILE, if any;
    ``sha256``: the submission's hash when the reproduction started, which it must still have)."""
    if not rows or not all(r["ok"] for r in rows):
        raise CollapseBenchError("a verification needs a reproduction with every metric within tolerance")
    if sha256 is not None and sha256_file(submission) != sha256:
        raise CollapseBenchError(f"{submission}: changed while it was reproduced; nothing recorded")
    ratio, at = worst(rows)
    env = reproduced.get("environment") or {}
    keys = ("name", "version", "git_sha", "git_dirty", "code_sha256")
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "submission": {
            "file": submission.name,
            "sha256": sha256_file(submission),
            "samples": samples_hashes(submission, read_submission(submission)),
        },
        "reproducer": reproducer,
        "harness": {k: reproduced["harness"].get(k) for k in keys},
        "environment": {k: env.get(k) for k in ENV_KEYS if k in env},
        "device": str(reproduced["config"]["device"]),
        "dtype": str(reproduced["config"]["dtype"]),
        "tolerance": {"source": Path(tolerance).name if tolerance else "metric specs", "sha256": sha256_json(rules)},
        "comparison": {
            "metrics": len(rows),
            "max_delta_over_tolerance": ratio,
            "worst": at,
            "rows": [{k: r[k] for k in ROW_KEYS} for r in rows],
        },
    }


def check_evidence(path: Path) -> dict[str, Any]:
    """Every check of one ``*.verified.json`` (one-line :class:`SubmissionError`s): strict JSON, the schema, safe
    names and no absolute path, a self-consistent table, the submission beside it (else: orphan) with the recorded
    sha256s, its own and its samples files' (else: stale). Returns the document."""
    doc = read_submission(path)
    validate_schema(doc, SCHEMA, str(path))
    who = doc["reproducer"]
    if who is not None and (problem := name_problem(who)):
        raise SubmissionError(path, "reproducer", problem)
    for fld, _ in absolute_paths(doc):
        raise SubmissionError(path, fld, "is an absolute path of the reproducer's disk; a verification names files only")
    comp = doc["comparison"]
    ratio, at = worst(comp["rows"])
    if comp["metrics"] != len(comp["rows"]) or abs(ratio - comp["max_delta_over_tolerance"]) > 1e-9 or at != comp["worst"]:
        raise SubmissionError(path, "comparison", "metrics, max_delta_over_tolerance and worst do not match the rows")
    sub = doc["submission"]
    expected = path.name.removesuffix(VERIFIED_SUFFIX) + ".json"
    if sub["file"] != expected:
        raise SubmissionError(path, "submission/file", f"names {sub['file']!r}; the verification of {expected} must name it")
    target = path.with_name(expected)
    if target.is_symlink() or not target.is_file():
        raise SubmissionError(path, "submission/file", f"orphan verification: {expected} is not next to it")
    rerun = f"re-run `collapse-bench reproduce {expected} --record` or delete this file"
    if sha256_file(target) != sub["sha256"]:
        raise SubmissionError(
            path, "submission/sha256", f"stale verification: {expected} changed since it was reproduced; {rerun}"
        )
    found = samples_hashes(target, read_submission(target))
    for name in sorted(set(found) | set(sub["samples"])):
        if found.get(name) != sub["samples"].get(name):
            raise SubmissionError(
                path, f"submission/samples/{name}", f"stale verification: samples file {name} is not the one reproduced; {rerun}"
            )
    return doc


def verification(submission: Path) -> dict[str, Any] | None:
    """The evidence beside ``submission`` when it passes :func:`check_evidence` (matching sha256s), else None."""
    path = evidence_path(submission)
    if not path.is_file():
        return None
    try:
        return check_evidence(path)
    except CollapseBenchError:
        return None


def check_reproducer(name: str | None) -> None:
    """``--reproducer NAME``: a short, safe display name (shown on the site), never a path."""
    if name is None:
        return
    problem = name_problem(name) or ("is a path" if is_absolute_path(name) else None)
    if problem or not 0 < len(name) <= 100:
        raise CollapseBenchError(f"--reproducer {clip(name, 80)!r}: {problem or 'needs 1 to 100 characters'}")


def refuse_replacing(submission: Path, force: bool) -> None:
    """Before a ``--record`` run: refuse (one line) to replace evidence that still verifies these bytes, unless ``force``."""
    found = verification(submission)
    if found is not None and not force:
        by = f" by {found['reproducer']}" if found["reproducer"] else ""
        raise CollapseBenchError(
            f"{evidence_path(submission)}: already verifies {submission.name}{by}; pass --force to replace it"
        )


def record(submission: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` (:func:`evidence`) atomically as the submission's evidence file, after checking it."""
    path = evidence_path(submission)
    for fld, _ in absolute_paths(doc):
        raise CollapseBenchError(f"{path}: {fld}: is an absolute path; refusing to record it")
    validate_schema(doc, SCHEMA, str(path))
    atomic_write_json(path, doc)
    return path


def mark(found: dict[str, Any] | None, href: str) -> dict[str, str] | None:
    """The site's "✓ verified" link of a row: ``href`` (the evidence file) and a title saying who and how."""
    if found is None:
        return None
    comp, h = found["comparison"], found["harness"]
    who = found["reproducer"] or "a maintainer"
    title = (
        f"reproduced by {who} with collapse-bench {h.get('version') or '?'} on {found['device']} ({found['dtype']}): "
        f"{comp['metrics']} metrics within tolerance, max |Δ|/tolerance {comp['max_delta_over_tolerance']:.2g}"
    )
    return {"href": href, "title": title}
