"""Paired comparisons on identical items and seeds (issue 15, item 2): every lineage edge (a stage vs its
parent row, and vs its base row when the base is not the parent) and every intervention vs its baseline
at the same recipe, stage and suite.

Per comparison and metric (``data.json`` → ``comparisons``):
  * ``acc`` of an lm_eval task: the items both rows scored (by item id), Δ = mean(a) − mean(b), paired
    bootstrap CI (one index matrix for both rows), p from exact McNemar;
  * ``ece`` of an lm_eval task: the same items, Δ ECE (15 equal-mass bins), paired bootstrap CI, p =
    the two-sided bootstrap p, 2·min(P*(Δ* ≤ 0), P*(Δ* ≥ 0)) (capped at 1);
  * plasticity ``gain``: the seeds both rows ran (same data order per seed), Δ of the seed means, a paired t
    CI and ``scipy.stats.ttest_rel`` p (a bootstrap over 2–5 seeds would be far too narrow);
  * any other scalar (geometry, diversity, …: no per-item evidence in the result): with a noise floor of the row's
    lineage root on the same task config, Δ ± z₀.₉₇₅·√2·sd and p = 2Φ(−|Δ|/(√2·sd)) (``noise_floor_normal``,
    :mod:`.noisefloor`); without one, or when the floor's SD is float rounding (≤ 1e-12 of the runs' values: a
    deterministic metric such as plasticity's ``threshold_bpb``), Δ only.
q = Benjamini–Hochberg over the p-values of one comparison. "Within noise" = the paired 95 % CI contains 0
or q ≥ 0.05. A lineage edge also gets the pre-registered expected sign of its stage kind and a verdict
(:func:`.paired.verdict`). The bootstrap index matrix of a task is seeded by the task and the shared item ids
(``stats.seed_of``), so all rows on the same items share it and each row's replicates are computed once;
byte-identical builds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..lineagefile import TRAINING_KINDS
from ..metrics.calibration_rows import acc_ece_rows, ece_mass_rows
from . import paired, stats
from .aggregate import Tables, per_seed_rows, root_floor
from .entry import BASELINE, Entry, _num, seed_order
from .noisefloor import NoiseFloor, annotate
from .signs import expected_sign


def _p_boot(reps: np.ndarray) -> float | None:
    r = reps[np.isfinite(reps)]
    if len(r) == 0:
        return None
    return float(min(1.0, 2 * min((r <= 0).mean(), (r >= 0).mean())))


def _aligned(a: Entry, b: Entry, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    """Both rows' (confidence, correct) on the items they share (by id, in ``a``'s order), and those ids."""
    ids_a, ids_b = a.item_ids.get(task), b.item_ids.get(task)
    if not ids_a or not ids_b:
        return None
    pos_b = {i: j for j, i in enumerate(ids_b)}
    common = [(i, pos_b[x]) for i, x in enumerate(ids_a) if x in pos_b]
    if len(common) < 2:
        return None
    ia, ib = (np.array(v) for v in zip(*common))
    (ca, ka), (cb, kb) = a.items[task], b.items[task]
    return ca[ia], ka[ia], cb[ib], kb[ib], [ids_a[i] for i in ia]


def _replicates(
    e: Entry, task: str, conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(acc, ECE) replicates of one row on one index matrix, cached per (task, seed): rows with the same
    items share the matrix (seeded by the task and the item ids), so each row's replicates are computed once."""
    key = ("paired", task, "acc+ece", seed)
    if key not in e.reps:
        e.reps[key] = np.stack(acc_ece_rows(conf, correct, idx))
    return e.reps[key][0], e.reps[key][1]


