"""What the leaderboard's data say about the benchmark's claims (``data.json["findings"]``; the site's
``findings.html`` and ``docs/findings.md`` are rendered from it, so no sentence there lacks a number here).

* **edges**: every lineage edge (a trained stage vs its parent on the same suite, controls excluded), per
  metric with an expected sign: the paired Δ, its CI, q, the minimum detectable effect and the verdict;
* **ladders**: the planted-collapse controls (``model.control``) as dose–response series, with the checks
  issue 16 pre-registered (SVD: rank-type metrics increasing and anisotropy / KL to base decreasing in r;
  extrapolation: KL to base increasing in α; permutation: every probe metric equal to the parent's);
* **claims**: the target paper's claims (arXiv 2605.30524) and whether these rows reproduce them; the claims on
  predictors read a hypothesis panel over the rows that are not planted controls (a planted collapse lowering
  accuracy is built in, not evidence about post-training), the full panel's counts given beside them.

Significant = the paired 95% CI excludes 0, or (without a CI) |Δ| beyond the noise floor's 80%-power MDE.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from scipy.stats import norm

from ..lineagefile import CONTROL_KINDS
from .aggregate import Tables
from .entry import finite_float
from .hypothesis import hypothesis_panel

# (metric, sign): +1 = must rise with the dose's "more representation" direction (rank r), -1 = must fall
SVD_CHECKS = (
    ("effective_rank", 1),
    ("participation_ratio", 1),
    ("epsilon_rank", 1),
    ("intrinsic_dimension", 1),
    ("anisotropy", -1),
    ("kl_to_base", -1),
)
RUNG_METRICS = (*(m for m, _ in SVD_CHECKS), "kl_to_parent")  # each rung's probe values in the ladder
SVD_MIN_MONOTONE = 3  # issue 16: at least three of SVD_CHECKS strictly monotone in r
PERMUTE_RTOL = 1e-5
GEOMETRY = {"effective_rank": 1, "participation_ratio": 1, "anisotropy": -1}  # +1: higher = less concentrated
OUTCOMES = ("score", "c.plasticity", "c.ood_accuracy_chance", "c.calibration", "c.diversity")
TARGET_CLAIMS = (("plasticity", "lower plasticity"), ("ood_accuracy", "weaker OOD accuracy"), ("ece", "worse calibration"))


def significant(m: dict[str, Any]) -> bool | None:
    """CI excludes 0 (when a paired CI exists), else beyond the MDE (when a floor exists), else None."""
    if m.get("ci_lo") is not None and m.get("ci_hi") is not None:
        return bool(m["ci_lo"] > 0 or m["ci_hi"] < 0)
    return None if m.get("beyond_mde") is None else bool(m["beyond_mde"])


def mde_rho(n_effective: float | None, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest |ρ| a two-sided test at ``alpha`` detects with ``power`` at n_eff points (Fisher z)."""
    if n_effective is None or n_effective <= 3:
        return None
    return float(math.tanh((norm.ppf(1 - alpha / 2) + norm.ppf(power)) / math.sqrt(n_effective - 3)))


def _control(tables: Tables, rid: str) -> dict[str, Any] | None:
    c = tables.entries[rid].doc["model"].get("control")
    return c if isinstance(c, dict) and c.get("kind") in CONTROL_KINDS else None


def without_controls(tables: Tables) -> Tables:
    """The same tables without the planted-control rows (rows and their edges; every other row's values are its
    own and its base's, so they are unchanged)."""
    keep = [rid for rid in tables.scalars.index if _control(tables, rid) is None]
    return Tables(
        models=tables.models[tables.models["id"].isin(keep)].reset_index(drop=True),
        scalars=tables.scalars.loc[keep],
        deltas=tables.deltas.loc[[r for r in tables.deltas.index if r in set(keep)]],
        interventions=tables.interventions,
        cis={rid: ci for rid, ci in tables.cis.items() if rid in set(keep)},
        entries={rid: e for rid, e in tables.entries.items() if rid in set(keep)},
        floors=tables.floors,
    )


def _verdicts(rows: list[dict[str, Any]], target: str) -> tuple[list[dict[str, Any]], int, int]:
    """(the geometry predictors' rows of ``target``, how many agree, how many contradict)."""
    mine = [h for h in rows if h["target"] == target and h["family"] in ("spectral", "isotropy")]
    return mine, sum(h["verdict"] == "agrees" for h in mine), sum(h["verdict"] == "contradicts" for h in mine)


def _probe(tables: Tables, rid: str) -> dict[str, Any]:
    entry = tables.entries[rid]
    task = entry.probe_task
    return entry.metrics.get(task, {}) if task else {}


