"""No chain stage may train on data an evaluation task reads.

Checked before any training, against every task of every suite in this installation:
  (1) split level: no stage data file (dataset/split) is a file an evaluation task reads, by path and
      by sha256 (a renamed copy is caught too);
  (2) item level: no stage row shares an ``id`` or a normalised primary text (question / prompt / text /
      first user message, whitespace-collapsed and case-folded, sha256) with a row of those files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..data.datadir import dataset_file
from ..data.sources import LoadedRef
from ..errors import CollapseBenchError
from ..io import read_jsonl, sha256_file
from ..tasks import TaskRegistry


def primary_text(row: dict[str, Any]) -> str | None:
    for key in ("question", "prompt", "text"):
        if isinstance(row.get(key), str):
            return row[key]
    msgs = row.get("messages")
    if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
        return str(msgs[0].get("content", ""))
    return None


def text_hash(text: str) -> str:
    return hashlib.sha256(re.sub(r"\s+", " ", text).strip().casefold().encode()).hexdigest()


def evaluation_files(registry: TaskRegistry, data_dir: Path | None) -> dict[str, Path]:
    """``dataset/split`` -> file, for every data-dir reference of every task of every suite."""
    names = {t for suite in registry.suites.values() for t in suite.tasks if t in registry.tasks}
    files: dict[str, Path] = {}
    for name in sorted(names):
        for ref in registry.tasks[name].data:
            if "dataset" in ref and data_dir is not None:
                key = f"{ref['dataset']}/{ref['split']}"
                try:
                    files[key] = dataset_file(data_dir, ref["dataset"], ref["split"])
                except CollapseBenchError:
                    continue  # a missing eval file cannot leak
    return files


def check_no_leakage(
    stage_refs: Iterable[tuple[str, list[LoadedRef]]], registry: TaskRegistry, data_dir: Path | None
) -> dict[str, int]:
    """Raise a one-line error on the first overlap; returns counts of what was checked."""
    eval_files = evaluation_files(registry, data_dir)
    eval_shas = {sha256_file(p): k for k, p in eval_files.items()}
    ids: dict[str, str] = {}
    texts: dict[str, str] = {}
    for key, path in eval_files.items():
        for row in read_jsonl(path):
            if "id" in row:
                ids[str(row["id"])] = key
            text = primary_text(row)
            if text:
                texts[text_hash(text)] = key
    n_rows = 0
    for stage, refs in stage_refs:
        for ref in refs:
            name = ref.key.removesuffix(".jsonl")
            if name in eval_files or ref.sha256 in eval_shas:
                other = name if name in eval_files else eval_shas[ref.sha256]
                raise CollapseBenchError(f"stage '{stage}' trains on {ref.key}, which evaluation reads ({other})")
            for row in ref.rows:
                n_rows += 1
                if str(row.get("id")) in ids:
                    raise CollapseBenchError(
                        f"stage '{stage}': row id {row['id']} of {ref.key} is also in {ids[str(row['id'])]} (evaluation data)"
                    )
                text = primary_text(row)
                if text and text_hash(text) in texts:
                    raise CollapseBenchError(
                        f"stage '{stage}': row {row.get('id', '?')} of {ref.key} has the same text as a row of "
                        f"{texts[text_hash(text)]} (evaluation data)"
                    )
    return {"eval_files": len(eval_files), "eval_rows": len(texts), "stage_rows": n_rows}
