"""What `validate` recomputes (collapse_bench/leaderboard/evidence.py), checked against independent references:
lm-eval's own stderr, the committed SmolLM2 rows (produced by the real lm-eval run), the data mirror's MANIFEST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_data_dir

from collapse_bench.leaderboard import evidence as E
from collapse_bench.tasks import TaskRegistry

ROOT = Path(__file__).resolve().parents[1]
STANDARD = next((ROOT / "submissions" / "huggingfacetb" / "smollm2-135m-instruct").glob("standard-*.json"))


def records(result: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for line in result.with_name(result.stem + ".samples.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out.setdefault(rec["task"], []).append(rec)
    return out


def test_mc_metrics_recomputed_equal_the_lm_eval_run() -> None:
    """acc / acc_norm as lm-eval computed them in the real run, and their stderr as lm-eval's mean_stderr."""
    from lm_eval.api.metrics import mean_stderr

    doc = json.loads(STANDARD.read_text(encoding="utf-8"))
    recs = records(STANDARD)
    for task in ("arc_easy", "hellaswag", "piqa"):
        cal, metrics = E.mc_expected(recs[task], doc["tasks"][task]["calibration"])  # a block written before SCE/AURC
        recorded = doc["tasks"][task]["metrics"]
        assert metrics["acc"] == pytest.approx(recorded["acc"], rel=1e-12)
        assert metrics["acc_norm"] == pytest.approx(recorded["acc_norm"], rel=1e-12)
        assert metrics["acc_stderr"] == pytest.approx(mean_stderr([r["correct"] for r in recs[task]]), rel=1e-12)
        assert cal == doc["tasks"][task]["calibration"]


def test_record_problem_shapes() -> None:
    ok = {
        "task": "t",
        "doc_id": 0,
        "id": "x",
        "gold": 1,
        "loglik": [-2.0, -1.0],
        "choice_chars": [3, 4],
        "choice_bytes": [3, 4],
        "correct": 1,
    }
    assert E.record_problem(ok) is None
    assert "disagrees" in E.record_problem({**ok, "correct": 0})
    assert "gold" in E.record_problem({**ok, "gold": 2})
    assert "unknown field" in E.record_problem({**ok, "extra": 1})
    assert "loglik" in E.record_problem({**ok, "loglik": [-1.0, float("nan")]})
    assert "choice_chars" in E.record_problem({**ok, "choice_chars": [3]})
    gen = {"task": "t", "doc_id": 1, "id": None, "filter": "none", "target": "4", "response": "4", "samples": ["4"]}
    assert E.record_problem(gen) is None
    assert "samples" in E.record_problem({**gen, "samples": [4]})


def test_completeness_rules() -> None:
    from collapse_bench.results.complete import result_incompleteness as why

    doc = {
        "tasks": {"a": {"kind": "probe"}, "b": {"kind": "lm_eval"}, "lora": {"kind": "lora"}},
        "suite": {"name": "s", "version": 1},
        "config": {"limit": None},
    }
    assert why(doc, ["a", "b"]) is None  # an extra lora task is allowed
    assert "task 'c' of the suite is missing" in why(doc, ["a", "b", "c"])
    assert "task 'b' is not in suite" in why(doc, ["a"])
    assert "--limit 3" in why({**doc, "config": {"limit": 3}}, ["a", "b"])


def test_expected_data_matches_the_committed_standard_row() -> None:
    """The hashes the repo vouches for (pinned mirror files, regenerated world data, lm-eval YAMLs) are exactly the
    ones the real standard run recorded."""
    doc = json.loads(STANDARD.read_text(encoding="utf-8"))
    reg = TaskRegistry()
    suite = reg.suites["standard"]
    for name, block in doc["tasks"].items():
        assert E.expected_data(reg.tasks[name], suite.limits.get(name)) == block["data"], name


def test_pinned_hashes_are_the_mirror_manifest() -> None:
    mirror = shared_data_dir()
    if mirror is None:
        pytest.skip("shared data mirror not found (set COLLAPSE_BENCH_TEST_DATA): compares pinned.json with its MANIFEST")
    manifest = json.loads((mirror / "MANIFEST.json").read_text(encoding="utf-8"))
    files = {f["file"]: {"sha256": f["sha256"], "rows": f["rows"]} for d in manifest["datasets"] for f in d["files"]}
    assert E.pinned()["files"] == files
