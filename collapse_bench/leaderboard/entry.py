"""One submission as the leaderboard sees it (:class:`Entry`: the typed result plus its per-item outcomes and,
when a maintainer reproduced it, its current verification), and the per-row metadata derived from it: display
name, page slug, base model, meta row (``verified``: True only with evidence matching the row's sha256s).

Rows are ordered by submission id, so the input order never matters.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import CollapseBenchError
from ..evaluate import slug
from ..io import read_jsonl, sha256_bytes
from ..metrics.calibration import temperature_at_bound
from ..results.model import ModelInfo, Result
from .submission import VERIFIED_SUFFIX, Submission, samples_refs
from .verified import verification

LL_KEYS = ("loglik", "loglikelihoods", "choice_loglikelihoods", "logliks", "lls")  # samples.py writes "loglik"
BASELINE = (None, "", "none")


@functools.lru_cache(maxsize=1)
def composite_config() -> dict[str, Any]:
    return yaml.safe_load(resources.files(__package__).joinpath("composite.yaml").read_text(encoding="utf-8"))


@dataclass
class Entry:
    """One submission as the aggregator sees it."""

    id: str  # "submissions/<org>/<model>/<file>.json"
    doc: dict[str, Any]
    items: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # task -> (confidence, correct)
    complete: bool = True  # recomputed by `validate`; only complete rows are ranked
    reps: dict[tuple[Any, ...], np.ndarray] = field(default_factory=dict, repr=False, compare=False)  # bootstrap replicates
    item_ids: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)  # task -> ids, as ``items``
    chance: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)  # task -> 1/k per item
    records: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)  # samples records (item browser)
    verified: dict[str, Any] | None = field(default=None, repr=False, compare=False)  # evidence (.verified), if current

    @functools.cached_property
    def result(self) -> Result:
        return Result.from_doc(self.doc)

    @functools.cached_property
    def metrics(self) -> dict[str, dict[str, float | None]]:
        """``tasks.<t>.metrics`` plus the derived ``temperature_opt_at_bound`` (1 when the recorded
        ``temperature_opt`` is a bound of the search, see :func:`~..metrics.calibration.temperature_at_bound`)."""
        return {t: derived_metrics(b.metrics) for t, b in self.result.tasks.items()}

    @property
    def kinds(self) -> dict[str, str]:
        return {t: b.kind for t, b in self.result.tasks.items()}

    @property
    def probe_task(self) -> str | None:
        """The first (by name) task of kind ``probe``, or None."""
        return next((t for t, k in sorted(self.kinds.items()) if k == "probe"), None)


def derived_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    t = metrics.get("temperature_opt")
    if not _num(t) or "temperature_opt_at_bound" in metrics:
        return metrics
    assert t is not None  # _num above
    return {**metrics, "temperature_opt_at_bound": 0.0 if temperature_at_bound(float(t)) is None else 1.0}


def finite_float(x: Any) -> float | None:
    """``x`` as a float when it is a finite real number (numpy scalars too; bools and strings are not), else None."""
    ok = isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool)
    return float(x) if ok and math.isfinite(float(x)) else None


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def seed_order(key: Any) -> tuple[int, int, str]:
    """Sort key of a free-text seed key: int-like strings ("0", "-1") numerically first, then the rest."""
    k = str(key)
    return (0, int(k), "") if re.fullmatch(r"-?[0-9]{1,18}", k) else (1, 0, k)


@contextlib.contextmanager
def guard(entry_id: str, what: str = "aggregate") -> Any:
    """Any unexpected exception inside becomes one CollapseBenchError line naming the submission."""
    try:
        yield
    except CollapseBenchError:
        raise
    except Exception as exc:
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise CollapseBenchError(f"{entry_id}: cannot {what} this submission ({msg})") from None


def item_outcomes(records: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """task -> (confidence = max softmax of the choice log-likelihoods, correct) from samples records."""
    return {t: (c, k) for t, (c, k, _, _) in outcomes_with_ids(records).items()}


def outcomes_with_ids(records: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray, list[str], np.ndarray]]:
    """:func:`item_outcomes` plus each item's ``id`` (``doc_id`` when it has none), in the same order: what pairs
    two rows' items for a paired comparison; and its chance level 1/k (k choices; NaN without log-likelihoods)."""
    grouped: dict[str, tuple[list[float], list[float], list[str], list[float]]] = {}
    for rec in records:
        if not isinstance(rec, dict):
            continue
        lls = next(
            (rec[k] for k in LL_KEYS if isinstance(rec.get(k), list) and rec[k] and all(_num(v) for v in rec[k])), None
        )  # non-numeric values: the record is unusable
        if _num(rec.get("confidence")):
            conf = float(rec["confidence"])
        elif lls is not None and "confidence" not in rec:
            z = np.asarray(lls, dtype=np.float64)
            conf = float(np.exp(z.max() - np.logaddexp.reduce(z)))
        else:
            continue
        if isinstance(rec.get("correct"), (bool, int, float)):
            correct = float(bool(rec["correct"]))
        elif lls is not None and "correct" not in rec and _num(rec.get("gold")):
            correct = float(int(np.argmax(lls)) == rec["gold"])
        else:
            continue
        if not (math.isfinite(conf) and 0.0 <= conf <= 1.0):
            continue
        c, k, ids, chance = grouped.setdefault(str(rec.get("task", "")), ([], [], [], []))
        c.append(conf)
        k.append(correct)
        ids.append(str(rec.get("id", rec.get("doc_id", len(ids)))))
        chance.append(1.0 / len(lls) if lls is not None else math.nan)
    return {t: (np.array(c), np.array(k), ids, np.array(ch)) for t, (c, k, ids, ch) in sorted(grouped.items())}


