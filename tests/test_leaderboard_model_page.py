"""The model page (issue 17): headline and collapse profile first, metrics grouped by component with ± and n,
paired Δ coloured by the expected sign, LoRA per-module detail folded, links to the raw result and samples file,
a static per-item browser, no Python reprs or absolute paths, everything from a submission escaped.

Built with the CLI from five committed rows of one lineage copied into a temp ``submissions/`` (the base, the
sft → safety → math baseline chain and the lora_decorrelation math stage: real samples files and a LoRA task),
the site written next to it as ``leaderboard/`` so the repository-relative links resolve as they do in the repo.
"""

from __future__ import annotations

import copy
import dataclasses
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import markupsafe
import numpy as np
import pytest
from leaderboard_helpers import snapshot, submissions_tree

from collapse_bench.cli import main
from collapse_bench.leaderboard import index_view as iv
from collapse_bench.leaderboard import model_view as mv
from collapse_bench.leaderboard import numbers as nb
from collapse_bench.leaderboard import site
from collapse_bench.leaderboard.entry import entries_from
from collapse_bench.leaderboard.validate import validate_paths

SUBS = Path(__file__).resolve().parents[1] / "submissions"
CHAIN = "local/smollm2-135m-instruct--sft_safety_math--{}/standard-{}.json"
ROWS = {
    "base": "huggingfacetb/smollm2-135m-instruct/standard-cb340c5194ad.json",
    "sft": CHAIN.format("none--s0--01-sft", "9fe52ea1f392"),
    "safety": CHAIN.format("none--s0--02-safety", "bca3bd370731"),
    "math": CHAIN.format("none--s0--03-math", "6106b89974f6"),
    "lora": CHAIN.format("lora_decorrelation--s0--03-math", "068d1c27e469"),
}
SECTIONS = ["headline", "profile", "paired", "metrics", "lora", "items", "checkpoint", "plots"]


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mp")
    for rel in ROWS.values():
        for src in (SUBS / rel, SUBS / rel.replace(".json", ".samples.jsonl")):
            (root / "submissions" / src.relative_to(SUBS)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, root / "submissions" / src.relative_to(SUBS))
    assert main(["leaderboard", "build", "--submissions", str(root / "submissions"), "--out", str(root / "leaderboard")]) == 0
    return root / "leaderboard"


def data(lb: Path) -> dict[str, Any]:
    return json.loads((lb / "data.json").read_text())


def model(lb: Path, key: str) -> dict[str, Any]:
    return next(m for m in data(lb)["models"] if m["id"] == f"submissions/{ROWS[key]}")


def page_of(lb: Path, key: str) -> str:
    return (lb / "models" / f"{model(lb, key)['page']}.html").read_text()


def section(page: str, sid: str) -> str:
    """The HTML from the element with id ``sid`` to the next <h2>."""
    start = page.index(f'id="{sid}"')
    end = page.find("<h2", start + 1)
    return page[start : end if end > 0 else len(page)]


def doc_of(key: str) -> dict[str, Any]:
    return json.loads((SUBS / ROWS[key]).read_text())


def records_of(key: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (SUBS / ROWS[key].replace(".json", ".samples.jsonl")).read_text().splitlines()]


def metric_row(block: str, task: str, metric: str) -> list[str]:
    """The cells (inner HTML) of a metrics-table row."""
    m = re.search(rf"<td>{re.escape(task)}</td><td>{re.escape(metric)}</td>(.*?)</tr>", block, re.S)
    assert m, f"no row {task}.{metric}"
    return re.findall(r"<td[^>]*>(.*?)</td>", m.group(1), re.S)


def test_headline_and_collapse_profile_come_first(lb: Path) -> None:
    page, row = page_of(lb, "lora"), model(lb, "lora")
    assert sorted(SECTIONS, key=lambda s: page.index(f'id="{s}"')) == SECTIONS
    head = section(page, "headline")
    assert nb.rounded(row["score"], row["score_lo"], row["score_hi"]) in head
    assert f"95% CI {nb.ci_text(row['score_lo'], row['score_hi'])}" in head
    peers = [m for m in data(lb)["models"] if m["suite_version"] == row["suite_version"]]
    point, best, worst, group = iv.suite_ranks(peers)[row["id"]]
    shown = str(best) if best == worst else f"{best}–{worst}"
    assert f'{shown} <span class="pm">of {len(iv.suite_ranks(peers))}</span>' in head
    assert f"point rank {point}, tied group {group}" in head
    # every component: its value, and a ± / CI where it has bootstrap replicates (geometry has none: probe scalars)
    for name in ("geometry", "plasticity", "ood_accuracy_chance", "calibration", "diversity"):
        cells = re.search(rf"<td>{name}</td>(.*?)</tr>", head, re.S)
        assert cells and f'data-v="{nb.data_value(row["c." + name])}"' in cells.group(1)
    assert "± " in re.search(r"<td>calibration</td>(.*?)</tr>", head, re.S).group(1)
    assert "± " not in re.search(r"<td>geometry</td>(.*?)</tr>", head, re.S).group(1)
    profile = section(page, "profile")
    labels = re.findall(r"<th>([^<]+)</th><td", profile)
    assert labels[:3] == ["effective rank (centred)", "participation ratio", "anisotropy (mean cosine)"]
    value = doc_of("lora")["tasks"]["probe_standard"]["metrics"]["effective_rank"]
    assert f'<td class="num">{nb.plain(value)}</td>' in profile


