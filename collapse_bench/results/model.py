"""The typed view of a result file (schema_version 1) that the leaderboard, ``compare``, ``reproduce`` and
``submit`` read instead of digging through dicts.

:meth:`Result.from_doc` takes a document that already passed ``result.schema.json`` (the validator's
first check) and never changes it: the JSON on disk stays the one format, ``raw`` keeps every block as
written (for the fields a reader needs verbatim, e.g. the site's provenance table). Fields the aggregator
does not rank on get neutral defaults when absent, so the synthetic rows of the leaderboard tests build too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models import LOCAL_SOURCES, SourceKind

Metrics = dict[str, float | None]


@dataclass(frozen=True)
class LineageEntry:
    name: str
    sha256: str | None = None
    revision: str | None = None
    stage: str | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> LineageEntry:
        return cls(doc["name"], doc.get("sha256"), doc.get("revision"), doc.get("stage"))


@dataclass(frozen=True)
class BaseRef:
    name: str
    sha256: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: SourceKind
    sha256: str | None
    sha256_scheme: str
    dtype: str
    parent: str | None
    stage: str | None
    lineage: tuple[LineageEntry, ...]  # base .. this checkpoint (empty for rows written without one)
    revision: str | None = None
    recipe: str | None = None  # chain recipe (interventions view)
    intervention: str | None = None  # None / "none" = the recipe's baseline
    base: BaseRef | None = None  # a PEFT adapter's base model
    training: dict[str, Any] | None = None  # a chain stage's training block (chain/target.py)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ModelInfo:
        base = doc.get("base")
        return cls(
            name=doc["name"],
            source=SourceKind(doc.get("source", SourceKind.LOCAL)),
            sha256=doc.get("sha256"),
            sha256_scheme=doc.get("sha256_scheme", ""),
            dtype=doc.get("dtype", ""),
            parent=doc.get("parent"),
            stage=doc.get("stage"),
            lineage=tuple(LineageEntry.from_doc(e) for e in doc.get("lineage") or ()),
            revision=doc.get("revision"),
            recipe=doc.get("recipe"),
            intervention=doc.get("intervention"),
            base=BaseRef(base["name"], base.get("sha256"), base.get("source"))
            if isinstance(base, dict) and base.get("name")
            else None,
            training=doc.get("training") if isinstance(doc.get("training"), dict) else None,
            raw=doc,
        )

    @property
    def own_name(self) -> str | None:
        """The checkpoint's own lineage name (the lineage's last entry, e.g. ``base/recipe/none/s0/01-sft``
        for a chain stage), or None without a lineage."""
        return self.lineage[-1].name or None if self.lineage else None

    @property
    def is_local(self) -> bool:
        """The checkpoint lives on the submitter's disk (a row names it; ``reproduce`` needs ``--model``)."""
        return self.source in LOCAL_SOURCES


@dataclass(frozen=True)
class SuiteRef:
    name: str
    version: int


@dataclass(frozen=True)
class TaskBlock:
    kind: str
    version: int
    hash: str
    data: dict[str, str]  # data key -> sha256 of every file the task read
    metrics: Metrics
    counts: dict[str, Any] = field(default_factory=dict)
    per_layer: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> TaskBlock:
        return cls(
            doc["kind"],
            doc.get("version", 1),
            doc.get("hash", ""),
            doc.get("data") or {},
            doc.get("metrics") or {},
            doc.get("counts") or {},
            doc.get("per_layer"),
            doc,
        )


@dataclass(frozen=True)
class Result:
    schema_version: int
    model: ModelInfo
    suite: SuiteRef
    tasks: dict[str, TaskBlock]
    config: dict[str, Any]
    environment: dict[str, Any]
    harness: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Result:
        return cls(
            schema_version=doc.get("schema_version", 1),
            model=ModelInfo.from_doc(doc["model"]),
            suite=SuiteRef(doc["suite"]["name"], doc["suite"]["version"]),
            tasks={name: TaskBlock.from_doc(block) for name, block in doc["tasks"].items()},
            config=doc.get("config") or {},
            environment=doc.get("environment") or {},
            harness=doc.get("harness") or {},
            raw=doc,
        )

    def metrics(self) -> dict[tuple[str, str], float | None]:
        """(task, metric) -> value over every task."""
        return {(t, m): v for t, block in self.tasks.items() for m, v in block.metrics.items()}
