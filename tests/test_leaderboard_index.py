"""The index page (issue 17): one table per suite version with tie-aware ranks, the compact default view and its
column groups, facets, numbers rounded to their CI, chance-normalised OOD accuracies, a title on every header.

Built from committed submissions (real lm_eval items with choice counts) plus two derived rows: the same
SmolLM2 row as suite version 2 and a surgery control (stage_kind svd_truncate); plots are not drawn (the
index does not show them).
"""

from __future__ import annotations

import copy
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collapse_bench.leaderboard import index_view as iv
from collapse_bench.leaderboard import numbers as nb
from collapse_bench.leaderboard import site
from collapse_bench.leaderboard.entry import Entry, outcomes_with_ids

SUBS = Path(__file__).resolve().parents[1] / "submissions"
SMOL = "huggingfacetb/smollm2-135m-instruct/standard-cb340c5194ad.json"
GEMMA = "google/gemma3-270m/standard-e02271115df5.json"
QUICK = "huggingfacetb/smollm2-135m-instruct/quick-dcd5b6cd5210.json"
CHAIN = "local/smollm2-135m-instruct--sft_safety_math--none--s0--01-sft/standard-9fe52ea1f392.json"
V2 = "submissions/huggingfacetb/smollm2-135m-instruct/standard-v2copy.json"
CONTROL = "submissions/local/smollm2-control/standard-svd.json"
DEFAULT_HEADS = [
    "rank",
    "model",
    "depth",
    "score ↑",
    "95% CI",
    "plasticity ↑",
    "OOD acc ↑",
    "calibration ↑",
    "diversity ↑",
    "KL to base",
]


def samples(rel: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (SUBS / rel.replace(".json", ".samples.jsonl")).read_text().splitlines()]


def real_entry(rel: str, eid: str | None = None, doc: dict[str, Any] | None = None) -> Entry:
    """A committed submission as ``entries_from`` reads it (items, ids and chance levels from its samples)."""
    found = outcomes_with_ids(samples(rel))
    return Entry(
        eid or f"submissions/{rel}",
        doc if doc is not None else json.loads((SUBS / rel).read_text()),
        {t: (c, k) for t, (c, k, _, _) in found.items()},
        item_ids={t: i for t, (_, _, i, _) in found.items()},
        chance={t: ch for t, (_, _, _, ch) in found.items()},
    )


def index_entries() -> list[Entry]:
    smol = json.loads((SUBS / SMOL).read_text())
    v2 = copy.deepcopy(smol)
    v2["suite"]["version"] = 2
    control = copy.deepcopy(smol)
    root = smol["model"]["lineage"][0]
    control["model"].update(
        name="smollm2-135m-instruct/svd/r8",
        sha256="c" * 64,
        parent=smol["model"]["name"],
        stage="r8",
        stage_kind="svd_truncate",
        lineage=[root, {"name": "smollm2-135m-instruct/svd/r8", "sha256": "c" * 64, "revision": None, "stage": "r8"}],
    )
    return [
        real_entry(SMOL),
        real_entry(GEMMA),
        real_entry(QUICK),
        real_entry(CHAIN),
        real_entry(SMOL, V2, v2),
        real_entry(SMOL, CONTROL, control),
    ]


def render_index(out: Path) -> Path:
    """The site of :func:`index_entries` without plots (the index does not show them)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(site, "entry_plots", lambda entry, base: [])
        site.render(index_entries(), out)
    return out


class Page(HTMLParser):
    """Every <th>/<td> of the index with its attributes and text, grouped per board table; every <th> of the page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.boards: dict[str, dict[str, Any]] = {}
        self.all_th: list[dict[str, Any]] = []
        self.selects: dict[str, list[str]] = {}
        self.buttons: list[str] = []
        self._board: str | None = None
        self._cell: dict[str, Any] | None = None
        self._select: str | None = None
        self._row: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table" and "board-table" in a.get("class", ""):
            self._board = a["id"]
            self.boards[a["id"]] = {"heads": [], "rows": []}
        elif tag == "tr" and self._board and any(k.startswith("data-f-") for k in a):
            self._row = {"attrs": a, "cells": []}
            self.boards[self._board]["rows"].append(self._row)
        elif tag in ("th", "td"):
            self._cell = {"tag": tag, "attrs": a, "text": "", "html_tags": []}
            if tag == "th":
                self.all_th.append(self._cell)
                if self._board:
                    self.boards[self._board]["heads"].append(self._cell)
            elif self._row is not None:
                self._row["cells"].append(self._cell)
        elif tag == "select":
            self._select = a["data-facet"]
            self.selects[self._select] = []
        elif tag == "option" and self._select:
            self.selects[self._select].append(a["value"])
        elif tag == "button" and "group-toggle" in a.get("class", ""):
            self.buttons.append(a["data-group"])
        elif self._cell is not None:
            self._cell["html_tags"].append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._board = None
        elif tag in ("th", "td"):
            if self._cell is not None:
                self._cell["text"] = self._cell["text"].strip()
            self._cell = None
        elif tag == "select":
            self._select = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


