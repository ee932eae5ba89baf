"""Data-parallel ``evaluate``: ``accelerate launch`` with 2 CPU processes (gloo) gives the single-process result.

The probe's batches are strided over the ranks and its accumulators merged in rank order (``collapse_bench.parallel``),
so every probe number equals the one-process number up to the float64 summation order of the merges; lm-eval shards
its own requests over the ranks (its data parallelism, on the model object collapse-bench loaded) and gathers them on
rank 0, so every per-item log-likelihood is the one-process value up to float32 batch-composition rounding.
Tolerances (docs/user-guide/scaling.md): probe metrics 1e-9 relative, lm-eval per-item log-likelihoods 1e-5
absolute, accuracies exact. A dropped or doubled batch moves the probe numbers by far more (checked below)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import close
from test_plasticity_parallel import free_port

from collapse_bench.evaluate import EvaluateRequest, evaluate
from collapse_bench.ood.samples import samples_path

pytestmark = pytest.mark.slow  # two extra processes importing torch + lm-eval (~1 min); CI runs it

PROBE_REL = 1e-9
LOGLIK_ABS = 1e-5
TASKS = ["world_mc", "probe_quick"]


def launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["COLLAPSE_BENCH_RUNS_CACHE"] = str(tmp_path / "runs-cache")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    return subprocess.run([*cmd, "-m", "collapse_bench", *args], env=env, capture_output=True, text=True, timeout=900)


def test_two_gloo_processes_equal_one(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    common = ["--tasks", ",".join(TASKS), "--limit", "12", "--batch-size", "2", "--device", "cpu", "--no-progress"]
    common += ["--data-dir", str(data_dir)]
    dp_out = tmp_path / "dp" / "r.json"
    proc = launch(["evaluate", str(tiny_model_dir), *common, "--output", str(dp_out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dp = json.loads(dp_out.read_text())
    single_out, single = evaluate(
        EvaluateRequest(
            model=str(tiny_model_dir),
            tasks=TASKS,
            limit=12,
            batch_size=2,
            device="cpu",
            progress=False,
            data_dir=str(data_dir),
            output=str(tmp_path / "one" / "r.json"),
        )
    )
    assert dp["environment"]["processes"] == 2 and "processes" not in single["environment"]

    p_dp, p_one = dp["tasks"]["probe_quick"], single["tasks"]["probe_quick"]
    for key in ("sequences", "tokens", "mlp_captured"):
        assert p_dp["counts"][key] == p_one["counts"][key], key
    assert p_one["counts"]["sequences"] >= 8  # several batches, so each rank had some
    assert set(p_dp["metrics"]) == set(p_one["metrics"]) and set(p_dp["per_layer"]) == set(p_one["per_layer"])
    moved = [k for k, v in p_one["metrics"].items() if not close(p_dp["metrics"][k], v, PROBE_REL)]
    assert not moved, [(k, p_dp["metrics"][k], p_one["metrics"][k]) for k in moved]
    moved = [k for k, v in p_one["per_layer"].items() if not close(p_dp["per_layer"][k], v, PROBE_REL)]
    assert not moved, moved
    assert p_dp["counts"]["reference_cache_note_model"].startswith("not written: data-parallel")

    lm_dp, lm_one = dp["tasks"]["world_mc"], single["tasks"]["world_mc"]
    assert lm_dp["counts"] == lm_one["counts"]
    for key in ("acc", "acc_norm"):
        assert lm_dp["metrics"][key] == lm_one["metrics"][key], key
    rec_dp = [json.loads(line) for line in samples_path(dp_out).read_text().splitlines()]
    rec_one = [json.loads(line) for line in samples_path(single_out).read_text().splitlines()]
    assert len(rec_dp) == len(rec_one) == lm_one["counts"]["docs"]
    for a, b in zip(rec_dp, rec_one):
        assert a["doc_id"] == b["doc_id"] and a["gold"] == b["gold"]
        assert max(abs(x - y) for x, y in zip(a["loglik"], b["loglik"])) <= LOGLIK_ABS, a["doc_id"]


def test_the_merge_is_not_vacuous(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """Half the corpus (one rank's share, unmerged) moves the probe metrics far beyond the DP tolerance."""
    req = dict(model=str(tiny_model_dir), tasks=["probe_quick"], batch_size=2, device="cpu", progress=False)
    _, full = evaluate(EvaluateRequest(limit=12, data_dir=str(data_dir), output=str(tmp_path / "a.json"), **req))  # type: ignore[arg-type]
    _, half = evaluate(EvaluateRequest(limit=6, data_dir=str(data_dir), output=str(tmp_path / "b.json"), **req))  # type: ignore[arg-type]
    a, b = full["tasks"]["probe_quick"]["metrics"], half["tasks"]["probe_quick"]["metrics"]
    moved = [k for k in a if isinstance(a[k], float) and isinstance(b[k], float) and not close(a[k], b[k], 1e-4)]
    assert len(moved) >= len(a) // 2
