"""``sweep plan|run|merge`` on a tiny lineage (base + child with ``parent``): the merged result per checkpoint is what
one direct ``evaluate`` writes (every block but its duration, the samples file byte for byte, suite completeness);
a missing or foreign shard is one line and nothing is merged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import blocks, run_cli

from collapse_bench.evaluate import EvaluateRequest, evaluate
from collapse_bench.models.tiny import build_tiny_model
from collapse_bench.ood.samples import samples_path

TASKS = ["world_mc", "probe_quick"]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    return lambda args: run_cli(args, capsys)


@pytest.fixture
def lineage(tmp_path: Path) -> Path:
    build_tiny_model(tmp_path / "ckpt" / "base")
    build_tiny_model(tmp_path / "ckpt" / "child", seed=1)
    return tmp_path / "ckpt"


def write_spec(path: Path, data_dir: Path, group: str = "task") -> Path:
    path.write_text(
        "suite: quick\n"
        f"tasks: [{', '.join(TASKS)}]\n"
        f"group: {group}\n"
        f"evaluate: {{device: cpu, seed: 0, limit: 4, data_dir: '{data_dir}'}}\n"
        "checkpoints:\n  - model: ckpt/base\n  - {model: ckpt/child, parent: ckpt/base, stage: sft}\n"
    )
    return path


def test_plan_run_merge_equals_direct_evaluation(lineage: Path, data_dir: Path, tmp_path: Path, cli) -> None:
    spec = write_spec(tmp_path / "sweep.yaml", data_dir)
    plan_dir = tmp_path / "plan"
    code, _, err = cli(["sweep", "plan", str(spec), "--out", str(plan_dir)])
    assert code == 0, err
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert [(s["checkpoint"], s["tasks"]) for s in plan["shards"]] == [
        ("base", ["world_mc"]), ("base", ["probe_quick"]), ("child", ["world_mc"]), ("child", ["probe_quick"])
    ]  # fmt: skip
    code, _, err = cli(["sweep", "merge", str(plan_dir)])
    assert code == 1 and err.count("\n") == 1 and "shard 0 (base: world_mc) has no result" in err
    assert not (plan_dir / "results").exists()
    for i in (3, 0, 2, 1):  # any order, as a scheduler would
        code, _, err = cli(["sweep", "run", str(plan_dir), "--shard", str(i), "--no-progress"])
        assert code == 0, err
    code, _, err = cli(["sweep", "merge", str(plan_dir)])
    assert code == 0, err

    for name, extra in (("base", {}), ("child", {"parent": str(lineage / "base"), "stage": "sft"})):
        _, direct = evaluate(
            EvaluateRequest(
                model=str(lineage / name), suite="quick", tasks=TASKS, limit=4, device="cpu", seed=0, progress=False,
                data_dir=str(data_dir), output=str(tmp_path / "direct" / f"{name}.json"), **extra,
            )
        )  # fmt: skip
        merged_path = plan_dir / "results" / f"{name}.json"
        merged = json.loads(merged_path.read_text())
        assert blocks(merged) == blocks(direct), name
        for key in ("model", "suite", "config", "harness", "schema_version"):
            assert merged[key] == direct[key], (name, key)
        assert samples_path(merged_path).read_bytes() == samples_path(tmp_path / "direct" / f"{name}.json").read_bytes()
        assert merged["tasks"]["world_mc"]["samples"]["sha256"] == direct["tasks"]["world_mc"]["samples"]["sha256"]
    child = json.loads((plan_dir / "results" / "child.json").read_text())
    assert child["tasks"]["probe_quick"]["metrics"]["kl_to_parent"] > 0  # the lineage reached the probe

    code, _, err = cli(["validate", str(plan_dir / "results" / "base.json")])
    assert code == 0, err


def test_a_foreign_shard_is_refused(lineage: Path, data_dir: Path, tmp_path: Path, cli) -> None:
    spec = write_spec(tmp_path / "sweep.yaml", data_dir, group="kind")
    plan_dir = tmp_path / "plan"
    assert cli(["sweep", "plan", str(spec), "--out", str(plan_dir)])[0] == 0
    assert cli(["sweep", "run", str(plan_dir), "--all", "--no-progress"])[0] == 0
    shard1, shard2 = plan_dir / "shards" / "0001.json", plan_dir / "shards" / "0003.json"  # base / child probe shards
    shutil.copy(shard2, shard1)  # base's probe block replaced by the child's
    code, _, err = cli(["sweep", "merge", str(plan_dir)])
    assert code == 1 and err.count("\n") == 1 and "shard 1" in err and "is a result of child" in err
    assert not (plan_dir / "results").exists()
    code, _, err = cli(["sweep", "plan", str(spec), "--out", str(plan_dir)])  # re-planning over old shards
    assert code == 1 and err.count("\n") == 1 and "earlier plan" in err


def test_expected_names_follow_what_results_record(lineage: Path) -> None:
    """Aliases and hub ids are recorded as given (revision included), local dirs by their leaf (no lineage.yaml here),
    as ``models.resolve`` names them."""
    from collapse_bench.models.resolve import find_source
    from collapse_bench.sweep import checkpoint_label, expected_name

    assert expected_name("org/model@v1.2") == "org/model@v1.2"
    assert expected_name("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert expected_name(str(lineage / "child")) == find_source(str(lineage / "child")).name == "child"
    assert checkpoint_label(str(lineage / "child")) == "child" and checkpoint_label("org/Model@v1") == "org-model-v1"


def test_an_adapter_checkpoint_merges_with_its_lora_task(lineage: Path, data_dir: Path, tmp_path: Path, cli) -> None:
    """``evaluate`` appends the lora task for a PEFT adapter; the plan makes it a shard of its own, and the merged
    result has it where a direct evaluation puts it (last), with the same blocks."""
    from lora_helpers import make_adapter

    make_adapter(lineage / "base", lineage / "adapter", seed=3)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        "suite: quick\ntasks: [probe_quick]\n"
        f"evaluate: {{device: cpu, seed: 0, limit: 4, data_dir: '{data_dir}'}}\n"
        "checkpoints:\n  - model: ckpt/adapter\n"
    )
    plan_dir = tmp_path / "plan"
    assert cli(["sweep", "plan", str(spec), "--out", str(plan_dir)])[0] == 0
    assert [s["tasks"] for s in json.loads((plan_dir / "plan.json").read_text())["shards"]] == [["probe_quick"], ["lora"]]
    assert cli(["sweep", "run", str(plan_dir), "--all", "--no-progress"])[0] == 0
    code, _, err = cli(["sweep", "merge", str(plan_dir)])
    assert code == 0, err
    merged = json.loads((plan_dir / "results" / "adapter.json").read_text())
    _, direct = evaluate(
        EvaluateRequest(
            model=str(lineage / "adapter"), suite="quick", tasks=["probe_quick"], limit=4, device="cpu", seed=0,
            progress=False, data_dir=str(data_dir), output=str(tmp_path / "direct.json"),
        )
    )  # fmt: skip
    assert merged["suite"]["tasks"] == direct["suite"]["tasks"] == ["probe_quick", "lora"]
    assert blocks(merged) == blocks(direct) and merged["suite"] == direct["suite"] and merged["model"] == direct["model"]
