"""What a task run gets from the evaluate command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .models import LoadedModel, ModelSource

if TYPE_CHECKING:
    from .parallel import Parallel


@dataclass
class ReferenceTarget:
    """A checkpoint the probe compares this one with (KL, neighbourhoods): lineage ``base``/``parent`` or ``reference``."""

    role: str
    name: str  # display name (messages)
    sha256: str | None  # the reference cache's key
    locate: Callable[[], str] | None = None  # what load_model resolves to it; raises CollapseBenchError saying why not


@dataclass
class RunContext:
    model: LoadedModel
    seed: int = 0
    batch_size: int | None = None  # None: the task's own default
    auto_batch_size: bool = False  # --batch-size auto: lm-eval finds the largest batch that fits (other kinds: their own)
    reference: LoadedModel | None = None
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific CLI options (e.g. backend)
    parent: ModelSource | None = None  # --parent (the checkpoint this one was trained from), if given
    references: list[ReferenceTarget] = field(default_factory=list)  # base / parent / --reference
    par: Parallel | None = None  # the ranks of a data-parallel run (accelerate launch / torchrun); None: one process
    # called as hook(result, output) once every task has run, just before the result is written; each returns
    # the sidecar files [(path, bytes)] committed together with the result (e.g. lm-eval per-sample records)
    on_result: list[Callable[[dict[str, Any], Path], Any]] = field(default_factory=list)
