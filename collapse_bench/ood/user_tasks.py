"""User lm-eval YAMLs under ``<tasks-dir>/lm_eval/`` become tasks of kind ``lm_eval`` without code.

Each lm-eval task defined there (a YAML with a string ``task:``) gets a synthetic wrapper task of the
same name (``params: {lm_eval_task: <name>, include: <that lm_eval dir>}``), unless a wrapper YAML of
kind ``lm_eval`` with that name already exists. Its local ``dataset_kwargs.data_files`` (relative to the
YAML) are hashed into the result; multiple-choice tasks get calibration scores like the built-in ones.
A YAML that does not parse is a one-line error when the tasks are listed or loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..tasks.loader import Task
from ..tasks.schema import with_defaults
from . import lmeval


def user_lm_eval_tasks(lm_dir: Path, existing: dict[str, Any]) -> list[Task]:
    from .task import PARAMS_SCHEMA

    out = []
    for name, path in lmeval.index(lm_dir).items():
        if name in existing and existing[name].kind == "lm_eval":
            continue
        params = {"lm_eval_task": name, "include": os.path.relpath(lm_dir, path.parent)}
        config = {"name": name, "version": 1, "kind": "lm_eval", "params": params}
        desc = f"user lm-eval task ({path.relative_to(lm_dir.parent)})"
        out.append(Task(name, 1, "lm_eval", desc, (), with_defaults(params, PARAMS_SCHEMA, str(path)), path.resolve(),
                        {**config, "description": desc}))
    return out
