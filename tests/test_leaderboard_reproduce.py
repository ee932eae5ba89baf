"""`collapse-bench reproduce` on a real tiny-model submission: passes as recorded; a tampered metric fails
with the diff; different data, a different checkpoint, a local row without ``--model``, a row's
trust_remote_code without ``--trust-remote-code`` and unknown config keys are refused before any model is loaded;
``--record`` writes the evidence file of a passing run and nothing for a failing one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error

from collapse_bench.cli import main
from collapse_bench.evaluate import EvaluateRequest, evaluate
from collapse_bench.io import sha256_file
from collapse_bench.leaderboard import reproduce as R
from collapse_bench.leaderboard.verified import check_evidence
from collapse_bench.results.provenance import package_version
from collapse_bench.tasks import TaskRegistry


@pytest.fixture(scope="module")
def result(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repro") / "tiny-quick.json"
    evaluate(
        EvaluateRequest(
            model=str(tiny_model_dir),
            suite="quick",
            tasks=["probe_quick"],
            limit=3,
            device="cpu",
            output=str(out),
            progress=False,
        )
    )
    return out


def edited(result: Path, tmp_path: Path, edit) -> Path:
    doc = json.loads(result.read_text())
    edit(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> list[str]:
    return ["--model", str(tiny_model_dir), "--device", "cpu"]


def no_model(*args, **kwargs):
    raise AssertionError("the model must not be loaded")


def test_reproduce_passes(result: Path, model: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert json.loads(result.read_text())["model"]["name"] == "tiny-llama"  # a display name, not the path
    assert main(["reproduce", str(result), *model]) == 0
    out = capsys.readouterr().out
    n = len(json.loads(result.read_text())["tasks"]["probe_quick"]["metrics"])
    assert f"reproduced: all {n} metrics within tolerance" in out
    assert out.splitlines()[0].split() == ["task", "metric", "recorded", "reproduced", "|Δ|", "tolerance"]


def test_tampered_metric_fails_with_diff(
    result: Path, model: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def tamper(doc: dict) -> None:
        m = doc["tasks"]["probe_quick"]["metrics"]
        m["effective_rank"] = m["effective_rank"] * 0.8

    path = edited(result, tmp_path, tamper)
    assert main(["reproduce", str(path), *model]) == 1
    captured = capsys.readouterr()
    rows = [line.split() for line in captured.out.splitlines()]
    bad = [r for r in rows if r[-1] == "FAIL"]
    assert len(bad) == 1 and bad[0][:2] == ["probe_quick", "effective_rank"]
    recorded, reproduced = float(bad[0][2]), float(bad[0][3])
    assert recorded == pytest.approx(0.8 * reproduced, rel=1e-5)
    assert float(bad[0][4]) == pytest.approx(reproduced - recorded, rel=1e-4)
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "1 of" in err[0] and "outside tolerance (first: probe_quick.effective_rank" in err[0]


def test_different_data_refused_before_loading(
    result: Path, model: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    task = TaskRegistry().task("probe_quick")

    def other_data(doc: dict) -> None:  # a consistent submission made on other data: valid, but not ours
        block = doc["tasks"]["probe_quick"]
        key = sorted(block["data"])[0]
        block["data"][key] = "0" * 64
        block["hash"] = task.task_hash(block["data"])

    monkeypatch.setattr("collapse_bench.evaluate.load_model", no_model)
    path = edited(result, tmp_path, other_data)
    assert main(["reproduce", str(path), *model]) == 1  # (validate regenerates builtin data and refuses it too)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tasks/probe_quick/data/builtin:" in err[-1] and "000000000000…" in err[-1]

    path = edited(result, tmp_path, lambda d: d["model"].__setitem__("sha256", "1" * 64))
    assert main(["reproduce", str(path), *model]) == 1
    assert "refusing to evaluate a different checkpoint" in capsys.readouterr().err


def test_local_row_needs_model_and_trust_is_never_taken_from_the_row(
    result: Path, model: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("collapse_bench.evaluate.load_model", no_model)
    assert main(["reproduce", str(result), "--device", "cpu"]) == 1
    assert_one_line_error(
        1, capsys.readouterr().err, "model/name", "'tiny-llama' was evaluated from a local checkpoint (local)", "--model PATH"
    )
    trusting = edited(result, tmp_path, lambda d: d["config"].__setitem__("trust_remote_code", True))
    assert main(["reproduce", str(trusting), *model]) == 1
    assert_one_line_error(1, capsys.readouterr().err, "config/trust_remote_code", "--trust-remote-code")
    odd = edited(result, tmp_path, lambda d: d["config"].__setitem__("attn_implementation", "x" * 5000))
    assert main(["reproduce", str(odd), *model, "--trust-remote-code"]) == 1
    assert_one_line_error(1, capsys.readouterr().err, "config/attn_implementation", "refusing to pass it on")
    old = edited(result, tmp_path, lambda d: d["model"].pop("sha256_scheme"))  # a row hashed before files-v2
    assert main(["reproduce", str(old), *model]) == 1  # refused by validation already: the scheme is required
    assert_one_line_error(1, capsys.readouterr().err, "model: 'sha256_scheme' is a required property")
    other = edited(result, tmp_path, lambda d: d["model"].__setitem__("sha256_scheme", "file"))  # a GGUF's scheme
    assert main(["reproduce", str(other), *model]) == 1
    assert_one_line_error(1, capsys.readouterr().err, "model/sha256", "recorded with checkpoint hash scheme file", "files-v2")


def test_trusted_row_reproduces_with_flag_only_when_recorded(
    result: Path, model: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--trust-remote-code on a row recorded without it changes nothing: the evaluation runs as recorded."""
    from collapse_bench.evaluate import EvaluateRequest
    from collapse_bench.results.model import Result

    doc = json.loads(result.read_text())
    assert (
        R.request_for(Result.from_doc(doc), None, tmp_path / "o.json", "cpu", "auto", None, "m", None, True).trust_remote_code
        is False
    )
    doc["config"]["trust_remote_code"] = True
    req = R.request_for(Result.from_doc(doc), None, tmp_path / "o.json", "cpu", "auto", None, "m", None, True)
    assert isinstance(req, EvaluateRequest) and req.trust_remote_code is True and req.model == "m"
    assert R.request_for(Result.from_doc(doc), None, tmp_path / "o.json", "cpu", "auto", None, "m").trust_remote_code is False


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
    rows = R.diff_metrics(
        {"tasks": {"probe_quick": {"metrics": {"effective_rank": 10.0, "x": None, "y": 1.0}}}},
        {"tasks": {"probe_quick": {"metrics": {"effective_rank": 60.0, "x": None, "y": 1.0 + 1e-9}}}},
        R.load_tolerances(custom),
    )
    assert [(r["metric"], r["ok"]) for r in rows] == [("effective_rank", True), ("x", True), ("y", False)]
    (tmp_path / "broken.yaml").write_text("tolerances: 3\n")
    with pytest.raises(Exception, match="expected 'tolerances"):
        R.load_tolerances(tmp_path / "broken.yaml")


