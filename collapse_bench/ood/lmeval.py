"""lm-eval plumbing: reading lm-eval YAMLs safely, resolved copies in a per-run include dir, loading
tasks offline (fail before the model loads) and running ``lm_eval.simple_evaluate``.

lm-eval YAMLs are read by :mod:`collapse_bench.tasks.lmeval_yaml`; a ``!function`` reference is re-emitted
unchanged in the resolved copy (lm-eval itself imports it when it loads the task, as its include mechanism does).
Nothing in a YAML is executed by collapse-bench.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import CollapseBenchError
from ..metrics.spec import MetricSpec, Range, Tolerance
from ..tasks.lmeval_yaml import FunctionRef, merged_config, read_config

COPY_SUFFIXES = {".yaml", ".yml", ".py", ".jinja", ".txt", ".json"}


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(FunctionRef, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """HF hub and datasets offline while lm-eval builds tasks (env for new imports, config for loaded ones)."""
    saved = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    os.environ.update({"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    import datasets.config
    import huggingface_hub.constants as hub_constants

    old = datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_DATASETS_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE = old
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def quiet(progress: bool) -> Iterator[None]:
    """lm-eval's info/warning logs off; datasets' and lm-eval's request progress bars off unless ``progress``."""
    import datasets

    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    bars = datasets.utils.logging.is_progress_bar_enabled()
    patched = {}
    if not progress:
        datasets.disable_progress_bars()
        import sys

        import lm_eval.models.huggingface  # noqa: F401  (its request bars ignore every global switch)
        import tqdm

        def silent(*args: Any, **kwargs: Any) -> Any:
            return tqdm.tqdm(*args, **{**kwargs, "disable": True})

        module: Any  # a module whose `tqdm` attribute is swapped (ModuleType declares no attribute setter)
        for name, module in list(sys.modules.items()):  # lm-eval's modules that do `from tqdm import tqdm`
            if name.startswith(("lm_eval.models.", "lm_eval.api.")) and getattr(module, "tqdm", None) is tqdm.tqdm:
                patched[module] = module.tqdm
                module.tqdm = silent
    try:
        yield
    finally:
        for module, original in patched.items():
            module.tqdm = original
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)
        if bars:
            datasets.enable_progress_bars()


@dataclass
class ResolvedTask:
    """An lm-eval task built from a per-run include dir (its dataset already loaded)."""

    name: str
    config: dict[str, Any]  # the resolved YAML, includes merged
    task: Any  # lm_eval.api.task.Task
    manager: Any  # lm_eval.tasks.TaskManager over the include dir
    tmp: tempfile.TemporaryDirectory = field(repr=False)

    @property
    def output_type(self) -> str:
        return str(self.config.get("output_type", "generate_until"))


def new_include_dir(source: Path | None) -> tempfile.TemporaryDirectory:
    """A temp dir holding a copy of ``source``'s lm-eval files (YAML, Python helpers, templates)."""
    tmp = tempfile.TemporaryDirectory(prefix="collapse-bench-lmeval-")
    if source is not None:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            wanted = path.suffix in COPY_SUFFIXES or path.name.endswith("yaml")  # lm-eval's "_default_template_yaml"
            if path.is_file() and wanted and not any(p.startswith((".", "__")) for p in rel.parts):
                (Path(tmp.name) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, Path(tmp.name) / rel)
    return tmp


def write_config(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True), encoding="utf-8")


def data_split_names(config: dict[str, Any]) -> tuple[str, str | None]:
    """(split lm-eval evaluates, split it draws few-shot examples from) of a merged config."""
    eval_split = config.get("test_split") or config.get("validation_split")
    if not eval_split:
        raise CollapseBenchError(f"lm-eval task '{config.get('task')}' names no test_split or validation_split")
    return str(eval_split), config.get("fewshot_split") or config.get("training_split")


def resolve(name: str, tmp: tempfile.TemporaryDirectory, yaml_rel: Path, overrides: dict[str, Any], where: str) -> ResolvedTask:
    """Apply ``overrides`` to the copied YAML of task ``name`` and build the task with lm-eval, offline.

    Any failure of lm-eval to build it (bad Jinja, unknown metric, missing data) is one line naming ``where``.
    """
    root = Path(tmp.name)
    target = root / yaml_rel
    raw = read_config(target)
    raw.update(overrides)
    write_config(target, raw)
    config = merged_config(target)
    with offline(), quiet(progress=False):
        try:
            from lm_eval.tasks import TaskManager

            manager = TaskManager(include_path=str(root), include_defaults=False)
            loaded = manager.load([name])
            task = loaded["tasks"][name]
        except CollapseBenchError:
            raise
        except Exception as exc:  # lm-eval raises many types; the user sees one line
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CollapseBenchError(f"{where}: lm-eval cannot build task '{name}': {type(exc).__name__}: {msg[:300]}") from None
    return ResolvedTask(name, config, task, manager, tmp)


