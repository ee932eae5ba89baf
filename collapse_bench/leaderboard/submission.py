"""Reading one submission file safely: size cap, strict JSON, hostile names, samples-file references.

Every problem is a :class:`SubmissionError` whose message is one line ``FILE: field: reason`` (field =
the JSON path joined with ``/``, as the schema check reports it; ``(file)`` for the file as a whole).
"""

from __future__ import annotations

import functools
import json
import math
import os
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError
from ..io import is_absolute_path, sha256_file, sha256_json
from ..results.model import Result

MAX_RESULT_BYTES = 10 * 1024 * 1024  # a probe+lm-eval result is ~100 KB; 10 MB leaves room for curves
MAX_SAMPLES_BYTES = 50 * 1024 * 1024  # per-item records of the full suite are a few MB
SAMPLES_SUFFIX = ".samples.jsonl"


class SubmissionError(CollapseBenchError):
    """One failed check of one file: ``FILE: field: reason``."""

    def __init__(self, file: str | Path, fld: str, reason: str) -> None:
        self.file, self.field, self.reason = str(file), fld, reason
        super().__init__(f"{file}: {fld}: {reason}")


@dataclass
class Submission:
    path: Path
    doc: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # e.g. which task version matched
    complete: bool = True  # recomputed by the validator (evidence.completeness); incomplete rows are not ranked

    @property
    def model(self) -> dict[str, Any]:
        return self.doc["model"]

    @functools.cached_property
    def result(self) -> Result:
        """The typed view of the validated document."""
        return Result.from_doc(self.doc)


def _refuse_link(p: Path) -> None:
    if p.is_symlink():
        raise SubmissionError(p, "(file)", "is a symbolic link; submissions and samples files must be regular files")


NOISE_SUFFIX = ".noise.json"  # a noise floor (``collapse-bench noise``), read by :mod:`.noisefloor`, not a result
VERIFIED_SUFFIX = ".verified.json"  # the evidence of ``reproduce --record`` (:mod:`.verified`), not a result
SIDE_SUFFIXES = (NOISE_SUFFIX, VERIFIED_SUFFIX)