def group(cell: dict[str, Any]) -> str:
    (g,) = [c[2:] for c in cell["attrs"]["class"].split() if c.startswith("g-")]
    return g


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_index(tmp_path_factory.mktemp("index") / "lb")


@pytest.fixture(scope="module")
def page(built: Path) -> Page:
    p = Page()
    p.feed((built / "index.html").read_text(encoding="utf-8"))
    return p


def by_id(page: Page, board: str, eid: str) -> dict[str, Any]:
    (row,) = [r for r in page.boards[board]["rows"] if r["cells"][1]["attrs"].get("title") == eid]
    return row


def cell(page: Page, board: str, eid: str, head: str, grp: str | None = None) -> dict[str, Any]:
    heads = page.boards[board]["heads"]
    idx = [i for i, h in enumerate(heads) if h["text"] == head and (grp is None or group(h) == grp)]
    assert len(idx) == 1, (head, grp, [h["text"] for h in heads])
    return by_id(page, board, eid)["cells"][idx[0]]


# --- the rounding rule, against hand-computed values ---------------------------------------------------


@pytest.mark.parametrize(
    ("x", "lo", "hi", "want"),
    [
        (0.3933, 0.3533, 0.4333, "0.393"),  # half-width 0.040 -> 3 decimals
        (0.3933, 0.2433, 0.5433, "0.39"),  # half-width 0.15 -> 2 decimals
        (0.5415359, 0.5274, 0.5470, "0.5415"),  # half-width 0.0098 -> 4 decimals
        (12.345, 12.295, 12.395, "12.345"),  # half-width 0.050
        (12.345, 11.0, 14.0, "12.3"),  # half-width 1.5 -> 1 decimal
        (1234.5, 1204.5, 1264.5, "1234"),  # half-width 30 -> units
        (1234.5, 934.5, 1534.5, "1230"),  # half-width 300 -> tens
        (2.082e-17, -0.01, 0.01, "0.000"),  # float noise next to a CI is 0 at the CI's resolution
        (-0.0001, -0.02, 0.02, "0.000"),  # never "-0.000"
        (-0.0266667, -0.13, 0.08, "-0.03"),
        (0.5, None, None, "0.500"),  # no CI: 3 significant digits
        (0.5, 0.5, 0.5, "0.500"),  # a zero-width CI says nothing about the digits
        (None, 0.1, 0.2, "—"),
        (float("nan"), 0.1, 0.2, "—"),
    ],
)
def test_rounded_to_the_ci(x: Any, lo: Any, hi: Any, want: str) -> None:
    assert nb.rounded(x, lo, hi) == want


def test_plain_and_ci_text() -> None:
    assert [nb.plain(x) for x in (0.39333, 15.4386, 375.704, 1234.6, 0.08, 3.2e-5, 2.082e-17, 0, -0.12)] == [
        "0.393",
        "15.4",
        "376",
        "1235",
        "0.0800",
        "3.20e-05",
        "0",
        "0",
        "-0.120",
    ]
    assert nb.ci_text(0.3533, 0.4333) == "[0.353, 0.433]" and nb.ci_text(0.5274, 0.5470) == "[0.5274, 0.5470]"
    assert nb.ci_text(None, 0.2) == "—" and nb.ci_text(0.2, 0.2) == "—"
    assert nb.ci_decimals(0.0, 0.2) == 2 and nb.ci_decimals(0.0, 2.0) == 1 and nb.ci_decimals(0.0, 600.0) == -1
    assert nb.data_value(0.1 + 0.2) == "0.30000000000000004" and nb.data_value(None) == ""


def test_wbr_escapes_and_breaks() -> None:
    assert str(nb.wbr("a/b_c<x>")) == "a/<wbr>b_<wbr>c&lt;x&gt;"


