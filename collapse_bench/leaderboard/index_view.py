"""The index page's model tables, one per suite (name and version), every cell prepared for ``index.html.j2``.

* **Ranks**: tie-aware, within the suite version of the table (:func:`suite_ranks`): the rank interval
  [1 + #rows surely better, N − #rows surely worse] from the score CIs, the point rank, the tied group.
* **Columns**: a compact default view (rank interval, model, lineage depth, score and 95% CI, the score's
  components, KL to base) and column groups to open (:data:`GROUPS`); a metric's group comes from its spec
  (:func:`group_of`); only columns some row of the table has are shown.
* **Numbers** rounded to their uncertainty (:func:`.numbers.rounded`): with a 95% CI, to the second significant
  digit of its half-width; else 3 significant digits. ``data-v`` keeps full precision. OOD accuracies are
  chance-normalised, (acc − 1/k)/(1 − 1/k) per item, the raw accuracy in the tooltip.
* **Facets** (suite, base model, recipe, stage, intervention, control): row data attributes the selects filter on.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..lineagefile import CONTROL_KINDS
from ..metrics import spec as metric_spec
from . import stats
from .aggregate import Tables, chance_normalised, item_stat_reps
from .comparisons import stage_kind
from .entry import BASELINE, Entry, base_ref, composite_config, display_name
from .entry import finite_float as _finite
from .noisefloor import NoiseFloor, row_floors
from .numbers import NONE, ci_text, data_value, plain, rounded
from .verified import mark as verified_mark

# (id, button label): the column groups a reader opens; None = the default view
GROUPS: tuple[tuple[str, str], ...] = (
    ("geometry", "geometry"), ("ood", "OOD per task"), ("calibration", "calibration"), ("plasticity", "plasticity"),
    ("diversity", "diversity"), ("lora", "LoRA"), ("lineage", "lineage"), ("details", "details"),
)  # fmt: skip
FACETS: tuple[tuple[str, str], ...] = (
    ("suite", "suite"), ("base", "base model"), ("recipe", "recipe"), ("stage", "stage"),
    ("intervention", "intervention"), ("control", "control"),
)  # fmt: skip
CALIBRATION_MODULE = "collapse_bench.metrics.calibration"
DIRECTION = {"higher": "↑ higher is healthier", "lower": "↓ lower is healthier", None: "– not scored as good or bad"}
OOD_TITLE = (
    "{}: chance-normalised accuracy, (acc − 1/k)/(1 − 1/k) averaged over the items (k choices; 0 = chance, 1 = every "
    "item right; raw accuracy in the cell's tooltip); " + DIRECTION["higher"]
)


# --- columns ---------------------------------------------------------------------------------------------


def group_of(task_kind: str, metric: str) -> str | None:
    """The column group of ``task.metric`` on the index: from the metric's spec (its kind; the calibration
    module's lm_eval metrics apart), else from the task kind; None for a kind the index does not show."""
    s = metric_spec.spec_for(metric)
    kind = s.kind if s is not None else task_kind
    if kind == "lm_eval":
        return "calibration" if s is not None and s.module == CALIBRATION_MODULE else "ood"
    return {"probe": "geometry", "plasticity": "plasticity", "diversity": "diversity", "lora": "lora"}.get(kind)


def spec_title(metric: str, what: str = "") -> str:
    if (s := metric_spec.spec_for(metric)) is None:
        return f"{what or metric}; {DIRECTION[None]}"
    return f"{what or s.display_label}: {s.definition}; {DIRECTION[s.direction]}"


def shown_metric(task_kind: str, metric: str, task_metrics: set[str]) -> bool:
    """Whether ``metric`` of a task of ``task_kind`` gets an index column: the metrics the composite reads,
    lm_eval accuracy (or, for a task without ``acc``, its other non-stderr outcome metrics) and the LoRA
    summary metrics (not the per-module ``name:module`` breakdown)."""
    group = group_of(task_kind, metric)
    if group == "ood":
        return metric == "acc" or ("acc" not in task_metrics and "stderr" not in metric)
    if group == "lora":
        return ":" not in metric
    for spec in composite_config()["components"].values():
        if spec["kind"] == task_kind and any(fnmatch.fnmatchcase(metric, r["metric"]) for r in spec["metrics"]):
            return True
    return False


