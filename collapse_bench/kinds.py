"""Task kinds: name -> module implementing it (imported lazily, so the CLI starts fast and loads no torch).

A kind module exposes ``PARAMS_SCHEMA`` (the kind's schema from :mod:`collapse_bench.tasks.params`),
``prepare(task, data_dir, limit)`` (everything that can fail before the model loads) and
``run(task, prepared, ctx: RunContext) -> dict`` returning the task's result block; ``preflight`` is optional.
This module sits above the kind packages (``probe``, ``lora``, ``ood``, ``plasticity``): the task registry
below them knows only the kinds' parameter schemas.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import CollapseBenchError

KINDS: dict[str, str] = {
    "probe": "collapse_bench.probe.task",
    "lora": "collapse_bench.lora.task",
    "lm_eval": "collapse_bench.ood.task",
    "diversity": "collapse_bench.ood.diversity",
    "plasticity": "collapse_bench.plasticity.task",
}


def kind_module(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise CollapseBenchError(f"unknown task kind '{kind}' (known: {', '.join(sorted(KINDS))})")
    return importlib.import_module(KINDS[kind])