# --- column groups from the metric specs -------------------------------------------------------------


def test_group_of_comes_from_the_metric_spec() -> None:
    cases = {
        ("probe", "effective_rank"): "geometry",
        ("probe", "kl_to_base"): "geometry",
        ("lm_eval", "acc"): "ood",
        ("lm_eval", "exact_match_strict_match"): "ood",
        ("lm_eval", "refusal_gap"): "ood",
        ("lm_eval", "ece"): "calibration",  # lm_eval kind, but the calibration module's spec
        ("lm_eval", "brier"): "calibration",
        ("plasticity", "gain"): "plasticity",
        ("diversity", "self_bleu4"): "diversity",
        ("lora", "delta_norm:q"): "lora",
        ("lm_eval", "no_such_metric"): "ood",  # no spec: the task kind decides
        ("mystery", "no_such_metric"): None,
    }
    assert {k: iv.group_of(*k) for k in cases} == cases
    assert iv.shown_metric("lm_eval", "acc", {"acc", "acc_stderr"})
    assert not iv.shown_metric("lm_eval", "acc_stderr", {"acc", "acc_stderr"})
    assert not iv.shown_metric("lm_eval", "acc_norm", {"acc", "acc_norm"})
    assert iv.shown_metric("lm_eval", "exact_match_strict_match", {"exact_match_strict_match"})
    assert not iv.shown_metric("lm_eval", "exact_match_stderr_strict_match", {"exact_match_strict_match"})
    assert iv.shown_metric("lora", "delta_norm", set()) and not iv.shown_metric("lora", "delta_norm:q", set())
    assert iv.shown_metric("probe", "effective_rank", set()) and not iv.shown_metric("probe", "rankme", set())


def test_suite_ranks_are_tie_aware() -> None:
    rows = [
        {"id": "a", "score": 0.9, "score_lo": 0.85, "score_hi": 0.95, "complete": True},
        {"id": "b", "score": 0.8, "score_lo": 0.70, "score_hi": 0.90, "complete": True},
        {"id": "c", "score": 0.5, "score_lo": 0.45, "score_hi": 0.55, "complete": True},
        {"id": "d", "score": 0.99, "score_lo": 0.9, "score_hi": 1.0, "complete": False},  # incomplete: unranked
        {"id": "e", "score": None, "score_lo": None, "score_hi": None, "complete": True},
    ]
    # (rank, best, worst, tied group), by hand: b's CI overlaps a's, c is surely below both
    assert iv.suite_ranks(rows) == {"a": (1, 1, 2, 1), "b": (2, 1, 2, 1), "c": (3, 3, 3, 2)}


# --- the page --------------------------------------------------------------------------------------------


def test_one_table_per_suite_version_with_its_own_ranks(built: Path, page: Page) -> None:
    assert list(page.boards) == ["board-standard-v2", "board-standard-v1", "board-quick-v1"]
    html = (built / "index.html").read_text(encoding="utf-8")
    for b, label in (("board-standard-v2", "standard v2"), ("board-standard-v1", "standard v1"), ("board-quick-v1", "quick v1")):
        assert f'<section class="board" id="{b}-section" data-suite="{label}">' in html
        assert {r["attrs"]["data-f-suite"] for r in page.boards[b]["rows"]} == {label}
    # the v2 copy is alone in its table: rank 1 there, though the same scores sit in v1 too
    (v2,) = page.boards["board-standard-v2"]["rows"]
    assert v2["cells"][0]["text"] == "1" and v2["cells"][0]["attrs"]["title"].startswith("rank 1, interval 1–1")
    data = json.loads((built / "data.json").read_text())
    models = {m["id"]: m for m in data["models"]}
    v1 = page.boards["board-standard-v1"]["rows"]
    ranked = [models[r["cells"][1]["attrs"]["title"]] for r in v1]
    points = [int(r["cells"][0]["attrs"]["data-v"]) for r in v1]
    assert points[0] == 1 and points == sorted(points)  # ranks start at 1 within each table, in score order
    scores = [m["score"] for m in ranked]
    assert scores == sorted(scores, reverse=True)
    intervals = iv.suite_ranks([m for m in data["models"] if m["suite"] == "standard" and m["suite_version"] == 1])
    for r, m in zip(v1, ranked):
        rank, best, worst, g = intervals[m["id"]]
        assert r["cells"][0]["text"] == (str(best) if best == worst else f"{best}–{worst}")
        assert r["cells"][0]["attrs"]["title"] == f"rank {rank}, interval {best}–{worst}, tied group {g}"