@dataclass
class Column:
    key: str  # "<task>.<metric>" for a metric column, else a name
    head: str
    title: str
    group: str | None = None  # None: the default view
    num: bool = True
    cls: str = ""  # extra classes of the column's cells


@dataclass
class Cell:
    text: str = NONE
    v: str | None = None  # data-v
    title: str | None = None
    href: str | None = None
    flag: str | None = None  # a "*" mark with this tooltip
    tag: str | None = None  # a small label after the text (the control mark)
    mark: dict[str, str] | None = None  # the "✓ verified" link (href, title) after the model's name
    code: bool = False


@dataclass
class Board:
    id: str
    label: str
    n_ranked: int
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"facets": {name: value}, "cells": [Cell]}
    floors: list[dict[str, Any]] = field(default_factory=list)  # the noise floors of this table's checkpoints


def metric_columns(tables: Tables, ids: list[str]) -> list[Column]:
    """The metric columns of the rows ``ids``: every shown (task, metric) some row has a value for, in group
    order, then task and metric order."""
    found: dict[tuple[str, str], str] = {}
    for rid in ids:
        e = tables.entries[rid]
        for task, kind in e.kinds.items():
            ms = {m for m, v in e.metrics[task].items() if v is not None}
            for m in ms:
                group = group_of(kind, m)
                if group is not None and shown_metric(kind, m, ms):
                    found[(task, m)] = group
    order = [g for g, _ in GROUPS]
    keys = sorted(found, key=lambda k: (order.index(found[k]), k))
    out = []
    for task, m in keys:
        group = found[(task, m)]
        per_task = group in ("ood", "calibration") and m in ("acc", "ece")  # one column per task, named by it
        head = task if per_task else m if sum(k[1] == m for k in keys) == 1 else f"{task} {m}"
        title = (
            OOD_TITLE.format(task)
            if group == "ood" and m == "acc"
            else spec_title(m, f"{task}: ECE" if per_task else f"{task}.{m}")
        )
        out.append(Column(f"{task}.{m}", f"{head} {s.arrow if (s := metric_spec.spec_for(m)) else '–'}", title, group))
    return out


RANK_TITLE = (
    "rank interval within this suite version: [1 + rows surely better, N − rows surely worse] from the score's 95% CIs "
    "(one number when the interval is one rank); the tooltip gives the point rank and tied group"
)
# (key, head, title, group, numeric, extra class) of the columns that are not a task's metric
LEAD = (
    ("rank", "rank", RANK_TITLE, None, True, "rk"),
    ("model", "model", "the checkpoint (its page); rows marked control are surgery controls", None, False, "pin"),
    ("depth", "depth", "lineage depth: post-training stages between the base model and this checkpoint (base = 0)",
     None, True, ""),
    ("score", "score ↑", "the headline score: weighted mean of the outcome components present (* = partial: missing "
     f"components); {DIRECTION['higher']}", None, True, ""),
    ("ci", "95% CI", "95% bootstrap CI of the score (items and seeds resampled); digits follow its width", None, True, ""),
)  # fmt: skip
EXTRA = (
    ("c.geometry", "geometry vs base ↑", "geometry component (the collapse profile, not scored): 0.5 = same as the base, "
     "1 = healthier, 0 = more collapsed", "geometry", True, ""),
    ("base", "base model", "the lineage root of this checkpoint", "lineage", False, ""),
    ("stage", "stage", "the lineage stage of this checkpoint", "lineage", False, ""),
    ("recipe", "recipe", "the chain recipe (model.recipe)", "lineage", False, ""),
    ("intervention", "intervention", "the chain's intervention (none = the recipe's baseline)", "lineage", False, ""),
    ("rank_point", "rank (point)", "1 + rows with a higher score in this suite version", "details", True, ""),
    ("group", "tied group", "rows whose score CI overlaps the group leader's", "details", True, ""),
    ("composite", "composite v1", "the v1 composite (geometry scored, raw accuracy): kept for comparison, not ranked",
     "details", True, ""),
    ("reproduce", "reproduce", "the command that re-runs this row", "details", False, ""),
)  # fmt: skip
COMPONENT_HEADS = {"ood_accuracy_chance": "OOD acc"}


