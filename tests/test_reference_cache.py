"""KL and neighbourhoods to the lineage's base/parent and to --reference, end to end on the tiny model: the parent's
probe pass runs first when it has no cache (announced on stderr), later runs read its cache; the values equal a
numpy recomputation from both models' logits; a model against itself gives KL 0 and agreement 1; a reference that
cannot be located or tokenises differently gives null metrics with a note; the cache is written atomically and
never reaches the result; a tiny trained chain drifts further from its base than from its parent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from collapse_bench.compare import compare, divergence, format_table, load_result
from collapse_bench.evaluate import EvaluateRequest, evaluate
from collapse_bench.metrics.reference import TOP_K
from collapse_bench.models.tiny import build_tiny_model
from collapse_bench.probe.corpus import build_corpus, tokenize
from collapse_bench.probe.references import cache_location
from collapse_bench.results import validate_result
from collapse_bench.tasks import TaskRegistry

TASK = """name: ref_probe
version: 1
kind: probe
description: small probe for the reference tests
data:
  - {builtin: python_docs, domain: docs, n: 8}
  - {builtin: synthetic_math, domain: math, n: 8}
  - {builtin: synthetic_chat, domain: chat, n: 8}
params: {max_tokens: 40, tokens_per_sequence: 8, reservoir_size: 64, batch_size: 5}
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> dict[str, Path]:
    monkeypatch.setenv("COLLAPSE_BENCH_REFERENCE_CACHE", str(tmp_path / "cache" / "reference"))
    tasks = tmp_path / "tasks"
    (tasks / "probe").mkdir(parents=True)
    (tasks / "probe" / "ref_probe.yaml").write_text(TASK)
    child = tmp_path / "child"
    if not (child / "config.json").is_file():
        build_tiny_model(child, seed=1)  # other weights, the same tokenizer
    return {"tasks": tasks, "parent": tiny_model_dir, "child": child, "tmp": tmp_path}


def run(env: dict[str, Path], model: Path, out: str, **kw) -> dict:
    _, result = evaluate(
        EvaluateRequest(
            model=str(model),
            tasks=["ref_probe"],
            tasks_dirs=[str(env["tasks"])],
            output=str(env["tmp"] / out),
            progress=False,
            **kw,
        )
    )
    return result