def test_compact_default_view_and_groups(page: Page) -> None:
    for b in page.boards.values():
        heads = b["heads"]
        assert [h["text"] for h in heads if group(h) == "default"] == DEFAULT_HEADS
        assert heads[0]["text"] == "rank" and "rk" in heads[0]["attrs"]["class"].split()  # the rank interval leads
        assert heads[1]["text"] == "model" and "pin" in heads[1]["attrs"]["class"].split()  # pinned
        for r in b["rows"]:
            assert len(r["cells"]) == len(heads)
            assert [group(c) for c in r["cells"]] == [group(h) for h in heads]
    heads = page.boards["board-standard-v1"]["heads"]
    by_group: dict[str, list[str]] = {}
    for h in heads:
        by_group.setdefault(group(h), []).append(h["text"])
    tasks = json.loads((SUBS / SMOL).read_text())["tasks"]
    mc = sorted(t for t, b in tasks.items() if b["kind"] == "lm_eval" and "acc" in b["metrics"])
    assert by_group["calibration"] == [f"{t} ↓" for t in mc]  # one ECE column per MC task
    assert [h for h in by_group["ood"] if not h.startswith(("exact_match", "refusal"))] == [f"{t} ↑" for t in mc]
    assert "effective_rank ↑" in by_group["geometry"] and "anisotropy ↓" in by_group["geometry"]
    assert by_group["plasticity"] == [f"{t} gain ↑" for t in sorted(t for t, b in tasks.items() if b["kind"] == "plasticity")]
    assert "self_bleu4 ↓" in by_group["diversity"]
    assert "delta_norm –" in by_group["lora"] and not any(":" in h for h in by_group["lora"])  # no per-module detail
    assert "lora" not in {group(h) for h in page.boards["board-standard-v2"]["heads"]}  # only columns a row has
    assert page.buttons == ["geometry", "ood", "calibration", "plasticity", "diversity", "lora", "lineage", "details"]


def test_every_header_has_a_tooltip(built: Path, page: Page) -> None:
    html = (built / "index.html").read_text(encoding="utf-8")
    assert len(page.all_th) == len(re.findall(r"<th[ >]", html)) > 100
    assert all(th["attrs"].get("title", "").strip() for th in page.all_th), [
        th["text"] for th in page.all_th if not th["attrs"].get("title")
    ]
    heads = {h["text"]: h["attrs"]["title"] for h in page.boards["board-standard-v1"]["heads"]}
    assert heads["anisotropy ↓"].endswith("↓ lower is healthier") and "mean pairwise cosine" in heads["anisotropy ↓"]
    assert "chance-normalised" in heads["mmlu ↑"] and heads["mmlu ↑"].endswith("↑ higher is healthier")
    assert 'id="glossary"' in html and "#boards:not(.show-ood) .g-ood" in html  # groups are hidden until opened


def test_values_rounded_to_their_ci(built: Path, page: Page) -> None:
    data = json.loads((built / "data.json").read_text())
    for m in data["models"]:
        board = iv.board_id(m["suite"], m["suite_version"])
        score, ci = cell(page, board, m["id"], "score ↑"), cell(page, board, m["id"], "95% CI")
        assert score["attrs"]["data-v"] == repr(m["score"])  # full precision for sorting
        d = nb.ci_decimals(m["score_lo"], m["score_hi"])
        assert d is not None and score["text"] == f"{m['score']:.{d}f}" and len(score["text"].split(".")[1]) == d
        assert ci["text"] == f"[{m['score_lo']:.{d}f}, {m['score_hi']:.{d}f}]"
        ece = cell(page, board, m["id"], "mmlu ↓", "calibration") if board != "board-quick-v1" else None
        if ece is not None:
            lo, hi = data["cis"][m["id"]]["mmlu.ece"]
            assert ece["text"] == nb.rounded(data["scalars"][m["id"]]["mmlu.ece"], lo, hi)
            assert ece["attrs"]["title"] == f"95% CI {nb.ci_text(lo, hi)}"
    texts = [c["text"] for b in page.boards.values() for r in b["rows"] for c in r["cells"]]
    assert not [t for t in texts if re.search(r"\de[-+]\d", t)]  # no 2.082e-17-style noise anywhere


