"""KL to a reference (collapse_bench/metrics/divergence.py) on the tiny random Llama, both ways: the exact
full-vocabulary KL computed here in numpy from both models' logits vs the reference-cache approximation
(written and read back through collapse_bench/probe/refcache.py). With K = vocab the two agree; with K = 64
the approximation is below the exact KL and within the documented error bound. Plus the accumulator's
streaming == merge, its quantiles and per-domain values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from metric_helpers import make_batches, run

from collapse_bench.metrics.base import ProbeBatch
from collapse_bench.metrics.divergence import KLAccumulator
from collapse_bench.metrics.reference import ReferencedBatch, sequence_sample
from collapse_bench.probe.corpus import tokenize
from collapse_bench.probe.refcache import CacheWriter, ReferenceCache
from collapse_bench.probe.references import CachedProvider
from collapse_bench.probe.runner import make_batch_tensors

TEXTS = [
    "The quick brown fox jumps over the lazy dog and keeps running into the forest.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Question: what is 12 times 7? Answer: 12 * 7 = 84.",
    "User: hello there, how are you today?\nAssistant: fine, thank you.",
    "Whisk the eggs with sugar until pale, then fold in the flour and bake.",
    "import os\nfor name in sorted(os.listdir('.')):\n    print(name)",
]


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path):
    """The tiny model, a second random one (same tokenizer) and a peaked variant (final norm x 25: small tails)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from collapse_bench.models.tiny import build_tiny_model

    other_dir = build_tiny_model(tiny_model_dir.parent / "tiny-seed1", seed=1)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    a = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    b = AutoModelForCausalLM.from_pretrained(other_dir).eval()
    peaked = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        peaked.model.norm.weight.mul_(25.0)
    return tok, {"a": a, "b": b, "peaked": peaked}


def forward(model, tok, first: int = 0) -> ProbeBatch:
    toks = tokenize(tok, TEXTS, 64, 8, 0)
    t = make_batch_tensors(toks, tok.pad_token_id, "cpu")
    with torch.no_grad():
        out = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], output_hidden_states=True)
    return ProbeBatch(
        hidden=[h.float() for h in out.hidden_states],
        keep=t["keep"],
        sample=t["sample"],
        seq_ids=torch.arange(first, first + len(toks)),
        domains=torch.tensor([i % 2 for i in range(len(toks))]),
        logits=out.logits,
    )


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def cache_kl(ref: ProbeBatch, ckpt: ProbeBatch, k: int, tmp: Path) -> np.ndarray:
    """Per-position KL_K through the real cache: write ref's cache with top-k, read it, feed the accumulator."""
    writer = CacheWriter(tmp / f"c{k}", {"tokens_sha256": "x"}, sample=sequence_sample(0, 6), layers=[1, 2], k=k)
    writer.update(ref)
    assert writer.commit() is not None
    provider = CachedProvider(ReferenceCache(tmp / f"c{k}"), (1, 2), [0, 1])
    rows = provider.rows(0, ckpt.keep)
    batch = ReferencedBatch(**{f: getattr(ckpt, f) for f in ckpt.__dataclass_fields__}, references={"base": rows})
    acc = KLAccumulator("base", 2)
    acc.update(batch)
    return acc.parts[0][0]