_ENV_INFO: dict[str, Any] = {}


def no_git_hash() -> None:
    """Stands in for lm-eval's ``get_git_commit_hash`` during a run (see :func:`env_info_once`)."""
    return None


@contextlib.contextmanager
def env_info_once() -> Iterator[None]:
    """lm-eval's ``add_env_info`` computed once per process and then reused, and no git hash of the cwd.

    ``add_env_info`` runs torch's ``collect_env`` (~0.5 s of subprocesses) on every ``simple_evaluate``;
    collapse-bench makes one call per task and records its own environment block, so repeating it is pure
    overhead. ``get_git_commit_hash`` runs ``git describe`` in the current directory with git's stderr not
    captured: outside a git repository that prints ``fatal: not a git repository`` into the user's terminal, and
    inside one it records a hash that is not the harness's (collapse-bench records its own, ``harness.git_sha``).
    """
    import lm_eval.evaluator as evaluator

    original = evaluator.add_env_info, evaluator.get_git_commit_hash

    def cached(storage: dict[str, Any]) -> None:
        if not _ENV_INFO:
            fresh: dict[str, Any] = {}
            original[0](fresh)
            _ENV_INFO.update(fresh)
        storage.update(_ENV_INFO)

    evaluator.add_env_info, evaluator.get_git_commit_hash = cached, no_git_hash
    try:
        yield
    finally:
        evaluator.add_env_info, evaluator.get_git_commit_hash = original


def run(
    lm: Any,
    resolved: ResolvedTask,
    *,
    limit: int | None = None,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
    torch_seed: int = 1234,
    progress: bool = True,
) -> dict[str, Any] | None:
    """``lm_eval.simple_evaluate`` on one resolved task with per-sample logging; lm-eval's default seeds
    (random 0, numpy 1234, few-shot 1234) except ``torch_seed`` (sampling). Under lm-eval's data parallelism
    (``lm.world_size > 1``) only rank 0 gets the results: None on the others."""
    import lm_eval

    with offline(), quiet(progress), env_info_once():
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[resolved.task],
            task_manager=resolved.manager,
            limit=limit,
            num_fewshot=num_fewshot,
            log_samples=True,
            apply_chat_template=apply_chat_template,
            fewshot_as_multiturn=apply_chat_template,
            torch_random_seed=torch_seed,
        )
    if getattr(lm, "rank", 0) != 0:
        return None
    if out is None or resolved.name not in out.get("results", {}):
        raise CollapseBenchError(f"lm-eval returned no results for task '{resolved.name}'")
    return out


def in_doc_order(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """lm-eval's logged samples in one process's order (filter by filter, doc ids ascending): under data parallelism
    rank 0 receives them rank by rank, and the samples file must not depend on the process count."""
    filters = {f: i for i, f in enumerate(dict.fromkeys(s.get("filter") for s in samples))}
    return sorted(samples, key=lambda s: (filters[s.get("filter")], int(s["doc_id"])))


def flat_metrics(results: dict[str, Any]) -> dict[str, float | None]:
    """lm-eval's ``{"metric,filter": value}`` -> ``{metric}`` (filter "none") or ``{metric}_{filter}``."""
    out: dict[str, float | None] = {}
    for key, value in results.items():
        if "," not in key:
            continue
        metric, filt = key.split(",", 1)
        if metric == "bypass" or metric.startswith("bypass_"):
            continue
        ident = metric if filt == "none" else f"{metric}_{filt}"
        ident = ident.replace("-", "_").replace(" ", "_")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        out[ident] = float(value) if ok else None
    return out


SPECS = (
    MetricSpec(
        id="acc*",
        kind="lm_eval",
        definition="lm-eval multiple-choice accuracy (acc_norm: length-normalised; *_stderr: its standard error)",
        direction="higher",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.0),
        label="accuracy",
    ),
    MetricSpec(
        id="exact_match*",
        kind="lm_eval",
        definition="lm-eval exact-match accuracy of generated answers (per filter)",
        direction="higher",
        range=Range(0, 1),
        tolerance=Tolerance(0.02, 0.0),
        label="exact match",
    ),
)
