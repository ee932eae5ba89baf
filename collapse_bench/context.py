"""What a task run gets from the evaluate command."""

from __future__ import annotations

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