def edges(tables: Tables, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stage-vs-parent comparison of a trained row: the metrics that carry an expected sign."""
    models = tables.models.set_index("id")
    out = []
    for c in found:
        if c["relation"] != "parent" or _control(tables, c["id"]) is not None:
            continue
        rows = [
            {k: m.get(k) for k in ("task", "metric", "expected_sign", "delta", "ci_lo", "ci_hi", "q", "mde_80", "verdict")}
            | {"significant": significant(m)}
            for m in c["metrics"]
            if m.get("expected_sign") is not None
        ]
        verdicts = [r["verdict"] for r in rows]
        out.append(
            {
                "id": c["id"],
                "parent_id": c["reference"],
                "model": models.at[c["id"], "model"],
                "stage": models.at[c["id"], "stage"],
                "stage_kind": tables.entries[c["id"]].doc["model"].get("stage_kind"),
                "metrics": rows,
                "agrees": verdicts.count("agrees"),
                "contradicts": verdicts.count("contradicts"),
                "within_noise": sum(v not in ("agrees", "contradicts") for v in verdicts),
            }
        )
    return out


def _dose_key(dose: Any) -> float:
    return math.inf if dose == "full" else float(dose)


def strictly_monotone(values: list[float | None], sign: int) -> bool:
    vals = [v for v in values if v is not None]
    return len(vals) == len(values) >= 2 and all(sign * (b - a) > 0 for a, b in itertools.pairwise(vals))


def ladders(tables: Tables) -> list[dict[str, Any]]:
    """Control rows grouped by (lineage root, recipe, kind, suite), rungs in dose order, with their checks."""
    models = tables.models.set_index("id")
    controls = {rid: c for rid in models.index if (c := _control(tables, rid)) is not None}
    groups: dict[tuple[Any, ...], list[str]] = {}
    for rid, c in controls.items():
        key = (
            models.at[rid, "base_id"],
            models.at[rid, "recipe"],
            c["kind"],
            models.at[rid, "suite"],
            models.at[rid, "suite_version"],
        )
        groups.setdefault(key, []).append(rid)
    by_name = {(m, s, v): rid for rid, m, s, v in zip(models.index, models["model"], models["suite"], models["suite_version"])}
    out = []
    for (base_id, recipe, kind, suite, version), rids in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        parent_id = by_name.get((models.at[rids[0], "parent"], suite, version))
        doses = {rid: controls[rid]["dose"] for rid in rids}
        if kind == "extrapolate" and parent_id is not None and all(_dose_key(d) != 1.0 for d in doses.values()):
            doses[parent_id] = 1  # θ_base + 1·(θ_stage − θ_base) is the stage: its row is the α = 1 rung (one row per sha256)
        rungs = []
        for rid in sorted(doses, key=lambda r: _dose_key(doses[r])):
            row = _probe(tables, rid)
            probe = {m: row.get(m) for m in RUNG_METRICS}
            if rid == parent_id:
                probe["kl_to_parent"] = None  # the row's own parent is the base, not itself
            rungs.append(
                {
                    "id": rid,
                    "model": models.at[rid, "model"],
                    "dose": doses[rid],
                    "parent_row": rid == parent_id,
                    "probe": probe,
                    "outcomes": {k: finite_float(models.at[rid, k]) for k in OUTCOMES if k in models.columns},
                }
            )
        ladder = {"recipe": recipe, "kind": kind, "base_id": base_id, "parent_id": parent_id, "suite": f"{suite} v{version}"}
        out.append({**ladder, "rungs": rungs, "checks": _checks(tables, kind, rungs, parent_id)})
    return out


def _flag(x: Any) -> bool | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else bool(x)


def _checks(tables: Tables, kind: str, rungs: list[dict[str, Any]], parent_id: str | None) -> dict[str, Any]:
    if kind in ("svd_truncate", "extrapolate") and len(rungs) < 2:  # a monotone trend needs two doses
        return {"passed": None, "reason": f"{len(rungs)} rung submitted: a trend in the dose needs at least two"}
    if kind == "svd_truncate":
        rows = [
            {
                "metric": m,
                "direction": "increasing" if s > 0 else "decreasing",
                "strictly_monotone": strictly_monotone([r["probe"][m] for r in rungs], s),
            }
            for m, s in SVD_CHECKS
        ]
        n = sum(bool(r["strictly_monotone"]) for r in rows)
        return {"metrics": rows, "n_monotone": n, "needed": SVD_MIN_MONOTONE, "passed": n >= SVD_MIN_MONOTONE}
    if kind == "extrapolate":
        ok = strictly_monotone([r["probe"]["kl_to_base"] for r in rungs], 1)
        return {"metric": "kl_to_base", "direction": "increasing", "strictly_monotone": ok, "passed": ok}
    return _permute_check(tables, rungs, parent_id)


def _permute_check(tables: Tables, rungs: list[dict[str, Any]], parent_id: str | None) -> dict[str, Any]:
    """Largest relative difference of any probe metric of a permuted rung from the unpermuted parent's."""
    if parent_id is None:
        return {"passed": None, "reason": "no row of the unpermuted parent on this suite"}
    ref = _probe(tables, parent_id)
    worst: tuple[float, str | None] = (0.0, None)
    compared = 0
    for rung in rungs:
        mine = _probe(tables, rung["id"])
        for metric, a in sorted(ref.items()):
            b = mine.get(metric)
            if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (a, b)):
                continue
            compared += 1
            rel = abs(b - a) / max(abs(a), 1e-12)
            if rel > worst[0]:
                worst = (rel, metric)
    return {
        "metrics_compared": compared,
        "max_rel_diff": worst[0],
        "worst_metric": worst[1],
        "rtol": PERMUTE_RTOL,
        "passed": compared > 0 and worst[0] <= PERMUTE_RTOL,
    }