def submission_files(paths: Iterable[str | Path], suffix: str = ".json") -> list[Path]:
    """Result files among ``paths``, in the order given (a dir contributes its ``*.json`` files in sorted
    order, hidden ones, noise floors (``*.noise.json``) and verifications (``*.verified.json``) skipped; with
    ``suffix=NOISE_SUFFIX`` or ``VERIFIED_SUFFIX`` only those); each file once. Earlier files win duplicate
    checks. A symbolic link anywhere in a given tree (file or directory) is refused: it could point outside the
    submissions."""
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        _refuse_link(p)
        if p.is_dir():
            inner = []
            for root, dirs, names in os.walk(p, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for entry in [*dirs, *names]:
                    _refuse_link(Path(root) / entry)
                inner += [Path(root) / n for n in names if _wanted(n, suffix)]
            found.update(dict.fromkeys(sorted(inner, key=lambda f: f.as_posix())))
        elif p.is_file():
            found[p] = None
        else:
            raise SubmissionError(p, "(file)", "no such file or directory")
    return list(found)


def _wanted(name: str, suffix: str) -> bool:
    if name.startswith(".") or not name.endswith(suffix):
        return False
    return suffix in SIDE_SUFFIXES or not name.endswith(SIDE_SUFFIXES)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def first_non_finite(obj: Any, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], float] | None:
    """Path and value of the first NaN/inf in a nested structure (document order), else None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        hit = first_non_finite(value, (*path, str(key)))
        if hit:
            return hit
    return None


def field_name(path: Iterable[Any]) -> str:
    return "/".join(str(p) for p in path) or "(top level)"


def read_submission(path: str | Path) -> dict[str, Any]:
    """Parse a result file: size cap, UTF-8, JSON (a truncated file is named as such), no duplicate keys,
    no NaN/Infinity tokens. The schema is checked separately."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_RESULT_BYTES:
        raise SubmissionError(
            path, "(file)", f"{size / 2**20:.1f} MB exceeds the {MAX_RESULT_BYTES // 2**20} MB cap for a result file"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubmissionError(path, "(file)", f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise SubmissionError(path, "(file)", "empty file")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):  # EOF inside a string
            raise SubmissionError(
                path, "(file)", f"truncated JSON: the document ends at line {exc.lineno} before it is complete"
            ) from None
        raise SubmissionError(path, "(file)", f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # duplicate key
        raise SubmissionError(path, "(file)", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise SubmissionError(path, "(file)", "JSON nested too deeply") from None
    try:
        hit = first_non_finite(doc)
    except RecursionError:
        raise SubmissionError(path, "(file)", "JSON nested too deeply") from None
    if hit:
        raise SubmissionError(path, field_name(hit[0]), f"non-finite number {hit[1]!r} (NaN/Infinity are not valid JSON numbers)")
    return doc


# --- names -------------------------------------------------------------------------------------------


def name_fields(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, value) of every free-text name a submission carries (all are shown on the site)."""
    model = doc.get("model") or {}
    for key in ("name", "parent", "stage", "recipe", "intervention", "revision"):
        if isinstance(model.get(key), str):
            yield f"model/{key}", model[key]
    if isinstance(model.get("base"), dict) and isinstance(model["base"].get("name"), str):
        yield "model/base/name", model["base"]["name"]
    for i, entry in enumerate(model.get("lineage") or []):
        for key in ("name", "stage"):
            if isinstance(entry, dict) and isinstance(entry.get(key), str):
                yield f"model/lineage/{i}/{key}", entry[key]
    if isinstance((doc.get("suite") or {}).get("name"), str):
        yield "suite/name", doc["suite"]["name"]
    for task in doc.get("tasks") or {}:
        yield f"tasks/{task}", task


def name_problem(value: str) -> str | None:
    """Why a name is refused, or None. Refused: control/format characters (incl. bidi overrides, NUL),
    ``<`` and ``>`` (HTML; the site escapes everything anyway), backslashes and ``..`` path components.
    Plain ``/`` is allowed (hub ids ``org/model``, local checkpoint paths)."""
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return f"control character U+{ord(ch):04X} is not allowed in names"
    if "<" in value or ">" in value:
        return "'<' and '>' are not allowed in names (HTML/script)"
    if "\\" in value:
        return "backslash is not allowed in names"
    if ".." in value.split("/"):
        return "path traversal ('..' component) is not allowed in names"
    return None


def absolute_paths(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(field, value) of every string in a result that is an absolute path of the submitter's disk."""
    if isinstance(obj, str):
        if is_absolute_path(obj):
            yield field_name(path), obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from absolute_paths(value, (*path, str(key)))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from absolute_paths(value, (*path, str(i)))


def check_names(path: Path, doc: dict[str, Any]) -> None:
    """Free-text names are safe to show, and no string anywhere is an absolute path of the submitter's disk."""
    for fld, value in name_fields(doc):
        problem = name_problem(value)
        if problem:
            raise SubmissionError(path, fld, problem)
    for fld, _ in absolute_paths(doc):
        raise SubmissionError(
            path, fld, "is an absolute path of the submitter's disk; results record display names and relative paths only"
        )


# --- samples files -----------------------------------------------------------------------------------


def samples_refs(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every ``samples: {path, sha256}`` reference in a result (any depth), in document order."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "samples" and isinstance(value, dict) and "path" in value and "sha256" in value:
                yield (*path, key), value
            else:
                yield from samples_refs(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from samples_refs(value, (*path, str(i)))


def samples_path(result: Path, fld: str, ref: dict[str, Any]) -> Path:
    """The samples file a reference points to: a plain file name next to the result (nothing else)."""
    name = ref.get("path")
    if not isinstance(name, str) or not name or name != Path(name).name or name in (".", "..") or "\\" in name:
        raise SubmissionError(result, f"{fld}/path", "must be a plain file name next to the result (no directories)")
    if not name.endswith(SAMPLES_SUFFIX):
        raise SubmissionError(result, f"{fld}/path", f"a samples file name must end with {SAMPLES_SUFFIX}")
    return result.parent / name


def check_samples(result: Path, doc: dict[str, Any]) -> dict[str, Path]:
    """Each referenced samples file exists, is a regular file (no symlink) under the size cap and has the
    recorded sha256; returns task -> samples file. The message never shows the file's actual hash."""
    found = {}
    for fpath, ref in samples_refs(doc):
        fld = field_name(fpath)
        target = samples_path(result, fld, ref)
        if target.is_symlink():
            raise SubmissionError(
                result, f"{fld}/path", f"samples file {target.name} is a symbolic link; it must be a regular file"
            )
        if not target.is_file():
            raise SubmissionError(result, f"{fld}/path", f"samples file {target.name} not found next to the result")
        if target.stat().st_size > MAX_SAMPLES_BYTES:
            raise SubmissionError(result, f"{fld}/path", f"samples file exceeds the {MAX_SAMPLES_BYTES // 2**20} MB cap")
        if sha256_file(target) != ref["sha256"]:
            raise SubmissionError(
                result, f"{fld}/sha256", f"samples file {target.name} does not have the sha256 the result records"
            )
        found[fpath[-2] if len(fpath) >= 2 else ""] = target
    return found


# --- identity ----------------------------------------------------------------------------------------


def identity(doc: dict[str, Any]) -> str:
    """sha256 of what makes a row unique: model sha256 + suite name/version + every task's hash."""
    return sha256_json(
        {
            "model": doc["model"]["sha256"],
            "suite": [doc["suite"]["name"], doc["suite"]["version"]],
            "tasks": {name: block["hash"] for name, block in sorted(doc["tasks"].items())},
        }
    )


def row_key(doc: dict[str, Any]) -> tuple[str, str, int]:
    """What the leaderboard allows once: (model sha256, suite name, suite version). A second file with the same
    key is refused as a duplicate, whatever its tasks; to update a row, replace its file."""
    return doc["model"]["sha256"], doc["suite"]["name"], doc["suite"]["version"]


def short_hash(doc: dict[str, Any]) -> str:
    return identity(doc)[:12]
