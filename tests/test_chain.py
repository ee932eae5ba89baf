"""The chain runner on the tiny profile: every recipe runs (baseline, each intervention alone, all composed),
stages are deterministic and resumable, lineage files are written, and no stage may train on data an
evaluation task reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from collapse_bench.chain.recipe import SURGERY_KINDS, load_recipe
from collapse_bench.chain.runner import ChainRequest, recipe_path, run_chain
from collapse_bench.cli import main
from collapse_bench.errors import CollapseBenchError
from collapse_bench.paths import builtin_tasks_dir
from collapse_bench.yamlio import dump_yaml

pytestmark = pytest.mark.train  # training loops: CI (`make test`) runs them, `make test-fast` does not

RECIPES = sorted(  # training recipes (the surgery controls are tested in test_chain_controls.py)
    p.stem
    for p in (builtin_tasks_dir() / "chains").glob("*.yaml")
    if not any(s.kind in SURGERY_KINDS for s in load_recipe(p, "tiny").stages)
)
ALL = "replay,feature_refresh,diversity_reg,lora_decorrelation"


def evaluated_chain(data_dir: Path, tmp_path: Path, evaluate_stages: str = "all") -> Path:
    """sft_safety_math on the tiny profile, stages evaluated on probe_quick (4 texts)."""
    request = ChainRequest(
        recipe="sft_safety_math",
        profile="tiny",
        out=str(tmp_path / "c"),
        data_dir=str(data_dir),
        evaluate="quick",
        eval_tasks=["probe_quick"],
        eval_limit=4,
        evaluate_stages=evaluate_stages,
        progress=False,
    )
    return run_chain(request)


def stage_log(out: Path, stage_dir: str) -> dict:
    return json.loads((out / stage_dir / "stage.json").read_text())


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("intervention", [None, *ALL.split(","), ALL])
def test_every_recipe_runs_on_tiny_profile(recipe: str, intervention: str | None, data_dir: Path, tmp_path: Path) -> None:
    out = run_chain(
        ChainRequest(
            recipe=recipe,
            interventions=intervention,
            profile="tiny",
            out=str(tmp_path / "c"),
            data_dir=str(data_dir),
            progress=False,
        )
    )
    spec = load_recipe(recipe_path(recipe), "tiny")
    state = json.loads((out / "chain.json").read_text())
    assert state["intervention"] == ",".join(sorted((intervention or "none").split(","))) and state["profile"] == "tiny"
    parents = [spec.base]
    for stage in spec.stages:
        log = stage_log(out, stage.dirname)
        assert log["steps"] == stage.steps and len(log["train_loss"]) == stage.steps
        lin = yaml.safe_load((out / stage.dirname / "model" / "lineage.yaml").read_text())
        assert lin["stage"] == stage.name and lin["parent"] == parents[-1] and lin["recipe_hash"] == spec.recipe_hash
        assert [e["stage"] for e in lin["lineage"]] == ["base", *[s.name for s in spec.stages[: stage.index - 1]]]
        assert (out / stage.dirname / "adapter" / "adapter_model.safetensors").is_file()
        assert set(lin["data"]) == {f"{r['dataset']}/{r['split']}.jsonl" for r in stage.data}
        parents.append(lin["name"])
        acting = set((intervention or "").split(",")) - {""}
        assert set(log.get("interventions", {})) == acting
        if "replay" in acting:  # replay's own claim, every batch
            assert log["replay_fraction_measured"] == [0.25] * stage.steps
        if "diversity_reg" in acting:
            assert log["interventions"]["diversity_reg"]["steps"] == stage.steps
            assert log["interventions"]["diversity_reg"]["penalty_mean"] > 0
        if "lora_decorrelation" in acting:  # penalised against every earlier stage's adapter
            assert log["interventions"]["lora_decorrelation"]["previous_adapters"] == stage.index - 1
        if "feature_refresh" in acting and stage.index > 1:  # between stages, on the merged parent
            fr = log["interventions"]["feature_refresh"]
            assert fr["dormant_fraction_after"] <= fr["dormant_fraction_before"] and fr["shrink"] == 0.8


def test_same_seed_same_weights_and_resume(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same seed, same checkpoint sha256 — also with HF offline mode on for one run (transformers saves the
    ``local_files_only`` it loaded the tokenizer with into the hashed tokenizer_config.json); a killed chain resumes."""
    import huggingface_hub.constants

    req = dict(recipe="sft_safety_math", profile="tiny", data_dir=str(data_dir), progress=False)
    with monkeypatch.context() as m:
        m.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        a = run_chain(ChainRequest(out=str(tmp_path / "a"), **req))
        m.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        b = run_chain(ChainRequest(out=str(tmp_path / "b"), **req))
    shas = [stage_log(a, d)["sha256"] for d in ("01-sft", "02-safety", "03-math")]
    assert shas == [stage_log(b, d)["sha256"] for d in ("01-sft", "02-safety", "03-math")]
    # crash during stage 3: its directory was never completed
    shutil.rmtree(b / "03-math")
    (b / ".03-math.tmp").mkdir()
    first = (b / "01-sft" / "stage.json").stat().st_mtime_ns
    run_chain(ChainRequest(out=str(tmp_path / "b"), **req))
    assert (b / "01-sft" / "stage.json").stat().st_mtime_ns == first  # finished stages are not retrained
    assert stage_log(b, "03-math")["sha256"] == shas[2] and not (b / ".03-math.tmp").exists()
    with pytest.raises(CollapseBenchError, match="different chain"):
        run_chain(ChainRequest(out=str(tmp_path / "b"), **{**req, "recipe": "sft_math_safety"}))


