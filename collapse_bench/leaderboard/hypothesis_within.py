"""Lineages for the hypothesis panel: which rows share a base model (the clusters of the cluster bootstrap, of
the Kish effective n and of the "model family" covariate), and the lineage edges (a stage row and its parent
row on the same suite) whose paired deltas the within-lineage analysis correlates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .aggregate import Tables
from .entry import Entry, base_ref


def _key(sha: str | None, name: str | None) -> str:
    return sha if sha else f"name:{name}"


def lineage_keys(tables: Tables) -> dict[str, str]:
    """Row id -> lineage label: the base model's sha256 (its name when it has none). The base's own submission
    (``base_id`` of the models table) decides when it is on the leaderboard, else the row's lineage root / PEFT
    base / parent (:func:`~.entry.base_ref`); a base row is its own lineage."""
    base_ids = tables.models.set_index("id")["base_id"].to_dict()
    out = {}
    for rid, e in sorted(tables.entries.items()):
        bid = base_ids.get(rid)
        if isinstance(bid, str) and bid in tables.entries:
            m = tables.entries[bid].result.model
            out[rid] = _key(m.sha256, m.name)
        else:
            ref = base_ref(e.result.model)
            out[rid] = _key(*ref) if ref and ref != (None, None) else _key(e.result.model.sha256, e.result.model.name)
    return out


def parent_id(entry: Entry, entries: list[Entry]) -> str | None:
    """Id of the submission of the row's parent checkpoint on the same suite (same suite version preferred), or
    None. The parent: the last lineage entry before the checkpoint itself, else ``model.parent`` (by name), else
    a PEFT adapter's base."""
    m = entry.result.model
    chain = [lin for lin in m.lineage if not (lin.sha256 == m.sha256 if lin.sha256 else lin.name == m.name)]
    if chain:
        sha, name = chain[-1].sha256, chain[-1].name
    elif m.parent:
        sha, name = None, m.parent
    elif m.base is not None:
        sha, name = m.base.sha256, m.base.name
    else:
        return None
    suite = entry.result.suite
    cands = [
        e
        for e in entries
        if e.id != entry.id
        and e.result.suite.name == suite.name
        and (e.result.model.sha256 == sha if sha else e.result.model.name == name)
    ]
    cands.sort(key=lambda e: (e.result.suite.version != suite.version, e.id))
    return cands[0].id if cands else None


def lineage_edges(tables: Tables) -> list[tuple[str, str]]:
    """(stage row, parent row) for every row whose parent is on the leaderboard, by stage row id."""
    entries = sorted(tables.entries.values(), key=lambda e: e.id)
    return [(e.id, p) for e in entries if (p := parent_id(e, entries)) is not None]


def edge_deltas(values: pd.Series, edges: list[tuple[str, str]]) -> np.ndarray:
    """value(stage row) - value(parent row) per edge (NaN where either is missing)."""
    if not edges:
        return np.empty(0)
    child, parent = zip(*edges)
    return values.reindex(list(child)).to_numpy(dtype=np.float64) - values.reindex(list(parent)).to_numpy(dtype=np.float64)