def test_metrics_grouped_with_pm_and_n(lb: Path) -> None:
    page, doc, rid = page_of(lb, "lora"), doc_of("lora"), f"submissions/{ROWS['lora']}"
    metrics = section(page, "metrics")
    groups = re.findall(r'<details class="group" id="g-([a-z]+)">', metrics)
    assert groups == ["geometry", "ood", "calibration", "plasticity", "diversity", "lora"]
    block = {g: metrics[metrics.index(f'id="g-{g}"') :].split("</details>\n")[0] for g in groups}
    for g, task, metric in [
        ("geometry", "probe_standard", "effective_rank"),
        ("ood", "arc_easy", "acc"),
        ("ood", "xstest_refusal", "refusal_gap"),
        ("calibration", "arc_easy", "ece"),
        ("plasticity", "plasticity_standard_world", "gain"),
        ("diversity", "diversity_standard", "distinct_2"),
        ("lora", "lora", "delta_norm"),
    ]:
        assert f"<td>{task}</td><td>{metric}</td>" in block[g], (g, task, metric)
    assert "_stderr</td>" not in page  # folded into the ± of its metric
    n_items = sum(r["task"] == "arc_easy" for r in records_of("lora"))
    value, pm, n = metric_row(block["ood"], "arc_easy", "acc")[:3]
    lo, hi = data(lb)["cis"][rid]["arc_easy.acc"]  # the bootstrap CI over items
    assert value == nb.rounded(doc["tasks"]["arc_easy"]["metrics"]["acc"], lo, hi)
    assert pm == f"± {mv.pm(lo, hi)}" and n == f"{n_items} items"
    ms = doc["tasks"]["arc_easy"]["metrics"]  # acc_norm: no item evidence, its lm-eval stderr gives the ±
    half = mv.Z95 * ms["acc_norm_stderr"]
    assert metric_row(block["ood"], "arc_easy", "acc_norm")[1] == f"± {mv.pm(ms['acc_norm'] - half, ms['acc_norm'] + half)}"
    gain = metric_row(block["plasticity"], "plasticity_standard_world", "gain")
    lo, hi = data(lb)["cis"][rid]["plasticity_standard_world.gain"]  # over seeds
    assert gain[1] == f"± {mv.pm(lo, hi)}" and gain[2] == f"{doc['tasks']['plasticity_standard_world']['counts']['seeds']} seeds"
    probe_n = doc["tasks"]["probe_standard"]["counts"]["texts"]
    assert metric_row(block["geometry"], "probe_standard", "anisotropy")[2] == f"{probe_n} texts"
    assert metric_row(block["diversity"], "diversity_standard", "self_bleu4")[2] == "12 prompts"
    for g in groups:  # every row has its n
        rows = re.findall(r"<tr title=[^>]*><td>([^<]+)</td><td>([^<]+)</td>", block[g])
        assert rows and all(metric_row(block[g], t, m)[2] for t, m in rows), g


def test_lora_per_module_detail_is_folded(lb: Path) -> None:
    page, ms = page_of(lb, "lora"), doc_of("lora")["tasks"]["lora"]["metrics"]
    assert ":" not in "".join(re.findall(r"<td>lora</td><td>([^<]*)</td>", section(page, "metrics")))
    lora = section(page, "lora")
    assert lora.count('<details class="lora-modules">') == 1 and '<details class="lora-modules" open' not in lora
    heads = re.findall(r'<th class="num" title="[^"]*">([^<]+)</th>', lora)
    assert heads == ["q", "k", "v", "o", "gate", "up", "down"]
    cells = re.search(r"<td>delta_norm</td>(.*?)</tr>", lora, re.S).group(1)
    assert re.findall(r">([^<]+)</td>", cells) == [nb.plain(ms[f"delta_norm:{m}"]) for m in heads]
    assert '<h2 id="lora">' not in page_of(lb, "base")  # no LoRA task, no section