def test_ood_columns_are_chance_normalised_with_the_raw_accuracy_in_the_tooltip(page: Page) -> None:
    doc = json.loads((SUBS / SMOL).read_text())
    rid = f"submissions/{SMOL}"
    recs = samples(SMOL)
    for task in ("mmlu", "boolq", "arc_easy"):
        items = [r for r in recs if r["task"] == task]
        k = np.array([len(r["loglik"]) for r in items], dtype=float)
        correct = np.array([float(int(np.argmax(r["loglik"])) == r["gold"]) for r in items])
        want = float(np.mean((correct - 1 / k) / (1 - 1 / k)))  # by hand from the samples file
        c = cell(page, "board-standard-v1", rid, f"{task} ↑", "ood")
        assert float(c["attrs"]["data-v"]) == pytest.approx(want, abs=1e-12)
        acc = doc["tasks"][task]["metrics"]["acc"]
        assert correct.mean() == pytest.approx(acc)
        raw = re.match(r"raw accuracy (\S+) \[", c["attrs"]["title"])
        assert raw is not None and float(raw.group(1)) == pytest.approx(acc, abs=0.5 * 10 ** -len(raw.group(1).split(".")[1]))
        m = re.search(r"chance (\S+); chance-normalised (\S+) \[(\S+), (\S+)\]; n = (\d+)$", c["attrs"]["title"])
        assert m is not None and m.group(2) == c["text"] and int(m.group(5)) == len(items)
        assert float(m.group(1)) == pytest.approx(float(np.mean(1 / k)), abs=1e-3)
        assert float(m.group(3)) <= want <= float(m.group(4))
        assert len(c["text"].split(".")[1]) == len(m.group(3).split(".")[1])  # the value has the CI's decimals
    # MMLU below 4-way chance reads negative, not "0.16"
    assert (
        float(cell(page, "board-standard-v1", rid, "mmlu ↑", "ood")["attrs"]["data-v"])
        < 0
        < doc["tasks"]["mmlu"]["metrics"]["acc"]
    )


def test_facets_and_the_control_mark(page: Page) -> None:
    assert list(page.selects) == [name for name, _ in iv.FACETS]
    assert page.selects["suite"] == ["", "quick v1", "standard v1", "standard v2"]
    assert page.selects["control"] == ["", "control", "not a control"]
    assert "sft_safety_math" in page.selects["recipe"] and "smollm2-135m-instruct" in page.selects["base"]
    rows = [r for b in page.boards.values() for r in b["rows"]]
    assert len(rows) == 6 and all({f"data-f-{n}" for n, _ in iv.FACETS} <= set(r["attrs"]) for r in rows)
    control = by_id(page, "board-standard-v1", CONTROL)
    assert control["attrs"]["data-f-control"] == "control" and control["attrs"]["data-f-base"] == "smollm2-135m-instruct"
    assert ("span", {"class": "tag"}) in control["cells"][1]["html_tags"] and control["cells"][1]["text"].endswith("control")
    assert control["cells"][2]["text"] == "1"  # one stage below its base
    chain = by_id(page, "board-standard-v1", f"submissions/{CHAIN}")
    assert {k: chain["attrs"][f"data-f-{k}"] for k in ("recipe", "stage", "intervention", "control")} == {
        "recipe": "sft_safety_math",
        "stage": "sft",
        "intervention": "none",
        "control": "not a control",
    }
    base = by_id(page, "board-standard-v1", f"submissions/{SMOL}")
    assert base["attrs"]["data-f-stage"] == "(base)" and base["cells"][2]["text"] == "0"
    assert cell(page, "board-standard-v1", f"submissions/{SMOL}", "KL to base")["text"] == "0"  # KL of a base to itself
    assert sum(r["attrs"]["data-f-control"] == "control" for r in rows) == 1


def test_no_float_noise_in_a_ci_free_cell() -> None:
    assert nb.plain(2.082e-17) == "0" and nb.plain(-3e-13) == "0" and not math.isnan(float(nb.plain(1e-11)))


def test_every_link_of_the_index_resolves(built: Path) -> None:
    html = (built / "index.html").read_text(encoding="utf-8")
    hrefs = set(re.findall(r'href="([^"]+)"', html))
    assert {"lineages.html", "findings.html", "#glossary"} <= hrefs
    ids = set(re.findall(r'id="([^"]+)"', html))
    for h in sorted(hrefs):
        assert h[1:] in ids if h.startswith("#") else (built / h).is_file(), h
