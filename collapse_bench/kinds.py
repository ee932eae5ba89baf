"""Task kinds: name -> the module implementing it (imported lazily, so the CLI starts fast and loads no torch).

A kind module implements :class:`TaskKind` (mypy checks every registered module against it, see the
``TYPE_CHECKING`` block; ``tests/test_layers.py`` checks it at run time): ``PARAMS_SCHEMA`` (the kind's
schema from :mod:`collapse_bench.tasks.params`), ``prepare`` (everything that can fail before the model
loads), ``preflight`` (checks of the model's files before it loads; a no-op for most kinds) and ``run``
(the task's result block). This module sits above the kind packages (``probe``, ``lora``, ``ood``,
``plasticity``): the task registry below them knows only the kinds' parameter schemas.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from .errors import CollapseBenchError

if TYPE_CHECKING:
    from .context import RunContext
    from .models import ModelSource
    from .tasks import Task

KINDS: dict[str, str] = {
    "probe": "collapse_bench.probe.task",
    "lora": "collapse_bench.lora.task",
    "lm_eval": "collapse_bench.ood.task",
    "diversity": "collapse_bench.ood.diversity",
    "plasticity": "collapse_bench.plasticity.task",
}


class Prepared(Protocol):
    """What ``prepare`` returns: kind-specific, with the sha256 of every data file the task reads."""

    data_hashes: dict[str, str]


@runtime_checkable
class TaskKind(Protocol):
    """The contract of a kind module; ``evaluate`` and ``reproduce`` call exactly these."""

    PARAMS_SCHEMA: dict[str, Any]

    def prepare(self, task: Task, data_dir: Path | None, limit: int | None) -> Prepared: ...

    def preflight(self, task: Task, model: str, parent: ModelSource | None) -> None: ...

    def run(self, task: Task, prepared: Any, ctx: RunContext) -> dict[str, Any]: ...


def kind_module(kind: str) -> TaskKind:
    if kind not in KINDS:
        raise CollapseBenchError(f"unknown task kind '{kind}' (known: {', '.join(sorted(KINDS))})")
    return cast(TaskKind, importlib.import_module(KINDS[kind]))


if TYPE_CHECKING:  # every registered module satisfies the protocol (mypy checks modules structurally)
    from .lora import task as _lora
    from .ood import diversity as _diversity
    from .ood import task as _lm_eval
    from .plasticity import task as _plasticity
    from .probe import task as _probe

    _CHECKED: tuple[TaskKind, ...] = (_probe, _lora, _lm_eval, _diversity, _plasticity)
