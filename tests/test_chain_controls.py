"""Planted-collapse controls (chain/surgery.py) against independent computations: the SVD truncation is
numpy's best rank-r approximation, extrapolation is the convex/affine combination written out, the permutation
preserves the function (logits and every probe metric), and the ladder runs as sibling checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from collapse_bench.chain import surgery
from collapse_bench.chain.recipe import load_recipe
from collapse_bench.chain.runner import ChainRequest, recipe_path, run_chain
from collapse_bench.cli import main
from collapse_bench.errors import CollapseBenchError
from collapse_bench.models import find_source

pytestmark = pytest.mark.train


def tiny() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(find_source("tiny-random-llama").path, dtype=torch.float32).eval()


def test_svd_truncate_is_numpys_best_rank_r() -> None:
    model = tiny()
    before = [m.down_proj.weight.detach().double().numpy().copy() for m in surgery.mlp_blocks(model)]
    report = surgery.svd_truncate(model, 8)
    for w0, mlp, err in zip(before, surgery.mlp_blocks(model), report["relative_error"]):
        u, s, vh = np.linalg.svd(w0, full_matrices=False)
        best = (u[:, :8] * s[:8]) @ vh[:8]
        got = mlp.down_proj.weight.detach().double().numpy()
        assert np.allclose(got, best, atol=1e-6) and np.linalg.matrix_rank(got, tol=1e-4) == 8
        assert err == pytest.approx(np.sqrt((s[8:] ** 2).sum() / (s**2).sum()), rel=1e-9)  # Eckart-Young
    full = tiny()
    ref = [m.down_proj.weight.clone() for m in surgery.mlp_blocks(full)]
    surgery.svd_truncate(full, "full")
    assert all(torch.equal(a, m.down_proj.weight) for a, m in zip(ref, surgery.mlp_blocks(full)))


def test_extrapolate_is_the_affine_combination() -> None:
    base, parent = tiny(), tiny()
    with torch.no_grad():
        for p in parent.parameters():
            p.add_(0.01 * torch.sin(torch.arange(p.numel(), dtype=torch.float32)).view_as(p))
    want = {k: b + 2.5 * (q - b) for (k, b), q in zip(base.state_dict().items(), parent.state_dict().values())}
    report = surgery.extrapolate(parent, base, 2.5)
    for k, v in parent.state_dict().items():
        assert torch.allclose(v, want[k], atol=1e-6), k
    assert report["delta_norm"] == pytest.approx(2.5 * report["delta_norm_parent"], rel=1e-5)
    again = tiny()
    surgery.extrapolate(again, base, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), base.state_dict().values()))


def test_permutation_preserves_the_function() -> None:
    model, ref = tiny(), tiny()
    report = surgery.permute(model, 3)
    assert all(n > 0 for n in report["units_moved"])
    assert not torch.equal(model.model.layers[0].mlp.gate_proj.weight, ref.model.layers[0].mlp.gate_proj.weight)
    ids = torch.tensor([[1, 5, 9, 200, 17, 33, 64, 2]])
    with torch.no_grad():
        a, b = model(ids).logits, ref(ids).logits
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_ladders_run_as_sibling_checkpoints_and_permute_matches_every_probe_metric(data_dir: Path, tmp_path: Path) -> None:
    out = run_chain(
        ChainRequest(recipe="control_svd", profile="tiny", out=str(tmp_path / "svd"), data_dir=str(data_dir), progress=False)
    )
    spec = load_recipe(recipe_path("control_svd"), "tiny")
    rungs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert rungs == ["01-svd-r16", "01-svd-r256", "01-svd-r64", "01-svd-rfull"] and spec.stages[0].doses == ("full", 256, 64, 16)
    for rung in rungs:
        lin = yaml.safe_load((out / rung / "model" / "lineage.yaml").read_text())
        assert lin["parent"] == "tiny-random-llama" and lin["control"]["kind"] == "svd_truncate"
        assert [e["stage"] for e in lin["lineage"]] == ["base"]
    assert set(json.loads((out / "chain.json").read_text())["stages"]) == {"svd-r16", "svd-r256", "svd-r64", "svd-rfull"}

    perm = run_chain(
        ChainRequest(recipe="control_permute", profile="tiny", out=str(tmp_path / "perm"), data_dir=str(data_dir), progress=False)
    )
    results = {}
    for name, model in (("base", "tiny-random-llama"), ("perm", str(perm / "01-permute-p0" / "model"))):
        target = tmp_path / f"{name}.json"
        args = ["evaluate", model, "--tasks", "probe_quick", "--data-dir", str(data_dir), "--device", "cpu", "--no-progress"]
        assert main([*args, "--output", str(target)]) == 0
        results[name] = json.loads(target.read_text())
    control = results["perm"]["model"]["control"]
    assert (control["kind"], control["dose"], len(control["units_moved"])) == ("permute", 0, 2)
    assert all(n > 0 for n in control["units_moved"])
    a, b = results["base"]["tasks"]["probe_quick"]["metrics"], results["perm"]["tasks"]["probe_quick"]["metrics"]
    for key in a:  # every probe metric of the base row
        if a[key] is None:
            assert b[key] is None, key
        else:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    for key in set(b) - set(a):  # only the permuted row has a parent: its KL to it is 0, its top-1 agrees
        if b[key] is not None and key.startswith("kl_"):
            assert abs(b[key]) < 1e-6, key
        elif b[key] is not None and key.startswith("top1_agreement"):
            assert b[key] == pytest.approx(1.0), key


@pytest.mark.parametrize(
    "stage,message",
    [
        ({"name": "x", "kind": "svd_truncate"}, "needs its dose list 'rank'"),
        ({"name": "x", "kind": "sft", "steps": 2}, "a sft stage needs data"),
    ],
)
def test_bad_control_recipes_are_refused(tmp_path: Path, stage: dict, message: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "version": 1, "base": "tiny-random-llama", "stages": [stage]}))
    with pytest.raises(CollapseBenchError, match=message):
        load_recipe(path, "tiny")


def test_a_ladder_must_be_last(tmp_path: Path) -> None:
    stages = [{"name": "a", "kind": "permute", "perm_seed": [0, 1]}, {"name": "b", "kind": "svd_truncate", "rank": [8]}]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "version": 1, "base": "tiny-random-llama", "stages": stages}))
    with pytest.raises(CollapseBenchError, match="must be the recipe's last stage"):
        load_recipe(path, "tiny")


def test_rungs_that_leave_the_weights_are_evaluated_without_the_lora_task(data_dir: Path, tmp_path: Path) -> None:
    """SVD at full rank and extrapolation at α = 1 change no weight: the lora task (which refuses identical
    weights, and once cost a whole rung's evaluation) is left out for them and kept for every other rung."""
    assert surgery.leaves_weights({"kind": "svd_truncate", "relative_error": [0.0, 0.0]})
    assert not surgery.leaves_weights({"kind": "svd_truncate", "relative_error": [0.0, 0.3]})
    assert surgery.leaves_weights({"kind": "extrapolate", "alpha": 1.0, "dose": 1})
    assert not surgery.leaves_weights({"kind": "extrapolate", "alpha": 2.0, "dose": 2})
    assert not surgery.leaves_weights({"kind": "permute", "dose": 0})
    out = run_chain(
        ChainRequest(
            recipe="control_svd",
            profile="tiny",
            out=str(tmp_path / "svd"),
            data_dir=str(data_dir),
            progress=False,
            evaluate="quick",
            eval_tasks=["probe_quick"],
            eval_limit=4,
        )
    )
    seen = {}
    for rung in sorted(p for p in out.iterdir() if p.is_dir()):
        control = json.loads((rung / "stage.json").read_text())["control"]
        tasks = set(json.loads((rung / "result.json").read_text())["tasks"])
        seen[rung.name] = "lora" in tasks
        assert seen[rung.name] == (not surgery.leaves_weights(control)), rung.name
    assert seen["01-svd-rfull"] is False and seen["01-svd-r16"] is True
