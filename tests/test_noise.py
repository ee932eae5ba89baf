"""``collapse-bench noise`` on the tiny model: run k re-runs and re-seeds the probe (seed + k) and plasticity (seeds + 1000 k),
every metric's SD is numpy's over the runs (item metrics: the bootstrap SD of run 0's samples), and the MDE is
the closed form (z0.975 + z0.8) * sqrt(2) * sd."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from collapse_bench.cli import main

pytestmark = pytest.mark.train


def test_noise_floor_of_the_tiny_model(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "noise.json"
    args = [
        "noise",
        "tiny-random-llama",
        "--suite",
        "quick",
        "--tasks",
        "probe_quick,arc_easy",
        "--replicates",
        "2",
        "--limit",
        "40",
    ]
    assert main([*args, "--data-dir", str(data_dir), "--device", "cpu", "--no-progress", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    runs = [json.loads((tmp_path / "noise.runs" / f"run{k}.json").read_text()) for k in range(3)]
    seeds = [r["tasks"]["probe_quick"]["hash"] for r in runs]
    assert len(set(seeds)) == 3  # three differently seeded probe configs
    assert doc["tasks"] == {t: b["hash"] for t, b in runs[0]["tasks"].items()}  # the floor is of run 0's configs
    z = norm.ppf(0.975) + norm.ppf(0.8)
    from collapse_bench.noise import Z_80

    assert pytest.approx(z, rel=1e-12) == Z_80
    er = doc["metrics"]["probe_quick.effective_rank"]
    vals = [r["tasks"]["probe_quick"]["metrics"]["effective_rank"] for r in runs]
    assert er["values"] == vals and er["source"] == "reseeded_runs"
    assert er["sd"] == pytest.approx(np.std(vals, ddof=1)) and er["sd"] > 0  # the sample positions move it
    assert er["mde_paired_80"] == pytest.approx(z * math.sqrt(2) * er["sd"], rel=1e-9)
    acc = doc["metrics"]["arc_easy.acc"]
    assert acc["source"] == "item_bootstrap" and acc["values"] == [runs[0]["tasks"]["arc_easy"]["metrics"]["acc"]]
    assert all("arc_easy" not in r["tasks"] for r in runs[1:])  # deterministic given the items: not re-run
    p, n = acc["values"][0], runs[0]["tasks"]["arc_easy"]["counts"]["docs"]
    assert n == 40 and acc["sd"] == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.15)  # bootstrap SD ~ binomial SE
    assert "noise floor of tiny-random-llama" in capsys.readouterr().out
    first = (tmp_path / "noise.runs" / "run1.json").stat().st_mtime_ns
    assert main([*args, "--data-dir", str(data_dir), "--device", "cpu", "--no-progress", "--output", str(out)]) == 0
    assert (tmp_path / "noise.runs" / "run1.json").stat().st_mtime_ns == first  # resumable: finished runs kept