def _status(pro: int, con: int, tested: int) -> str:
    if tested == 0:
        return "not testable yet"
    if pro > con:
        return "reproduced" if con == 0 else "mixed"
    if con > pro:
        return "contradicted"
    return "mixed" if pro else "not reproduced (within noise)"


def claims(tables: Tables, found: list[dict[str, Any]], hypothesis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The target paper's claims, each with the counts that decide its status (see :func:`_status`)."""
    out = []
    probe = {rid: e.probe_task for rid, e in tables.entries.items()}
    trained = [c for c in found if c["relation"] == "parent" and _control(tables, c["id"]) is None]
    geo = [
        {**m, "significant": significant(m)}
        for c in trained
        for m in c["metrics"]
        if m["task"] == probe[c["id"]] and m["metric"] in GEOMETRY and m.get("delta") is not None
    ]
    tested = [m for m in geo if m["significant"] is not None]
    conc = sum(bool(m["significant"]) and GEOMETRY[m["metric"]] * m["delta"] < 0 for m in tested)
    anti = sum(bool(m["significant"]) and GEOMETRY[m["metric"]] * m["delta"] > 0 for m in tested)
    out.append(
        {
            "id": "concentration",
            "claim": "sequential post-training concentrates the representation (effective rank and participation "
            "ratio fall, anisotropy rises, stage vs parent)",
            "status": _status(conc, anti, len(tested)),
            "evidence": {
                "edge_metrics": len(geo),
                "tested": len(tested),
                "concentrating": conc,
                "opposite": anti,
                "within_noise": len(tested) - conc - anti,
                "edges": len(trained),
            },
        }
    )
    natural = without_controls(tables)
    panel = hypothesis_panel(natural)[0]
    post = panel.astype(object).where(panel.notna(), None).to_dict(orient="records")
    for target, words in TARGET_CLAIMS:
        rows, agree, contra = _verdicts(post, target)
        _, agree_all, contra_all = _verdicts(hypothesis, target)
        n_eff = [h["n_effective"] for h in rows if h.get("n_effective") is not None]
        out.append(
            {
                "id": f"predicts_{target}",
                "claim": f"a more concentrated geometry goes with {words} (post-trained rows; planted controls apart)",
                "status": _status(agree, contra, len(rows)),
                "evidence": {
                    "rows": len(natural.scalars.index),
                    "control_rows_apart": len(tables.scalars.index) - len(natural.scalars.index),
                    "pairs": len(rows),
                    "agrees": agree,
                    "contradicts": contra,
                    "within_noise": len(rows) - agree - contra,
                    "analyses": sorted({h["analysis"] for h in rows}),
                    "max_n_effective": max(n_eff, default=None),
                    "mde_rho_80": mde_rho(max(n_eff, default=None)),
                    "agrees_with_controls": agree_all,
                    "contradicts_with_controls": contra_all,
                },
            }
        )
    inter = [
        {**r, "within_noise": _flag(r.get("within_noise"))}
        for r in tables.interventions.to_dict(orient="records")
        if r.get("intervention") not in (None, "", "none")
    ]
    better = sum(r["within_noise"] is False and (r.get("delta_score") or 0) > 0 for r in inter)
    worse = sum(r["within_noise"] is False and (r.get("delta_score") or 0) < 0 for r in inter)
    out.append(
        {
            "id": "interventions",
            "claim": "replay, feature refresh, diversity regularisation and LoRA decorrelation prevent the loss "
            "(headline score above the baseline chain's at the same stage)",
            "status": _status(better, worse, sum(r["within_noise"] is not None for r in inter)),
            "evidence": {
                "rows": len(inter),
                "better": better,
                "worse": worse,
                "within_noise": sum(r["within_noise"] is True for r in inter),
            },
        }
    )
    return out


def findings(tables: Tables, found: list[dict[str, Any]], hypothesis: list[dict[str, Any]]) -> dict[str, Any]:
    """``data.json["findings"]``."""
    e = edges(tables, found)
    return {"edges": e, "ladders": ladders(tables), "claims": claims(tables, found, hypothesis)}