def fixed_columns() -> tuple[list[Column], list[Column]]:
    """(the default view: :data:`LEAD`, the score's components, KL to base; the :data:`EXTRA` columns)."""
    cfg = composite_config()
    lead = [Column(*c) for c in LEAD]
    for name, w in cfg["scores"]["score"]["weights"].items():
        spec = cfg["components"][name]
        rules = ", ".join(f"{r['metric']} ({r.get('better', 'higher')} better)" for r in spec["metrics"])
        norm = ", chance-normalised" if any(r.get("chance_normalised") for r in spec["metrics"]) else ""
        what = f"{name} component in [0, 1]: mean score of its {spec['kind']} metrics {rules}{norm}; weight {w:g} in the score"
        lead.append(Column(f"c.{name}", f"{COMPONENT_HEADS.get(name, name)} ↑", f"{what}; {DIRECTION['higher']}"))
    lead.append(Column("kl", "KL to base", spec_title("kl_to_base", "KL to base (mean over the probe tasks; base = 0)")))
    return lead, [Column(*c) for c in EXTRA]


# --- rows ------------------------------------------------------------------------------------------------


def suite_ranks(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int, int, int]]:
    """id -> (rank, best, worst, tied group) of the complete scored rows (one suite version)."""
    ranked = [r for r in rows if r["score"] is not None and r["complete"]]
    lo = [r["score"] if r["score_lo"] is None else r["score_lo"] for r in ranked]  # no CI: the point
    hi = [r["score"] if r["score_hi"] is None else r["score_hi"] for r in ranked]
    intervals = stats.rank_intervals(lo, hi)
    groups = stats.tied_groups([r["score"] for r in ranked], lo, hi)
    return {
        r["id"]: (1 + sum(o["score"] > r["score"] for o in ranked), best, worst, g)
        for r, (best, worst), g in zip(ranked, intervals, groups)
    }


def base_name(entry: Entry) -> str:
    ref = base_ref(entry.result.model)
    return display_name(entry.result.model) if ref is None or ref == (None, None) else ref[1] or (ref[0] or NONE)[:12]


def facets(entry: Entry, row: dict[str, Any]) -> dict[str, str]:
    """The row's value of every :data:`FACETS` name ("—" when it has none)."""
    baseline = "none" if row["recipe"] else NONE
    return {
        "suite": f"{row['suite']} v{row['suite_version']}",
        "base": base_name(entry),
        "recipe": row["recipe"] or NONE,
        "stage": row["stage"] or ("(base)" if row["base_id"] == row["id"] else NONE),
        "intervention": baseline if row["intervention"] in BASELINE else row["intervention"],
        "control": "control" if stage_kind(entry) in CONTROL_KINDS else "not a control",
    }


def kl_to_base(tables: Tables, row: dict[str, Any]) -> float | None:
    """Mean ``kl_to_base`` over the row's probe tasks; 0 for a row that is its own base; None otherwise."""
    e = tables.entries[row["id"]]
    vals = [v for t, k in e.kinds.items() if k == "probe" and (v := _finite(e.metrics[t].get("kl_to_base"))) is not None]
    return float(np.mean(vals)) if vals else 0.0 if row["base_id"] == row["id"] else None


