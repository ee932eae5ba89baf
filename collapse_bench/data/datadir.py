"""The data dir: ``<dataset>/<split>.jsonl`` in the normalised layout of the shared mirror.

Resolution order: ``--data-dir``, else ``$COLLAPSE_BENCH_DATA``, else ``<cache>/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CollapseBenchError
from ..paths import cache_dir

ENV_VAR = "COLLAPSE_BENCH_DATA"


def resolve_data_dir(cli_value: str | Path | None = None) -> Path:
    if cli_value:
        path = Path(cli_value).expanduser()
        if not path.is_dir():
            raise CollapseBenchError(f"--data-dir {path} does not exist or is not a directory")
        return path.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise CollapseBenchError(f"${ENV_VAR}={env} does not exist or is not a directory")
        return path.resolve()
    return cache_dir() / "data"


def dataset_file(data_dir: Path, dataset: str, split: str) -> Path:
    """Path of ``<data_dir>/<dataset>/<split>.jsonl``; a clear error if it is missing."""
    for part in (dataset, split):
        if not part or "/" in part or "\\" in part or part.startswith("."):
            raise CollapseBenchError(f"invalid dataset/split name '{part}'")
    path = data_dir / dataset / f"{split}.jsonl"
    if not path.is_file():
        raise CollapseBenchError(
            f"missing data file {path}: pass --data-dir DIR pointing at a data mirror "
            f"(layout <dataset>/<split>.jsonl) or build one with `collapse-bench data pull` (needs network)"
        )
    return path
