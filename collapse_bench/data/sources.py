"""Resolve a task's data references to rows, with the sha256 of every file read (for the task hash).

A data reference is one of
  ``{dataset, split}``  -> ``<data_dir>/<dataset>/<split>.jsonl``      key ``<dataset>/<split>.jsonl``
  ``{path}``            -> a JSONL file relative to the task's YAML      key ``task:<path>``
  ``{builtin}``         -> an offline generated/stdlib source            key ``builtin:<name>@v<version>``
optionally with ``n`` (seeded sample size), ``template`` (``{field}`` placeholders), ``filter``
(equality on fields), ``domain`` and ``role``.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from ..errors import CollapseBenchError
from ..io import read_jsonl, sha256_file, sha256_json
from .builtin import BUILTINS, builtin_rows
from .datadir import dataset_file

Row = dict[str, Any]


class DataRef(TypedDict, total=False):
    """One data reference as a task or recipe YAML writes it (validated by ``tasks.schema.DATA_REF_SCHEMA``:
    exactly one of dataset+split, path or builtin)."""

    dataset: str
    split: str
    path: str
    builtin: str
    n: int  # seeded sample size
    template: str  # ``{field}`` placeholders
    filter: dict[str, str | int | float | bool]  # equality on fields
    domain: str
    role: str  # e.g. harmful | benign (safety stages)


@dataclass(frozen=True)
class LoadedRef:
    key: str
    sha256: str
    rows: list[Row]  # after filter and seeded sample, in file order
    domain: str
    ref: DataRef


def builtin_key(name: str) -> str:
    """The data key of a builtin source: ``builtin:<name>@v<version>``."""
    return f"builtin:{name}@v{BUILTINS[name].version}"


def mirror_key(ref: DataRef) -> str:
    """The data key of a mirror reference: ``<dataset>/<split>.jsonl`` (its path under the data dir)."""
    return f"{ref['dataset']}/{ref['split']}.jsonl"


def load_ref(ref: DataRef, *, task_path: Path, data_dir: Path | None, seed: int, limit: int | None = None) -> LoadedRef:
    """Load one reference: read (or generate) the rows, filter, then take a seeded sample in file order."""
    if "builtin" in ref:
        name = ref["builtin"]
        rows = builtin_rows(name)
        key, digest = builtin_key(name), sha256_json(rows)
        default_domain = BUILTINS[name].domain
    else:
        if "path" in ref:
            path = (task_path.parent / ref["path"]).resolve()
            if not path.is_file():
                raise CollapseBenchError(f"{task_path}: data file '{ref['path']}' not found (resolved to {path})")
            key = f"task:{ref['path']}"
            default_domain = path.stem
        else:
            if data_dir is None:
                raise CollapseBenchError(f"{task_path}: needs a data dir (--data-dir) for {ref['dataset']}/{ref['split']}")
            path = dataset_file(data_dir, ref["dataset"], ref["split"])
            key = mirror_key(ref)
            default_domain = ref["dataset"]
        digest = sha256_file(path)
        rows = list(read_jsonl(path))
    for field, value in (ref.get("filter") or {}).items():
        rows = [r for r in rows if r.get(field) == value]
    n = ref.get("n")
    if limit is not None:
        n = min(n, limit) if n else limit
    if n is not None and n < len(rows):
        picked = sorted(random.Random(f"{seed}:{key}").sample(range(len(rows)), n))
        rows = [rows[i] for i in picked]
    if not rows:
        raise CollapseBenchError(f"{task_path}: data reference {key} selects no rows")
    return LoadedRef(key, digest, rows, ref.get("domain") or default_domain, ref)


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n".join(f"{str(m.get('role', 'user')).capitalize()}: {m['content']}" for m in value)
    if isinstance(value, list):
        return "\n".join(map(str, value))
    return str(value)


def template_fields(template: str) -> list[str]:
    """Field names of a ``{field}`` template; attribute/index access and format specs are refused."""
    names = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise CollapseBenchError(f"template field '{{{name}}}' not allowed: use plain {{field}} placeholders")
        names.append(name)
    return names


def render(template: str, row: Row, where: str) -> str:
    """Fill a ``{field}`` template from a row (messages lists rendered as ``Role: content`` lines)."""
    fields = template_fields(template)
    missing = [f for f in fields if f not in row]
    if missing:
        raise CollapseBenchError(f"{where}: row {row.get('id', '?')} has no field '{missing[0]}' used by the template")
    return template.format_map({f: _render_value(row[f]) for f in fields})
