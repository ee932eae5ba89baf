"""The probe pass end to end on a tiny model: every metric equals a naive numpy recomputation from
stored hidden states; user tasks work from --tasks-dir; the result validates; same seed, same numbers."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from collapse_bench.evaluate import EvaluateRequest, evaluate
from collapse_bench.probe.corpus import tokenize
from collapse_bench.probe.task import summary_layers
from collapse_bench.results import validate_result

TEXTS = {
    "legal": [
        "The party of the first part shall indemnify the party of the second part against all claims.",
        "This agreement is governed by the laws of the state and may be amended only in writing.",
        "Notices must be delivered by registered mail to the addresses listed in schedule A below.",
    ],
    "cooking": [
        "Whisk the eggs with sugar until pale, then fold in the flour and bake for twenty minutes.",
        "Season the soup with salt, pepper and a squeeze of lemon before serving it hot.",
        "Slice the onions thinly and fry them slowly in butter until they turn golden brown.",
        "Knead the dough for ten minutes, cover it, and let it rise in a warm place.",
    ],
}


def write_user_task(root: Path) -> Path:
    tasks = root / "usertasks"
    (tasks / "probe").mkdir(parents=True)
    for domain, texts in TEXTS.items():
        with open(tasks / "probe" / f"{domain}.jsonl", "w") as fh:
            for i, t in enumerate(texts):
                fh.write(json.dumps({"id": f"{domain}-{i}", "body": t}) + "\n")
    (tasks / "probe" / "mine.yaml").write_text(
        "name: my_probe\nversion: 1\nkind: probe\ndescription: user texts\n"
        "data:\n  - {path: legal.jsonl, domain: legal, template: '{body}'}\n"
        "  - {path: cooking.jsonl, domain: cooking, template: '{body}'}\n"
        "params: {max_tokens: 24, tokens_per_sequence: 6, reservoir_size: 4096, batch_size: 3}\n"
    )
    return tasks


def np_erank(H: np.ndarray) -> float:
    s = np.linalg.svd(H - H.mean(0), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def np_entropy(Z: np.ndarray) -> float:
    U = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    U = U - U.mean(0)
    K = U @ U.T
    lam = np.clip(np.linalg.eigvalsh(K / np.trace(K)), 0, None)
    lam = lam[lam > 1e-15]
    return float(-(lam * np.log(lam)).sum() / np.log(min(Z.shape)))


def np_mean_cos(H: np.ndarray) -> float:
    U = H / np.linalg.norm(H, axis=1, keepdims=True)
    C = U @ U.T
    n = len(H)
    return float((C.sum() - np.trace(C)) / (n * (n - 1)))


def test_probe_equals_naive_recomputation(tiny_model_dir: Path, tmp_path: Path) -> None:
    tasks = write_user_task(tmp_path)
    out = tmp_path / "r.json"
    path, result = evaluate(
        EvaluateRequest(model=str(tiny_model_dir), tasks=["my_probe"], tasks_dirs=[str(tasks)], output=str(out), progress=False)
    )
    assert path == out and out.is_file()
    validate_result(json.loads(out.read_text()))
    block = result["tasks"]["my_probe"]
    assert set(block["data"]) == {"task:legal.jsonl", "task:cooking.jsonl"}
    per = block["per_layer"]

    # naive reference: one forward per text, keep every state, recompute with numpy
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = TEXTS["legal"] + TEXTS["cooking"]
    domains = [0] * 3 + [1] * 4  # sorted domain names: cooking=0? -> compute from result
    names = block["counts"]["domains"]
    domains = [names.index("legal")] * 3 + [names.index("cooking")] * 4
    toks = tokenize(tok, texts, 24, 6, 0)
    mlp_in: list[torch.Tensor] = []
    hooks = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: mlp_in.append(a[0][0])) for layer in model.model.layers]
    states, logits, acts = [], [], []
    with torch.no_grad():
        for t in toks:
            mlp_in.clear()
            o = model(torch.tensor([t.ids]), output_hidden_states=True)
            states.append([h[0].double().numpy() for h in o.hidden_states])
            logits.append(o.logits[0].double())
            acts.append([a.double().numpy() for a in mlp_in])
    for h in hooks:
        h.remove()
    L1 = len(states[0])
    assert len(per["effective_rank"]) == L1 == model.config.num_hidden_layers + 1
    for l in range(L1):
        kept = [s[l][1:] for s in states]  # position 0 dropped
        sampled = np.concatenate([s[l][t.sample_positions] for s, t in zip(states, toks)])
        allk = np.concatenate(kept)
        assert per["effective_rank"][l] == pytest.approx(np_erank(sampled), rel=1e-6)
        assert per["anisotropy"][l] == pytest.approx(np_mean_cos(allk), rel=1e-5, abs=1e-6)
        assert per["anisotropy_centered"][l] == pytest.approx(np_mean_cos(sampled - sampled.mean(0)), rel=1e-5, abs=1e-6)
        assert per["prompt_entropy"][l] == pytest.approx(
            np.mean([np_entropy(s[l][t.sample_positions]) for s, t in zip(states, toks)]), rel=1e-6
        )
        pooled = np.stack([k.mean(0) for k in kept])
        assert per["dataset_entropy"][l] == pytest.approx(np_entropy(pooled), rel=1e-6)
        angles = []
        for k in kept:
            v = np.diff(k, axis=0)
            for a, b in itertools.pairwise(v):  # steps of zero length (a repeated token at layer 0) have no angle
                if np.linalg.norm(a) > 0 and np.linalg.norm(b) > 0:
                    angles.append(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1)))
        assert per["curvature"][l] == pytest.approx(np.mean(angles), rel=1e-5)
        assert per["token_uniformity"][l] == pytest.approx(
            np.mean([np.linalg.norm(k - k.mean(0)) / np.linalg.norm(k) for k in kept]), rel=1e-5
        )
        labels = np.concatenate([[d] * len(k) for d, k in zip(domains, kept)])
        mu = allk.mean(0)
        between = sum((labels == c).sum() * np.sum((allk[labels == c].mean(0) - mu) ** 2) for c in set(labels))
        assert per["domain_separation"][l] == pytest.approx(between / np.sum((allk - mu) ** 2), rel=1e-5)
        if l == 0:
            assert per["layer_cosine"][0] is None and per["dormant_fraction"][0] is None
        else:
            prev = np.concatenate([s[l - 1][1:] for s in states])
            cos = (allk * prev).sum(1) / (np.linalg.norm(allk, axis=1) * np.linalg.norm(prev, axis=1))
            assert per["layer_cosine"][l] == pytest.approx(cos.mean(), rel=1e-5)
            A = np.concatenate([a[l - 1][t.sample_positions] for a, t in zip(acts, toks)])
            s_i = np.abs(A).mean(0) / np.abs(A).mean()
            assert per["dormant_fraction"][l] == pytest.approx(np.mean(s_i <= 0.025), abs=1e-12)
    # logit metrics
    nll, nbytes, ent, top1, n = 0.0, 0, 0.0, 0.0, 0
    for t, z, _text in zip(toks, logits, texts):
        logp = torch.log_softmax(z, -1)
        ids = torch.tensor(t.ids)
        nll -= float(logp[torch.arange(len(ids) - 1), ids[1:]].sum())
        nbytes += t.scored_bytes
        p = logp[1:].exp()
        ent += float(-(p * logp[1:]).sum())
        top1 += float(p.max(-1).values.sum())
        n += len(ids) - 1
    m = block["metrics"]
    assert m["bits_per_byte"] == pytest.approx(nll / (nbytes * math.log(2)), rel=1e-6)
    assert m["logit_entropy"] == pytest.approx(ent / n, rel=1e-6)
    assert m["top1_mass"] == pytest.approx(top1 / n, rel=1e-6)
    # scalar summaries are the documented means over the card layers
    layers = summary_layers(L1)
    assert block["summary_layers"] == layers
    assert m["effective_rank"] == pytest.approx(np.mean([per["effective_rank"][i] for i in layers]))


def test_scored_bytes_cover_tokens_one_to_end(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Déjà vu: naïve café ☕ costs 3€."
    (t,) = tokenize(tok, [text], 1000, 4, 0)
    first = tok.decode(t.ids[:1])
    assert t.scored_bytes == len(text.encode()) - len(first.encode())
    ascii_text = "Hello wonderful world of many small tokens"
    (short,) = tokenize(tok, [ascii_text], 5, 4, 0)  # truncated: only the covered span is scored
    covered = tok.decode(short.ids[1:])
    assert 0 < len(covered) < len(ascii_text) - len(tok.decode(short.ids[:1]))
    assert short.scored_bytes == len(covered.encode())


def test_same_seed_same_numbers(tiny_model_dir: Path, tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        _, r = evaluate(EvaluateRequest(model=str(tiny_model_dir), output=str(tmp_path / f"r{i}.json"), progress=False, seed=3))
        runs.append(r["tasks"]["probe_quick"])
    assert runs[0]["metrics"] == runs[1]["metrics"] and runs[0]["per_layer"] == runs[1]["per_layer"]
    assert runs[0]["hash"] == runs[1]["hash"]


@pytest.mark.slow
def test_smollm2_quick_suite_offline(smollm2, tmp_path: Path) -> None:
    """The demo job: the default model on the quick suite, no data dir."""
    _, r = evaluate(EvaluateRequest(model="smollm2-135m-instruct", output=str(tmp_path / "q.json"), progress=False))
    block = r["tasks"]["probe_quick"]
    assert len(block["per_layer"]["effective_rank"]) == 31 and block["per_layer"]["post_final_norm"][-1] is True
    assert all(k.startswith("builtin:") for k in block["data"])
    m = block["metrics"]
    assert 0.3 < m["bits_per_byte"] < 2.0  # a trained 135M model on English/code, far below random (~15.6 bits/token)
    assert 1 < m["effective_rank"] < 576 and 0 <= m["anisotropy"] <= 1


@pytest.mark.slow
def test_smollm2_standard_probe_31_layers(smollm2, data_dir: Path, tmp_path: Path) -> None:
    _, r = evaluate(
        EvaluateRequest(
            model="smollm2-135m-instruct",
            suite="standard",
            tasks=["probe_standard"],
            data_dir=str(data_dir),
            output=str(tmp_path / "s.json"),
            progress=False,
            limit=6,
        )
    )
    block = r["tasks"]["probe_standard"]
    assert all(len(v) == 31 for v in block["per_layer"].values())
    assert len(block["counts"]["domains"]) >= 6
    assert (
        block["data"]["gsm8k/test.jsonl"]
        == __import__("hashlib").sha256((data_dir / "gsm8k/test.jsonl").read_bytes()).hexdigest()
    )