def exact_and_bound(ref: ProbeBatch, ckpt: ProbeBatch, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy: exact KL, the tail's own term p_T KL(a||b) (a, b = p, q renormalised on the tail) and the documented
    bound p_T [log(p_K / p_T) + log(q_T / q_min)], per kept position."""
    keep = ref.keep.numpy()
    lp, lq = np_log_softmax(ref.logits.numpy()[keep]), np_log_softmax(ckpt.logits.numpy()[keep])
    p, q = np.exp(lp), np.exp(lq)
    exact = (p * (lp - lq)).sum(-1)
    top = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    in_top = np.zeros_like(p, dtype=bool)
    np.put_along_axis(in_top, top, True, axis=-1)
    pT, qT = np.where(in_top, 0, p).sum(-1), np.where(in_top, 0, q).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):  # K = V: empty tails
        a_over_b = (p / pT[:, None]) / (q / qT[:, None])
        tail_term = np.where(in_top, 0, p * np.log(a_over_b)).sum(-1)  # = p_T KL(a || b)
        pK = np.take_along_axis(p, top[:, -1:], -1)[:, 0]
        bound = pT * (np.log(pK / pT) + np.log(qT / q.min(-1)))
    return exact, tail_term, bound


@pytest.mark.parametrize("pair", [("a", "b"), ("peaked", "a"), ("a", "peaked")])
def test_full_vocabulary_cache_equals_exact_kl(models, pair, tmp_path: Path) -> None:
    tok, m = models
    ref, ckpt = forward(m[pair[0]], tok), forward(m[pair[1]], tok)
    V = ref.logits.shape[-1]
    exact, _, _ = exact_and_bound(ref, ckpt, V)
    approx = cache_kl(ref, ckpt, V, tmp_path)
    assert exact.min() > 1e-4  # the models differ
    np.testing.assert_allclose(approx, exact, atol=1e-6, rtol=0)


@pytest.mark.parametrize("pair", [("a", "b"), ("peaked", "a"), ("a", "peaked"), ("peaked", "b")])
def test_top64_cache_is_below_exact_kl_within_the_bound(models, pair, tmp_path: Path) -> None:
    tok, m = models
    ref, ckpt = forward(m[pair[0]], tok), forward(m[pair[1]], tok)
    exact, tail_term, bound = exact_and_bound(ref, ckpt, 64)
    approx = cache_kl(ref, ckpt, 64, tmp_path)
    gap = exact - approx
    # the gap is the lumped tail's own KL (log-sum inequality), up to the float32 log-probabilities (1e-6)
    np.testing.assert_allclose(gap, tail_term, atol=1e-6, rtol=0)
    assert (gap >= -1e-6).all()
    assert (gap <= bound + 1e-6).all()
    assert (bound > 0).all() and tail_term.max() > 1e-6  # a non-trivial check: the tails matter here


def test_model_against_itself(models, tmp_path: Path) -> None:
    tok, m = models
    for name in ("a", "peaked"):
        batch = forward(m[name], tok)
        kl = cache_kl(batch, forward(m[name], tok), 64, tmp_path)
        assert np.abs(kl).max() < 1e-9


def np_acc_reference(batches) -> dict[str, float]:
    """Per-position KL_K and agreement recomputed in numpy from the batches' reference rows."""
    kl, agree, dom = [], [], []
    for b in batches:
        rows = b.references["reference"]
        keep = b.keep.numpy()
        z = b.logits.double().numpy()[keep]
        lq_all = np_log_softmax(z)
        idx = rows.topk_index.numpy()
        lp = rows.topk_logp.double().numpy()
        lq64 = np.take_along_axis(lq_all, idx, -1)
        lq = lq64.astype(np.float32).astype(np.float64)  # rounded like the stored log p
        p = np.exp(lp)
        qT = np.maximum(1 - np.exp(lq64).sum(-1), 1e-30)
        pT = np.exp(rows.log_tail.double().numpy())
        kl.append((p * (lp - lq)).sum(-1) + np.where(pT > 0, pT * (np.log(np.where(pT > 0, pT, 1)) - np.log(qT)), 0))
        agree.append(np.take_along_axis(z, idx[:, :1], -1)[:, 0] >= z.max(-1))
        dom.append(np.broadcast_to(b.domains.numpy()[:, None], keep.shape)[keep])
    kl_all, agree_all, dom_all = np.concatenate(kl), np.concatenate(agree), np.concatenate(dom)
    out = {
        "kl_to_reference": kl_all.mean(),
        "kl_to_reference_q90": np.quantile(kl_all, 0.9),
        "kl_to_reference_q99": np.quantile(kl_all, 0.99),
        "top1_agreement_reference": agree_all.mean(),
    }
    for c in range(3):
        out[f"kl_to_reference@d{c}"] = kl_all[dom_all == c].mean()
        out[f"top1_agreement_reference@d{c}"] = agree_all[dom_all == c].mean()
    return out


def test_accumulator_against_numpy_and_merge_order() -> None:
    bs = make_batches(3, [5, 4, 6, 3], T=12, d=6, n_layers=3, vocab=50, holes=True)
    names = ["d0", "d1", "d2"]
    whole = run(KLAccumulator("reference", 3, names), bs).compute()
    expected = np_acc_reference(bs)
    assert whole.scalars.keys() == expected.keys()
    for key, value in expected.items():
        assert whole.scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert whole.counts["kl_to_reference_positions"] == sum(int(b.keep.sum()) for b in bs)
    left, right = run(KLAccumulator("reference", 3, names), bs[2:]), run(KLAccumulator("reference", 3, names), bs[:2])
    assert left.merge(right).compute() == whole  # exactly: compute() sorts by (seq_id, position)
    empty = KLAccumulator("reference", 3, names).compute()
    assert all(v is None for v in empty.scalars.values()) and empty.counts["kl_to_reference_positions"] == 0


@pytest.mark.parametrize("V", [64 * 200, 64 * 130 + 5, 64 * 100])
def test_block_topk_equals_torch_topk(V: int) -> None:
    """The two-level top-k gives torch.topk's values exactly (ties and -inf included), ids pointing at them."""
    from collapse_bench.metrics.reference import block_topk

    g = torch.Generator().manual_seed(V)
    z = torch.randn(40, V, generator=g) * 4
    z[:10] = torch.round(z[:10])  # many exact ties
    z[10:15, ::3] = float("-inf")
    z[15, :] = 1.0  # one constant row
    z[16:20] = z[16:20] + torch.linspace(0, 30, V)  # the large values gathered in the last blocks
    for k in (1, 64):
        m, values, ids = block_topk(z, k)
        ref_values, _ = torch.topk(z, k, dim=-1)
        assert torch.equal(values, ref_values)
        assert torch.equal(z.gather(1, ids), values)
        assert torch.equal(m, z.amax(dim=-1))
        assert all(len(set(r.tolist())) == k for r in ids)


def test_identical_distributions_give_kl_exactly_zero_not_rounding_negatives() -> None:
    """KL ≥ 0: a checkpoint equal to its reference (a permuted model) gives 0, never -1e-9 (the validator's range)."""
    from collapse_bench.metrics.divergence import lumped_kl

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 1000, generator=g) * 3
    logp = torch.log_softmax(logits, -1)
    top, ids = logp.topk(64, -1)
    tail = torch.log1p(-top.exp().sum(-1).clamp(max=1 - 1e-12))
    noisy = torch.log_softmax(logits + 1e-6 * torch.randn(500, 1000, generator=g), -1)  # rounding-size change
    q_top = noisy.gather(-1, ids)
    q_tail = torch.log1p(-q_top.exp().sum(-1).clamp(max=1 - 1e-12))
    kl = lumped_kl(top, tail, q_top, q_tail)
    assert (kl >= 0).all() and float(kl.max()) < 1e-5  # float32 log-probs: first-order rounding terms ~1e-7
    assert float(lumped_kl(top, tail, top, tail).abs().max()) == 0.0