def ood_cell(tables: Tables, rid: str, task: str) -> Cell:
    """Chance-normalised accuracy with its CI digits; the raw accuracy (and its CI) in the tooltip."""
    e = tables.entries[rid]
    acc = e.metrics[task].get("acc")
    known = tables.cis[rid].get(f"{task}.acc")
    ci: list[float | None] = [known[0], known[1]] if known else [None, None]
    raw = f"raw accuracy {rounded(acc, *ci)}" + (f" {ci_text(*ci)}" if ci[0] is not None else "")
    norm = chance_normalised(e, task)
    if norm is None:
        return Cell(rounded(acc, *ci), data_value(acc), f"{raw}; no per-item choice counts: raw accuracy shown")
    reps = item_stat_reps(e, task, "acc_chance", stats.N_BOOT)
    lo, hi = stats.percentile_ci(reps) if reps is not None else (None, None)
    value = float(norm.mean())
    chance = float(np.mean(e.chance[task]))
    title = f"{raw}; chance {plain(chance)}; chance-normalised {rounded(value, lo, hi)} {ci_text(lo, hi)}; n = {len(norm)}"
    return Cell(rounded(value, lo, hi), data_value(value), title)


def metric_cell(tables: Tables, rid: str, col: Column) -> Cell:
    task, metric = col.key.split(".", 1)
    if col.group == "ood" and metric == "acc":
        return ood_cell(tables, rid, task)
    value = tables.entries[rid].metrics.get(task, {}).get(metric)
    ci = tables.cis[rid].get(col.key)
    if ci is None:
        return Cell(plain(value), data_value(value))
    return Cell(rounded(value, *ci), data_value(value), f"95% CI {ci_text(*ci)}")


def fixed_cell(k: str, tables: Tables, row: dict[str, Any], rank: tuple[int, ...] | None, fac: dict[str, str]) -> Cell | None:
    """The cell of the non-metric column ``k`` (None: a metric column); ``rank``: (rank, best, worst, group)."""
    if k == "rank":
        if rank is None:
            return Cell("unranked", "", "not a complete run of the suite (see validate)" if not row["complete"] else "no score")
        span = str(rank[1]) if rank[1] == rank[2] else f"{rank[1]}–{rank[2]}"
        return Cell(span, str(rank[0]), f"rank {rank[0]}, interval {rank[1]}–{rank[2]}, tied group {rank[3]}")
    if k in ("rank_point", "group"):
        n = None if rank is None else rank[0 if k == "rank_point" else 3]
        return Cell(NONE if n is None else str(n), "" if n is None else str(n))
    if k == "model":
        tag = "control" if fac["control"] == "control" else None
        mark = verified_mark(tables.entries[row["id"]].verified, f"../{row['verification']}")  # index.html is in leaderboard/
        return Cell(row["model"], None, row["id"], href=f"models/{row['page']}.html", tag=tag, mark=mark)
    if k == "depth":
        lineage = tables.entries[row["id"]].result.model.lineage
        d = max(len(lineage) - 1, 0) if lineage else (0 if row["base_id"] == row["id"] else None)
        return Cell(NONE if d is None else str(d), "" if d is None else str(d))
    if k == "score":
        flag = f"partial: missing {row['missing']}" if row["partial"] else None
        return Cell(rounded(row["score"], row["score_lo"], row["score_hi"]), data_value(row["score"]), flag=flag)
    if k == "ci":
        return Cell(ci_text(row["score_lo"], row["score_hi"]), data_value(row["score_lo"]))
    if k == "composite" or k.startswith("c."):
        lo, hi = (row["composite_lo"], row["composite_hi"]) if k == "composite" else (None, None)
        return Cell(rounded(row[k], lo, hi), data_value(row[k]), f"95% CI {ci_text(lo, hi)}" if lo is not None else None)
    if k == "kl":
        kl = kl_to_base(tables, row)
        return Cell(plain(kl), data_value(kl))
    if k in ("base", "stage", "recipe", "intervention"):
        return Cell(fac[k])
    if k == "reproduce":
        return Cell(f"collapse-bench reproduce {row['id']}", code=True)
    return None


def board_id(name: str, version: Any) -> str:
    return "board-" + re.sub(r"[^A-Za-z0-9]+", "-", f"{name}-v{version}").strip("-").lower()


