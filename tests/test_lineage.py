"""Checkpoint lineage (lineage.yaml, --parent/--stage), overlap with earlier stages' adapters, and ``compare``
on a real two-stage LoRA chain of the tiny Llama (adapters trained-free: random non-zero factors, merged by PEFT)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from lora_helpers import assert_one_line_error, evaluate_cli, make_adapter, merge, peft_deltas, write_lineage
from safetensors.torch import load_file, save_file

from collapse_bench.cli import main
from collapse_bench.errors import CollapseBenchError
from collapse_bench.lineagefile import read_lineage
from collapse_bench.models.resolve import dir_sha256

PLANTED = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


@pytest.fixture(scope="module")
def chain(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """base -> 01-sft (adapter + merged model) -> 02-math (adapter + merged model), laid out like the chain runner,
    with lineage.yaml in every stage dir; 02-math's layer-0 q_proj update shares 01-sft's column space (planted)."""
    root = tmp_path_factory.mktemp("chain")
    base = tiny_model_dir
    ad1 = make_adapter(base, root / "01-sft" / "adapter", seed=11)
    m1 = merge(base, ad1, root / "01-sft" / "model")
    ad2 = make_adapter(m1, root / "02-math" / "adapter", seed=12)
    tensors = load_file(ad2 / "adapter_model.safetensors")
    tensors[PLANTED] = load_file(ad1 / "adapter_model.safetensors")[PLANTED].clone()
    save_file(tensors, ad2 / "adapter_model.safetensors")
    m2 = merge(m1, ad2, root / "02-math" / "model")
    base_entry = {"name": str(base), "sha256": dir_sha256(base), "revision": None, "stage": "base"}
    s1 = {
        "parent": str(base),
        "parent_sha256": dir_sha256(base),
        "stage": "sft",
        "recipe_hash": "a" * 64,
        "intervention": "none",
        "seed": 0,
        "data": {"sft/train.jsonl": "b" * 64},
        "lineage": [base_entry],
        "adapters": [{"stage": "sft", "path": "../../01-sft/adapter"}],
        "stage_kind": "sft",
    }
    s1_entry = {"name": "chain/01-sft", "sha256": dir_sha256(m1), "revision": None, "stage": "sft"}
    s2 = {
        **s1,
        "parent": "chain/01-sft",
        "parent_sha256": dir_sha256(m1),
        "stage": "math",
        "lineage": [base_entry, s1_entry],
        "adapters": [*s1["adapters"], {"stage": "math", "path": "../../02-math/adapter"}],
    }
    for directory, fields, name in (
        (ad1, s1, "chain/01-sft"),
        (m1, s1, "chain/01-sft"),
        (ad2, s2, "chain/02-math"),
        (m2, s2, "chain/02-math"),
    ):
        write_lineage(directory, name=name, **fields)
    return {"root": root, "base": base, "ad1": ad1, "m1": m1, "ad2": ad2, "m2": m2}


def test_read_lineage(chain: dict[str, Path]) -> None:
    found = read_lineage(chain["ad2"])
    assert found is not None and found.stage == "math" and found.parent == "chain/01-sft"
    assert found.adapters == (("sft", chain["ad1"].resolve()), ("math", chain["ad2"].resolve()))
    # a lineage file naming an ancestor by absolute path: recorded by its leaf name (no path of the user's disk)
    assert [e["name"] for e in found.ancestors()] == [chain["base"].name, "chain/01-sft"]
    assert read_lineage(chain["base"]) is None


def test_adapter_stage_gets_lineage_lora_and_overlap(
    chain: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli([str(chain["ad2"]), "--tasks", "probe_quick", "--limit", "1", "--output", str(out)], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    model = result["model"]
    assert model["parent"] == "chain/01-sft" and model["stage"] == "math"
    assert [(e["name"], e["stage"]) for e in model["lineage"]] == [
        (chain["base"].name, "base"),
        ("chain/01-sft", "sft"),
        ("chain/02-math", "math"),
    ]
    assert model["name"] == "chain/02-math" and model["base"]["name"] == "chain/01-sft"  # lineage names, not paths
    assert model["lineage"][-1]["sha256"] == model["sha256"]
    assert set(result["tasks"]) == {"probe_quick", "lora"} and result["suite"]["tasks"] == ["probe_quick", "lora"]
    block = result["tasks"]["lora"]
    # independent reference: numpy SVD of PEFT's dense updates of both stages, phi = ||U1^T U2||_F^2 / min(k1, k2)
    d1, d2 = peft_deltas(chain["base"], chain["ad1"]), peft_deltas(chain["m1"], chain["ad2"])
    phis, phis_in = {}, {}
    for key in d2:
        U1, _, Vt1 = np.linalg.svd(d1[key][1], full_matrices=False)
        U2, _, Vt2 = np.linalg.svd(d2[key][1], full_matrices=False)
        phis[key] = float(((U1[:, :4].T @ U2[:, :4]) ** 2).sum() / 4)
        phis_in[key] = float(((Vt1[:4] @ Vt2[:4].T) ** 2).sum() / 4)  # right singular (input-side) subspaces
    assert block["metrics"]["overlap_prev@sft"] == pytest.approx(np.mean(list(phis.values())), rel=1e-8)
    assert block["metrics"]["overlap_prev"] == pytest.approx(np.mean(list(phis.values())), rel=1e-8)
    assert block["metrics"]["overlap_prev_input"] == pytest.approx(np.mean(list(phis_in.values())), rel=1e-8)
    assert block["metrics"]["overlap_prev_chance:q"] == pytest.approx(4 / 64)  # max(k_i, k_j) / m
    assert block["per_layer"]["overlap_prev:q"][0] == pytest.approx(1.0, abs=1e-9)  # planted: same column space
    assert block["metrics"]["overlap_prev"] < 0.5  # the other (random) modules are far from it
    assert [s["stage"] for s in block["overlap"]["stages"]] == ["sft"] and block["counts"]["previous_stages"] == 1


def test_full_checkpoint_stage_with_parent(chain: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The merged stage-2 checkpoint vs --parent = merged stage 1: dW = W_t - W_parent (PEFT's fp32 merge) has the
    adapter's rank, and the overlap with stage 1's adapter is read from lineage.yaml."""
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli([str(chain["m2"]), "--tasks", "lora", "--parent", str(chain["m1"]), "--output", str(out)], capsys)
    assert code == 0, err
    block = json.loads(out.read_text())["tasks"]["lora"]
    assert block["counts"]["modules"] == 14 and block["update"]["source"] == "checkpoints"
    assert block["per_layer"]["overlap_prev:q"][0] == pytest.approx(1.0, abs=1e-6)
    assert block["metrics"]["delta_effective_rank"] <= 4.0 + 1e-3  # rank-4 updates (plus fp32 merge round-off)