def entries_from(subs: list[Submission], root: Path) -> list[Entry]:
    """Entries with ids relative to the submissions dir ``root``, sorted by id."""
    out = []
    for sub in subs:
        rel = sub.path.resolve().relative_to(root.resolve()).as_posix()
        records: list[dict[str, Any]] = []
        eid = f"submissions/{rel}"
        with guard(eid, "read the samples of"):
            for name in sorted({ref["path"] for _, ref in samples_refs(sub.doc)}):
                records += list(read_jsonl(sub.path.parent / name))
            found = outcomes_with_ids(records)
            items = {t: (c, k) for t, (c, k, _, _) in found.items()}
            ids = {t: i for t, (_, _, i, _) in found.items()}
            chance = {t: ch for t, (_, _, _, ch) in found.items()}
            found_v = verification(sub.path)  # only evidence whose sha256s match this row's files
            out.append(Entry(eid, sub.doc, items, sub.complete, item_ids=ids, chance=chance, records=records, verified=found_v))
    return sorted(out, key=lambda e: e.id)


def display_name(model: ModelInfo) -> str:
    """Hub ids and aliases as they are; local checkpoints by their lineage name (chain stages), else their leaf."""
    if not model.is_local:
        return model.name
    return model.own_name or Path(model.name.rstrip("/")).name or model.name


def page_slug(entry_id: str) -> str:
    stem = entry_id.removeprefix("submissions/").removesuffix(".json")
    return f"{slug(stem.replace('/', '--'))[:60]}-{sha256_bytes(entry_id.encode())[:8]}"


def base_ref(model: ModelInfo) -> tuple[str | None, str | None] | None:
    """(sha256, name) of a row's base model: the lineage root, else the PEFT base, else the parent;
    None when the row is a base itself."""
    if model.lineage:
        root = model.lineage[0]
        return (None, None) if root.sha256 == model.sha256 else (root.sha256, root.name)
    if model.base is not None:
        return model.base.sha256, model.base.name
    return (None, model.parent) if model.parent else None


def find_base(entry: Entry, entries: list[Entry]) -> str | None:
    """Id of the base model's submission on the same suite (same suite version preferred), or None."""
    ref = base_ref(entry.result.model)
    if ref is None or ref == (None, None):
        return entry.id
    suite = entry.result.suite
    cands = [e for e in entries if is_base_row(ref, suite.name, e.result.suite.name, e.result.model.sha256, e.result.model.name)]
    cands.sort(key=lambda e: (e.result.suite.version != suite.version, e.id))
    return cands[0].id if cands else None


def is_base_row(ref: tuple[str | None, str | None], suite: str, row_suite: Any, row_sha256: Any, row_name: Any) -> bool:
    """Whether a row (its suite name, checkpoint sha256 and model name) is the base ``ref`` = (sha256, name) of a
    row on ``suite``: the same suite, matched by sha256 when the reference has one, else by name."""
    sha, name = ref
    return row_suite == suite and (row_sha256 == sha if sha else row_name == name)


def meta_row(entry: Entry, base_id: str | None) -> dict[str, Any]:
    m, s = entry.result.model, entry.result.suite
    return {
        "id": entry.id,
        "page": page_slug(entry.id),
        "model": display_name(m),
        "model_name": m.name,
        "source": m.source.value,
        "sha256": m.sha256,
        "parent": m.parent,
        "stage": m.stage,
        "depth": len(m.lineage),
        "recipe": m.recipe,
        "intervention": m.intervention,
        "suite": s.name,
        "suite_version": s.version,
        "base_id": base_id,
        "complete": entry.complete,
        "verified": entry.verified is not None,
        "verification": verification_id(entry) if entry.verified is not None else None,
    }


def verification_id(entry: Entry) -> str:
    """``submissions/…/<stem>.verified.json``: the evidence file of a verified row (like :attr:`Entry.id`)."""
    return entry.id.removesuffix(".json") + VERIFIED_SUFFIX