def test_links_resolve_to_the_submission_files(lb: Path) -> None:
    for key in ROWS:
        path = lb / "models" / f"{model(lb, key)['page']}.html"
        page = path.read_text()
        hrefs = set(re.findall(r'(?:href|src)="([^"#]+)', page))
        assert hrefs and all((path.parent / h).resolve().is_file() for h in hrefs), key
        raw = re.search(r'<a href="([^"]+)">raw result JSON</a>', page).group(1)
        assert (path.parent / raw).resolve().read_bytes() == (SUBS / ROWS[key]).read_bytes()
        samples = re.search(r'<a href="([^"]+)">samples file</a>', page).group(1)
        assert samples.endswith(".samples.jsonl")
        assert (path.parent / samples).resolve().read_bytes() == (
            SUBS / ROWS[key].replace(".json", ".samples.jsonl")
        ).read_bytes()


def test_item_browser_matches_the_samples_file(lb: Path) -> None:
    items, recs = section(page_of(lb, "safety"), "items"), records_of("safety")
    for task in sorted({r["task"] for r in recs}):
        n = sum(r["task"] == task for r in recs)
        assert f"{markupsafe.escape(task)} (lm_eval): {n} records, first {min(n, 20)} shown" in items or task.startswith(
            "diversity"
        )
    block = items[items.index('id="items-arc_easy"') :].split("</details>")[0]
    assert '<details class="items-task" id="items-arc_easy">' in items  # folded
    rows = re.findall(r"<tr><td><code>([^<]+)</code></td><td class=\"ch\">(.*?)</td><td class=\"num\">([^<]+)</td>", block)
    first = [r for r in recs if r["task"] == "arc_easy"][:20]
    assert [r[0] for r in rows] == [r["id"] for r in first]
    for (_, cells, gold), rec in zip(rows, first):
        z = np.array(rec["loglik"], dtype=np.float64)
        want = np.exp(z - np.logaddexp.reduce(z))
        assert [float(p) for p in re.findall(r"</b> ([0-9.]+)</span>", cells)] == [round(float(p), 3) for p in want]
        assert gold == "ABCD"[rec["gold"]]
        marked = re.findall(r'<span class="([^"]+)"><b>([A-Z])</b>', cells)
        assert "gold" in {b: a for a, b in marked}.get(gold, "")  # the correct answer is outlined
        assert any("pick" in a and b == "ABCD"[int(np.argmax(want))] for a, b in marked)
    div = next(r for r in recs if r["task"] == "diversity_standard")
    assert str(markupsafe.escape(div["samples"][1][:60])) in items  # generations
    xs = next(r for r in recs if r["task"] == "xstest_refusal")
    assert str(markupsafe.escape(xs["response"][:60])) in items and f'<div class="gen target">{xs["target"]}</div>' in items


def test_deltas_are_coloured_by_the_expected_sign(lb: Path, tmp_path: Path) -> None:
    """sft's plasticity gain is expected to fall and safety's too: sft's forged to fall clearly (agrees), safety's
    to rise clearly (contradicts); rendered without validation (the forged per-seed values do not match curves)."""
    root = lb.parent / "submissions"
    by_id = {e.id: e for e in entries_from(validate_paths([root]).ok, root)}
    docs = {rid: copy.deepcopy(e.doc) for rid, e in by_id.items()}
    for child, parent, shift in (("sft", "base", -0.2), ("safety", "sft", 0.2)):  # Δ per seed: shift, shift + 0.0005
        for task in ("plasticity_standard_gsm8k", "plasticity_standard_world"):
            mine, theirs = (docs[f"submissions/{ROWS[k]}"]["tasks"][task]["per_seed"] for k in (child, parent))
            for i, seed in enumerate(sorted(mine)):
                mine[seed]["gain"] = theirs[seed]["gain"] + shift + 0.0005 * i
    forged = [dataclasses.replace(e, doc=docs[rid], reps={}) for rid, e in by_id.items()]
    site.render(forged, tmp_path / "lb")
    found = json.loads((tmp_path / "lb" / "data.json").read_text())["comparisons"]
    verdicts = set()
    for key in ("sft", "safety", "lora"):
        rid = f"submissions/{ROWS[key]}"
        page = next((tmp_path / "lb" / "models").glob(f"{model(lb, key)['page']}.html")).read_text()
        paired = section(page, "paired")
        for c in (c for c in found if c["id"] == rid):
            part = paired[paired.index(f'class="cmp cmp-{c["relation"]}"') :].split('<details class="cmp ')[0]
            for m in c["metrics"]:
                if m["ci_lo"] is None and m["mde_80"] is None:
                    continue
                want = mv.TONES.get(m.get("verdict") or "") or ("d-noise" if m["within_noise"] else "")
                cell = re.search(rf"<td>{m['task']}</td><td>{m['metric']}</td>\s*<td class=\"num ?([a-z-]*)\"", part)
                assert cell and cell.group(1) == want, (key, c["relation"], m["task"], m["metric"])
                verdicts.add(m.get("verdict"))
    assert {"agrees", "contradicts", "within noise"} <= verdicts
    sft = next((tmp_path / "lb" / "models").glob(f"{model(lb, 'sft')['page']}.html")).read_text()
    assert re.search(r'<td>plasticity_standard_world</td><td>gain</td>\s*<td class="num d-agree"', sft)
    assert "verdicts: 2 agree, 0 contradict" in sft
    safety = next((tmp_path / "lb" / "models").glob(f"{model(lb, 'safety')['page']}.html")).read_text()
    assert re.search(r'<td>plasticity_standard_world</td><td>gain</td>\s*<td class="num d-contra"', safety)
    css = re.search(r"<style>\n\.mp-nav(.*?)</style>", sft, re.S).group(1)
    assert ".d-agree" in css and ".d-contra" in css and ".d-noise" in css


