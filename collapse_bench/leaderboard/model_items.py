"""The model page's per-item browser: the first :data:`ITEMS_SHOWN` records of each task in a row's samples file
(the records :func:`.entry.entries_from` read; :mod:`.model_view` renders the page). Multiple-choice records show
each choice's probability (the softmax of its log-likelihoods, as :func:`.entry.outcomes_with_ids` reads them), the
correct answer and the model's pick; generation records (diversity, XSTest replies, GSM8K) the expected answer, the
reply and the sampled generations, each cut at :data:`TEXT_CAP` characters. Every value is a plain string."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .entry import LL_KEYS, Entry, _num

ITEMS_SHOWN = 20  # records per task in the item browser
TEXT_CAP = 400  # characters of one generation shown


def text(x: Any) -> str:
    """A plain string of any JSON value: "—" for null, floats to 6 significant digits, lists joined, dicts key=value."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "true" if x else "false"
    if _num(x):
        return str(x) if isinstance(x, int) else f"{x:.6g}" if math.isfinite(x) else "—"
    if isinstance(x, dict):
        return ", ".join(f"{k}={text(v)}" for k, v in x.items()) or "—"
    if isinstance(x, (list, tuple)):
        return ", ".join(text(v) for v in x) or "—"
    return str(x)


def choice_probs(rec: dict[str, Any]) -> list[float] | None:
    """Softmax of a record's choice log-likelihoods (as :func:`.entry.outcomes_with_ids` reads them), or None."""
    lls = next((rec[k] for k in LL_KEYS if isinstance(rec.get(k), list) and rec[k] and all(_num(v) for v in rec[k])), None)
    if lls is None:
        return None
    z = np.asarray(lls, dtype=np.float64)
    if not np.isfinite(z).all():
        return None
    return [float(p) for p in np.exp(z - np.logaddexp.reduce(z))]


def letter(i: int) -> str:
    """Choice ``i`` as a letter (A, B, …), its index from 26 choices on."""
    return chr(65 + i) if 0 <= i < 26 else str(i)


def capped(x: Any) -> str:
    s = text(x)
    return s if len(s) <= TEXT_CAP else s[:TEXT_CAP] + f"… ({len(s)} characters)"


def browser_item(rec: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"id": text(rec.get("id", rec.get("doc_id"))), "filter": rec.get("filter") not in (None, "none")}
    item["filter_text"] = text(rec.get("filter"))
    probs = choice_probs(rec)
    if probs is not None:
        gold = rec.get("gold") if _num(rec.get("gold")) else None
        pick = int(np.argmax(probs))
        correct = (
            rec["correct"] if isinstance(rec.get("correct"), (bool, int, float)) else (pick == gold if gold is not None else None)
        )
        item["choices"] = [
            {"p": f"{p:.3f}", "gold": i == gold, "pick": i == pick, "label": letter(i)} for i, p in enumerate(probs)
        ]
        item["gold"] = "—" if gold is None else letter(int(gold)) if float(gold).is_integer() else text(gold)
        item["correct"] = None if correct is None else bool(correct)
        return item
    gens: list[Any] = rec["samples"] if isinstance(rec.get("samples"), list) else []
    item["target"] = capped(rec["target"]) if "target" in rec and rec["target"] != rec.get("id") else ""  # diversity: the id
    item["response"] = capped(rec.get("response")) if "response" in rec else ""
    item["generations"] = [capped(g) for g in gens] if gens != [rec.get("response")] else []
    return item


def item_browser(entry: Entry) -> list[dict[str, Any]]:
    """Per task of the samples file: its record count and the first :data:`ITEMS_SHOWN` records as items."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for rec in entry.records:
        if isinstance(rec, dict):
            by_task.setdefault(text(rec.get("task", "")), []).append(rec)
    out = []
    for task, recs in sorted(by_task.items()):
        items = [browser_item(r) for r in recs[:ITEMS_SHOWN]]
        out.append(
            {
                "task": task,
                "kind": text(entry.kinds.get(task, "")),
                "n": len(recs),
                "mc": [i for i in items if "choices" in i],
                "gen": [i for i in items if "choices" not in i],
            }
        )
    return out