def _item_metrics(a: Entry, b: Entry, task: str, n_boot: int) -> list[dict[str, Any]]:
    found = _aligned(a, b, task)
    if found is None:
        return []
    ca, ka, cb, kb, ids = found
    seed = stats.seed_of(task, *ids)  # one matrix for every pair of rows on exactly these items
    idx = stats.bootstrap_indices(len(ca), n_boot, seed)
    full = len(ids) == len(a.item_ids[task]) == len(b.item_ids[task])  # cacheable: the rows' whole item lists
    acc_a, ece_a = _replicates(a, task, ca, ka, idx, seed) if full else acc_ece_rows(ca, ka, idx)
    acc_b, ece_b = _replicates(b, task, cb, kb, idx, seed) if full else acc_ece_rows(cb, kb, idx)
    mc = paired.mcnemar(ka, kb)
    point = float(ece_mass_rows(ca[None], ka[None])[0] - ece_mass_rows(cb[None], kb[None])[0])
    return [
        _row(task, "acc", float(ka.mean() - kb.mean()), acc_a - acc_b, mc.pvalue if mc else None, "mcnemar_exact", len(ca)),
        _row(task, "ece", point, ece_a - ece_b, _p_boot(ece_a - ece_b), "paired_bootstrap", len(ca)),
    ]


def _seed_metric(a: Entry, b: Entry, task: str, metric: str) -> dict[str, Any] | None:
    def by_seed(e: Entry) -> dict[str, float]:
        rows = per_seed_rows(e.result.tasks[task].raw)
        return {str(r.get("seed", i)): float(r[metric]) for i, r in enumerate(rows) if _num(r.get(metric))}

    from scipy import stats as st  # scipy ships with lm-eval's dependencies

    sa, sb = by_seed(a), by_seed(b)
    common = sorted(set(sa) & set(sb), key=seed_order)
    if len(common) < 2:
        return None
    d = np.array([sa[s] - sb[s] for s in common])
    row = _row(task, metric, float(d.mean()), None, None, "paired_t_seeds", len(common))
    sd = float(d.std(ddof=1))
    if sd > 0:
        half = float(st.t.ppf(0.975, len(d) - 1)) * sd / np.sqrt(len(d))
        row.update(
            ci_lo=float(d.mean()) - half,
            ci_hi=float(d.mean()) + half,
            p=float(st.ttest_rel([sa[s] for s in common], [sb[s] for s in common]).pvalue),
        )
    return row


def _row(task: str, metric: str, delta: float, reps: np.ndarray | None, p: float | None, test: str, n: int) -> dict[str, Any]:
    lo, hi = stats.percentile_ci(reps) if reps is not None and np.isfinite(reps).sum() >= len(reps) / 2 else (None, None)
    return {"task": task, "metric": metric, "delta": delta, "ci_lo": lo, "ci_hi": hi, "p": p, "test": test, "n": n}


ROUNDING = 1e-12  # a floor SD below this (relative to the runs' values) is float rounding of a deterministic metric


def _floor_metric(task: str, metric: str, delta: float, floor: NoiseFloor | None, task_hash: str | None) -> dict[str, Any]:
    from scipy import stats as st  # scipy ships with lm-eval's dependencies

    got = floor.of(task, metric, task_hash) if floor is not None else None
    runs = floor.runs.get(f"{task}.{metric}", ()) if floor is not None else ()
    if got is None or not got[0] > ROUNDING * max([1.0, *map(abs, runs)]):
        return _row(task, metric, delta, None, None, "none", 0)  # no floor, or a deterministic metric
    scale = float(np.sqrt(2.0) * got[0])
    half = float(st.norm.ppf(0.975)) * scale
    p = float(2 * st.norm.sf(abs(delta) / scale))
    row = _row(task, metric, delta, None, p, "noise_floor_normal", len(runs))
    row.update(ci_lo=delta - half, ci_hi=delta + half)
    return row