def np_lumped_kl(env: dict[str, Path], ref_dir: Path, model_dir: Path) -> float:
    """Mean KL_K over the kept positions, recomputed from each text's own forward pass (no padding) in numpy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task = TaskRegistry([str(env["tasks"])]).task("ref_probe")
    corpus = build_corpus(task, None, None)
    tok = AutoTokenizer.from_pretrained(model_dir)
    toks = [t for t in tokenize(tok, corpus.texts, 40, 8, 0) if len(t.ids) >= 3]
    p_model, q_model = (AutoModelForCausalLM.from_pretrained(d).eval() for d in (ref_dir, model_dir))
    kls = []
    for t in toks:
        with torch.no_grad():
            zp, zq = (m(torch.tensor([t.ids])).logits[0, 1:].double().numpy() for m in (p_model, q_model))
        lp = zp - np.log(np.exp(zp - zp.max(-1, keepdims=True)).sum(-1, keepdims=True)) - zp.max(-1, keepdims=True)
        lq = zq - np.log(np.exp(zq - zq.max(-1, keepdims=True)).sum(-1, keepdims=True)) - zq.max(-1, keepdims=True)
        top = np.argsort(-lp, axis=-1)[:, :TOP_K]
        ps, qs = np.exp(np.take_along_axis(lp, top, -1)), np.exp(np.take_along_axis(lq, top, -1))
        pT, qT = 1 - ps.sum(-1), 1 - qs.sum(-1)
        kls.append((ps * np.log(ps / qs)).sum(-1) + pT * np.log(pT / qT))
    return float(np.concatenate(kls).mean())


def test_parent_pass_first_then_cache(env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    r1 = run(env, env["child"], "r1.json", parent=str(env["parent"]))
    err = capsys.readouterr().err
    assert err.count("running its probe pass first") == 1  # base = parent here: one pass serves both roles
    assert "kl_to_base: no reference cache for tiny-llama; running its probe pass first" in err
    m = r1["tasks"]["ref_probe"]["metrics"]
    assert m["kl_to_parent"] == m["kl_to_base"] == pytest.approx(np_lumped_kl(env, env["parent"], env["child"]), rel=1e-5)
    assert m["kl_to_parent"] > 1e-3 and 0 <= m["top1_agreement_parent"] < 1
    assert m["kl_to_parent_q90"] <= m["kl_to_parent_q99"]
    assert {f"kl_to_parent@{d}" for d in ("chat", "docs", "math")} <= m.keys()
    assert 0 <= m["mutual_knn_parent"] <= 1 and m["cknna_parent"] is not None
    counts = r1["tasks"]["ref_probe"]["counts"]
    assert counts["neighbours_parent_sequences"] == 24 and counts["kl_to_parent_positions"] > 200
    # both checkpoints now have a cache; the result names neither it nor any absolute path
    task = TaskRegistry([str(env["tasks"])]).task("ref_probe")
    corpus = build_corpus(task, None, None)
    for model in ("parent", "child"):
        sha = r1["model"]["sha256"] if model == "child" else r1["model"]["lineage"][0]["sha256"]
        assert (cache_location(task, corpus, sha) / "meta.json").is_file()
    text = (env["tmp"] / "r1.json").read_text()
    assert str(env["tmp"]) not in text and "reference/v1" not in text
    validate_result(json.loads(text))
    r2 = run(env, env["child"], "r2.json", parent=str(env["parent"]))
    assert "running its probe pass first" not in capsys.readouterr().err  # read from the cache
    assert r2["tasks"]["ref_probe"]["metrics"] == m
    # compare: the stage's KL to base and parent, none for the base itself
    run(env, env["parent"], "root.json")
    nodes = [load_result(str(env["tmp"] / f)) for f in ("r1.json", "root.json")]
    rows = divergence(nodes)
    assert [(r["stage"], r["kl_to_base"], r["kl_to_parent"]) for r in rows] == [("?", m["kl_to_base"], m["kl_to_parent"])]
    assert "divergence from the lineage" in format_table(nodes, compare(nodes))


def test_model_against_itself(env: dict[str, Path]) -> None:
    for out in ("live.json", "cached.json"):  # first run: the reference's rows live; second: from its cache
        m = run(env, env["parent"], out, reference=str(env["parent"]))["tasks"]["ref_probe"]["metrics"]
        assert abs(m["kl_to_reference"]) < 1e-9 and abs(m["kl_to_reference_q99"]) < 1e-9
        assert m["top1_agreement_reference"] == 1.0
        assert m["mutual_knn_reference"] == 1.0 and m["cknna_reference"] == pytest.approx(1.0, abs=1e-9)
        assert "kl_to_base" not in m  # a root has no lineage base


def test_unlocatable_reference_is_null_with_a_note(env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    stage = env["tmp"] / "stage"
    shutil.copytree(env["child"], stage)
    (stage / "lineage.yaml").write_text(
        f"name: stage-1\nparent: ghost-model\nparent_sha256: {'a' * 64}\nstage: sft\n"
        f"lineage: [{{name: ghost-model, sha256: {'a' * 64}, revision: null, stage: base}}]\n"
    )
    r = run(env, stage, "g.json")
    block = r["tasks"]["ref_probe"]
    assert block["metrics"]["kl_to_base"] is None and block["metrics"]["mutual_knn_parent"] is None
    assert "ghost-model" in block["counts"]["kl_to_base_note"] and "not found" in block["counts"]["kl_to_parent_note"]
    assert block["metrics"]["bits_per_byte"] > 0  # the rest of the probe is unaffected
    validate_result(r)


def test_other_tokenisation_and_unwritable_cache(env: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    run(env, env["child"], "a.json", parent=str(env["parent"]))
    task = TaskRegistry([str(env["tasks"])]).task("ref_probe")
    corpus = build_corpus(task, None, None)
    parent_sha = json.loads((env["tmp"] / "a.json").read_text())["model"]["lineage"][0]["sha256"]
    meta_path = cache_location(task, corpus, parent_sha) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "tokens_sha256": "0" * 64}))
    block = run(env, env["child"], "b.json", parent=str(env["parent"]))["tasks"]["ref_probe"]
    assert block["metrics"]["kl_to_parent"] is None and "tokenisation" in block["counts"]["kl_to_parent_note"]
    # a truncated cache is ignored with a warning and rebuilt by the parent's own pass
    meta_path.write_text(json.dumps(meta))
    logp = meta_path.parent / "topk_logp.f32"
    logp.write_bytes(logp.read_bytes()[:-4])
    capsys.readouterr()
    again = run(env, env["child"], "b2.json", parent=str(env["parent"]))["tasks"]["ref_probe"]["metrics"]
    err = capsys.readouterr().err
    assert "ignoring" in err and "topk_logp.f32 has the wrong size" in err and "running its probe pass first" in err
    assert again["kl_to_parent"] is not None and again["kl_to_parent"] > 0
    # a cache location that cannot be written: no cache, the reason in the result's counts, the result as usual
    blocker = env["tmp"] / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("COLLAPSE_BENCH_REFERENCE_CACHE", str(blocker))
    capsys.readouterr()
    r = run(env, env["child"], "c.json", parent=str(env["parent"]))
    assert "cannot write the reference cache" in r["tasks"]["ref_probe"]["counts"]["reference_cache_note_model"]
    assert r["tasks"]["ref_probe"]["metrics"]["kl_to_parent"] is None and blocker.read_text() == "x"
    assert (env["tmp"] / "c.json").is_file()


RECIPE = """name: kl_drift
version: 1
base: tiny-random-llama
stages:
  - {name: sft, kind: sft, data: [{dataset: alpaca, split: train, n: 8}], steps: 4, optimizer: {lr: 0.02, schedule: constant}}
  - {name: math, kind: math, data: [{dataset: math, split: test, n: 8}], steps: 4, optimizer: {lr: 0.02, schedule: constant}}
profiles:
  tiny: {batch_size: 4, max_length: 128}
"""


@pytest.mark.train
def test_chain_stage_drifts_further_from_base_than_from_parent(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from collapse_bench.chain.runner import ChainRequest, run_chain

    monkeypatch.setenv("COLLAPSE_BENCH_REFERENCE_CACHE", str(tmp_path / "cache" / "reference"))
    (tmp_path / "kl_drift.yaml").write_text(RECIPE)
    out = run_chain(
        ChainRequest(
            recipe=str(tmp_path / "kl_drift.yaml"),
            profile="tiny",
            out=str(tmp_path / "c"),
            data_dir=str(data_dir),
            evaluate="quick",
            eval_tasks=["probe_quick"],
            progress=False,
        )
    )
    m1 = json.loads((out / "01-sft" / "result.json").read_text())["tasks"]["probe_quick"]["metrics"]
    m2 = json.loads((out / "02-math" / "result.json").read_text())["tasks"]["probe_quick"]["metrics"]
    assert m1["kl_to_parent"] == m1["kl_to_base"] > 1e-4  # stage 1: the parent is the base
    assert m2["kl_to_parent"] > 1e-4 and m2["kl_to_base"] > m2["kl_to_parent"]
    assert 0 <= m2["top1_agreement_base"] < 1 and 0 <= m2["mutual_knn_base"] < 1
