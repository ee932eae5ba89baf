"""``evaluate`` resumes task by task: a run that dies in its second task keeps the first task's block and samples
records; the re-run does not repeat that task and writes the same result (blocks, samples file bytes) as an
uninterrupted run; a changed request (another seed) does not reuse the saved task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import blocks

from collapse_bench import evaluate as ev
from collapse_bench.evaluate import EvaluateRequest, evaluate, partial_dir
from collapse_bench.kinds import kind_module
from collapse_bench.ood.samples import samples_path

TASKS = ["world_mc", "probe_quick"]  # lm_eval (writes samples records) first, then the probe


class Died(Exception):
    pass


def test_a_run_that_died_resumes_from_its_finished_tasks(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = dict(model=str(tiny_model_dir), tasks=TASKS, limit=4, device="cpu", progress=False, data_dir=str(data_dir))
    straight, _ = evaluate(EvaluateRequest(output=str(tmp_path / "a" / "r.json"), **req))
    assert not partial_dir(straight).exists()

    out = tmp_path / "b" / "r.json"
    probe = kind_module("probe")
    real_run = probe.run

    def dying(*a, **k):
        raise Died

    monkeypatch.setattr(probe, "run", dying)
    with pytest.raises(Died):
        evaluate(EvaluateRequest(output=str(out), **req))
    saved = json.loads((partial_dir(out) / "world_mc.json").read_text())
    assert saved["records"] and not out.exists() and not (partial_dir(out) / "probe_quick.json").exists()

    ran: list[str] = []
    lm = kind_module("lm_eval")
    real_lm = lm.run

    def counting(name, real):
        def run(task, *a, **k):
            ran.append(task.name)
            return real(task, *a, **k)

        return run

    monkeypatch.setattr(probe, "run", counting("probe", real_run))
    monkeypatch.setattr(lm, "run", counting("lm_eval", real_lm))
    resumed, doc = evaluate(EvaluateRequest(output=str(out), **req))
    assert ran == ["probe_quick"]  # world_mc came from the saved block
    first = json.loads(straight.read_text())
    assert blocks(doc, ("duration_s",)) == blocks(first, ("duration_s",))
    assert samples_path(resumed).read_bytes() == samples_path(straight).read_bytes()
    assert not partial_dir(out).exists()

    # a saved task of another request is not reused
    monkeypatch.setattr(probe, "run", dying)
    with pytest.raises(Died):
        evaluate(EvaluateRequest(output=str(tmp_path / "c" / "r.json"), **req))
    ran.clear()
    monkeypatch.setattr(probe, "run", counting("probe", real_run))
    evaluate(EvaluateRequest(output=str(tmp_path / "c" / "r.json"), **{**req, "seed": 1}))
    assert ran == ["world_mc", "probe_quick"]


def test_a_corrupt_saved_task_is_run_again(tmp_path: Path) -> None:
    done = tmp_path / ".r.json.tasks"
    done.mkdir()
    (done / "t.json").write_text("{not json")
    assert ev._finished(done, "t", "k") is None
    (done / "t.json").write_text(json.dumps({"key": "other", "block": {}, "records": []}))
    assert ev._finished(done, "t", "k") is None
    (done / "t.json").write_text(json.dumps({"key": "k", "block": {"duration_s": 1.0}, "records": []}))
    assert ev._finished(done, "t", "k") == {"key": "k", "block": {"duration_s": 1.0}, "records": []}


KILLER = """
import os, signal, sys
from collapse_bench.cli import main
from collapse_bench.kinds import kind_module
kind_module("probe").run = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # kill -9 inside the 2nd task
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_between_tasks_then_rerun_equals_an_uninterrupted_run(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGKILL (no cleanup, no exception handler) in the second task: the re-run repeats only that task."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "runs-cache"
    monkeypatch.setenv("COLLAPSE_BENCH_RUNS_CACHE", str(cache))
    args = ["evaluate", str(tiny_model_dir), "--tasks", ",".join(TASKS), "--limit", "4", "--device", "cpu"]
    args += ["--no-progress", "--data-dir", str(data_dir)]
    out = tmp_path / "k" / "r.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", KILLER, *args, "--output", str(out)], env=env, capture_output=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not out.exists() and (partial_dir(out) / "world_mc.json").is_file()

    ran: list[str] = []
    lm = kind_module("lm_eval")
    real = lm.run
    monkeypatch.setattr(lm, "run", lambda task, *a, **k: ran.append(task.name) or real(task, *a, **k))
    req = dict(model=str(tiny_model_dir), tasks=TASKS, limit=4, device="cpu", progress=False, data_dir=str(data_dir))
    req["options"] = {"backend": "hf"}  # what the command line records
    resumed, doc = evaluate(EvaluateRequest(output=str(out), **req))
    assert ran == []  # world_mc came from the killed run's committed block
    straight, first = evaluate(EvaluateRequest(output=str(tmp_path / "s" / "r.json"), **req))
    assert blocks(doc, ("duration_s",)) == blocks(first, ("duration_s",))
    assert samples_path(resumed).read_bytes() == samples_path(straight).read_bytes()
