"""Loading task and suite YAMLs from the built-in dir and ``--tasks-dir`` dirs.

Every YAML the harness reads from the user (tasks, suites, lineage files, chain recipes, interventions,
tolerances) goes through :func:`load_yaml_text`: ``yaml.SafeLoader`` without aliases and anchors (``&a``/``*a``
are refused: no alias bombs), UTF-8 only, a nesting limit; every failure is one line.

Layout of a tasks dir: ``<kind>/*.yaml`` (any depth) for tasks, ``suites/*.yaml`` for suites.
Directories named ``chains`` and ``lm_eval`` hold other formats and are skipped here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import CollapseBenchError
from ..io import clip, sha256_json
from ..paths import builtin_tasks_dir
from .kinds import kind_module
from .schema import SUITE_SCHEMA, TASK_SCHEMA, validate, with_defaults

SKIP_DIRS = {"suites", "chains", "lm_eval", "interventions"}


@dataclass(frozen=True)
class Task:
    name: str
    version: int
    kind: str
    description: str
    data: tuple[dict[str, Any], ...]
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


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and anchors (an alias bomb expands to gigabytes from a few lines)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "YAML anchors and aliases (&name, *name) are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(obj: Any) -> str:
    """YAML the project can read back: safe types only and no anchors/aliases (which :class:`StrictLoader` refuses)."""
    return yaml.dump(obj, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True)


def load_yaml_text(text: str, where: str) -> Any:
    """Parse ``text`` with :class:`StrictLoader`; a one-line error naming ``where`` (and the line) otherwise."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CollapseBenchError(f"{at}: invalid YAML ({clip(problem)})") from None
    except RecursionError:
        raise CollapseBenchError(f"{where}: invalid YAML (nested too deeply)") from None


def read_yaml(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CollapseBenchError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CollapseBenchError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    return load_yaml_text(text, str(path))


def load_task(path: Path) -> Task:
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise CollapseBenchError(f"{path}: a task file must be a YAML mapping")
    validate(raw, TASK_SCHEMA, str(path))
    module = kind_module(raw["kind"])
    params = with_defaults(raw.get("params") or {}, module.PARAMS_SCHEMA, str(path))
    return Task(raw["name"], raw["version"], raw["kind"], raw.get("description", ""), tuple(raw.get("data") or ()),
                params, path.resolve(), raw)


def load_suite(path: Path) -> Suite:
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise CollapseBenchError(f"{path}: a suite file must be a YAML mapping")
    validate(raw, SUITE_SCHEMA, str(path))
    return Suite(raw["name"], raw["version"], raw.get("description", ""), tuple(raw["tasks"]), raw.get("limits") or {},
                 path.resolve())


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

    def __init__(self, extra_dirs: Iterable[str | Path] = ()) -> None:
        self.dirs = [builtin_tasks_dir()]
        for d in extra_dirs:
            path = Path(d).expanduser()
            if not path.is_dir():
                raise CollapseBenchError(f"--tasks-dir {path} is not a directory")
            self.dirs.append(path.resolve())
        self.tasks: dict[str, Task] = {}
        self.suites: dict[str, Suite] = {}
        for root in self.dirs:
            for path in _yaml_files(root, suites=False):
                self._add(self.tasks, load_task(path), path)
            for path in _yaml_files(root, suites=True):
                self._add(self.suites, load_suite(path), path)
        for root in self.dirs[1:]:  # user lm-eval YAMLs (<dir>/lm_eval/) become kind lm_eval tasks
            if (root / "lm_eval").is_dir():
                from ..ood.user_tasks import user_lm_eval_tasks

                for task in user_lm_eval_tasks(root / "lm_eval", self.tasks):
                    self._add(self.tasks, task, task.path)

    @staticmethod
    def _add(table: dict[str, Any], item: Task | Suite, path: Path) -> None:
        if item.name in table:
            raise CollapseBenchError(f"{path}: name '{item.name}' is already defined in {table[item.name].path}")
        table[item.name] = item

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise CollapseBenchError(f"unknown task '{name}' (run `collapse-bench tasks list`)")
        return self.tasks[name]

    def suite(self, name: str) -> Suite:
        if name not in self.suites:
            raise CollapseBenchError(f"unknown suite '{name}' (known: {', '.join(sorted(self.suites))})")
        return self.suites[name]