def test_tone_rules() -> None:
    assert mv.tone({"verdict": "agrees"}) == "d-agree" and mv.tone({"verdict": "contradicts"}) == "d-contra"
    assert mv.tone({"verdict": "within noise"}) == "d-noise" == mv.tone({"verdict": None, "within_noise": True})
    assert mv.tone({"verdict": None, "within_noise": None, "beyond_mde": False}) == "d-noise"
    assert mv.tone({"verdict": "no prediction", "within_noise": False}) == "" == mv.tone({})


def test_no_reprs_absolute_paths_or_unwrapped_tables(lb: Path) -> None:
    for path in sorted((lb / "models").glob("*.html")):
        page = path.read_text()
        body = re.sub(r"<style>.*?</style>|<script>.*?</script>|<div class=\"gen [^\"]+\">.*?</div>", "", page, flags=re.S)
        words = html.unescape(re.sub(r"<[^>]+>", " ", body))
        assert not re.search(r"\b(None|True|False|nan|NaN)\b", words), path.name
        assert not re.search(r"[{\[]'|'\w+': |\(\w+=|<class |array\(", words), path.name  # dict/list/tuple/numpy reprs
        assert not re.search(r"(^|[\s\"'(=])/(tmp|home|root|work|Users)/", page)
        # every table scrolls inside its own container (nothing scrolls the page sideways at 400 px)
        tables = page.count("<table")
        assert tables and tables == page.count('<div class="wrap"><table'), path.name
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert mv.text({"a": 1, "b": None, "c": [True, 0.5]}) == "a=1, b=—, c=true, 0.5"


def test_hostile_strings_are_escaped(lb: Path, tmp_path: Path) -> None:
    root = lb.parent / "submissions"
    entries = entries_from(validate_paths([root]).ok, root)
    evil = "<script>window.__pwned=1</script>"
    img = '"><img src=x onerror=alert(1)>'
    e = next(e for e in entries if e.id.endswith(ROWS["lora"]))
    recs = [
        {"task": evil, "id": img, "response": evil, "samples": [evil, img], "target": {"a": evil}},
        {"task": "arc_easy", "id": img, "loglik": [-1.0, -2.0], "gold": 0, "correct": 1},
    ]
    doc = copy.deepcopy(e.doc)
    doc["model"].update(name=evil, stage=img, recipe=evil, intervention=img)
    doc["config"]["limit"] = {"x": evil}
    hostile = dataclasses.replace(e, doc=doc, records=recs, reps={})
    site.render([x if x.id != e.id else hostile for x in entries], tmp_path / "lb")
    page = (tmp_path / "lb" / "models" / f"{model(lb, 'lora')['page']}.html").read_text()
    assert "<script>window" not in page and "<img src=x" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert "limit=x=&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page  # a dict as key=value, escaped
    assert 'target">a=&lt;script&gt;' in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_probe_only_rows_and_determinism(tmp_path: Path) -> None:
    """The helpers' probe-only tree: no score (not ranked), no samples records, a geometry profile; two renders
    are byte-identical."""
    subs = tmp_path / "submissions"
    submissions_tree(subs)
    for out in ("a", "b"):
        assert main(["leaderboard", "build", "--submissions", str(subs), "--out", str(tmp_path / out)]) == 0
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    page = next((tmp_path / "a" / "models").glob("local--tiny-sft--quick-b*.html")).read_text()
    assert "not ranked: no score (no outcome component)" in page and "No samples file records for this row." in page
    assert "effective rank (centred)" in section(page, "profile") and "vs parent:" in page
    assert '<h2 id="lora">' not in page