def test_keep_logits_sums_and_tails_against_float64_numpy() -> None:
    """keep_logits' log-sum-exp, entropy and log tails against numpy float64 from the same float32 logits, on a
    vocabulary that takes the two-level top-k (V = 128 blocks of 64) and rows so peaked that the top-64's complement
    is < 1e-7 of the mass (the tail's own sum, not a cancelling difference); a role holding this checkpoint's own
    top-64 ids gets bitwise its own tails (a checkpoint compared with itself)."""
    from collapse_bench.metrics.reference import ReferenceRows, keep_logits

    g = torch.Generator().manual_seed(3)
    B, T, V = 2, 24, 128 * 64
    z = torch.randn(B, T, V, generator=g) * 2
    z[0, 5:9, :64] += 40.0  # peaked rows: tail share ~e^-40
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[:, 0] = False
    keep[1, 20:] = False
    ids = torch.randint(0, V, (B, T), generator=g)
    n = int(keep.sum())
    fields = dict(hidden=[z], keep=keep, sample=keep, seq_ids=torch.arange(B), domains=torch.zeros(B, dtype=torch.long))
    own = keep_logits(ReferencedBatch(**fields, logits=z, input_ids=ids))
    assert own is not None
    other = torch.stack([torch.randperm(V, generator=g)[:64] for _ in range(n)])  # distinct ids, as a top-64's
    refs = {
        "same": ReferenceRows(topk_index=own.topk_index, topk_logp=own.topk_logp, log_tail=own.log_tail),
        "other": ReferenceRows(topk_index=other, topk_logp=torch.zeros(n, 64), log_tail=torch.zeros(n)),
    }
    batch = ReferencedBatch(**fields, logits=z, input_ids=ids, references=refs)
    got = keep_logits(batch)
    assert got is not None
    zz = z.reshape(-1, V)[keep.reshape(-1)].double().numpy()
    m = zz.max(1, keepdims=True)
    e = np.exp(zz - m)
    s = e.sum(1)
    np.testing.assert_allclose(got.lse.numpy(), m[:, 0] + np.log(s), rtol=0, atol=1e-6)  # float32 exp values
    p = e / s[:, None]
    np.testing.assert_allclose(got.entropy.numpy(), -(p * np.log(np.maximum(p, 1e-300))).sum(1), rtol=0, atol=1e-5)

    def log_tail(idx: np.ndarray) -> np.ndarray:
        mask = np.ones_like(p, dtype=bool)
        np.put_along_axis(mask, idx, False, axis=1)
        return np.log((p * mask).sum(1))  # the tail's own sum

    want = log_tail(got.topk_index.numpy())
    assert want.min() < np.log(1e-7)  # the peaked rows do reach the tail's own-sum branch
    np.testing.assert_allclose(got.log_tail.double().numpy(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.ref_log_tail["other"].double().numpy(), log_tail(other.numpy()), rtol=1e-6, atol=1e-6)
    assert torch.equal(got.ref_log_tail["same"], got.log_tail)
