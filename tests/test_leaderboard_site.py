"""The static site: byte-identical builds (also from shuffled inputs), `leaderboard check`, escaping,
downloads, deterministic SVG, an empty submissions dir."""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from leaderboard_helpers import good_doc, snapshot, submissions_tree

from collapse_bench.cli import main
from collapse_bench.errors import CollapseBenchError
from collapse_bench.leaderboard import numbers as nb
from collapse_bench.leaderboard import site
from collapse_bench.leaderboard.entry import Entry, entries_from, item_outcomes
from collapse_bench.leaderboard.plots import layer_plot, reliability_bins, reliability_plot
from collapse_bench.leaderboard.validate import validate_paths


@pytest.fixture(scope="module")
def subs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lb") / "submissions"
    submissions_tree(root)
    return root


@pytest.fixture(scope="module")
def built(subs: Path) -> Path:
    out = subs.parent / "leaderboard"
    assert main(["leaderboard", "build", "--submissions", str(subs), "--out", str(out)]) == 0
    return out


def test_two_builds_byte_identical_and_check(subs: Path, built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    again = tmp_path / "again"
    assert main(["leaderboard", "build", "--submissions", str(subs), "--out", str(again)]) == 0
    first = snapshot(built)
    assert first == snapshot(again)
    assert {"index.html", "data.csv", "data.json"} <= set(first)
    pages = [k.removeprefix("models/").removesuffix(".html") for k in first if k.startswith("models/")]
    assert len(pages) == 3 and sum(k.startswith(tuple(f"plots/{p}--" for p in pages)) for k in first) == 3  # a plot per page
    capsys.readouterr()
    assert main(["leaderboard", "check", "--submissions", str(subs), "--out", str(built)]) == 0
    assert "is up to date" in capsys.readouterr().out
    page = next(p for p in sorted(again.glob("models/*.html")))
    page.write_text(page.read_text() + " ")
    assert main(["leaderboard", "check", "--submissions", str(subs), "--out", str(again)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"models/{page.name}: differs from a fresh build" in err
    # rebuilding over an existing leaderboard replaces it, stale files included
    (again / "models" / "old.html").write_text("x")
    site.build(subs, again)
    assert snapshot(again) == first


def test_compare_names_missing_stale_and_changed_files(built: Path, tmp_path: Path) -> None:
    copy_ = tmp_path / "copy"
    shutil.copytree(built, copy_)
    assert site.compare_trees(built, copy_, Path("submissions")) == len(snapshot(built))
    (copy_ / "data.csv").unlink()
    with pytest.raises(CollapseBenchError, match=r"copy/data.csv: missing"):
        site.compare_trees(built, copy_, Path("submissions"))
    shutil.copy(built / "data.csv", copy_ / "data.csv")
    (copy_ / "models" / "old.html").write_text("x")
    with pytest.raises(CollapseBenchError, match=r"models/old.html: not produced by a fresh build"):
        site.compare_trees(built, copy_, Path("submissions"))
    (copy_ / "models" / "old.html").unlink()
    svg = sorted((copy_ / "plots").glob("*.svg"))[0]
    svg.write_bytes(svg.read_bytes().replace(b"</svg>", b"<!-- --></svg>"))
    with pytest.raises(CollapseBenchError, match=r"plots/.*\.svg: differs from a fresh build of submissions; run"):
        site.compare_trees(built, copy_, Path("submissions"))


def test_shuffled_input_order_gives_identical_site(subs: Path, built: Path, tmp_path: Path) -> None:
    ok = list(validate_paths([subs]).ok)
    ok.reverse()  # the validator hands them over sorted; reversed, then shuffled
    random.Random(1).shuffle(ok)
    site.render(entries_from(ok, subs), tmp_path / "shuffled")
    assert snapshot(tmp_path / "shuffled") == snapshot(built)


def test_site_contents(built: Path) -> None:
    index = (built / "index.html").read_text()
    assert "suite quick v1" in index and "http://" not in index and "https://" not in index and "<link" not in index
    assert "collapse-bench reproduce submissions/local/tiny-sft/quick-b.json" in index
    data = json.loads((built / "data.json").read_text())
    # probe-only rows: geometry is not scored, so none of them has a score (unranked, listed by model name); the
    # geometry component (the collapse profile) and the v1 composite still tell them apart
    models = {m["id"]: m for m in data["models"]}
    assert all(m["score"] is None and m["rank"] is None for m in data["models"])
    assert [m["model"] for m in data["models"]] == sorted(m["model"] for m in data["models"])
    b, c = models["submissions/local/tiny-sft/quick-b.json"], models["submissions/local/tiny-sft-reg/quick-c.json"]
    assert c["c.geometry"] > 0.5 > b["c.geometry"] and c["composite"] > b["composite"]
    assert data["interventions"][1]["baseline_id"] == "submissions/local/tiny-sft/quick-b.json"
    # interventions: one table per (recipe, stage, suite) group, headed by the group and its baseline row
    groups = sorted({r["group"] for r in data["interventions"]})
    for k, g in enumerate(groups, 1):
        _, _, rest = index.partition(f'<h3 id="interventions-{k}">{g}</h3>')
        table = rest.split("</table>")[0]
        assert rest and all(r["model"] in table for r in data["interventions"] if r["group"] == g)
        assert not any(r["model"] in table for r in data["interventions"] if r["group"] != g)
    csv = (built / "data.csv").read_text().splitlines()
    assert csv[0].startswith("id,page,model,") and len(csv) == 4 and "delta.probe_quick.effective_rank" in csv[0]
    for svg in (built / "plots").glob("*.svg"):
        text = svg.read_text()
        assert "<dc:date>" not in text and "Matplotlib v" not in text


def test_everything_from_a_submission_is_escaped(subs: Path, tmp_path: Path) -> None:
    """The validator refuses HTML in names; the site escapes anyway (rendered without validation here)."""
    entries = entries_from(validate_paths([subs]).ok, subs)
    evil = copy.deepcopy(entries[0].doc)
    evil["model"].update(name="<script>window.__pwned=1</script>", stage="<img src=x onerror=alert(1)>")
    site.render([*entries[1:], Entry(entries[0].id, evil)], tmp_path / "lb")
    for f in [tmp_path / "lb" / "index.html", *sorted((tmp_path / "lb" / "models").glob("*.html"))]:
        text = f.read_text()
        assert "<script>window" not in text and "<img src=x" not in text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in (tmp_path / "lb" / "index.html").read_text()


def test_layer_plot_is_deterministic() -> None:
    doc = good_doc()
    e = Entry("submissions/x.json", doc)
    one, two = layer_plot(e, None, "probe_quick"), layer_plot(e, None, "probe_quick")
    assert one == two and one.startswith(b"<?xml") and b"effective rank" in one


def test_reliability_and_plasticity_plots_when_present(tmp_path: Path) -> None:
    """Kinds other than probe are read generically: lm_eval reliability bins, plasticity curves and per_seed."""
    doc = good_doc()
    bins = [{"lo": b / 15, "hi": (b + 1) / 15, "count": 3, "confidence": (b + 0.5) / 15, "accuracy": b / 15} for b in range(15)]
    bins[3].update(count=0, confidence=None, accuracy=None)
    doc["tasks"]["arc"] = {
        "kind": "lm_eval",
        "metrics": {"acc": 0.5, "ece": 0.1},
        "calibration": {"definition": "...", "primary": {"reliability": bins}},
    }
    doc["tasks"]["plast"] = {
        "kind": "plasticity",
        "metrics": {"gain": 0.4, "bpb_initial": 2.0},
        "per_seed": {"0": {"gain": 0.3, "bpb_initial": 2.0}, "1": {"gain": 0.5, "bpb_initial": 2.0}},
        "curves": {
            "0": {"steps": [0, 10, 20], "bpb": [2.0, 1.6, 1.4], "train_loss": [3, 2, 1]},
            "1": {"steps": [0, 10, 20], "bpb": [2.0, 1.3, 1.0], "train_loss": [3, 2, 1]},
        },
    }
    site.render([Entry("submissions/org/m/quick-x.json", doc)], tmp_path / "lb")
    plots = sorted(p.name for p in (tmp_path / "lb" / "plots").glob("*.svg"))
    assert [p.split("--")[-1] for p in plots] == ["arc-reliability.svg", "plast-plasticity.svg", "probe_quick-layers.svg"]
    data = json.loads((tmp_path / "lb" / "data.json").read_text())
    assert data["cis"]["submissions/org/m/quick-x.json"]["plast.gain"][0] < 0.4
    assert data["models"][0]["c.plasticity"] == pytest.approx(0.4)  # the mean relative gain, not gain / bpb_initial


def test_empty_submissions_and_refusals(tmp_path: Path) -> None:
    (tmp_path / "subs").mkdir()
    site.build(tmp_path / "subs", tmp_path / "lb")
    assert "No submissions yet." in (tmp_path / "lb" / "index.html").read_text()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    with pytest.raises(CollapseBenchError, match="not a leaderboard directory"):
        site.build(tmp_path / "subs", tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "keep me"
    bad = tmp_path / "badsubs"
    bad.mkdir()
    (bad / "x.json").write_text("{")
    with pytest.raises(CollapseBenchError, match="1 invalid submission"):
        site.build(bad, tmp_path / "lb")
    assert "No submissions yet." in (tmp_path / "lb" / "index.html").read_text()  # untouched


# --- issue 12: reliability variant, robustness to free-text keys, --out refusals, CSV injection, T bound ---

COMMITTED = Path(__file__).resolve().parents[1] / "submissions" / "huggingfacetb" / "smollm2-135m-instruct"


def committed(stem: str) -> Entry:
    doc = json.loads((COMMITTED / f"{stem}.json").read_text())
    records = [json.loads(line) for line in (COMMITTED / f"{stem}.samples.jsonl").read_text().splitlines()]
    return Entry(f"submissions/huggingfacetb/smollm2-135m-instruct/{stem}.json", doc, item_outcomes(records))


def width_bins(z: list[np.ndarray], gold: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent numpy reference: 15 equal-width bins of max-softmax confidence, non-empty ones only."""
    p = [np.exp(v - v.max()) / np.exp(v - v.max()).sum() for v in z]
    conf = np.array([q.max() for q in p])
    correct = np.array([float(np.argmax(q) == g) for q, g in zip(p, gold)])
    b = np.minimum((conf * 15).astype(int), 14)
    keep = [k for k in range(15) if (b == k).any()]
    return (
        np.array([conf[b == k].mean() for k in keep]),
        np.array([correct[b == k].mean() for k in keep]),
        np.array([float((b == k).sum()) for k in keep]),
    )


def test_reliability_plot_is_the_primary_variant_of_a_committed_block() -> None:
    e = committed("standard-cb340c5194ad")
    task = "arc_easy"
    block = e.doc["tasks"][task]
    recs = [json.loads(line) for line in (COMMITTED / "standard-cb340c5194ad.samples.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r["task"] == task]
    primary = width_bins([np.array(r["loglik"]) for r in recs], [r["gold"] for r in recs])
    normed = width_bins([np.array(r["loglik"]) / np.array(r["choice_chars"]) for r in recs], [r["gold"] for r in recs])
    got = reliability_bins(block, e.items.get(task))
    for g, want in zip(got, primary):
        assert g == pytest.approx(want, abs=1e-9)
    assert got[2].sum() == len(recs) == block["calibration"]["primary"]["n"]
    assert len(got[0]) != len(normed[0]) or not np.allclose(got[0], normed[0])  # the variants really differ here
    svg = reliability_plot(e, task).decode()
    ece = block["metrics"]["ece"]
    assert f"primary (ECE {ece:.3f}, n={len(recs)})" in svg and "length-normalised (ECE" in svg
    for n in primary[2]:
        assert f">{int(n)}</text>" in svg  # the bin counts are annotated
    # the length-normalised bins do not move the primary series; the primary bins do
    hacked = copy.deepcopy(e.doc)
    for b in hacked["tasks"][task]["calibration"]["length_normalised"]["reliability"]:
        b.update(confidence=0.99, accuracy=0.01, count=7)
    again = reliability_bins(hacked["tasks"][task], None)
    assert all(np.array_equal(a, b) for a, b in zip(again, got))
    hacked["tasks"][task]["calibration"]["primary"]["reliability"][-1].update(confidence=0.97, accuracy=0.02, count=5)
    assert reliability_bins(hacked["tasks"][task], None)[0][-1] == 0.97


def test_reliability_fallback_is_equal_mass_bins_of_the_items() -> None:
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.3, 1.0, size=47)
    correct = (rng.uniform(size=47) < conf).astype(float)
    got = reliability_bins({"kind": "lm_eval", "metrics": {}}, (conf, correct))
    order = np.sort(conf)
    sizes = [4] * 2 + [3] * 13  # 47 = 2 * 4 + 13 * 3
    edges = np.cumsum([0, *sizes])
    assert got[2].tolist() == sizes
    assert got[0] == pytest.approx([order[a:b].mean() for a, b in itertools.pairwise(edges)])
    assert got[1] == pytest.approx([correct[np.argsort(conf, kind="stable")][a:b].mean() for a, b in itertools.pairwise(edges)])


def hostile_quick() -> dict:
    doc = json.loads(sorted(COMMITTED.glob("quick-*.json"))[0].read_text())
    plast = doc["tasks"]["plasticity_quick"]
    curve = plast["curves"]["0"]
    plast["curves"] = {"$\\frac": curve, "a$b$": curve, "--1": curve, "²": curve, "7": curve, "-2": curve}
    plast["per_seed"] = {"--1": plast["per_seed"]["0"], "²": plast["per_seed"]["0"], "3": plast["per_seed"]["0"]}
    for b in doc["tasks"]["world_mc"]["calibration"]["primary"]["reliability"]:
        b.update(confidence="0.5", accuracy="x", count="3")
    return doc


def test_renderer_survives_free_text_keys_and_strings(tmp_path: Path) -> None:
    """Shapes that once passed validation and crashed the build: rendered here without validation."""
    records = [{"task": "world_mc", "loglik": ["a", "b"], "gold": "0", "correct": "yes"}, {"task": "world_mc", "confidence": "x"}]
    e = Entry("submissions/org/m/quick-x.json", hostile_quick(), item_outcomes(records))
    assert e.items == {}
    site.render([e], tmp_path / "lb")
    svg = next((tmp_path / "lb" / "plots").glob("*plasticity_quick-plasticity.svg")).read_text()
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert [x for x in labels if x.startswith("seed")] == ["seed -2", "seed 7", "seed ?", "seed ?", "seed ?", "seed ?"]
    assert "$" not in svg and "frac" not in svg
    assert not list((tmp_path / "lb" / "plots").glob("*world_mc-reliability.svg"))  # no numeric bins, no items


def test_a_crash_while_rendering_names_the_submission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(entry: Entry, base: Entry | None) -> list:
        raise ValueError("bad\nvalue")

    monkeypatch.setattr(site, "entry_plots", boom)
    with pytest.raises(CollapseBenchError) as err:
        site.render([Entry("submissions/org/m/quick-x.json", good_doc())], tmp_path / "lb")
    assert str(err.value) == "submissions/org/m/quick-x.json: cannot render this submission (ValueError: bad value)"
    assert not (tmp_path / "lb").exists()


def test_out_marker_and_refusals(subs: Path, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (built / site.MARKER).read_bytes() == site.MARKER_TEXT
    lb = tmp_path / "lb"
    shutil.copytree(built, lb)
    (lb / "models" / "stale.html").write_text("x")
    site.build(subs, lb)  # a marked directory is replaced, stale files included
    assert snapshot(lb) == snapshot(built)
    (lb / site.MARKER).unlink()
    with pytest.raises(CollapseBenchError, match="not a leaderboard directory"):
        site.build(subs, lb)  # index.html and data.json alone are not a leaderboard any more
    assert "index.html" in snapshot(lb)
    monkeypatch.chdir(subs.parent)
    for out, why in (
        (".", "current directory"),
        (subs.parent.parent, "one of its parents"),
        (subs, "--submissions"),
        (subs / "org", "--submissions"),
        (Path(__file__).resolve().parents[1], "current directory|repository root"),
    ):
        with pytest.raises(CollapseBenchError, match=why):
            site.build(subs, Path(out))


def test_csv_cells_cannot_be_formulas(subs: Path, tmp_path: Path) -> None:
    entries = entries_from(validate_paths([subs]).ok, subs)
    names = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    evil = []
    for i, name in enumerate(names):
        e = entries[i % len(entries)]
        doc = copy.deepcopy(e.doc)
        doc["model"].update(name=name, source="hub")
        evil.append(Entry(e.id.replace(".json", f"-{i}.json"), doc))
    site.render(evil, tmp_path / "lb")
    raw = (tmp_path / "lb" / "data.csv").read_bytes()
    assert b",'\rx," in raw  # a CR cell is neutralised too (the validator refuses control characters anyway)
    rows = list(csv.DictReader(io.StringIO(raw.decode().replace("'\r", "'CR"), newline="")))
    assert sorted(r["model"] for r in rows) == sorted("'" + n.replace("\r", "CR") for n in names)
    deltas = [r["delta.probe_quick.effective_rank"] for r in rows]
    assert any(d.startswith("-") and float(d) < 0 for d in deltas)  # negative numbers stay numbers
    assert json.loads((tmp_path / "lb" / "data.json").read_text())["models"][0]["model"] in names  # JSON is data


def test_temperature_at_the_search_bound_is_shown_as_a_bound(tmp_path: Path) -> None:
    e = committed("standard-cb340c5194ad")
    site.render([e], tmp_path / "lb")
    t = e.doc["tasks"]
    at = sorted(k for k, b in t.items() if b["metrics"].get("temperature_opt", 0) > 19.99)
    inside = sorted(k for k, b in t.items() if 0 < (b["metrics"].get("temperature_opt") or 0) < 19.99)
    assert at and inside and t[at[0]]["metrics"]["temperature_opt"] == pytest.approx(20.0, abs=1e-6)
    scalars = json.loads((tmp_path / "lb" / "data.json").read_text())["scalars"][e.id]
    assert [scalars[f"{k}.temperature_opt_at_bound"] for k in at] == [1.0] * len(at)
    assert [scalars[f"{k}.temperature_opt_at_bound"] for k in inside] == [0.0] * len(inside)
    page = next((tmp_path / "lb" / "models").glob("*.html")).read_text()
    cell = re.search(rf"<td>{at[0]}</td><td>temperature_opt</td>\s*<td[^>]*>([^<]*)</td>", page).group(1)
    assert cell == "≥ 20"
    cell = re.search(rf"<td>{inside[0]}</td><td>temperature_opt</td>\s*<td[^>]*>([^<]*)</td>", page).group(1)
    assert cell == nb.plain(t[inside[0]]["metrics"]["temperature_opt"])  # the page rounds as the index does


def test_model_page_shows_paired_comparisons_with_the_noise_floor(subs: Path, tmp_path: Path) -> None:
    """A chain stage's page lists its comparison with the parent; a metric with a floor shows its MDE and whether
    |Δ| exceeds it (the floor of the lineage root, on the same task config)."""
    from collapse_bench.leaderboard.noisefloor import NoiseFloor

    entries = entries_from(validate_paths([subs]).ok, subs)
    base = next(e for e in entries if e.id.endswith("quick-a.json"))
    task_hash = base.doc["tasks"]["probe_quick"]["hash"]
    floor = NoiseFloor(
        "x.noise.json", base.doc["model"]["sha256"], {"probe_quick": task_hash}, {"probe_quick.effective_rank": (1.0, 4.0)}
    )
    site.render(entries, tmp_path / "lb", {floor.sha256: floor})
    child = next(e for e in entries if e.id.endswith("quick-b.json"))
    delta = (
        child.doc["tasks"]["probe_quick"]["metrics"]["effective_rank"]
        - base.doc["tasks"]["probe_quick"]["metrics"]["effective_rank"]
    )
    page = next((tmp_path / "lb" / "models").glob("local--tiny-sft--quick-b*.html")).read_text()
    assert "Paired comparisons" in page and "vs parent:" in page and "1 metrics with a paired CI or a noise floor" in page
    cell = page[page.index("<td>effective_rank</td>") :].split("</tr>")[0]
    assert f'data-v="{site.data_value(4.0)}"' in cell  # the MDE cell
    assert ("beyond" in cell) is (abs(delta) > 4.0)
    data = json.loads((tmp_path / "lb" / "data.json").read_text())
    assert data["noise_floors"] == ["x.noise.json"]
    rows = [m for c in data["comparisons"] if c["id"] == child.id for m in c["metrics"] if m["metric"] == "effective_rank"]
    assert rows and rows[0]["mde_80"] == 4.0 and rows[0]["beyond_mde"] is (abs(delta) > 4.0)
