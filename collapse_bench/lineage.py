"""Checkpoint lineage: which checkpoint a model was trained from, in which stage, and the chain from the base.

The lineage file's format is in :mod:`collapse_bench.lineagefile`. Without a lineage file: ``evaluate --parent P`` makes P the
parent (P's own lineage file, if any, gives the earlier chain); a PEFT adapter's base is its parent; otherwise the
checkpoint is a root. The result's ``model`` block gets ``parent``, ``stage`` and ``lineage`` = the chain from the
base to this checkpoint inclusive (its last entry is this checkpoint). Every name there is a display name
(``models.resolve``): a name in a lineage file that is an absolute path is recorded by its leaf name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CollapseBenchError
from .lineagefile import STAGE_SCHEMA, LineageFile, entry, read_lineage, shown
from .models import ModelSource, SourceKind, find_source
from .schemas import validate


def chain_to(source: ModelSource) -> list[dict[str, Any]]:
    """Lineage entries from the base to ``source`` inclusive."""
    path = Path(source.path)
    found = read_lineage(path) if path.is_dir() else None
    if found is not None:
        return [*found.ancestors(), entry(found.name or source.name, source.sha256, source.revision, found.stage)]
    if source.kind is SourceKind.PEFT and source.base is not None:
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
        ``recipe``, ``intervention`` and the ``training`` block of a chain run's lineage file)."""
        name = source.name
        parent: str | None
        stage: str | None
        if self.file is not None:
            ancestors, parent, stage = self.file.ancestors(), self.file.parent, self.file.stage
            parent = shown(parent) if parent else None
            name = self.file.name or name
        elif self.parent_source is not None:
            ancestors, parent, stage = chain_to(self.parent_source), self.parent_source.name, self.stage
        elif source.kind is SourceKind.PEFT and source.base is not None:
            ancestors, parent, stage = chain_to(source.base), source.base.name, self.stage
        else:
            ancestors, parent, stage = [], None, self.stage
        chain_run = {k: self.file.raw.get(k) for k in ("recipe", "intervention")} if self.file is not None else {}
        training = self.file.raw.get("training") if self.file is not None else None
        return {
            "parent": parent,
            "stage": stage,
            **{k: v for k, v in chain_run.items() if isinstance(v, str)},
            **({"training": training} if isinstance(training, dict) else {}),
            "lineage": [*ancestors, entry(name, source.sha256, source.revision, stage)],
        }


def resolve_lineage(model: str, parent: str | None = None, stage: str | None = None) -> Lineage:
    """Read and check everything lineage-related before the model loads: the model's ``lineage.yaml``, ``--stage``
    and ``--parent`` (resolved and hashed); a conflict between flags and file is a one-line error."""
    if stage is not None:
        validate(stage, STAGE_SCHEMA, "--stage")
    path = Path(model).expanduser()
    found = read_lineage(path) if path.is_dir() else None
    if found is not None and stage is not None and stage != found.stage:
        raise CollapseBenchError(f"--stage {stage} contradicts {found.path} (stage: {found.stage})")
    parent_source = find_source(parent) if parent else None
    if found is not None and parent_source is not None and found.parent_sha256 and parent_source.sha256 != found.parent_sha256:
        raise CollapseBenchError(
            f"--parent {parent} (sha256 {str(parent_source.sha256)[:12]}) is not the parent recorded in "
            f"{found.path} ({found.parent}, sha256 {found.parent_sha256[:12]})"
        )
    return Lineage(found, stage, parent, parent_source)
