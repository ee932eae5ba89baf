"""The plasticity protocol on the tiny model: bpb equals an unbatched float64 recomputation, same seed
same numbers, the caller's model and RNG state untouched, lr = 0 learns nothing, a higher lr learns
faster, data slices are disjoint, bad input fails in one line, and the block validates via evaluate()."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from collapse_bench.errors import CollapseBenchError
from collapse_bench.evaluate import EvaluateRequest, evaluate
from collapse_bench.models import load_model
from collapse_bench.parallel import Parallel
from collapse_bench.plasticity.data import Example, cut_text, world_data
from collapse_bench.plasticity.encode import encode
from collapse_bench.plasticity.protocol import batch_order, eval_bpb, normalise_answer
from collapse_bench.plasticity.task import PARAMS_SCHEMA, run_task
from collapse_bench.results import validate_result
from collapse_bench.schemas import with_defaults

pytestmark = pytest.mark.train  # training loops: CI (`make test`) runs them, `make test-fast` does not

TRAPEZOID = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2 / 1.26
TINY = {
    "source": "world",
    "world_entities": 6,
    "steps": 6,
    "batch_size": 4,
    "micro_batch_size": 2,
    "seq_len": 32,
    "eval_every": 2,
    "eval_batch_size": 5,
    "seeds": [0, 1],
    "lr": 0.01,
    "diag_steps": 3,
}


def params(**over) -> dict:
    return with_defaults({**TINY, **over}, PARAMS_SCHEMA, "test")


def write_tasks(root: Path) -> Path:
    tasks = root / "usertasks"
    (tasks / "plasticity").mkdir(parents=True)
    (tasks / "probe").mkdir(parents=True)
    (tasks / "plasticity" / "tiny.yaml").write_text(
        f"name: plast_tiny\nversion: 1\nkind: plasticity\ndescription: tiny novel-knowledge run\nparams: {json.dumps(TINY)}\n"
    )
    rows = [{"id": f"r{i}", "q": f"What is {i} plus {i}?", "a": f"{i} plus {i} is {2 * i}."} for i in range(40)]
    (tasks / "plasticity" / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "plasticity" / "sums.yaml").write_text(
        "name: plast_sums\nversion: 1\nkind: plasticity\ndata:\n  - {path: sums.jsonl}\n"
        "params: {source: data, prompt_template: 'Q: {q}\\nA:', target_template: ' {a}', n_train: 12, n_eval: 6,\n"
        "         steps: 2, batch_size: 4, micro_batch_size: 4, eval_every: 1, seq_len: 24}\n"
    )
    (tasks / "probe" / "p.yaml").write_text(
        "name: probe_tiny\nversion: 1\nkind: probe\ndata:\n  - {builtin: synthetic_world, n: 6}\n"
        "  - {builtin: synthetic_math, n: 6}\nparams: {max_tokens: 48, tokens_per_sequence: 8, reservoir_size: 64}\n"
    )
    return tasks


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def world():
    return world_data(0, 6, None)


def reference_bpb(model, tok, examples: list[Example]) -> float:
    """Unbatched, unpadded float64 log-softmax over the separately tokenized prompt + target."""
    nll, n_bytes = 0.0, 0
    for ex in examples:
        p = tok(ex.prompt).input_ids or [tok.eos_token_id]
        t = tok(ex.target, add_special_tokens=False).input_ids
        ids = torch.tensor([p + t])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double().numpy()
        logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
        nll -= sum(logp[j - 1, ids[0, j]] for j in range(len(p), len(p) + len(t)))
        n_bytes += len(ex.target.encode("utf-8"))
    return nll / (n_bytes * math.log(2))


def test_eval_bpb_equals_hand_computation(tiny, world) -> None:
    examples = [*world.eval, Example("", "Plain text, scored whole: café!"), Example("Q:", " naïve ünïcode")]
    items = encode(tiny.tokenizer, examples, chat_template=False)
    assert items[-2].n_bytes == len("Plain text, scored whole: café!".encode()) and items[-2].start == 1
    ref = reference_bpb(tiny.model, tiny.tokenizer, examples)
    for bs, keep in ((1, False), (3, True), (64, True), (64, False)):  # batching, padding, LM head on scored rows only
        assert eval_bpb(tiny.model, items, bs, tiny.tokenizer.pad_token_id, Parallel(), keep) == pytest.approx(ref, rel=1e-6)


def test_world_data_forms(world) -> None:
    again = world_data(0, 6, None)
    assert again.train == world.train and again.data_hashes == world.data_hashes  # seeded generator
    n = len(world.eval)
    assert n == 16 and len(world.train) == 2 * n and len(world.qa) == n
    assert world.train[0].prompt == "" and world.train[n].prompt.startswith("Question: ")
    for ex, (q, a) in zip(world.eval, world.qa):
        assert ex.target in (f" {a}.",) and a in world.train[n + world.qa.index((q, a))].target
        assert ex.prompt not in {e.prompt for e in world.train}  # the paraphrase is held out
    assert world_data(1, 6, None).data_hashes != world.data_hashes
    assert len(world_data(0, 6, 5).eval) == 5  # --limit caps the facts


def test_helpers() -> None:
    assert cut_text("one two three", 9) == "one two" and cut_text("short", 10) == "short"
    assert normalise_answer(" Kaldor.\nQuestion: x") == "kaldor" and normalise_answer("") == ""
    order = batch_order(5, 4, 3, seed=0)
    assert [len(b) for b in order] == [3] * 4 and sorted(order[0] + order[1][:2]) == list(range(5))  # epoch-wise
    assert order == batch_order(5, 4, 3, seed=0) and order != batch_order(5, 4, 3, seed=1)


def test_same_seed_same_numbers_and_model_untouched(tiny, world) -> None:
    model = tiny.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads, training = [p.requires_grad for p in model.parameters()], model.training
    rng, det = torch.get_rng_state(), torch.are_deterministic_algorithms_enabled()
    a = run_task(model, tiny.tokenizer, world, params())
    b = run_task(model, tiny.tokenizer, world, params())
    for key in ("metrics", "per_seed", "curves", "diagnostics"):
        assert a[key] == b[key]  # bitwise identical on CPU
    assert a["curves"]["0"] != a["curves"]["1"]  # the seed matters (order, LoRA init, dropout)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == grads and model.training == training
    assert torch.equal(torch.get_rng_state(), rng) and torch.are_deterministic_algorithms_enabled() == det
    assert "lora" not in " ".join(n for n, _ in model.named_modules())
    curve = a["curves"]["0"]
    assert curve["steps"] == [0, 2, 4, 6] and len(curve["train_loss"]) == 6
    assert a["metrics"]["bpb_initial"] == curve["bpb"][0] == a["curves"]["1"]["bpb"][0]  # LoRA B = 0 at step 0
    assert len(a["diagnostics"]["per_seed"]["0"]["grad_norm"]) == 3 and a["diagnostics"]["update_norm"]["max"] > 0
    assert 0.0 <= a["metrics"]["exact_match"] <= 1.0 and a["counts"]["exact_match_items"] == 16
    for seed, c in a["curves"].items():  # the scalars are those of the recorded curve (numpy trapezoid, by hand)
        b0, bk, scores = c["bpb"][0], c["bpb"][-1], a["per_seed"][seed]
        assert scores["bpb_auc"] == pytest.approx(TRAPEZOID(c["bpb"], c["steps"]) / 6, rel=1e-12)
        assert scores["gain"] == pytest.approx((b0 - bk) / b0, rel=1e-12) and scores["bpb_final"] == bk
        hit = [s for s, b in zip(c["steps"], c["bpb"]) if b <= b0 - 0.25 * b0]  # default fraction 0.25, target 0
        assert scores["steps_to_threshold"] == (hit[0] if hit else None)
    gains = [a["per_seed"][s]["gain"] for s in ("0", "1")]
    assert a["metrics"]["gain"] == pytest.approx(np.mean(gains))
    assert a["metrics"]["gain_std"] == pytest.approx(np.std(gains, ddof=1))


def test_zero_lr_learns_nothing_and_higher_lr_learns_faster(tiny, world) -> None:
    frozen = run_task(tiny.model, tiny.tokenizer, world, params(lr=0.0, seeds=[0]))
    assert frozen["metrics"]["gain"] == pytest.approx(0.0, abs=1e-12)
    assert len(set(frozen["curves"]["0"]["bpb"])) == 1 and frozen["diagnostics"]["update_norm"]["max"] == 0.0
    slow = run_task(tiny.model, tiny.tokenizer, world, params(lr=1e-4, seeds=[0], steps=8))
    fast = run_task(tiny.model, tiny.tokenizer, world, params(lr=1e-2, seeds=[0], steps=8))
    assert fast["metrics"]["bpb_auc"] < slow["metrics"]["bpb_auc"] - 0.05
    assert fast["metrics"]["gain"] > slow["metrics"]["gain"] > 0


def test_evaluate_block_and_probe_unchanged_after_plasticity(tiny_model_dir: Path, tmp_path: Path, capfd) -> None:
    tasks = write_tasks(tmp_path)
    common = dict(model=str(tiny_model_dir), tasks_dirs=[str(tasks)], progress=False)
    _, alone = evaluate(EvaluateRequest(tasks=["probe_tiny"], output=str(tmp_path / "a.json"), **common))
    _, both = evaluate(
        EvaluateRequest(tasks=["plast_tiny", "plast_sums", "probe_tiny"], output=str(tmp_path / "b.json"), **common)
    )
    assert both["tasks"]["probe_tiny"]["metrics"] == alone["tasks"]["probe_tiny"]["metrics"]
    assert "plast_tiny" not in capfd.readouterr().err  # progress=False: no bar
    validate_result(json.loads((tmp_path / "b.json").read_text()))
    block = both["tasks"]["plast_tiny"]
    assert block["kind"] == "plasticity" and list(block["data"]) == ["world:v1.1:seed0:n6"]
    assert set(block["per_seed"]) == {"0", "1"} and block["metrics"]["bpb_final_std"] is not None
    sums = both["tasks"]["plast_sums"]
    assert list(sums["data"]) == ["task:sums.jsonl"] and sums["counts"]["train_examples"] == 12
    assert "exact_match" not in sums["metrics"] and sums["curves"]["0"]["steps"] == [0, 1, 2]


def test_data_slices_disjoint(tmp_path: Path) -> None:
    from collapse_bench.plasticity.task import prepare
    from collapse_bench.tasks import TaskRegistry

    reg = TaskRegistry([write_tasks(tmp_path)])
    data = prepare(reg.task("plast_sums"), None, None)
    assert len(data.train) == 12 and len(data.eval) == 6
    assert not {e.target for e in data.train} & {e.target for e in data.eval}
    assert data.eval[0].prompt.startswith("Q: What is") and data.eval[0].target.endswith(".")
    small = prepare(reg.task("plast_sums"), None, 3)  # --limit 3: both slices capped, same permutation
    assert small.train == data.train[:3] and len(small.eval) == 3 and not set(small.train) & set(small.eval)


def test_gsm8k_slices_from_train_only(data_dir: Path) -> None:
    from collapse_bench.plasticity.task import prepare
    from collapse_bench.tasks import TaskRegistry

    reg = TaskRegistry()
    names = [n for n, t in reg.tasks.items() if t.kind == "plasticity"]
    assert {"plasticity_quick", "plasticity_standard_gsm8k", "plasticity_standard_world"} <= set(names)
    for name in names:
        data = prepare(reg.task(name), data_dir, None)
        assert all(not k.endswith("/test.jsonl") for k in data.data_hashes)  # gsm8k/test belongs to the OOD tasks
        assert not {(e.prompt, e.target) for e in data.eval} & {(e.prompt, e.target) for e in data.train}
    gsm = prepare(reg.task("plasticity_standard_gsm8k"), data_dir, None)
    assert list(gsm.data_hashes) == ["gsm8k/train.jsonl"]
    assert not {e.prompt for e in gsm.train} & {e.prompt for e in gsm.eval}


def test_bad_params_fail_in_one_line(tmp_path: Path, tiny, world) -> None:
    from collapse_bench.plasticity.task import prepare
    from collapse_bench.tasks import TaskRegistry

    tasks = write_tasks(tmp_path)
    bad = tasks / "plasticity" / "bad.yaml"
    bad.write_text("name: bad\nversion: 1\nkind: plasticity\nparams: {source: world, batch_size: 6, micro_batch_size: 4}\n")
    with pytest.raises(CollapseBenchError, match="not a multiple of micro_batch_size"):
        prepare(TaskRegistry([tasks]).task("bad"), None, None)
    bad.write_text(
        "name: bad\nversion: 1\nkind: plasticity\nparams: {source: data, n_train: 30, n_eval: 30}\ndata: [{path: sums.jsonl}]\n"
    )
    with pytest.raises(CollapseBenchError, match="fewer than n_train"):
        prepare(TaskRegistry([tasks]).task("bad"), None, None)
    bad.write_text("name: bad\nversion: 1\nkind: plasticity\nparams: {source: world, lr: .nan}\n")
    with pytest.raises(CollapseBenchError, match="NaN"):
        prepare(TaskRegistry([tasks]).task("bad"), None, None)
    with pytest.raises(CollapseBenchError, match="diverged"):
        run_task(tiny.model, tiny.tokenizer, world, params(lr=1.0, max_grad_norm=None, seeds=[0], steps=2, lora_alpha=1e30))
