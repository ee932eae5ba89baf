"""The findings and lineages pages: the control-ladder checks on ladders whose answer is constructed (a passing
and a failing SVD ladder, an extrapolation ladder, a permutation rung equal to / off from its parent), the
minimum detectable correlation against its closed form, the lineage tree's links, and docs/findings.md in
step with the committed data.json."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
from leaderboard_helpers import child_doc, good_doc, write_submission

from collapse_bench.leaderboard import findings, site

ROOT = Path(__file__).resolve().parents[1]


def test_strictly_monotone_and_mde_by_hand() -> None:
    assert findings.strictly_monotone([1.0, 2.0, 3.5], 1) and findings.strictly_monotone([3.0, 2.0, -1.0], -1)
    assert not findings.strictly_monotone([1.0, 2.0, 2.0], 1)  # a tie is not strict
    assert not findings.strictly_monotone([1.0, None, 3.0], 1)  # a missing rung fails the check
    assert not findings.strictly_monotone([1.0], 1)
    # Fisher z: tanh((z_.975 + z_.80) / sqrt(n - 3)); z_.975 = 1.959964, z_.80 = 0.841621 (tables)
    assert findings.mde_rho(28) == pytest.approx(math.tanh((1.959964 + 0.841621) / 5), abs=1e-6)
    assert findings.mde_rho(28) == pytest.approx(0.50814, abs=1e-4)
    assert findings.mde_rho(3) is None and findings.mde_rho(None) is None


def ladder_docs() -> dict[str, dict]:
    base = good_doc()
    base["model"]["name"] = "collapse-bench/tiny-random-llama"
    base["model"]["source"] = "hub"
    bm = base["tasks"]["probe_quick"]["metrics"]
    docs = {"collapse-bench/tiny-random-llama/quick-a.json": base}

    def rung(kind: str, dose, digit: str, probe: dict, recipe: str) -> dict:
        label = {"svd_truncate": "r", "extrapolate": "a", "permute": "p"}[kind] + str(dose)
        doc = child_doc(base, f"tiny/{recipe}/none/s0/01-x-{label}", digit, 1.0, stage="x", recipe=recipe, intervention="none")
        doc["model"]["control"] = {"kind": kind, "dose": dose}
        doc["model"]["stage_kind"] = kind
        doc["tasks"]["probe_quick"]["metrics"].update(probe)
        return doc

    er, pr = bm["effective_rank"], bm["participation_ratio"]
    for i, (r, f) in enumerate((("full", 1.0), (4, 0.5), (2, 0.3), (8, 0.7))):  # written out of dose order
        probe = {"effective_rank": er * f, "participation_ratio": pr * f, "kl_to_base": 1.0 - f}
        docs[f"local/svd-{r}/quick-{i}.json"] = rung("svd_truncate", r, "cdef"[i], probe, "control_svd")
    for i, (r, f) in enumerate((("full", 1.0), (4, 0.5), (2, 0.6))):  # not monotone at r = 2 -> fails
        docs[f"local/svdbad-{r}/quick-{i}.json"] = rung(
            "svd_truncate", r, "0123"[i], {"effective_rank": er * f, "participation_ratio": pr * f}, "control_svd_bad"
        )
    for i, a in enumerate((0, 1, 2, 4)):
        docs[f"local/extrap-{a}/quick-{i}.json"] = rung(
            "extrapolate", a, "4567"[i], {"kl_to_base": 0.1 * a * a}, "control_extrapolate"
        )
    docs["local/svd1-4/quick-0.json"] = rung("svd_truncate", 4, "a", {"effective_rank": er / 2}, "control_svd_one")

    def resha(doc: dict, sha: str) -> dict:
        doc["model"]["sha256"] = doc["model"]["lineage"][-1]["sha256"] = sha
        return doc

    # α scaling a real stage, without its α = 1 rung (same weights as the stage: one row per sha256)
    stage = resha(
        child_doc(
            base,
            "tiny/control_extrapolate_stage/none/s0/01-sft",
            "b",
            1.0,
            recipe="control_extrapolate_stage",
            intervention="none",
        ),
        "ba" * 32,
    )
    stage["tasks"]["probe_quick"]["metrics"].update(kl_to_base=0.1, kl_to_parent=0.1)
    docs["local/extrap-stage/quick-0.json"] = stage
    for i, a in enumerate((0, 2, 4)):
        doc = resha(
            rung("extrapolate", a, "b", {"kl_to_base": 0.1 * a * a, "kl_to_parent": 0.05 * a}, "control_extrapolate_stage"),
            f"b{i}" * 32,
        )
        doc["model"]["parent"] = stage["model"]["name"]
        doc["model"]["lineage"] = [
            base_entry := stage["model"]["lineage"][0],
            stage["model"]["lineage"][1],
            doc["model"]["lineage"][-1],
        ]
        assert base_entry["sha256"] == base["model"]["sha256"]
        docs[f"local/extrap-stage-{a}/quick-0.json"] = doc
    docs["local/perm-0/quick-0.json"] = rung("permute", 0, "8", {}, "control_permute")
    off = {"effective_rank": er * (1 + 1e-3)}
    docs["local/perm-1/quick-0.json"] = rung("permute", 1, "9", off, "control_permute_off")
    return docs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("findings")
    for rel, doc in ladder_docs().items():
        write_submission(root / "submissions", doc, rel)
    site.build(root / "submissions", root / "site")
    return root / "site"


def test_ladder_checks_on_constructed_ladders(built: Path) -> None:
    data = json.loads((built / "data.json").read_text())["findings"]
    by = {(lad["recipe"]): lad for lad in data["ladders"]}
    svd = by["control_svd"]
    assert [r["dose"] for r in svd["rungs"]] == [2, 4, 8, "full"]  # dose order, "full" last
    checks = {m["metric"]: m["strictly_monotone"] for m in svd["checks"]["metrics"]}
    assert checks == {
        "effective_rank": True,
        "participation_ratio": True,
        "kl_to_base": True,  # 0.7, 0.5, 0.3, 0.0 decreasing in r
        "epsilon_rank": False,  # equal on every rung (not strict)
        "intrinsic_dimension": False,
        "anisotropy": False,
    }
    assert svd["checks"]["n_monotone"] == 3 and svd["checks"]["passed"]
    assert svd["parent_id"] == "submissions/collapse-bench/tiny-random-llama/quick-a.json"
    bad = by["control_svd_bad"]["checks"]
    assert bad["n_monotone"] == 0 and bad["passed"] is False
    ext = by["control_extrapolate"]
    assert [r["probe"]["kl_to_base"] for r in ext["rungs"]] == pytest.approx([0.0, 0.1, 0.4, 1.6])
    assert ext["checks"]["passed"]
    one = by["control_svd_one"]["checks"]  # a single rung is no trend: not checkable, not failed
    assert one == {"passed": None, "reason": "1 rung submitted: a trend in the dose needs at least two"}
    staged = by["control_extrapolate_stage"]  # the stage's own row stands in for α = 1
    assert [(r["dose"], r["parent_row"]) for r in staged["rungs"]] == [(0, False), (1, True), (2, False), (4, False)]
    assert [r["probe"]["kl_to_base"] for r in staged["rungs"]] == pytest.approx([0.0, 0.1, 0.4, 1.6])
    assert [r["probe"]["kl_to_parent"] for r in staged["rungs"]] == [0.0, None, 0.1, 0.2]  # the stage's parent is the base
    assert staged["checks"]["passed"] and staged["rungs"][1]["id"] == staged["parent_id"]
    perm, off = by["control_permute"]["checks"], by["control_permute_off"]["checks"]
    assert perm["passed"] and perm["max_rel_diff"] == 0.0 and perm["metrics_compared"] > 10
    assert off["passed"] is False and off["worst_metric"] == "effective_rank"
    assert off["max_rel_diff"] == pytest.approx(1e-3, rel=1e-6)
    # control rows are ladders, not lineage edges: the one edge is the stage the α ladder scales
    assert [e["model"] for e in data["edges"]] == ["tiny/control_extrapolate_stage/none/s0/01-sft"]


def test_findings_and_lineages_pages(built: Path) -> None:
    page = (built / "findings.html").read_text()
    assert 'id="findings"' in page and 'id="claims"' in page and "arXiv 2605.30524" in page
    assert (
        page.count('<img class="plot"') == 7  # one plot per ladder
        and "1 rung submitted: a trend" in page
        and "3 of 6 metrics strictly monotone in r" in page
    )
    for lad in json.loads((built / "data.json").read_text())["findings"]["ladders"]:
        assert (built / "plots" / lad["plot"]).read_bytes().startswith(b"<?xml")
    lin = (built / "lineages.html").read_text()
    assert 'id="lineages"' in lin
    root = lin.index("collapse-bench/tiny-random-llama</span>")
    # every rung is a child of the base in the tree and links to its own model page
    for rel in ladder_docs():
        rid = f"submissions/{rel}"
        name = json.loads((built / "data.json").read_text())
        page_slug = next(m["page"] for m in name["models"] if m["id"] == rid)
        assert f'href="models/{page_slug}.html"' in lin[root:]
        assert (built / "models" / f"{page_slug}.html").is_file()


def test_docs_findings_md_matches_committed_data() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_findings
    finally:
        sys.path.remove(str(ROOT / "docs"))
    data = json.loads((ROOT / "leaderboard" / "data.json").read_text())
    assert (ROOT / "docs" / "findings.md").read_text() == gen_findings.render(data)
    shown = gen_findings.render(copy.deepcopy(data))
    for claim in data["findings"]["claims"]:
        assert claim["status"] in shown


def records_of(frame: pd.DataFrame) -> list[dict]:
    """The panel's rows as ``data.json`` holds them."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def test_predictor_claims_leave_planted_controls_apart() -> None:
    """On the committed rows: the claims' panel drops exactly the rows with a planted control (the others' values
    unchanged), and its across-rows Spearman ρ is scipy's over the remaining rows."""
    from scipy.stats import spearmanr

    from collapse_bench.leaderboard.aggregate import build_tables
    from collapse_bench.leaderboard.hypothesis import hypothesis_panel

    entries, floors = site.load_inputs(ROOT / "submissions")
    tables = build_tables(entries, n_boot=50, floors=floors)
    natural = findings.without_controls(tables)
    planted = {e.id for e in entries if isinstance(e.doc["model"].get("control"), dict)}
    assert len(planted) >= 8 and set(natural.scalars.index) == set(tables.scalars.index) - planted
    assert natural.scalars.equals(tables.scalars.drop(index=sorted(planted)))
    assert list(natural.models["id"]) == [i for i in tables.models["id"] if i not in planted]
    panel = hypothesis_panel(natural, n_boot=50)[0]
    col, target = "probe_standard.anisotropy_centered", "ood_accuracy"
    row = panel[(panel["analysis"] == "across_rows") & (panel["metric"] == col) & (panel["target"] == target)]
    x = natural.scalars[col]
    y = natural.models.set_index("id")["c.ood_accuracy"].astype(float).reindex(x.index)
    ok = x.notna() & y.notna()
    assert int(row["n"].iloc[0]) == int(ok.sum()) >= 8
    assert float(row["spearman"].iloc[0]) == pytest.approx(spearmanr(x[ok], y[ok]).statistic, abs=1e-6)
    claim = next(
        c
        for c in findings.claims(tables, [], records_of(hypothesis_panel(tables, n_boot=50)[0]))
        if c["id"] == f"predicts_{target}"
    )
    assert claim["evidence"]["control_rows_apart"] == len(planted) and claim["evidence"]["rows"] == len(natural.scalars)
