"""Where collapse-bench keeps things on the user's machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$COLLAPSE_BENCH_CACHE``, else ``$XDG_CACHE_HOME/collapse-bench``, else ``~/.cache/collapse-bench``."""
    env = os.environ.get("COLLAPSE_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "collapse-bench"


def reference_cache_dir() -> Path:
    """Where probe reference caches live: ``$COLLAPSE_BENCH_REFERENCE_CACHE``, else ``cache_dir()/reference``."""
    env = os.environ.get("COLLAPSE_BENCH_REFERENCE_CACHE")
    return Path(env).expanduser() if env else cache_dir() / "reference"


def unfinished_runs_dir() -> Path:
    """Where ``evaluate`` keeps the finished tasks of a run that has not written its result yet:
    ``$COLLAPSE_BENCH_RUNS_CACHE``, else ``cache_dir()/runs``."""
    env = os.environ.get("COLLAPSE_BENCH_RUNS_CACHE")
    return Path(env).expanduser() if env else cache_dir() / "runs"


def builtin_tasks_dir() -> Path:
    """The task YAMLs shipped with the package (wheel) or the repository's ``tasks/`` (editable install)."""
    pkg = Path(__file__).resolve().parent
    for candidate in (pkg / "_builtin_tasks", pkg.parent / "tasks"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("collapse-bench installation is missing its tasks/ directory")
