"""Checkpoint lineage: which checkpoint a model was trained from, in which stage, and the chain from the base.

The lineage file's format is in :mod:`collapse_bench.lineagefile`. Without a lineage file: ``evaluate --parent P`` makes P the
parent (P's own lineage file, if any, gives the earlier chain); a PEFT adapter's base is its parent; otherwise the
checkpoint is a root. The result's ``model`` block gets ``parent``, ``stage`` and ``lineage`` = the chain from the
base to this checkpoint inclusive (its last entry is this checkpoint). Every name there is a display name
(``models.resolve``): a name in a lineage file that is an absolute path is recorded by its leaf name.

The probe compares a checkpoint with its lineage's base (``lineage[0]``) and its parent (``lineage[-2]``)
(:func:`reference_targets`); when a reference has no cache yet, its checkpoint is located, in this order, as
``--parent``, a PEFT base, the model beside one of the lineage file's adapter dirs whose lineage name is the
entry's (a chain run's ``NN-stage/model``), or the entry's name as a model name (a registry alias); the sha256
must be the recorded one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import ReferenceTarget
from .errors import CollapseBenchError
from .lineagefile import STAGE_SCHEMA, LineageFile, entry, read_lineage, shown
from .models import LoadedModel, ModelSource, SourceKind, find_source
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
        ``recipe``, ``intervention`` and the ``training`` or ``control`` block of a chain run's lineage file)."""
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
        chain_run = {k: self.file.raw.get(k) for k in ("recipe", "intervention", "stage_kind")} if self.file is not None else {}
        raw = self.file.raw if self.file is not None else {}
        training, control = raw.get("training"), raw.get("control")
        return {
            "parent": parent,
            "stage": stage,
            **{k: v for k, v in chain_run.items() if isinstance(v, str)},
            **({"training": training} if isinstance(training, dict) else {}),
            **({"control": control} if isinstance(control, dict) else {}),
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


def reference_targets(
    lineage: Lineage, loaded: LoadedModel, reference: str | None, ref_loaded: LoadedModel | None
) -> list[ReferenceTarget]:
    """The probe's comparison checkpoints: base and parent of ``loaded`` (its model block already has the lineage
    fields) and ``--reference``, each with a locator (module docstring)."""
    chain = loaded.info.get("lineage") or []
    out = (
        [
            ReferenceTarget(role, e["name"], e.get("sha256"), _locator(lineage, loaded.source, e))
            for role, e in (("base", chain[0]), ("parent", chain[-2]))
        ]
        if len(chain) >= 2
        else []
    )
    if reference and ref_loaded is not None:
        out.append(ReferenceTarget("reference", ref_loaded.info["name"], ref_loaded.source.sha256, lambda: reference))
    return out


def _locator(lineage: Lineage, source: ModelSource, e: dict[str, Any]) -> Callable[[], str]:
    def locate() -> str:
        sha = e.get("sha256")
        known = [lineage.parent_source, source.base, *(_bases(source.base) if source.base else [])]
        for s in known:
            if s is not None and sha and s.sha256 == sha:
                return s.given or s.path
        for _, adapter in lineage.file.adapters if lineage.file else ():
            beside = adapter.parent / "model"
            found = read_lineage(beside) if beside.is_dir() else None
            if found is not None and found.name and shown(found.name) == e["name"]:
                return str(beside)
        try:
            candidate = find_source(e["name"])
        except CollapseBenchError as exc:
            raise CollapseBenchError(f"'{e['name']}' is not beside the lineage's adapters nor a model name ({exc})") from None
        if candidate.sha256 != sha:
            raise CollapseBenchError(
                f"'{e['name']}' here has sha256 {str(candidate.sha256)[:12]}, not the recorded {str(sha)[:12]}"
            )
        return e["name"]

    return locate


def _bases(source: ModelSource) -> list[ModelSource]:
    return [source.base, *_bases(source.base)] if source.base is not None else []
