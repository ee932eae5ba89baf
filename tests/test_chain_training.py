"""A chain stage's ``training`` block: tokens and steps from the trainer, the stage's own held-out target
before/after recomputed here one example at a time (no padding, no batching), the paired standard error
by numpy, held-out items disjoint from the training sample, and full fine-tuning as a first-class method."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import assert_one_line_error, run_cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from collapse_bench.chain.leakage import primary_text
from collapse_bench.chain.recipe import load_recipe
from collapse_bench.chain.runner import ChainRequest, recipe_path, run_chain
from collapse_bench.chain.target import heldout_refs
from collapse_bench.cli import main
from collapse_bench.data.examples import load_stage_refs, stage_examples
from collapse_bench.errors import CollapseBenchError
from collapse_bench.models import find_source

pytestmark = pytest.mark.train


def completion_bpb(model_dir: Path, examples: list[dict]) -> np.ndarray:
    """Per example: -sum log p(completion tokens) / ln 2 / completion bytes, one unpadded forward each."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for ex in examples:
        prompt = tok.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=False)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        f = tok(full, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([f])).logits[0].double()
        nll = -sum(float(torch.log_softmax(logits[t - 1], -1)[f[t]]) for t in range(len(p), len(f)))
        out.append(nll / math.log(2) / len(ex["completion"][0]["content"].encode()))
    return np.array(out)


@pytest.fixture(scope="module")
def lineage_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lineage") / "c"
    return run_chain(ChainRequest(recipe="lineage", profile="tiny", out=str(out), data_dir=str(data_dir), progress=False))


def test_training_block_matches_an_independent_recomputation(lineage_run: Path, data_dir: Path) -> None:
    spec = load_recipe(recipe_path("lineage"), "tiny")
    sft = spec.stages[0]
    train = load_stage_refs(sft.data, spec.path, data_dir, sft.seed)
    held = heldout_refs(sft, train, spec.path, data_dir, sft.seed)
    trained_ids = {r["id"] for ref in train for r in ref.rows}
    held_rows = [r for ref in held for r in ref.rows]
    assert len(held_rows) == sft.heldout == 4 and not {r["id"] for r in held_rows} & trained_ids
    assert not {primary_text(r) for r in held_rows} & {primary_text(r) for ref in train for r in ref.rows}

    log = json.loads((lineage_run / "01-sft" / "stage.json").read_text())
    block = log["training"]
    assert (block["method"], block["steps"], block["lora_r"]) == ("lora", sft.steps, 16)
    assert block["tokens"] > 0 and block["wall_s"] >= 0
    examples = stage_examples("sft", held, sft.seed)
    before = completion_bpb(Path(find_source(spec.base).path), examples)
    after = completion_bpb(lineage_run / "01-sft" / "model", examples)
    got = block["target"]["metrics"]["bits_per_byte"]
    d = after - before
    assert got["before"] == pytest.approx(before.mean(), rel=1e-5)
    assert got["after"] == pytest.approx(after.mean(), rel=1e-5)
    assert got["delta"] == pytest.approx(d.mean(), rel=1e-3, abs=1e-7)
    assert got["se_paired"] == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)), rel=1e-2, abs=1e-7)
    assert got["moved_3se"] == bool(abs(d.mean()) > 3 * d.std(ddof=1) / math.sqrt(len(d)))
    lineage = yaml.safe_load((lineage_run / "01-sft" / "model" / "lineage.yaml").read_text())
    assert lineage["training"] == block  # the result's model block copies it from here


def test_every_stage_kind_records_its_own_target(lineage_run: Path) -> None:
    targets = {}
    for stage in sorted(p for p in lineage_run.iterdir() if p.name[:2].isdigit()):
        block = json.loads((stage / "stage.json").read_text())["training"]["target"]
        targets[stage.name] = (block["target"], sorted(block["metrics"]), block["n"])
    assert targets == {
        "01-sft": ("bits_per_byte", ["bits_per_byte"], 4),
        "02-dpo": ("pref_margin", ["pref_accuracy", "pref_margin"], 4),
        "03-safety": ("refusal_rate_unsafe", ["refusal_rate_safe", "refusal_rate_unsafe"], 4),  # 4 unsafe + 4 safe
        "04-math": ("bits_per_byte", ["bits_per_byte"], 4),
        "05-long_cot": ("bits_per_byte", ["bits_per_byte"], 4),
    }


