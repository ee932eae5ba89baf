"""`collapse-bench reproduce` on a real tiny-model submission: passes as recorded; a tampered metric fails
with the diff; different data or a different checkpoint are refused before any model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collapse_bench.cli import main
from collapse_bench.evaluate import EvaluateRequest, evaluate
from collapse_bench.leaderboard import reproduce as R
from collapse_bench.tasks import TaskRegistry


@pytest.fixture(scope="module")
def result(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repro") / "tiny-quick.json"
    evaluate(EvaluateRequest(model=str(tiny_model_dir), suite="quick", tasks=["probe_quick"], limit=3, device="cpu",
                             output=str(out), progress=False))
    return out


def edited(result: Path, tmp_path: Path, edit) -> Path:
    doc = json.loads(result.read_text())
    edit(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return path


def test_reproduce_passes(result: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", str(result), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    n = len(json.loads(result.read_text())["tasks"]["probe_quick"]["metrics"])
    assert f"reproduced: all {n} metrics within tolerance" in out
    assert out.splitlines()[0].split() == ["task", "metric", "recorded", "reproduced", "|Δ|", "tolerance"]


def test_tampered_metric_fails_with_diff(result: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def tamper(doc: dict) -> None:
        m = doc["tasks"]["probe_quick"]["metrics"]
        m["effective_rank"] = m["effective_rank"] * 0.8

    path = edited(result, tmp_path, tamper)
    assert main(["reproduce", str(path), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    rows = [line.split() for line in captured.out.splitlines()]
    bad = [r for r in rows if r[-1] == "FAIL"]
    assert len(bad) == 1 and bad[0][:2] == ["probe_quick", "effective_rank"]
    recorded, reproduced = float(bad[0][2]), float(bad[0][3])
    assert recorded == pytest.approx(0.8 * reproduced, rel=1e-5)
    assert float(bad[0][4]) == pytest.approx(reproduced - recorded, rel=1e-4)
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "1 of" in err[0] and "outside tolerance (first: probe_quick.effective_rank" in err[0]


def test_different_data_refused_before_loading(result: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    task = TaskRegistry().task("probe_quick")

    def other_data(doc: dict) -> None:  # a consistent submission made on other data: valid, but not ours
        block = doc["tasks"]["probe_quick"]
        key = sorted(block["data"])[0]
        block["data"][key] = "0" * 64
        block["hash"] = task.task_hash(block["data"])

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr("collapse_bench.evaluate.load_model", no_model)
    path = edited(result, tmp_path, other_data)
    assert main(["validate", str(path)]) == 0
    assert main(["reproduce", str(path), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/data/builtin:" in err[0] and "recorded 000000000000…; refusing to reproduce on different data" in err[0]

    path = edited(result, tmp_path, lambda d: d["model"].__setitem__("sha256", "1" * 64))
    assert main(["reproduce", str(path), "--device", "cpu"]) == 1
    assert "refusing to evaluate a different checkpoint" in capsys.readouterr().err


def test_tolerance_rules_and_custom_file(tmp_path: Path) -> None:
    rules = R.load_tolerances(None)
    assert R.tolerance_for("probe_standard", "effective_rank", rules) == (0.0, 0.05)
    assert R.tolerance_for("arc_easy", "acc_norm", rules) == (0.02, 0.0)
    assert R.tolerance_for("t", "whatever_new", rules) == (1e-6, 0.01)
    # plasticity_standard_world recorded with 1 torch thread, re-run with 2 (the replay chain's final stage):
    # the 2-seed stds move 30% while the means stay within their rules -- a std has its own rule; a doubled
    # std still fails
    one = {"bpb_final": 1.19482, "bpb_final_std": 0.1449765793721129, "gain_std": 0.0296675}
    two = {"bpb_final": 1.17665, "bpb_final_std": 0.10061464254514586, "gain_std": 0.0205894}

    def wrap(metrics: dict) -> dict:
        return {"tasks": {"plasticity_standard_world": {"metrics": metrics}}}

    assert all(r["ok"] for r in R.diff_metrics(wrap(one), wrap(two), rules))
    doubled = {**two, "bpb_final_std": 2 * one["bpb_final_std"]}
    assert [r["ok"] for r in R.diff_metrics(wrap(one), wrap(doubled), rules)] == [True, False, True]
    custom = tmp_path / "tol.yaml"
    custom.write_text("tolerances:\n  - {metric: 'probe_quick.effective_rank', abs: 100}\n  - {metric: '*', rel: 0}\n")
    rows = R.diff_metrics({"tasks": {"probe_quick": {"metrics": {"effective_rank": 10.0, "x": None, "y": 1.0}}}},
                          {"tasks": {"probe_quick": {"metrics": {"effective_rank": 60.0, "x": None, "y": 1.0 + 1e-9}}}},
                          R.load_tolerances(custom))
    assert [(r["metric"], r["ok"]) for r in rows] == [("effective_rank", True), ("x", True), ("y", False)]
    (tmp_path / "broken.yaml").write_text("tolerances: 3\n")
    with pytest.raises(Exception, match="expected 'tolerances"):
        R.load_tolerances(tmp_path / "broken.yaml")
