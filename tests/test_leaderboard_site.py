"""The static site: byte-identical builds (also from shuffled inputs), `leaderboard check`, escaping,
downloads, deterministic SVG, an empty submissions dir."""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path

import pytest
from leaderboard_helpers import good_doc, snapshot, submissions_tree

from collapse_bench.cli import main
from collapse_bench.errors import CollapseBenchError
from collapse_bench.leaderboard import site
from collapse_bench.leaderboard.aggregate import Entry, entries_from
from collapse_bench.leaderboard.plots import layer_plot
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


def test_two_builds_byte_identical_and_check(subs: Path, built: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    again = tmp_path / "again"
    assert main(["leaderboard", "build", "--submissions", str(subs), "--out", str(again)]) == 0
    first = snapshot(built)
    assert first == snapshot(again)
    assert {"index.html", "data.csv", "data.json"} <= set(first)
    assert sum(k.startswith("models/") for k in first) == 3 and sum(k.startswith("plots/") for k in first) == 3
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
    with pytest.raises(CollapseBenchError, match=r"differs from a fresh build of submissions \(SVGs depend on the matplotlib"):
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
    assert [m["id"] for m in data["models"]][0] == "submissions/local/tiny-sft-reg/quick-c.json"  # healthier geometry
    assert data["interventions"][1]["baseline_id"] == "submissions/local/tiny-sft/quick-b.json"
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
    doc["tasks"]["arc"] = {"kind": "lm_eval", "metrics": {"acc": 0.5, "ece": 0.1},
                           "calibration": {"definition": "...", "primary": {"reliability": bins}}}
    doc["tasks"]["plast"] = {"kind": "plasticity", "metrics": {"gain": 0.4, "bpb_initial": 2.0},
                             "per_seed": {"0": {"gain": 0.3, "bpb_initial": 2.0}, "1": {"gain": 0.5, "bpb_initial": 2.0}},
                             "curves": {"0": {"steps": [0, 10, 20], "bpb": [2.0, 1.8, 1.7], "train_loss": [3, 2, 1]},
                                        "1": {"steps": [0, 10, 20], "bpb": [2.0, 1.6, 1.5], "train_loss": [3, 2, 1]}}}
    site.render([Entry("submissions/org/m/quick-x.json", doc)], tmp_path / "lb")
    plots = sorted(p.name for p in (tmp_path / "lb" / "plots").glob("*.svg"))
    assert [p.split("--")[-1] for p in plots] == ["arc-reliability.svg", "plast-plasticity.svg", "probe_quick-layers.svg"]
    data = json.loads((tmp_path / "lb" / "data.json").read_text())
    assert data["cis"]["submissions/org/m/quick-x.json"]["plast.gain"][0] < 0.4
    assert data["models"][0]["c.plasticity"] == pytest.approx(0.2)


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