def ranks_by_suite(models: list[dict[str, Any]]) -> dict[tuple[Any, Any], dict[str, tuple[int, int, int, int]]]:
    """(suite, version) -> :func:`suite_ranks` of its rows: computed once per build for the index and every model page."""
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in models:
        groups.setdefault((r["suite"], r["suite_version"]), []).append(r)
    return {k: suite_ranks(v) for k, v in groups.items()}


def boards(tables: Tables, models: list[dict[str, Any]], ranked: dict[tuple[Any, Any], dict[str, Any]]) -> list[Board]:
    """One table per suite (name, version): larger suites (more tasks in a row) first, then by name; newest version first."""
    suites: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in models:
        suites.setdefault((row["suite"], row["suite_version"]), []).append(row)
    ntasks: dict[str, int] = {}  # per suite name, over its versions
    for (name, _), rows in suites.items():
        ntasks[name] = max(ntasks.get(name, 0), *(len(tables.entries[r["id"]].kinds) for r in rows))
    lead, extra = fixed_columns()
    out = []
    for key in sorted(suites, key=lambda k: (-ntasks[k[0]], str(k[0]), -int(k[1]))):
        rows = suites[key]
        ids = [r["id"] for r in rows]
        geometry, rest = [c for c in extra if c.group == "geometry"], [c for c in extra if c.group != "geometry"]
        cols = [*lead, *geometry, *metric_columns(tables, ids), *rest]
        ranks = ranked[key]
        board = Board(board_id(*key), f"{key[0]} v{key[1]}", len(ranks), cols)
        for row in rows:
            fac = facets(tables.entries[row["id"]], row)
            cells = [fixed_cell(c.key, tables, row, ranks.get(row["id"]), fac) or metric_cell(tables, row["id"], c) for c in cols]
            board.rows.append({"facets": fac, "cells": cells})
        out.append(board)
    return out


def facet_options(bs: list[Board]) -> list[dict[str, Any]]:
    """Per facet its distinct values over every row (sorted, with their row counts)."""
    return [
        {"name": name, "label": label, "options": sorted(Counter(r["facets"][name] for b in bs for r in b.rows).items())}
        for name, label in FACETS
    ]


def group_buttons(bs: list[Board]) -> list[dict[str, Any]]:
    """The groups some table has a column of, with the number of columns over all tables."""
    n = {g: sum(c.group == g for b in bs for c in b.columns) for g, _ in GROUPS}
    return [{"id": g, "label": label, "n": n[g]} for g, label in GROUPS if n[g]]


def glossary() -> list[dict[str, Any]]:
    """One row per metric spec (collapse_bench/metrics/spec.py), in registry order: the site's glossary."""
    return [
        {
            "id": s.id, "label": s.display_label, "kind": s.kind, "arrow": s.arrow, "definition": s.definition,
            "direction": f"{s.direction} is healthier" if s.direction else "not scored as good or bad",
            "range": s.range.show() if s.range is not None else "any finite number",
        }
        for s in metric_spec.all_specs()
    ]  # fmt: skip


def index_context(
    tables: Tables,
    models: list[dict[str, Any]],
    floors: dict[str, NoiseFloor] | None = None,
    ranked: dict[tuple[Any, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What ``index.html.j2`` reads for the model tables, their noise floors and the glossary (``ranked``:
    :func:`ranks_by_suite` of ``models`` when the caller has it)."""
    bs = boards(tables, models, ranked if ranked is not None else ranks_by_suite(models))
    for b, ids in zip(bs, board_row_ids(models, bs)):
        b.floors = row_floors([tables.entries[i] for i in ids], floors or {})
    return {"boards": bs, "facets": facet_options(bs), "groups": group_buttons(bs), "glossary": glossary()}


def board_row_ids(models: list[dict[str, Any]], bs: list[Board]) -> list[list[str]]:
    """The row ids of each board, in board order (boards are labelled "<suite> v<version>")."""
    return [[r["id"] for r in models if f"{r['suite']} v{r['suite_version']}" == b.label] for b in bs]
