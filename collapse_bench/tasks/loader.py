"""Loading task and suite YAMLs (read with :func:`collapse_bench.yamlio.read_yaml`) from the built-in dir and
``--tasks-dir`` dirs. Loading the registry imports no kind module (parameter schemas: :mod:`.params`).

Layout of a tasks dir: ``<kind>/*.yaml`` (any depth) for tasks, ``suites/*.yaml`` for suites.
Directories named ``chains`` and ``lm_eval`` hold other formats and are skipped here, except that user lm-eval
YAMLs under ``<tasks-dir>/lm_eval/`` (or directly in a dir given as ``--include_path``, lm-eval's spelling) become
tasks of kind ``lm_eval`` without code: each lm-eval task defined there (a YAML with a string ``task:``) gets a
synthetic wrapper task of the same name (``params: {lm_eval_task: <name>, include: <that lm_eval dir>}``), unless a
wrapper YAML of kind ``lm_eval`` with that name already exists.
Its local ``dataset_kwargs.data_files`` (relative to the YAML) are hashed into the result; multiple-choice tasks
get calibration scores like the built-in ones. A YAML that does not parse is a one-line error when the tasks are
listed or loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CollapseBenchError, did_you_mean
from ..io import sha256_json
from ..paths import builtin_tasks_dir
from ..schemas import validate, with_defaults
from ..yamlio import read_yaml
from .lmeval_yaml import builtin_include_dir, index
from .params import KIND_PARAMS
from .schema import SUITE_SCHEMA, TASK_SCHEMA

if TYPE_CHECKING:
    from ..data.sources import DataRef

SKIP_DIRS = {"suites", "chains", "lm_eval", "interventions"}


@dataclass(frozen=True)
class Task:
    name: str
    version: int
    kind: str
    description: str
    data: tuple[DataRef, ...]
    params: dict[str, Any]  # defaults filled in
    path: Path  # the YAML file (user data paths are relative to it)
    config: dict[str, Any] = field(repr=False)  # the YAML as written (hashed)

    def task_hash(self, data_hashes: dict[str, str]) -> str:
        """sha256 over the canonical config (with defaults) and the sha256 of every data file it reads."""
        return sha256_json({"config": {**self.config, "params": self.params}, "data": dict(sorted(data_hashes.items()))})


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    tasks: tuple[str, ...]
    limits: dict[str, int]
    path: Path


def load_task(path: Path) -> Task:
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise CollapseBenchError(f"{path}: a task file must be a YAML mapping")
    validate(raw, TASK_SCHEMA, str(path))
    kind = raw["kind"]
    if kind not in KIND_PARAMS:
        raise CollapseBenchError(f"unknown task kind '{kind}' (known: {', '.join(sorted(KIND_PARAMS))})")
    params = with_defaults(raw.get("params") or {}, KIND_PARAMS[kind], str(path))
    return Task(
        raw["name"],
        raw["version"],
        raw["kind"],
        raw.get("description", ""),
        tuple(raw.get("data") or ()),
        params,
        path.resolve(),
        raw,
    )


def load_suite(path: Path) -> Suite:
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise CollapseBenchError(f"{path}: a suite file must be a YAML mapping")
    validate(raw, SUITE_SCHEMA, str(path))
    return Suite(
        raw["name"], raw["version"], raw.get("description", ""), tuple(raw["tasks"]), raw.get("limits") or {}, path.resolve()
    )


def _yaml_files(root: Path, suites: bool) -> Iterable[Path]:
    if suites:
        yield from sorted((root / "suites").glob("*.y*ml")) if (root / "suites").is_dir() else ()
        return
    for path in sorted(root.rglob("*.y*ml")):
        rel = path.relative_to(root).parts
        if not any(part in SKIP_DIRS or part.startswith(".") for part in rel[:-1]):
            yield path


class TaskRegistry:
    """All tasks and suites visible to a run: built-ins first, then each ``--tasks-dir`` in order."""

    def __init__(self, extra_dirs: Iterable[str | Path] = (), lm_eval_dirs: Iterable[str | Path] = ()) -> None:
        self.dirs = [builtin_tasks_dir()]
        for d in extra_dirs:
            path = Path(d).expanduser()
            if not path.is_dir():
                raise CollapseBenchError(f"--tasks-dir {path} is not a directory")
            self.dirs.append(path.resolve())
        self.lm_eval_dirs: list[Path] = []  # lm-eval include dirs given as such (``--include-path``)
        for d in lm_eval_dirs:
            path = Path(d).expanduser()
            if not path.is_dir():
                raise CollapseBenchError(f"--include-path {path} is not a directory")
            self.lm_eval_dirs.append(path.resolve())
        self.tasks: dict[str, Task] = {}
        self.suites: dict[str, Suite] = {}
        for root in self.dirs:
            for path in _yaml_files(root, suites=False):
                self._add(self.tasks, load_task(path), path)
            for path in _yaml_files(root, suites=True):
                self._add(self.suites, load_suite(path), path)
        # user lm-eval YAMLs (<dir>/lm_eval/, or an --include_path dir itself) become kind lm_eval tasks
        lm_dirs = [root / "lm_eval" for root in self.dirs[1:] if (root / "lm_eval").is_dir()] + self.lm_eval_dirs
        for lm_dir in lm_dirs:
            for task in user_lm_eval_tasks(lm_dir, self.tasks):
                self._add(self.tasks, task, task.path)

    @staticmethod
    def _add(table: dict[str, Any], item: Task | Suite, path: Path) -> None:
        if item.name in table:
            raise CollapseBenchError(f"{path}: name '{item.name}' is already defined in {table[item.name].path}")
        table[item.name] = item

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise CollapseBenchError(f"unknown task '{name}'{did_you_mean(name, self.tasks)} (run `collapse-bench tasks list`)")
        return self.tasks[name]

    def suite(self, name: str) -> Suite:
        if name not in self.suites:
            raise CollapseBenchError(
                f"unknown suite '{name}'{did_you_mean(name, self.suites)} (known: {', '.join(sorted(self.suites))})"
            )
        return self.suites[name]


def user_lm_eval_tasks(lm_dir: Path, existing: dict[str, Task]) -> list[Task]:
    """Wrapper tasks of kind ``lm_eval`` for the lm-eval YAMLs under ``lm_dir`` (module docstring)."""
    out = []
    for name, path in index(lm_dir).items():
        if name in existing and existing[name].kind == "lm_eval":
            continue
        params = {"lm_eval_task": name, "include": os.path.relpath(lm_dir, path.parent)}
        config = {"name": name, "version": 1, "kind": "lm_eval", "params": params}
        desc = f"user lm-eval task ({path.relative_to(lm_dir.parent)})"
        out.append(
            Task(
                name,
                1,
                "lm_eval",
                desc,
                (),
                with_defaults(params, KIND_PARAMS["lm_eval"], str(path)),
                path.resolve(),
                {**config, "description": desc},
            )
        )
    return out


def include_dir(task: Task) -> Path:
    """The lm-eval include dir of a ``kind: lm_eval`` task (``params.include``; null: the built-in one)."""
    inc = task.params["include"]
    path = builtin_include_dir() if inc is None else (task.path.parent / inc).resolve()
    if not path.is_dir():
        raise CollapseBenchError(f"{task.path}: lm-eval include dir {path} not found")
    return path