def write_recipe(tmp_path: Path, data: list[dict]) -> Path:
    path = tmp_path / "leaky.yaml"
    path.write_text(
        dump_yaml(
            {
                "name": "leaky",
                "version": 1,
                "base": "tiny-random-llama",
                "stages": [{"name": "s1", "kind": "sft", "data": data, "steps": 1}],
            }
        )
    )
    return path


def test_training_on_evaluation_split_is_refused(data_dir: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, [{"dataset": "gsm8k", "split": "test", "n": 4}])  # lm-eval GSM8K reads it
    with pytest.raises(CollapseBenchError, match=r"gsm8k/test\.jsonl, which evaluation reads"):
        run_chain(ChainRequest(recipe=str(recipe), profile="tiny", out=str(tmp_path / "o"), data_dir=str(data_dir)))
    assert not (tmp_path / "o").exists()


def test_copied_evaluation_items_are_refused(data_dir: Path, tmp_path: Path) -> None:
    row = json.loads((data_dir / "xstest" / "test.jsonl").read_text().splitlines()[3])  # probe_standard reads XSTest
    (tmp_path / "mine.jsonl").write_text(
        json.dumps(
            {
                "id": "renamed",
                "messages": [
                    {"role": "user", "content": "  " + row["prompt"].upper() + " "},
                    {"role": "assistant", "content": "ok"},
                ],
            }
        )
        + "\n"
    )
    recipe = write_recipe(tmp_path, [{"path": "mine.jsonl"}])
    with pytest.raises(CollapseBenchError, match="same text as a row of xstest/test"):
        run_chain(ChainRequest(recipe=str(recipe), profile="tiny", out=str(tmp_path / "o"), data_dir=str(data_dir)))


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chain", "run", "nope", "--profile", "tiny", "--out", str(tmp_path / "o")]) == 1
    assert "unknown recipe 'nope'" in capsys.readouterr().err
    assert main(["chain", "run", "sft_safety_math", "--intervention", "magic", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown intervention 'magic'" in err


def test_evaluate_stages_by_name(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--evaluate-stages safety``: only that stage gets a result; an unknown stage name is refused in one line
    before any stage trains."""
    argv = ["chain", "run", "sft_safety_math", "--profile", "tiny", "--out", str(tmp_path / "o"), "--evaluate", "quick"]
    assert main([*argv, "--evaluate-stages", "safety,rlhf", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown stage rlhf" in err and "sft, safety, math" in err
    assert not (tmp_path / "o").exists()
    out = evaluated_chain(data_dir, tmp_path, evaluate_stages="safety")
    assert [d for d in ("01-sft", "02-safety", "03-math") if (out / d / "result.json").is_file()] == ["02-safety"]
    state = json.loads((out / "chain.json").read_text())
    assert [state["stages"][k]["status"] for k in ("sft", "safety", "math")] == ["trained", "evaluated", "trained"]


def test_evaluated_stages_carry_lineage_and_update_geometry(data_dir: Path, tmp_path: Path) -> None:
    """``--evaluate``: every stage's result has the lineage from the base, the lora task measured against the
    stage's parent (overlap with earlier stages from the second stage on), and passes the validator."""
    out = evaluated_chain(data_dir, tmp_path)
    for i, stage in enumerate(("01-sft", "02-safety", "03-math")):
        result = json.loads((out / stage / "result.json").read_text())
        lineage = result["model"]["lineage"]
        assert [e["stage"] for e in lineage] == ["base", "sft", "safety", "math"][: i + 2]
        assert lineage[-1]["sha256"] == stage_log(out, stage)["sha256"]
        assert (result["model"]["recipe"], result["model"]["intervention"]) == ("sft_safety_math", "none")
        lora = result["tasks"]["lora"]["metrics"]
        assert lora["delta_norm"] > 0 and 1 <= lora["delta_effective_rank"] <= 8 + 1e-6  # rank-8 LoRA, merged
        assert (lora.get("overlap_prev") is not None) == (i > 0)
        assert result["tasks"]["lora"]["counts"]["previous_stages"] == i
        assert main(["validate", str(out / stage / "result.json")]) == 0


def test_reproduce_finds_a_chain_stages_parent(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stage records its parent by lineage name; ``reproduce`` finds that checkpoint beside the stage's
    recorded adapters (or takes ``--parent``) and re-measures the lora task against it."""
    out = evaluated_chain(data_dir, tmp_path, evaluate_stages="final")
    result = out / "03-math" / "result.json"
    assert json.loads(result.read_text())["model"]["parent"].endswith("/02-safety")  # a lineage name, not a path
    model = ["--model", str(out / "03-math" / "model")]  # a local row names its checkpoint, not a path
    assert main(["reproduce", str(result), "--data-dir", str(data_dir), *model]) == 0
    assert "reproduced: all" in capsys.readouterr().out
    shutil.rmtree(out / "02-safety")  # the parent is gone: a one-line refusal naming --parent
    assert main(["reproduce", str(result), "--data-dir", str(data_dir), *model]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--parent PATH" in err
