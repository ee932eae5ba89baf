"""Per-sample records of lm-eval runs, saved next to the result as ``<result stem>.samples.jsonl``.

One JSON object per line, in task then lm-eval doc order. Multiple-choice records:
``{task, doc_id, id, gold, loglik: [...], choice_chars: [...], choice_bytes: [...], correct}`` with
``loglik`` lm-eval's summed log-likelihood of each choice, ``choice_chars`` = ``len(choice)`` (the
divisor of lm-eval's acc_norm), ``choice_bytes`` its UTF-8 length (acc_bytes) and ``correct`` =
[argmax loglik == gold]. Generation records: ``{task, doc_id, id, filter, target, response, samples}``.
The file is committed together with the result when the whole run succeeds (a hook called just before the
result is written returns its bytes; ``evaluate`` writes both with ``io.commit_files``, so a failed write
leaves the previous result + samples pair intact) and referenced from each task block as
``samples: {path, sha256, records}``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError
from ..io import read_jsonl, sha256_bytes, sha256_file

Record = dict[str, Any]


def _gold(task: Any, doc: dict[str, Any], choices: list[str]) -> int | None:
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else (int(gold) if gold.isdigit() else None)
    return gold if isinstance(gold, int) and 0 <= gold < len(choices) else None


def mc_records(name: str, task: Any, samples: list[dict[str, Any]]) -> tuple[list[Record], int]:
    """Records of a multiple-choice task; also the number of docs skipped (no single valid gold index)."""
    records, skipped = [], 0
    for s in samples:
        doc = s["doc"]
        choices = [str(c) for c in task.doc_to_choice(doc)]
        lls = [float(r[0]) for r in s["filtered_resps"]]
        gold = _gold(task, doc, choices)
        if gold is None or len(lls) != len(choices):
            skipped += 1
            continue
        pred = max(range(len(lls)), key=lambda k: (lls[k], -k))  # first maximum, as np.argmax
        records.append(
            {
                "task": name,
                "doc_id": int(s["doc_id"]),
                "id": doc.get("id"),
                "gold": gold,
                "loglik": lls,
                "choice_chars": [len(c) for c in choices],
                "choice_bytes": [len(c.encode("utf-8")) for c in choices],
                "correct": int(pred == gold),
            }
        )
    return records, skipped


def gen_records(name: str, samples: list[dict[str, Any]]) -> list[Record]:
    """Records of a generation task: one per (doc, filter), with the filtered response and raw samples."""
    out = []
    for s in samples:
        doc = s["doc"]
        resps = [str(r) for r in (s["resps"][0] if s["resps"] else [])]
        filt = s.get("filtered_resps") or [""]
        out.append(
            {
                "task": name,
                "doc_id": int(s["doc_id"]),
                "id": doc.get("id"),
                "filter": s.get("filter", "none"),
                "target": s.get("target") if isinstance(s.get("target"), (str, int, float)) else str(s.get("target")),
                "response": str(filt[0]),
                "samples": resps,
            }
        )
    return out


def samples_path(result_path: Path) -> Path:
    return result_path.with_name(result_path.stem + ".samples.jsonl")


def encode(records: list[Record]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False, sort_keys=True) + "\n" for r in records).encode("utf-8")


class SampleSink:
    """Collects records per task during a run; when the result is final, adds the references to it and returns
    the file to commit with it (``[(path, bytes)]``; nothing is written here)."""

    def __init__(self) -> None:
        self.records: dict[str, list[Record]] = {}

    def __call__(self, result: dict[str, Any], output: Path) -> list[tuple[Path, bytes]]:
        if not self.records:
            return []
        path = samples_path(output)
        data = encode([r for name in self.records for r in self.records[name]])
        digest = sha256_bytes(data)
        for name, recs in self.records.items():
            if name in result["tasks"]:
                result["tasks"][name]["samples"] = {"path": path.name, "sha256": digest, "records": len(recs)}
        return [(path, data)]


def sink_for(ctx: Any) -> SampleSink:
    """The run's sink (registered once on ``ctx.on_result``)."""
    for hook in ctx.on_result:
        if isinstance(hook, SampleSink):
            return hook
    sink = SampleSink()
    ctx.on_result.append(sink)
    return sink


def load_for_result(result_path: Path, result: dict[str, Any]) -> dict[str, list[Record]]:
    """Records of every task that references a samples file, after checking the file's sha256."""
    refs = {name: block["samples"] for name, block in result.get("tasks", {}).items() if isinstance(block.get("samples"), dict)}
    if not refs:
        raise CollapseBenchError(f"{result_path}: no task in this result references a samples file")
    by_task: dict[str, list[Record]] = defaultdict(list)
    checked: set[str] = set()
    for name, ref in refs.items():
        rel = str(ref.get("path", ""))
        if not rel or Path(rel).name != rel:
            raise CollapseBenchError(
                f"{result_path}: task {name}: samples path must be a file name next to the result, got {rel!r}"
            )
        path = result_path.parent / rel
        if not path.is_file():
            raise CollapseBenchError(f"samples file {path} not found (it must sit next to {result_path.name})")
        if rel not in checked:
            if sha256_file(path) != ref.get("sha256"):
                raise CollapseBenchError(f"{path}: sha256 does not match the result's reference; the samples file was changed")
            checked.add(rel)
            for row in read_jsonl(path):
                by_task[str(row.get("task"))].append(row)
    return {name: by_task.get(name, []) for name in refs}
