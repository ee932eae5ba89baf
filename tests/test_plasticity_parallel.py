"""Data parallel: the protocol under ``accelerate launch`` with 2 CPU processes (gloo) gives the
single-process scores (documented tolerance: 1e-6 relative; with 2 ranks it is in fact bitwise)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from collapse_bench.models import load_model
from collapse_bench.plasticity.launch import silently_single
from collapse_bench.plasticity.task import prepare, run_task
from collapse_bench.tasks import TaskRegistry

from test_plasticity import write_tasks

TOLERANCE = 1e-6  # relative, per metric and curve point (README, "Plasticity protocol")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_silent_single_process_launch_detected() -> None:
    assert silently_single({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"})
    assert not silently_single({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2"})
    assert not silently_single({"ACCELERATE_USE_CPU": "True"})  # --num_processes 1


@pytest.mark.slow
def test_two_process_gloo_equals_single_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path)
    out = tmp_path / "dp.json"
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "collapse_bench.plasticity.launch", str(tiny_model_dir), "--task", "plast_tiny",
           "--tasks-dir", str(tasks), "--output", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dp = json.loads(out.read_text())
    assert dp["world_size"] == 2

    task = TaskRegistry([tasks]).task("plast_tiny")
    loaded = load_model(str(tiny_model_dir), device="cpu")
    single = run_task(loaded.model, loaded.tokenizer, prepare(task, None, None), task.params)
    for key, value in single["metrics"].items():
        assert dp["metrics"][key] == (pytest.approx(value, rel=TOLERANCE, abs=1e-12) if value is not None else None), key
    for seed, curve in single["curves"].items():
        for name in ("bpb", "train_loss"):
            assert dp["curves"][seed][name] == pytest.approx(curve[name], rel=TOLERANCE)
    for seed in single["curves"]:
        for name in ("grad_norm", "update_norm"):
            assert dp["diagnostics"]["per_seed"][seed][name] == pytest.approx(single["diagnostics"]["per_seed"][seed][name], rel=TOLERANCE)
