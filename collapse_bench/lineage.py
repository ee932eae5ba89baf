"""Checkpoint lineage: which checkpoint a model was trained from, in which stage, and the chain from the base.

A checkpoint dir (or a PEFT adapter dir) may carry ``lineage.yaml`` (written by the chain runner; read with
``yaml.safe_load`` and validated against LINEAGE_SCHEMA)::

    name: smollm2-135m-instruct/sft_math/none/s0/02-math   # optional: this checkpoint's own name
    parent: smollm2-135m-instruct/sft_math/none/s0/01-sft  # the checkpoint this one was trained from (or null)
    parent_sha256: <64 hex> | null
    stage: math                                            # this checkpoint's stage
    recipe_hash: <64 hex> | null
    intervention: none | <name[,name]> | null
    seed: 0 | null
    data: {<file>: <sha256>}                               # the stage's training data
    lineage: [{name, sha256, revision, stage}, ...]        # from the base to the parent (this one excluded)
    adapters: [{stage, path}, ...]                         # LoRA adapter dir of each stage (this one may be
                                                           # included), path relative to this file
Other keys are allowed (writers may add provenance). Without a lineage file: ``evaluate --parent P`` makes P the
parent (P's own lineage file, if any, gives the earlier chain); a PEFT adapter's base is its parent; otherwise the
checkpoint is a root. The result's ``model`` block gets ``parent``, ``stage`` and ``lineage`` = the chain from the
base to this checkpoint inclusive (its last entry is this checkpoint). Every name there is a display name
(``models.resolve``): a name in a lineage file that is an absolute path is recorded by its leaf name.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
from pathlib import Path, PurePath
from typing import Any

from .errors import CollapseBenchError
from .models import ModelSource, find_source
from .tasks.loader import read_yaml
from .tasks.schema import validate

LINEAGE_FILE = "lineage.yaml"
_LINE = r"^[^\n\r\t]*$"  # names and stages are single-line strings
_SHA = {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 300, "pattern": _LINE}
_STAGE = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": _LINE}
ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": _NAME, "sha256": _SHA, "revision": {"type": ["string", "null"], "maxLength": 200},
                   "stage": {"anyOf": [_STAGE, {"type": "null"}]}},
}
LINEAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["parent", "stage"],
    "properties": {
        "name": _NAME,
        "parent": {"anyOf": [_NAME, {"type": "null"}]},
        "parent_sha256": _SHA,
        "stage": _STAGE,
        "recipe_hash": _SHA,
        "intervention": {"type": ["string", "null"], "maxLength": 300},
        "seed": {"type": ["integer", "null"]},
        "data": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        "lineage": {"type": "array", "items": ENTRY_SCHEMA},
        "adapters": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                 "required": ["stage", "path"],
                                                 "properties": {"stage": _STAGE, "path": {"type": "string", "minLength": 1}}}},
    },
}


@dataclass(frozen=True)
class LineageFile:
    path: Path
    name: str | None
    parent: str | None
    parent_sha256: str | None
    stage: str
    lineage: tuple[dict[str, Any], ...]  # entries {name, sha256, revision, stage}, base .. parent
    adapters: tuple[tuple[str, Path], ...]  # (stage, adapter dir resolved against the file's dir)
    raw: dict[str, Any]

    def ancestors(self) -> list[dict[str, Any]]:
        """The chain from the base to the parent (just the parent when ``lineage`` is empty)."""
        if self.lineage:
            return [{**e, "name": shown(e["name"])} for e in self.lineage]
        return [entry(self.parent, self.parent_sha256, None, None)] if self.parent else []


def shown(name: str) -> str:
    """A lineage name as a result records it: an absolute path (``/...``, ``~...``, ``C:\\...``) by its leaf name."""
    if name.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
        return PurePath(name.replace("\\", "/")).name or "model"
    return name


def entry(name: str, sha256: str | None, revision: str | None, stage: str | None) -> dict[str, Any]:
    return {"name": shown(name), "sha256": sha256, "revision": revision, "stage": stage}


def read_lineage(directory: str | Path) -> LineageFile | None:
    """The validated ``lineage.yaml`` of a checkpoint/adapter dir, or None when there is none."""
    path = Path(directory).expanduser() / LINEAGE_FILE
    if not path.is_file():
        return None
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise CollapseBenchError(f"{path}: a lineage file must be a YAML mapping")
    validate(raw, LINEAGE_SCHEMA, str(path))
    chain = tuple(entry(e["name"], e.get("sha256"), e.get("revision"), e.get("stage")) for e in raw.get("lineage") or ())
    parent, parent_sha = raw["parent"], raw.get("parent_sha256")
    if chain and parent is None:
        raise CollapseBenchError(f"{path}: parent is null but lineage lists ancestors")
    if chain and chain[-1]["name"] != shown(parent) and not (parent_sha and chain[-1]["sha256"] == parent_sha):
        raise CollapseBenchError(f"{path}: the last lineage entry ({chain[-1]['name']}) is not the parent ({parent})")
    adapters = tuple((a["stage"], (path.parent / a["path"]).resolve()) for a in raw.get("adapters") or ())
    return LineageFile(path, raw.get("name"), parent, parent_sha, raw["stage"], chain, adapters, raw)


def is_adapter_dir(model: str) -> bool:
    path = Path(model).expanduser()
    return path.is_dir() and (path / "adapter_config.json").is_file()


def chain_to(source: ModelSource) -> list[dict[str, Any]]:
    """Lineage entries from the base to ``source`` inclusive."""
    path = Path(source.path)
    found = read_lineage(path) if path.is_dir() else None
    if found is not None:
        return [*found.ancestors(), entry(found.name or source.name, source.sha256, source.revision, found.stage)]
    if source.kind == "peft" and source.base is not None:
        return [*chain_to(source.base), entry(source.name, source.sha256, source.revision, None)]
    return [entry(source.name, source.sha256, source.revision, None)]


@dataclass
class Lineage:
    """A checkpoint's ancestry as far as it is known before loading it (``resolve_lineage``)."""

    file: LineageFile | None
    stage: str | None  # --stage
    parent_name: str | None  # --parent as given
    parent_source: ModelSource | None

    def fields(self, source: ModelSource) -> dict[str, Any]:
        """``parent``, ``stage`` and ``lineage`` for the result's model block of the loaded ``source`` (plus
        ``recipe`` and ``intervention`` of a chain run's lineage file, for the leaderboard's interventions view)."""
        name = source.name
        if self.file is not None:
            ancestors, parent, stage = self.file.ancestors(), self.file.parent, self.file.stage
            parent = shown(parent) if parent else None
            name = self.file.name or name
        elif self.parent_source is not None:
            ancestors, parent, stage = chain_to(self.parent_source), self.parent_source.name, self.stage
        elif source.kind == "peft" and source.base is not None:
            ancestors, parent, stage = chain_to(source.base), source.base.name, self.stage
        else:
            ancestors, parent, stage = [], None, self.stage
        chain_run = {k: self.file.raw.get(k) for k in ("recipe", "intervention")} if self.file is not None else {}
        return {"parent": parent, "stage": stage, **{k: v for k, v in chain_run.items() if isinstance(v, str)},
                "lineage": [*ancestors, entry(name, source.sha256, source.revision, stage)]}


def resolve_lineage(model: str, parent: str | None = None, stage: str | None = None) -> Lineage:
    """Read and check everything lineage-related before the model loads: the model's ``lineage.yaml``, ``--stage``
    and ``--parent`` (resolved and hashed); a conflict between flags and file is a one-line error."""
    if stage is not None:
        validate(stage, _STAGE, "--stage")
    path = Path(model).expanduser()
    found = read_lineage(path) if path.is_dir() else None
    if found is not None and stage is not None and stage != found.stage:
        raise CollapseBenchError(f"--stage {stage} contradicts {found.path} (stage: {found.stage})")
    parent_source = find_source(parent) if parent else None
    if found is not None and parent_source is not None and found.parent_sha256 \
            and parent_source.sha256 != found.parent_sha256:
        raise CollapseBenchError(f"--parent {parent} (sha256 {str(parent_source.sha256)[:12]}) is not the parent recorded in "
                                 f"{found.path} ({found.parent}, sha256 {found.parent_sha256[:12]})")
    return Lineage(found, stage, parent, parent_source)