def test_parent_lineage_is_inherited(chain: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = tmp_path / "m2-bare"
    shutil.copytree(chain["m2"], bare)
    (bare / "lineage.yaml").unlink()
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli(
        [str(bare), "--tasks", "lora", "--parent", str(chain["m1"]), "--stage", "math", "--output", str(out)], capsys
    )
    assert code == 0, err
    model = json.loads(out.read_text())["model"]
    assert [(e["name"], e["stage"]) for e in model["lineage"]] == [
        (chain["base"].name, "base"),
        ("chain/01-sft", "sft"),
        ("m2-bare", "math"),
    ]
    assert model["name"] == "m2-bare" and model["parent"] == "chain/01-sft"  # leaf name; --parent's lineage name


@pytest.fixture(scope="module")
def stage_results(chain: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("results")
    runs = {
        "r0": [str(chain["base"]), "--stage", "base"],
        "r1": [str(chain["m1"])],
        "r2": [str(chain["m2"]), "--tasks", "probe_quick,lora", "--parent", str(chain["m1"])],
    }
    for name, args in runs.items():
        assert main(["evaluate", *args, "--limit", "1", "--no-progress", "--output", str(out / f"{name}.json")]) == 0
    return {name: out / f"{name}.json" for name in runs}


def test_compare_numbers(stage_results: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = {k: json.loads(p.read_text()) for k, p in stage_results.items()}
    csv_path, json_path = tmp_path / "c.csv", tmp_path / "c.json"
    capsys.readouterr()
    code = main(
        [
            "compare",
            str(stage_results["r2"]),
            str(stage_results["r0"]),
            str(stage_results["r1"]),
            "--csv",
            str(csv_path),
            "--json",
            str(json_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(json_path.read_text())["rows"]
    er = [row for row in rows if (row["task"], row["metric"]) == ("probe_quick", "effective_rank")]
    assert [row["stage"] for row in er] == ["base", "sft", "math"]  # ordered by lineage depth
    v = [r[k]["tasks"]["probe_quick"]["metrics"]["effective_rank"] for k in ("r0", "r1", "r2")]
    assert [row["value"] for row in er] == v
    assert er[0]["delta_base"] is None and er[0]["delta_prev"] is None
    assert er[1]["delta_base"] == pytest.approx(v[1] - v[0]) and er[1]["delta_prev"] == pytest.approx(v[1] - v[0])
    assert er[2]["delta_base"] == pytest.approx(v[2] - v[0]) and er[2]["delta_prev"] == pytest.approx(v[2] - v[1])
    lora = [row for row in rows if row["task"] == "lora" and row["metric"] == "delta_norm"]
    assert len(lora) == 1 and lora[0]["delta_base"] is None  # the base has no lora block
    with open(csv_path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows)
    assert float(table[rows.index(er[2])]["delta_prev"]) == pytest.approx(v[2] - v[1])
    assert "effective_rank" in out and f"{v[2] - v[1]:+.4g}" in out


def test_compare_refuses_other_lineages_and_duplicates(
    stage_results: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = json.loads(stage_results["r1"].read_text())
    other["model"]["lineage"][0]["sha256"] = "c" * 64
    other["model"]["lineage"][-1]["sha256"] = other["model"]["sha256"] = "d" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    code = main(["compare", str(stage_results["r0"]), str(tmp_path / "other.json")])
    assert_one_line_error(code, capsys.readouterr().err, "different lineages")
    shutil.copy(stage_results["r1"], tmp_path / "again.json")
    code = main(["compare", str(stage_results["r1"]), str(tmp_path / "again.json")])
    assert_one_line_error(code, capsys.readouterr().err, "same checkpoint")
    (tmp_path / "bad.json").write_text("{not json")
    code = main(["compare", str(stage_results["r0"]), str(tmp_path / "bad.json")])
    assert_one_line_error(code, capsys.readouterr().err, "bad.json", "not a JSON result")
    (tmp_path / "wrong.json").write_text(json.dumps({"schema_version": 1, "model": {}}))
    code = main(["compare", str(tmp_path / "wrong.json")])
    assert_one_line_error(code, capsys.readouterr().err, "wrong.json")


# ----------------------------------------------------------------------------- bad lineage input


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "ckpt"))


@pytest.mark.parametrize(
    "text,needles",
    [
        (
            "parent: x\nstage: sft\nlineage: !!python/object/apply:os.system ['touch {marker}']\n",
            ["lineage.yaml", "invalid YAML"],
        ),
        ("parent: x\n", ["lineage.yaml", "'stage' is a required property"]),
        ('parent: x\nstage: "a\\nb"\n', ["lineage.yaml", "stage"]),
        ("parent: x\nstage: sft\nparent_sha256: xyz\n", ["lineage.yaml", "parent_sha256"]),
        ("parent: p\nstage: sft\nlineage: [{name: q, stage: base}]\n", ["not the parent"]),
        ("- just\n- a list\n", ["must be a YAML mapping"]),
    ],
)
def test_bad_lineage_file_is_one_line(
    model_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needles: list[str]
) -> None:
    marker = tmp_path / "pwned"
    (model_copy / "lineage.yaml").write_text(text.replace("{marker}", str(marker)))
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli([str(model_copy), "--limit", "1", "--output", str(out)], capsys)
    assert_one_line_error(code, err, *needles)
    assert not out.exists() and not marker.exists()


def test_flags_contradicting_lineage_file(chain: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    code, _, err = evaluate_cli([str(chain["m2"]), "--stage", "sft", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "--stage sft contradicts", "math")
    code, _, err = evaluate_cli([str(chain["m2"]), "--parent", str(chain["base"]), "--output", str(out)], capsys)
    assert_one_line_error(code, err, "is not the parent recorded", "chain/01-sft")
    code, _, err = evaluate_cli([str(chain["m1"]), "--stage", "", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "--stage")
    assert not out.exists()


def test_missing_earlier_adapter_is_reported_not_fatal(chain: dict[str, Path], tmp_path: Path) -> None:
    from collapse_bench.lora.task import earlier_updates

    ad = Path(shutil.copytree(chain["ad2"], tmp_path / "02-math" / "adapter"))
    previous, missing = earlier_updates(read_lineage(ad), ad)
    assert previous == {} and missing == ["01-sft/adapter"]  # as the result records it: no path of the user's disk
    with pytest.raises(CollapseBenchError, match=r"lineage\.yaml"):
        (ad / "lineage.yaml").write_text("parent: [1, 2]\nstage: x\n")
        read_lineage(ad)
