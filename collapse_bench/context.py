"""What a task run gets from the evaluate command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import LoadedModel


@dataclass
class RunContext:
    model: LoadedModel
    seed: int = 0
    batch_size: int | None = None  # None: the task's own default
    limit: int | None = None
    data_dir: Path | None = None
    reference: LoadedModel | None = None
    output: Path | None = None  # the result file (tasks may write sidecar files next to it)
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific CLI options (e.g. backend)
    parent: Any = None  # ModelSource of --parent (the checkpoint this one was trained from), if given
    # called as hook(result, output) once every task has run, just before the result is written; each returns
    # the sidecar files [(path, bytes)] committed together with the result (e.g. lm-eval per-sample records)
    on_result: list[Callable[[dict[str, Any], Path], Any]] = field(default_factory=list)