def full_recipe(tmp_path: Path) -> Path:
    recipe = {
        "name": "full_ft",
        "version": 1,
        "base": "tiny-random-llama",
        "stages": [
            {
                "name": "sft",
                "kind": "sft",
                "method": "full",
                "data": [{"dataset": "alpaca", "split": "train", "n": 8}],
                "steps": 2,
            }
        ],
        "profiles": {"tiny": {"batch_size": 4, "max_length": 320, "heldout": 2}},
    }
    path = tmp_path / "full_ft.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_full_fine_tuning_is_a_first_class_method(data_dir: Path, tmp_path: Path) -> None:
    out = run_chain(
        ChainRequest(
            recipe=str(full_recipe(tmp_path)), profile="tiny", out=str(tmp_path / "c"), data_dir=str(data_dir), progress=False
        )
    )
    stage = out / "01-sft"
    assert not (stage / "adapter").exists()
    lineage = yaml.safe_load((stage / "model" / "lineage.yaml").read_text())
    assert lineage["adapters"] == [] and lineage["training"]["method"] == "full" and "lora_r" not in lineage["training"]
    parent = AutoModelForCausalLM.from_pretrained(find_source("tiny-random-llama").path).state_dict()
    child = AutoModelForCausalLM.from_pretrained(stage / "model").state_dict()
    changed = [k for k in parent if not torch.equal(parent[k], child[k])]
    assert any("embed_tokens" in k for k in changed) and any("layernorm" in k for k in changed)  # all weights train


def test_lora_only_intervention_is_refused_on_a_full_stage(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(CollapseBenchError, match="lora_decorrelation acts on LoRA adapters"):
        run_chain(
            ChainRequest(
                recipe=str(full_recipe(tmp_path)),
                interventions="lora_decorrelation",
                profile="tiny",
                out=str(tmp_path / "c"),
                data_dir=str(data_dir),
                progress=False,
            )
        )
    assert not (tmp_path / "c").exists()  # refused before any model work
    assert (
        main(
            [
                "chain",
                "run",
                str(full_recipe(tmp_path)),
                "--intervention",
                "lora_decorrelation",
                "--profile",
                "tiny",
                "--data-dir",
                str(data_dir),
                "--out",
                str(tmp_path / "d"),
                "--no-progress",
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.count("\n") == 1


def test_a_stage_target_remeasured_on_more_items(lineage_run: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    """``chain target``: on the training-time held-out size it reproduces the training block exactly; on more items
    its numbers are the one-example-at-a-time recomputation; the stage's checkpoint hash is unchanged; an evaluated
    stage or an unknown one is refused in one line."""
    from collapse_bench.models.resolve import dir_sha256

    run = tmp_path / "run"
    shutil.copytree(lineage_run, run)
    sha = dir_sha256(run / "01-sft" / "model")
    assert run_cli(["chain", "target", str(run), "--stage", "sft", "--heldout", "4", "--data-dir", str(data_dir)], capsys)[0] == 0
    log = json.loads((run / "01-sft" / "stage.json").read_text())["training"]
    again = log.pop("target_remeasured")
    assert {k: again[k] for k in log["target"]} == log["target"]  # same items, same models: the same block
    assert (again["heldout"], again["models_sha256"]["after"]) == (4, sha)

    code, out, _ = run_cli(
        ["chain", "target", str(run), "--stage", "01-sft", "--heldout", "9", "--data-dir", str(data_dir)], capsys
    )
    assert code == 0 and "n = 9" in out
    spec = load_recipe(recipe_path("lineage"), "tiny")
    sft = spec.stages[0]
    train = load_stage_refs(sft.data, spec.path, data_dir, sft.seed)
    wider = heldout_refs(dataclasses.replace(sft, heldout=9), train, spec.path, data_dir, sft.seed)
    examples = stage_examples("sft", wider, sft.seed)
    before = completion_bpb(Path(find_source(spec.base).path), examples)
    after = completion_bpb(run / "01-sft" / "model", examples)
    got = json.loads((run / "01-sft" / "stage.json").read_text())["training"]["target_remeasured"]
    assert got["n"] == len(examples) == 9
    assert got["metrics"]["bits_per_byte"]["before"] == pytest.approx(before.mean(), rel=1e-5)
    assert got["metrics"]["bits_per_byte"]["after"] == pytest.approx(after.mean(), rel=1e-5)
    lineage = yaml.safe_load((run / "01-sft" / "model" / "lineage.yaml").read_text())
    assert lineage["training"]["target_remeasured"] == got and lineage["training"]["target"] == log["target"]
    assert dir_sha256(run / "01-sft" / "model") == sha  # lineage.yaml is outside the checkpoint hash

    with (run / "04-math" / "model" / "config.json").open("a") as f:  # a checkpoint changed after training
        f.write(" ")
    code, _, err = run_cli(["chain", "target", str(run), "--stage", "math", "--heldout", "4"], capsys)
    assert_one_line_error(code, err, "04-math/model: its files changed since the chain recorded them")
    (run / "02-dpo" / "result.json").write_text("{}")
    code, _, err = run_cli(["chain", "target", str(run), "--stage", "dpo", "--heldout", "4"], capsys)
    assert_one_line_error(code, err, "already evaluated")
    code, _, err = run_cli(["chain", "target", str(run), "--stage", "rl", "--heldout", "4"], capsys)
    assert_one_line_error(code, err, "no training stage 'rl'")
    (run / "chain.json").write_text('{"recipe": "lineage", "base": null}')  # JSON, but not a chain run's
    code, _, err = run_cli(["chain", "target", str(run), "--stage", "sft", "--heldout", "4"], capsys)
    assert_one_line_error(code, err, "not a chain run (chain.json: KeyError")