def compare_rows(a: Entry, b: Entry, n_boot: int, floor: NoiseFloor | None = None) -> list[dict[str, Any]]:
    """Every paired metric of ``a`` − ``b`` on the tasks both rows ran, with BH q-values and "within noise";
    ``floor``: the noise floor of ``a``'s lineage root (the metrics without per-item or per-seed evidence)."""
    rows: list[dict[str, Any]] = []
    common = sorted(set(a.result.tasks) & set(b.result.tasks))
    for task in common:
        kind = a.result.tasks[task].kind
        if kind == "lm_eval":
            rows += _item_metrics(a, b, task, n_boot)
        elif kind == "plasticity" and (r := _seed_metric(a, b, task, "gain")) is not None:
            rows.append(r)
        done = {r["metric"] for r in rows if r["task"] == task}
        for metric, value in sorted(a.metrics.get(task, {}).items()):
            other = b.metrics.get(task, {}).get(metric)
            if metric not in done and value is not None and other is not None and _num(value) and _num(other):
                rows.append(_floor_metric(task, metric, float(value) - float(other), floor, a.result.tasks[task].hash or None))
    for row, q in zip(rows, paired.benjamini_hochberg([r["p"] for r in rows])):
        row["q"] = q
        row["within_noise"] = (
            None if row["ci_lo"] is None else bool(row["ci_lo"] <= 0 <= row["ci_hi"] or (q is None or q >= 0.05))
        )
    return rows


def stage_kind(entry: Entry) -> str | None:
    """The stage kind of a chain row: the lineage file's ``stage_kind`` when recorded, else a stage name
    that is a kind (the committed chains name their stages by kind)."""
    recorded = entry.result.model.raw.get("stage_kind")
    if isinstance(recorded, str):
        return recorded
    stage = entry.result.model.stage
    return stage if stage in TRAINING_KINDS else None


def _with_verdicts(rows: list[dict[str, Any]], kind: str | None, by_kind: dict[str, str]) -> None:
    for row in rows:
        rule = expected_sign(kind, by_kind.get(row["task"], ""), row["metric"]) if kind else None
        row["expected_sign"] = rule.sign if rule else None
        row["verdict"] = (
            paired.verdict(row["ci_lo"], row["ci_hi"], row["q"], rule.sign) if rule and row["ci_lo"] is not None else None
        )


def comparisons(tables: Tables, n_boot: int = stats.N_BOOT, floors: dict[str, NoiseFloor] | None = None) -> list[dict[str, Any]]:
    """All paired comparisons of the leaderboard, ordered by (row id, relation); each metric with the noise floor
    of the row's lineage root where one was committed (:mod:`.noisefloor`)."""
    by_id, models = tables.entries, tables.models
    by_sha: dict[tuple[str, str | None], str] = {
        (e.result.suite.name, e.result.model.sha256): i for i, e in by_id.items() if e.result.model.sha256
    }
    out: list[dict[str, Any]] = []
    for rid in sorted(by_id):
        e = by_id[rid]
        suite = e.result.suite.name
        refs: list[tuple[str, str]] = []
        lineage = e.result.model.lineage
        if len(lineage) >= 2 and (pid := by_sha.get((suite, lineage[-2].sha256))):
            refs.append(("parent", pid))
        row = models[models["id"] == rid].iloc[0]
        bid = row["base_id"]
        if isinstance(bid, str) and bid != rid and all(r != bid for _, r in refs):
            refs.append(("base", bid))
        intervention = row["intervention"]
        if isinstance(row["recipe"], str) and intervention not in BASELINE and isinstance(intervention, str):
            same = tables.interventions
            match = same[(same["id"] == rid) & same["baseline_id"].notna()]
            if len(match):
                refs.append(("baseline", str(match.iloc[0]["baseline_id"])))
        kinds = {t: b.kind for t, b in e.result.tasks.items()}
        floor = root_floor(e, floors)
        hashes: dict[str, str | None] = {t: b.hash or None for t, b in e.result.tasks.items()}
        for relation, ref in refs:
            metrics = compare_rows(e, by_id[ref], n_boot, floor)
            if relation in ("parent", "base"):
                _with_verdicts(metrics, stage_kind(e) if relation == "parent" else None, kinds)
            annotate(metrics, floor, hashes)
            out.append({"id": rid, "relation": relation, "reference": ref, "metrics": metrics})
    return out
