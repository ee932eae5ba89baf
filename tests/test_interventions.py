"""Each intervention does what it claims, in its own terms (tiny model, same seed with and without):
feature_refresh lowers the dormant fraction of planted dormant units; diversity_reg raises the effective
rank of the regularised layer; lora_decorrelation lowers the update overlap with the earlier stage;
replay's measured batch fraction is checked in test_chain.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from collapse_bench.chain.runner import ChainRequest, run_chain
from collapse_bench.interventions import StageContext, parse_interventions
from collapse_bench.interventions.diversity_reg import vicreg_terms
from collapse_bench.interventions.feature_refresh import FeatureRefresh
from collapse_bench.metrics.dormant import dormant_fraction
from collapse_bench.metrics.spectral import effective_rank
from collapse_bench.models import find_source
from collapse_bench.yamlio import dump_yaml

pytestmark = pytest.mark.train  # training loops: CI (`make test`) runs them, `make test-fast` does not

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Question: Ada has 3 apples and buys 4 more. How many? Answer: 7.",
    "User: Translate to French: where is the station?\nAssistant: Où est la gare ?",
]


def states(model_dir: Path, layer: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Hidden states at ``layer`` and the MLP down-projection inputs of every block, on TEXTS."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    acts: list[list[torch.Tensor]] = [[] for _ in model.model.layers]
    hooks = [
        blk.mlp.down_proj.register_forward_pre_hook(lambda m, a, i=i: acts[i].append(a[0][0, 1:]))
        for i, blk in enumerate(model.model.layers)
    ]
    rows = []
    with torch.no_grad():
        for text in TEXTS:
            out = model(**tok(text, return_tensors="pt"), output_hidden_states=True)
            rows.append(out.hidden_states[layer][0, 1:])
    for h in hooks:
        h.remove()
    return torch.cat(rows), [torch.cat(a) for a in acts]


def test_vicreg_terms_closed_forms() -> None:
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(4000, 8, generator=g)
    v, c = vicreg_terms(iso)
    assert float(v) < 0.02 and float(c) < 0.02  # isotropic unit-variance: nothing to penalise
    collapsed = torch.randn(4000, 1, generator=g) @ torch.ones(1, 8)  # rank 1: all dims identical
    _v2, c2 = vicreg_terms(collapsed)
    assert float(c2) == pytest.approx(7.0, rel=0.02)  # C = all-ones after RMS scaling: sum_{i!=j} 1 / d = 56/8


def test_feature_refresh_revives_planted_dormant_units(tmp_path: Path) -> None:
    src = Path(find_source("tiny-random-llama").path)
    model = AutoModelForCausalLM.from_pretrained(src)
    tok = AutoTokenizer.from_pretrained(src)
    planted = list(range(0, 128, 16))  # 8 of 128 units per block: zero up-projection rows -> activation 0
    with torch.no_grad():
        for blk in model.model.layers:
            blk.mlp.up_proj.weight[planted] = 0.0
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    _, before = states(tmp_path / "m", 1)
    frac_before = [dormant_fraction(a, 0.1) for a in before]
    assert all(f >= len(planted) / 128 for f in frac_before)

    class S:  # the second stage of a chain
        index, max_length = 2, 128

    examples = [
        {"prompt": [{"role": "user", "content": t}], "completion": [{"role": "assistant", "content": "ok"}]} for t in TEXTS
    ]
    ctx = StageContext(
        stage=S,
        kind="sft",
        batch_size=2,
        steps=1,
        seed=0,
        tokenizer=tok,
        base_dir=src,
        recipe_path=tmp_path,
        stage_examples=examples,
    )
    refresh = FeatureRefresh(tau=0.1, max_fraction=0.1, calib_examples=4, shrink=1.0, noise_std=0.0)
    refresh.before_stage(model, ctx)
    report = refresh.report()
    assert report["units_reset"] >= 2 * len(planted) and report["dormant_fraction_after"] < report["dormant_fraction_before"]
    model.save_pretrained(tmp_path / "r")
    tok.save_pretrained(tmp_path / "r")
    _, after = states(tmp_path / "r", 1)
    for fb, a in zip(frac_before, after):  # independent check with the probe's metric
        assert dormant_fraction(a, 0.1) < fb


def one_stage_recipe(tmp_path: Path, stages: list[dict]) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(dump_yaml({"name": "probe_recipe", "version": 1, "base": "tiny-random-llama", "stages": stages}))
    return path


def test_diversity_reg_raises_effective_rank_of_its_layer(data_dir: Path, tmp_path: Path) -> None:
    stage = {
        "name": "sft",
        "kind": "sft",
        "data": [{"dataset": "alpaca", "split": "train", "n": 32}],
        "steps": 12,
        "batch_size": 4,
        "max_length": 256,
        "optimizer": {"lr": 0.01, "schedule": "constant"},
    }
    recipe = one_stage_recipe(tmp_path, [stage])
    layer = parse_interventions("diversity_reg")[0].params["layers"][0]
    ranks = {}
    for label in ("none", "diversity_reg"):
        out = run_chain(
            ChainRequest(
                recipe=str(recipe),
                interventions=label,
                profile="cpu",
                out=str(tmp_path / label),
                data_dir=str(data_dir),
                progress=False,
                overrides={"diversity_reg": {"coefficient": 1.0}},
            )
        )
        block = math.floor(layer * (2 - 1) + 0.5)  # tiny model: 2 blocks; the plugin's layer rule
        assert json.loads((out / "01-sft" / "stage.json").read_text())["interventions"].get(label, {}).get("layers", [block]) == [
            block
        ]
        H, _ = states(out / "01-sft" / "model", block + 1)  # hidden_states index = block output
        ranks[label] = effective_rank(H)
    assert ranks["diversity_reg"] > ranks["none"] * 1.02, ranks


def mean_overlap(later: Path, earlier: Path) -> float:
    """Mean over modules of phi(U_later, U_earlier): the normalised ||U_i^T U_j||_F^2 of the left singular
    subspaces of the two stages' LoRA updates (the lora task's overlap_prev, recomputed here)."""
    from collapse_bench.lora.geometry import subspace, subspace_overlap
    from collapse_bench.lora.updates import read_adapter

    a, b = read_adapter(later), read_adapter(earlier)
    values = [subspace_overlap(subspace(a.delta(m))[0], subspace(b.delta(m))[0])[0] for m in sorted(a.factors)]
    return sum(values) / len(values)


def test_lora_decorrelation_lowers_overlap_with_the_earlier_stage(data_dir: Path, tmp_path: Path) -> None:
    stage = {"kind": "sft", "steps": 8, "batch_size": 4, "max_length": 256, "optimizer": {"lr": 0.01, "schedule": "constant"}}
    recipe = one_stage_recipe(
        tmp_path,
        [
            {**stage, "name": "first", "data": [{"dataset": "alpaca", "split": "train", "n": 32}]},
            {**stage, "name": "second", "data": [{"dataset": "alpaca", "split": "train", "n": 32}], "seed": 1},
        ],
    )
    overlap = {}
    for label in ("none", "lora_decorrelation"):
        out = run_chain(
            ChainRequest(
                recipe=str(recipe),
                interventions=label,
                profile="cpu",
                out=str(tmp_path / label),
                data_dir=str(data_dir),
                progress=False,
            )
        )
        overlap[label] = mean_overlap(out / "02-second" / "adapter", out / "01-first" / "adapter")
    # same first stage in both chains: the penalty starts at the second
    assert (
        json.loads((tmp_path / "none" / "01-first" / "stage.json").read_text())["sha256"]
        == json.loads((tmp_path / "lora_decorrelation" / "01-first" / "stage.json").read_text())["sha256"]
    )
    print("overlap_prev", overlap)
    assert 0.0 <= overlap["lora_decorrelation"] < 0.8 * overlap["none"], overlap


def test_orthogonality_loss_closed_forms() -> None:
    from collapse_bench.interventions.lora_decorrelation import orthogonality_loss, previous_bases

    eye = torch.eye(8)
    prev = [previous_bases({"m": (eye[:2, :6], eye[:, :2])})]  # A_i spans e0,e1 (input); B_i spans e0,e1 (output)
    inside = {"m": (3 * eye[:2, :6], 5 * eye[:, :2])}
    outside = {"m": (eye[2:4, :6], eye[:, 2:4])}
    half = {"m": (eye[1:3, :6], eye[:, 1:3])}
    assert float(orthogonality_loss(inside, prev)) == pytest.approx(2.0)  # each term = 1, scale-free
    assert float(orthogonality_loss(outside, prev)) == pytest.approx(0.0, abs=1e-7)
    assert float(orthogonality_loss(half, prev)) == pytest.approx(1.0)  # half of each factor's energy inside
    assert orthogonality_loss(inside, []) is None
