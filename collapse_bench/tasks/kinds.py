"""Task kinds: name -> module implementing it (imported lazily, so the CLI starts fast).

A kind module exposes ``PARAMS_SCHEMA`` (JSON Schema with defaults) and
``run(task: Task, ctx: RunContext) -> dict`` returning the task's result block.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import CollapseBenchError

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
