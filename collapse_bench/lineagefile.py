"""The checkpoint lineage file: ``lineage.yaml`` in a checkpoint dir (or a PEFT adapter dir), written by the chain
runner, read with :func:`collapse_bench.yamlio.read_yaml` and validated against LINEAGE_SCHEMA::

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
Other keys are allowed (writers may add provenance). Every name is recorded as a display name: a name that is
an absolute path is recorded by its leaf name (:func:`shown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from .errors import CollapseBenchError
from .io import is_absolute_path
from .schemas import validate
from .yamlio import read_yaml

LINEAGE_FILE = "lineage.yaml"
TRAINING_KINDS = ("sft", "dpo", "safety", "math", "code", "long_cot")  # the post-training stage kinds (``stage_kind``)
CONTROL_KINDS = ("svd_truncate", "extrapolate", "permute")  # planted-collapse controls (chain/surgery.py)
_LINE = r"^[^\n\r\t]*$"  # names and stages are single-line strings
_SHA = {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 300, "pattern": _LINE}
STAGE_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": _LINE}
ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": _NAME,
        "sha256": _SHA,
        "revision": {"type": ["string", "null"], "maxLength": 200},
        "stage": {"anyOf": [STAGE_SCHEMA, {"type": "null"}]},
    },
}
LINEAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["parent", "stage"],
    "properties": {
        "name": _NAME,
        "parent": {"anyOf": [_NAME, {"type": "null"}]},
        "parent_sha256": _SHA,
        "stage": STAGE_SCHEMA,
        "recipe_hash": _SHA,
        "intervention": {"type": ["string", "null"], "maxLength": 300},
        "seed": {"type": ["integer", "null"]},
        "data": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        "lineage": {"type": "array", "items": ENTRY_SCHEMA},
        "adapters": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["stage", "path"],
                "properties": {"stage": STAGE_SCHEMA, "path": {"type": "string", "minLength": 1}},
            },
        },
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
    if is_absolute_path(name):
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


STAGE_DIR_NAME = r"^\d\d-[\w.-]+$"


def chain_stages(run_dir: Path) -> list[Path]:
    """The checkpoint dirs of a chain run's stages, in order: ``NN-stage/model`` (the chain runner's layout), or
    ``NN-stage`` itself when it holds a checkpoint (``config.json`` / ``adapter_config.json``)."""
    import re

    if not run_dir.is_dir():
        raise CollapseBenchError(f"lineage {run_dir}: not a directory")
    found = []
    for d in sorted(run_dir.iterdir()):
        if not (re.match(STAGE_DIR_NAME, d.name) and d.is_dir()):
            continue
        for cand in (d / "model", d):
            if any((cand / f).is_file() for f in ("config.json", "adapter_config.json")):
                found.append(cand)
                break
    if not found:
        raise CollapseBenchError(f"lineage {run_dir}: no NN-stage checkpoint dirs in it")
    return found


def stage_label(checkpoint: Path) -> str:
    """A checkpoint dir's name for files: ``NN-stage`` for a chain stage's ``NN-stage/model``, else its leaf."""
    return checkpoint.parent.name if checkpoint.name == "model" else checkpoint.name
