"""Logit metrics vs independent references (numpy, closed forms) and streaming == batch."""

from __future__ import annotations

import math

import numpy as np
import torch

from collapse_bench.metrics.base import ProbeBatch
from collapse_bench.metrics.logits import LogitAccumulator, bits_per_byte, entropy, row_stats


def np_entropy(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return -(p * np.log(p)).sum(-1)


def test_row_stats_against_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 300, generator=g) * 4
    lse, ent, top1 = row_stats(z)
    zn = z.numpy().astype(np.float64)
    np.testing.assert_allclose(ent.numpy(), np_entropy(zn), rtol=1e-5)
    np.testing.assert_allclose(lse.numpy(), np.log(np.exp(zn).sum(-1)), rtol=1e-6)
    p = np.exp(zn - lse.numpy()[:, None])
    np.testing.assert_allclose(top1.numpy(), p.max(-1), rtol=1e-5)
    np.testing.assert_allclose(entropy(z).numpy(), np_entropy(zn), rtol=1e-10)


def test_closed_forms() -> None:
    V = 64
    _, ent, top1 = row_stats(torch.zeros(3, V))  # uniform
    np.testing.assert_allclose(ent.numpy(), math.log(V), rtol=1e-6)
    np.testing.assert_allclose(top1.numpy(), 1 / V, rtol=1e-6)
    z = torch.full((1, V), -1e4)
    z[0, 3] = 0.0  # one-hot
    _, ent, top1 = row_stats(z)
    assert abs(float(ent[0])) < 1e-6 and abs(float(top1[0]) - 1) < 1e-6


def test_bits_per_byte_hand_computation() -> None:
    # 3 sequences of uniform logits over V tokens: every target costs ln V nats.
    V, lengths, nbytes = 32, [5, 7, 4], [11, 20, 9]
    T = max(lengths)
    logits = torch.zeros(3, T, V)
    ids = torch.randint(0, V, (3, T))
    attn = torch.zeros(3, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        attn[b, :n] = 1
    keep = attn.bool().clone()
    keep[:, 0] = False
    hidden = [torch.zeros(3, T, 4)]
    batch = ProbeBatch(
        hidden=hidden,
        keep=keep,
        sample=keep,
        seq_ids=torch.arange(3),
        domains=torch.zeros(3, dtype=torch.long),
        logits=logits,
        input_ids=ids,
        attention_mask=attn,
        scored_bytes=torch.tensor(nbytes),
    )
    acc = LogitAccumulator()
    acc.update(batch)
    got = acc.compute().scalars
    targets = sum(n - 1 for n in lengths)  # token 0 is never a target
    expected = targets * math.log(V) / (sum(nbytes) * math.log(2))
    assert math.isclose(got["bits_per_byte"], expected, rel_tol=1e-9)
    assert math.isclose(bits_per_byte(targets * math.log(V), sum(nbytes)), expected)
    assert math.isclose(got["logit_entropy"], math.log(V), rel_tol=1e-6)
    assert math.isclose(got["top1_mass"], 1 / V, rel_tol=1e-6)


def test_streaming_equals_batch_and_merge() -> None:
    g = torch.Generator().manual_seed(1)
    B, T, V = 6, 9, 40
    logits = torch.randn(B, T, V, generator=g) * 3
    ids = torch.randint(0, V, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.long)
    attn[2, 5:] = 0
    attn[4, 3:] = 0
    keep = attn.bool().clone()
    keep[:, 0] = False
    nbytes = torch.randint(10, 50, (B,), generator=g)

    def batch(sl: slice) -> ProbeBatch:
        return ProbeBatch(
            hidden=[torch.zeros(B, T, 2)[sl]],
            keep=keep[sl],
            sample=keep[sl],
            seq_ids=torch.arange(B)[sl],
            domains=torch.zeros(B, dtype=torch.long)[sl],
            logits=logits[sl],
            input_ids=ids[sl],
            attention_mask=attn[sl],
            scored_bytes=nbytes[sl],
        )

    whole = LogitAccumulator()
    whole.update(batch(slice(0, B)))
    a, b = LogitAccumulator(), LogitAccumulator()
    a.update(batch(slice(0, 2)))
    b.update(batch(slice(2, 4)))
    b.update(batch(slice(4, 6)))
    merged = a.merge(b).compute().scalars
    ref = whole.compute().scalars
    for key, value in ref.items():
        assert math.isclose(merged[key], value, rel_tol=1e-12), key
    # naive recomputation of bpb and entropy
    logp = torch.log_softmax(logits.double(), -1)
    nll, ent, n = 0.0, 0.0, 0
    for bi in range(B):
        L = int(attn[bi].sum())
        nll -= float(logp[bi, torch.arange(L - 1), ids[bi, 1:L]].sum())
        ent += float(-(logp[bi, 1:L].exp() * logp[bi, 1:L]).sum())
        n += L - 1
    assert math.isclose(ref["bits_per_byte"], nll / (int(nbytes.sum()) * math.log(2)), rel_tol=1e-9)
    assert math.isclose(ref["logit_entropy"], ent / n, rel_tol=1e-6)