def test_metrics_added_by_a_later_release_pass_and_lost_ones_fail() -> None:
    old = {"tasks": {"arc": {"metrics": {"acc": 0.5, "ece": 0.1}}}}
    new = {"tasks": {"arc": {"metrics": {"acc": 0.5, "sce": 0.2}}}}
    rows = {r["metric"]: r for r in R.diff_metrics(old, new, [])}
    assert rows["acc"]["ok"] and rows["sce"]["ok"] and rows["sce"]["recorded"] == "absent"
    assert not rows["ece"]["ok"]  # recorded, not reproduced
    assert not R.diff_metrics({"tasks": {}}, new, [])[0]["ok"]  # a whole task the row never recorded


def test_record_writes_evidence_only_for_a_passing_reproduction(
    result: Path, model: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    row = tmp_path / "subs" / "local" / "tiny-llama" / "quick-x.json"
    row.parent.mkdir(parents=True)
    shutil.copyfile(result, row)
    recorded = json.loads(row.read_text())
    assert main(["reproduce", str(row), *model, "--record", "--reproducer", "Ada"]) == 0
    evidence = row.with_name("quick-x.verified.json")
    assert f"verification written to {evidence}" in capsys.readouterr().out
    text = evidence.read_text()
    doc = json.loads(text)
    assert doc["schema"] == "collapse-bench/verification" and doc["schema_version"] == 1
    assert doc["submission"] == {"file": "quick-x.json", "sha256": sha256_file(row), "samples": {}}
    assert doc["reproducer"] == "Ada" and doc["device"] == "cpu" and doc["dtype"] == recorded["config"]["dtype"]
    assert doc["harness"]["version"] == package_version("collapse-bench")
    assert doc["environment"]["torch"] == recorded["environment"]["torch"] and "lm_eval" in doc["environment"]
    n = len(recorded["tasks"]["probe_quick"]["metrics"])
    comp = doc["comparison"]
    assert comp["metrics"] == n == len(comp["rows"]) and all(r["ok"] for r in comp["rows"])
    assert 0 <= comp["max_delta_over_tolerance"] <= 1 and doc["tolerance"]["source"] == "metric specs"
    assert str(tmp_path) not in text and str(Path.home()) not in text and '"/' not in text  # no path of this disk
    assert check_evidence(evidence) == doc
    assert main(["validate", str(tmp_path / "subs")]) == 0
    assert "1 valid, 1 verification, 0 rejected" in capsys.readouterr().out
    # a current verification is not replaced without --force: refused before any model is loaded
    monkeypatch.setattr("collapse_bench.evaluate.load_model", no_model)
    assert main(["reproduce", str(row), *model, "--record"]) == 1
    assert_one_line_error(1, capsys.readouterr().err, "already verifies quick-x.json by Ada; pass --force")
    assert main(["reproduce", str(row), *model, "--record", "--force", "--reproducer", "/home/ada"]) == 1
    assert_one_line_error(1, capsys.readouterr().err, "--reproducer '/home/ada': is a path")
    assert main(["reproduce", str(row), *model, "--reproducer", "Ada"]) == 1
    assert_one_line_error(1, capsys.readouterr().err, "--reproducer and --force only go with --record")
    assert evidence.read_text() == text
    monkeypatch.undo()

    # a failing reproduction writes nothing
    def tamper(doc: dict) -> None:
        doc["tasks"]["probe_quick"]["metrics"]["effective_rank"] *= 0.8

    bad = edited(result, tmp_path, tamper)
    assert main(["reproduce", str(bad), *model, "--record"]) == 1
    assert "outside tolerance" in capsys.readouterr().err
    assert not bad.with_name("edited.verified.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.json", "subs"]
