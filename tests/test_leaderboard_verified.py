"""Verification files (issue 17, contribution flow): ``validate`` accepts a good ``*.verified.json`` and rejects a
malformed, orphan or stale one in one line; the site marks exactly the verified row ("✓ verified" on the index and
the model page, ``verified`` in data.json) and ignores stale evidence; the Pages artefact keeps the repository's
layout, so every link of the site (raw results, samples, verifications) resolves inside it.

The tree is the helpers' three probe-only rows (fast to build); a verification is written with
:func:`verified.evidence` from a zero-|Δ| diff of the row against itself (the reproduction itself is tested in
``tests/test_leaderboard_reproduce.py``).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cli_helpers import assert_one_line_error
from leaderboard_helpers import submissions_tree

from collapse_bench.cli import main
from collapse_bench.errors import CollapseBenchError
from collapse_bench.io import sha256_file
from collapse_bench.leaderboard import verified as VF
from collapse_bench.leaderboard.entry import entries_from
from collapse_bench.leaderboard.reproduce import diff_metrics, load_tolerances
from collapse_bench.leaderboard.validate import validate_paths

REPO = Path(__file__).resolve().parents[1]
VERIFIED_ROW = "local/tiny-sft/quick-b.json"


def write_evidence(row: Path, reproducer: str | None = "Ada Lovelace") -> Path:
    """The evidence of a passing reproduction of ``row`` (the row's own values reproduced: every |Δ| = 0)."""
    doc = json.loads(row.read_text())
    rules = load_tolerances(None)
    return VF.record(row, VF.evidence(row, diff_metrics(doc, doc, rules), doc, rules, None, reproducer))


def pages_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pages_site", REPO / ".github" / "scripts" / "pages_site.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def subs(tmp_path: Path) -> Path:
    root = tmp_path / "submissions"
    submissions_tree(root)
    write_evidence(root / VERIFIED_ROW)
    return root


def test_validate_accepts_a_good_verification(subs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ev = subs / "local/tiny-sft/quick-b.verified.json"
    doc = json.loads(ev.read_text())
    assert doc["submission"] == {"file": "quick-b.json", "sha256": sha256_file(subs / VERIFIED_ROW), "samples": {}}
    assert doc["comparison"]["max_delta_over_tolerance"] == 0 and doc["comparison"]["worst"] is None
    assert main(["validate", str(subs)]) == 0
    out = capsys.readouterr().out
    assert f"OK {ev} (verification of quick-b.json: {doc['comparison']['metrics']} metrics reproduced)" in out
    assert "3 valid, 1 verification, 0 rejected" in out
    assert main(["validate", str(ev)]) == 0  # given on its own: checked as a verification, not as a result
    assert "0 valid, 1 verification, 0 rejected" in capsys.readouterr().out


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return edit


def _not_ok(d: dict[str, Any]) -> None:
    d["comparison"]["rows"][0]["ok"] = False


def _fewer_rows(d: dict[str, Any]) -> None:
    d["comparison"]["rows"].pop()


EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no comparison": (_drop("comparison"), "(top level): 'comparison' is a required property"),
    "other schema": (_set(("schema",), "something/else"), "schema: 'collapse-bench/verification' was expected"),
    "failed row": (_not_ok, "comparison/rows/0/ok: True was expected"),
    "inconsistent table": (_fewer_rows, "comparison: metrics, max_delta_over_tolerance and worst do not match the rows"),
    "absolute path": (_set(("reproducer",), "/home/ada"), "reproducer: is an absolute path of the reproducer's disk"),
    "html name": (_set(("reproducer",), "<script>"), "reproducer: '<' and '>' are not allowed in names"),
    "wrong file": (_set(("submission", "file"), "quick-c.json"), "submission/file: names 'quick-c.json'"),
    "bad sha": (_set(("submission", "sha256"), "z" * 64), "submission/sha256: 'zzzz"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_validate_rejects_a_malformed_verification(case: str, subs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ev = subs / "local/tiny-sft/quick-b.verified.json"
    doc = json.loads(ev.read_text())
    edit, expected = EDITS[case]
    edit(doc)
    ev.write_text(json.dumps(doc))
    code = main(["validate", str(subs)])
    assert_one_line_error(code, capsys.readouterr().err, f"{ev}: {expected}")


def test_validate_rejects_bad_json_orphan_and_stale(subs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ev = subs / "local/tiny-sft/quick-b.verified.json"
    good = ev.read_bytes()
    ev.write_text('{"schema": ')
    assert_one_line_error(main(["validate", str(subs)]), capsys.readouterr().err, f"{ev}: (file): truncated JSON")
    ev.write_bytes(good)
    # orphan: the evidence of a row that is not there
    orphan = subs / "local/gone/quick-z.verified.json"
    orphan.parent.mkdir()
    orphan.write_text(json.dumps({**json.loads(good), "submission": {**json.loads(good)["submission"], "file": "quick-z.json"}}))
    code = main(["validate", str(subs)])
    assert_one_line_error(code, capsys.readouterr().err, f"{orphan}: submission/file: orphan verification: quick-z.json is not")
    orphan.unlink()
    # stale: the row was replaced after it was reproduced (same content, other bytes)
    row = subs / VERIFIED_ROW
    row.write_text(json.dumps(json.loads(row.read_text())))
    assert main(["validate", str(subs)]) == 1
    assert_one_line_error(1, capsys.readouterr().err, f"{ev}: submission/sha256: stale verification: quick-b.json changed")
    # the site never marks a row with stale evidence (the build refuses it through validate; entries_from ignores it)
    report = validate_paths([subs])
    assert len(report.ok) == 3 and not any(e.verified for e in entries_from(report.ok, subs))


def test_stale_samples_file(tmp_path: Path) -> None:
    """A verification names the sha256 of every samples file the row references; another samples file is stale."""
    row, samples = tmp_path / "quick-s.json", tmp_path / "quick-s.samples.jsonl"
    samples.write_text('{"task": "t", "id": "1"}\n')
    row.write_text(json.dumps({"tasks": {"t": {"samples": {"path": samples.name, "sha256": sha256_file(samples)}}}}))
    reproduced = {
        "harness": {"name": "collapse-bench", "version": "0.1.0"},
        "environment": {},
        "config": {"device": "cpu", "dtype": "float32"},
    }
    diff = [{"task": "t", "metric": "m", "recorded": 1.0, "reproduced": 1.01, "delta": 0.01, "tolerance": 0.02, "ok": True}]
    VF.record(row, VF.evidence(row, diff, reproduced, [], None, None))
    doc = VF.check_evidence(VF.evidence_path(row))
    assert doc["submission"]["samples"] == {samples.name: sha256_file(samples)}
    assert doc["comparison"]["max_delta_over_tolerance"] == pytest.approx(0.5) and doc["comparison"]["worst"] == "t.m"
    samples.write_text('{"task": "t", "id": "2"}\n')
    with pytest.raises(CollapseBenchError, match=r"submission/samples/quick-s.samples.jsonl: stale verification"):
        VF.check_evidence(VF.evidence_path(row))
    with pytest.raises(CollapseBenchError, match="every metric within tolerance"):
        VF.evidence(row, [{**diff[0], "ok": False}], reproduced, [], None, None)


def test_site_marks_exactly_the_verified_row_and_pages_links_resolve(subs: Path, tmp_path: Path) -> None:
    out = tmp_path / "_site"
    assert pages_script().main(["--submissions", str(subs), "--out", str(out)]) == 0
    site = out / "leaderboard"
    models = json.loads((site / "data.json").read_text())["models"]
    marked = {m["id"]: (m["verified"], m["verification"]) for m in models}
    rid = f"submissions/{VERIFIED_ROW}"
    evid = rid.removesuffix(".json") + ".verified.json"
    assert marked == {m["id"]: (m["id"] == rid, evid if m["id"] == rid else None) for m in models} and len(marked) == 3
    index = (site / "index.html").read_text()
    rows = re.findall(r"<tr data-f-.*?</tr>", index, re.S)
    with_mark = [r for r in rows if "✓ verified</a>" in r]
    page = next(m["page"] for m in models if m["id"] == rid)
    assert len(rows) == 3 and len(with_mark) == 1 and f'href="models/{page}.html"' in with_mark[0]
    assert f'<a class="verified" href="../{evid}" title="reproduced by Ada Lovelace with collapse-bench' in with_mark[0]
    assert "Rows are self-reported" in index
    for m in models:
        text = (site / "models" / f"{m['page']}.html").read_text()
        assert ("✓ verified" in text) == (m["id"] == rid), m["id"]
    text = (site / "models" / f"{page}.html").read_text()
    link = re.search(r'<h1>.*?<a class="verified" href="([^"]+)" title="([^"]+)">✓ verified</a></h1>', text)
    assert link and link.group(1) == f"../../{evid}" and "metrics within tolerance" in link.group(2)
    # the Pages layout: every relative link of every page resolves to a file inside the artefact
    assert 'url=leaderboard/"' in (out / "index.html").read_text()
    checked = 0
    for html in sorted(out.rglob("*.html")):
        for href in re.findall(r'(?:href|src)="([^"#]+)', html.read_text()):
            if re.match(r"^[a-z]+:", href):
                continue
            target = (html.parent / href).resolve()
            assert target.is_relative_to(out.resolve()) and target.exists(), (html, href)
            checked += 1
    assert checked > 20
    assert (site / "models" / f"{page}.html").parent.joinpath(f"../../{evid}").resolve().read_bytes() == (
        subs / "local/tiny-sft/quick-b.verified.json"
    ).read_bytes()
    with pytest.raises(CollapseBenchError, match="not an empty directory"):
        pages_script().assemble(subs, out)


def test_refuse_replacing_a_current_verification(subs: Path) -> None:
    row = subs / VERIFIED_ROW
    with pytest.raises(CollapseBenchError, match=r"already verifies quick-b\.json by Ada Lovelace; pass --force"):
        VF.refuse_replacing(row, force=False)
    VF.refuse_replacing(row, force=True)
    VF.refuse_replacing(subs / "local/tiny-sft-reg/quick-c.json", force=False)  # nothing to replace
    row.write_text(json.dumps(json.loads(row.read_text())))  # the row was replaced: its evidence is stale
    VF.refuse_replacing(row, force=False)  # and a new --record run may replace it
    for bad in ("/home/ada", "a\u202eb", "x" * 101, ""):
        with pytest.raises(CollapseBenchError, match="--reproducer"):
            VF.check_reproducer(bad)
