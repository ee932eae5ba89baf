"""Gradient signal at step 0 (collapse_bench/plasticity/gradsignal.py) on the tiny model: grad_norm0 and grad_snr
equal an explicit per-example loop (one plain autograd backward per unpadded example, float64 statistics in
numpy) to 1e-6 relative, for vmap and the loop fallback, every micro-batch split, with and without
logits_to_keep; identical examples give V = 0 and grad_snr None; grad_norm0 is the step-1 gradient norm without
dropout; and computing the signal leaves every other number of the run bit-identical."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from collapse_bench.models import load_model
from collapse_bench.parallel import Parallel
from collapse_bench.plasticity.data import PlasticityData, world_data
from collapse_bench.plasticity.encode import Encoded, encode
from collapse_bench.plasticity.gradsignal import grad_signal, snr
from collapse_bench.plasticity.protocol import Protocol, batch_order, lora_copy
from collapse_bench.plasticity.task import PARAMS_SCHEMA, run_task
from collapse_bench.schemas import with_defaults

pytestmark = pytest.mark.train  # training loops: CI (`make test`) runs them, `make test-fast` does not

REL = 1e-6
GRAD_KEYS = ("grad_norm0", "grad_snr")
# seq_len 64: every tiny-tokenizer example keeps target tokens; dropout > 0 so that the training draws random numbers
TINY = {
    "source": "world",
    "world_entities": 6,
    "steps": 4,
    "batch_size": 8,
    "micro_batch_size": 4,
    "seq_len": 64,
    "eval_every": 2,
    "eval_batch_size": 8,
    "seeds": [0, 1],
    "lr": 0.01,
    "lora_dropout": 0.1,
    "diag_steps": 2,
}


def params(**over) -> dict:
    return with_defaults({**TINY, **over}, PARAMS_SCHEMA, "test")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def world():
    return world_data(0, 6, None)


@pytest.fixture(scope="module")
def runs(tiny, world):
    """The same task with and without the gradient signal."""
    return run_task(tiny.model, tiny.tokenizer, world, params()), run_task(
        tiny.model, tiny.tokenizer, world, params(), grad_signal=False
    )


def fresh_lora(tiny, p: dict, seed: int):
    with torch.random.fork_rng():
        model = lora_copy(tiny.model, Protocol.from_params(p), seed)
    return model.eval()


def reference(model, items: list[Encoded]) -> tuple[float, float | None]:
    """Independent: per example, unpadded, no attention mask, one loss.backward(); g_i = n/N ∇S_i; numpy stats."""
    params_ = [p for p in model.parameters() if p.requires_grad]
    n, n_tokens = len(items), max(1, sum(len(e.ids) - e.start for e in items))
    rows = []
    for e in items:
        model.zero_grad(set_to_none=True)
        if e.start < len(e.ids):
            ids = torch.tensor([e.ids])
            logits = model(input_ids=ids).logits[0]
            F.cross_entropy(logits[e.start - 1 : -1].double(), ids[0, e.start :], reduction="sum").backward()
        rows.append(
            np.concatenate([(p.grad if p.grad is not None else torch.zeros_like(p)).double().numpy().ravel() for p in params_])
        )
    model.zero_grad(set_to_none=True)
    g = np.stack(rows) * (n / n_tokens)
    mean = g.mean(0)
    var = ((g - mean) ** 2).sum(1).mean()  # population: 1/n
    return float(np.sqrt(mean @ mean)), (float(mean @ mean / var) if var > 0 else None)


def first_batch(tiny, data, p: dict, seed: int) -> list[Encoded]:
    train = encode(tiny.tokenizer, data.train, False, p["seq_len"])
    return [train[i] for i in batch_order(len(train), p["steps"], p["batch_size"], seed)[0]]


def test_run_matches_per_example_loop(tiny, world, runs) -> None:
    with_signal, _ = runs
    p = params()
    for seed in (0, 1):
        items = first_batch(tiny, world, p, seed)
        assert all(len(e.ids) > e.start for e in items)  # every example contributes
        norm, ratio = reference(fresh_lora(tiny, p, seed), items)
        got = with_signal["per_seed"][str(seed)]
        assert got["grad_norm0"] == pytest.approx(norm, rel=REL) and norm > 0
        assert got["grad_snr"] == pytest.approx(ratio, rel=REL) and ratio is not None and 0 < ratio < 100
    seeds = [with_signal["per_seed"][s] for s in ("0", "1")]
    for key in GRAD_KEYS:  # aggregated like every plasticity score: mean and sample std over seeds
        vals = [s[key] for s in seeds]
        assert with_signal["metrics"][key] == pytest.approx(np.mean(vals), rel=1e-12)
        assert with_signal["metrics"][f"{key}_std"] == pytest.approx(np.std(vals, ddof=1), rel=1e-12)
    assert with_signal["diagnostics"]["grad_signal_method"] == "vmap" and with_signal["counts"]["grad_signal_s"] > 0


def test_trajectory_bit_identical_without_the_signal(runs) -> None:
    with_signal, without = runs
    assert with_signal["curves"] == without["curves"]  # bitwise: bpb and train loss at every step
    assert {k: v for k, v in with_signal["diagnostics"].items() if k != "grad_signal_method"} == without["diagnostics"]
    for seed, scores in without["per_seed"].items():
        assert {k: v for k, v in with_signal["per_seed"][seed].items() if k not in GRAD_KEYS} == scores
    assert not set(GRAD_KEYS) & set(without["metrics"])
    assert {k: v for k, v in with_signal["metrics"].items() if not k.startswith(GRAD_KEYS)} == without["metrics"]


@pytest.mark.parametrize("method", ["vmap", "loop"])
@pytest.mark.parametrize("keep", [True, False])
def test_methods_and_micro_batch_splits(tiny, world, method: str, keep: bool) -> None:
    p = params()
    model = fresh_lora(tiny, p, 1)
    items = first_batch(tiny, world, p, 1)
    items.append(Encoded(items[0].ids[: items[0].start], items[0].start, 0))  # no target token left: g_i = 0
    norm, ratio = reference(model, items)
    n_tokens = sum(len(e.ids) - e.start for e in items)
    for size in (1, 2, 4, 9):  # Chan merge of 9, 5, 3, 1 micro-batch statistics == one two-pass
        micro = [items[j : j + size] for j in range(0, len(items), size)]
        got = grad_signal(model, micro, len(items), n_tokens, tiny.tokenizer.pad_token_id, keep, Parallel(), method)
        assert got.method == method
        assert got.grad_norm0 == pytest.approx(norm, rel=REL) and got.grad_snr == pytest.approx(ratio, rel=REL), size
    assert not model.training and all(p.grad is None for p in model.parameters())  # mode restored, no .grad written


def test_identical_examples_have_no_snr(tiny, world) -> None:
    p = params(seeds=[0, 1], steps=1)
    one = world.train[3]
    copies = PlasticityData([one] * 8, world.eval[:4], [], {}, "world")
    block = run_task(tiny.model, tiny.tokenizer, copies, p)
    item = encode(tiny.tokenizer, [one], False, p["seq_len"])[0]
    for seed in ("0", "1"):
        model = fresh_lora(tiny, p, int(seed))
        # closed form: g_i = n ∇S / (n t) = ∇S / t for all i, so ḡ = ∇S / t and V = 0
        norm_one, _ = reference(model, [item])
        assert block["per_seed"][seed]["grad_snr"] is None
        assert block["per_seed"][seed]["grad_norm0"] == pytest.approx(norm_one, rel=REL)
        got = grad_signal(
            model, [[item] * 3, [item] * 5], 8, 8 * (len(item.ids) - item.start), tiny.tokenizer.pad_token_id, True, Parallel()
        )
        assert got.grad_snr is None and got.grad_norm0 == pytest.approx(norm_one, rel=REL)
    assert block["metrics"]["grad_snr"] is None and block["metrics"]["grad_snr_std"] is None  # a None seed: no mean
    assert block["metrics"]["grad_norm0"] is not None


def test_snr_edge_cases() -> None:
    eps = float(torch.finfo(torch.float32).eps)
    assert snr(4.0, 2.0, eps) == 2.0
    assert snr(0.0, 3.0, eps) == 0.0  # mean gradient zero, examples disagree
    assert snr(0.0, 0.0, eps) is None  # 0/0 (no target tokens at all, or n = 1 with zero gradient)
    assert snr(1.0, 0.0, eps) is None  # infinite: identical examples, n = 1
    assert snr(1.0, 1e-20, eps) is None  # a spread below float32 rounding counts as none
    assert snr(1.0, 1e-12, eps) == pytest.approx(1e12)


def test_grad_norm0_is_the_step_one_gradient_norm_without_dropout(tiny, world) -> None:
    block = run_task(tiny.model, tiny.tokenizer, world, params(lora_dropout=0.0, steps=1, diag_steps=1, eval_every=1))
    for seed, scores in block["per_seed"].items():
        first = block["diagnostics"]["per_seed"][seed]["grad_norm"][0]  # clip_grad_norm_'s pre-clipping norm, step 1
        assert scores["grad_norm0"] == pytest.approx(first, rel=REL) and math.isfinite(first)
        assert scores["grad_snr"] is not None


def test_single_example_batch(tiny, world) -> None:
    block = run_task(tiny.model, tiny.tokenizer, world, params(batch_size=1, micro_batch_size=1, steps=1, seeds=[0]))
    assert block["per_seed"]["0"]["grad_snr"] is None and block["per_seed"]["0"]["grad_norm0"] > 0  # n = 1: V = 0


def test_falls_back_to_the_loop_when_vmap_fails(tiny, world, monkeypatch) -> None:
    import torch.func

    def no_vmap(*args, **kwargs):
        raise RuntimeError("vmap: It looks like you're attempting to use a Tensor in some data-dependent control flow")

    p = params()
    model = fresh_lora(tiny, p, 0)
    items = first_batch(tiny, world, p, 0)
    norm, ratio = reference(model, items)
    monkeypatch.setattr(torch.func, "vmap", no_vmap)
    got = grad_signal(model, [items[:4], items[4:]], 8, sum(len(e.ids) - e.start for e in items), 2, True, Parallel())
    assert (
        got.method == "loop" and got.grad_norm0 == pytest.approx(norm, rel=REL) and got.grad_snr == pytest.approx(ratio, rel=REL)
    )


def test_the_protocol_trains_on_the_model_itself_and_leaves_it_as_found(tiny, world) -> None:
    """No deep copy: the LoRA is injected into the loaded model and unloaded afterwards; its weights (sha256 of every
    parameter's bytes, checked independently here with hashlib over numpy bytes), module tree, requires_grad flags
    and eval mode are as before, so a second run gives the same numbers."""
    import hashlib

    def digest(model) -> str:
        h = hashlib.sha256()
        for name, p in model.named_parameters():
            h.update(name.encode() + p.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    model = tiny.model
    before = (
        digest(model),
        [(n, type(m).__name__) for n, m in model.named_modules()],
        [p.requires_grad for p in model.parameters()],
    )
    first = run_task(model, tiny.tokenizer, world, params(seeds=[0]))
    after = (
        digest(model),
        [(n, type(m).__name__) for n, m in model.named_modules()],
        [p.requires_grad for p in model.parameters()],
    )
    assert after == before and not model.training and not hasattr(model, "peft_config")
    second = run_task(model, tiny.tokenizer, world, params(seeds=[0]))
    assert second["per_seed"] == first["per_seed"] and second["curves"] == first["curves"]
