"""Reading lm-eval task YAMLs safely (no lm-eval, no torch): the built-in include dir, a task's include dir,
``include:`` chains and the task index of a dir.

lm-eval YAMLs are read with ``yaml.SafeLoader`` plus one tag: ``!function`` is kept as an opaque reference
(:class:`FunctionRef`). Nothing in a YAML is executed by collapse-bench.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from ..errors import CollapseBenchError
from ..io import sha256_file
from ..paths import builtin_tasks_dir


class FunctionRef(str):
    """The value of a ``!function module.name`` tag (kept as text)."""


class _Loader(yaml.SafeLoader):
    pass


def _function_ref(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> FunctionRef:
    return FunctionRef(loader.construct_scalar(node))


_Loader.add_constructor("!function", _function_ref)


def builtin_include_dir() -> Path:
    return builtin_tasks_dir() / "lm_eval"


def read_config(path: Path) -> dict[str, Any]:
    """One lm-eval YAML as a dict; invalid YAML or a non-mapping is a one-line error naming the file. Parsed
    once per (file, mtime, size) in a process (``validate`` reads lm-eval's ~2,000 YAMLs for every lm_eval
    task of every row); the caller gets its own copy."""
    try:
        st = path.stat()
    except OSError as exc:
        raise CollapseBenchError(f"cannot read {path}: {exc.strerror}") from None
    return copy.deepcopy(_parse(str(path), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=8192)
def _parse(name: str, _mtime_ns: int, _size: int) -> dict[str, Any]:
    path = Path(name)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except OSError as exc:
        raise CollapseBenchError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CollapseBenchError(f"{where}: invalid lm-eval YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise CollapseBenchError(f"{path}: an lm-eval task file must be a YAML mapping")
    return raw


def merged_config(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML with its ``include:`` chain merged in (included first, the file's own keys win)."""
    if path in _seen:
        raise CollapseBenchError(f"{path}: circular lm-eval include")
    raw = read_config(path)
    inc = raw.get("include")
    if not inc:
        return raw
    base = (path.parent / str(inc)).resolve()
    if not base.is_file():
        raise CollapseBenchError(f"{path}: included file '{inc}' not found")
    return {**merged_config(base, (*_seen, path)), **{k: v for k, v in raw.items() if k != "include"}}


def config_files(path: Path) -> list[Path]:
    """The YAML and every file it includes (for hashing)."""
    out = [path]
    inc = read_config(path).get("include")
    if inc:
        out += config_files((path.parent / str(inc)).resolve())
    return out


def config_hashes(include_dir: Path, path: Path) -> dict[str, str]:
    """``lm_eval:<file relative to include_dir>`` -> sha256 of the YAML and every file it includes (a task's data keys)."""
    return {f"lm_eval:{p.relative_to(include_dir).as_posix()}": sha256_file(p) for p in config_files(path)}


def index(include_dir: Path) -> dict[str, Path]:
    """lm-eval task name -> defining YAML, for every ``*.yaml`` under ``include_dir`` with a string ``task``."""
    found: dict[str, Path] = {}
    for path in sorted(include_dir.rglob("*.y*ml")):
        if any(part.startswith(".") for part in path.relative_to(include_dir).parts):
            continue
        name = read_config(path).get("task")
        if isinstance(name, str):
            if name in found:
                raise CollapseBenchError(f"{path}: lm-eval task '{name}' is already defined in {found[name]}")
            found[name] = path
    return found
