"""Random ProbeBatch builders and row extractors shared by the hidden-state metric tests."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import torch

from collapse_bench.metrics.base import MetricValues, ProbeBatch
from collapse_bench.metrics.reference import ReferencedBatch, ReferenceRows, keep_logits


def make_batch(
    rng: np.random.Generator,
    B: int,
    T: int,
    d: int,
    n_layers: int,
    *,
    k: int = 4,
    dtype: torch.dtype = torch.float64,
    n_domains: int = 3,
    seq_start: int = 0,
    mlp_dim: int | None = None,
    ref_dim: int | None = None,
    holes: bool = False,
    lengths: list[int] | None = None,
    vocab: int | None = None,
) -> ProbeBatch:
    """Right-padded batch with random lengths; keep = positions 1..len-1 (minus random holes if ``holes``),
    sample = up to ``k`` random kept positions per sequence. Layers get different scales and means. With ``vocab``:
    random logits, ids and bytes, and the rows of a random reference (role ``reference``, see reference_rows)."""
    lengths = lengths if lengths is not None else [int(x) for x in rng.integers(2, T + 1, size=B)]
    keep = torch.zeros(B, T, dtype=torch.bool)
    sample = torch.zeros(B, T, dtype=torch.bool)
    for b, n in enumerate(lengths):
        keep[b, 1:n] = True
        if holes and n > 4:
            keep[b, rng.choice(np.arange(2, n - 1), size=min(2, n - 3), replace=False)] = False
        kept = keep[b].nonzero().squeeze(1).numpy()
        if kept.size:
            sample[b, rng.choice(kept, size=min(k, kept.size), replace=False)] = True
    hidden = []
    for l in range(n_layers):
        base = rng.normal(size=(1, 1, d)) * l
        h = base + rng.normal(size=(B, T, d)) * (1 + 0.3 * l) * rng.uniform(0.2, 2.0, size=d)
        h[:, 0] *= 100.0  # position 0 is huge and must never count
        hidden.append(torch.tensor(h, dtype=dtype))
    mlp = None
    if mlp_dim is not None:
        mlp = [
            torch.tensor(rng.normal(size=(B, T, mlp_dim)) * rng.uniform(0, 1, size=mlp_dim), dtype=dtype)
            for _ in range(n_layers - 1)
        ]
    ref = None
    if ref_dim is not None:
        mix = rng.normal(size=(d, ref_dim))
        ref = [torch.tensor(h.numpy() @ mix + 0.5 * rng.normal(size=(B, T, ref_dim)), dtype=dtype) for h in hidden]
    batch = ProbeBatch(
        hidden=hidden,
        keep=keep,
        sample=sample,
        seq_ids=torch.arange(seq_start, seq_start + B, dtype=torch.int64),
        domains=torch.tensor(rng.integers(0, n_domains, size=B), dtype=torch.int64),
        mlp=mlp,
        reference_hidden=ref,
    )
    if vocab is None:
        return batch
    attn = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        attn[b, :n] = 1
    rows = reference_rows(rng, batch, vocab, layers=list(range(1, n_layers)), ref_dim=ref_dim or d)
    own = {
        "logits": torch.tensor(rng.normal(size=(B, T, vocab)) * 2, dtype=torch.float32),
        "input_ids": torch.tensor(rng.integers(0, vocab, size=(B, T))),
        "attention_mask": attn,
        "scored_bytes": torch.tensor(rng.integers(5, 50, size=B)),
    }
    base = {f.name: getattr(batch, f.name) for f in fields(ProbeBatch)}
    return ReferencedBatch(**{**base, **own}, references={"reference": rows})


def reference_rows(
    rng: np.random.Generator, batch: ProbeBatch, vocab: int, *, layers: list[int], ref_dim: int, k: int = 16
) -> ReferenceRows:
    """Top-``k`` rows of random reference logits at ``batch``'s kept positions; pooled states for ~80% of the sequences."""
    B, T = batch.keep.shape
    ref = ProbeBatch(
        hidden=batch.hidden,
        keep=batch.keep,
        sample=batch.sample,
        seq_ids=batch.seq_ids,
        domains=batch.domains,
        logits=torch.tensor(rng.normal(size=(B, T, vocab)) * 2, dtype=torch.float32),
    )
    stats = keep_logits(ref, k)
    assert stats is not None
    pooled = torch.tensor(rng.normal(size=(B, len(layers), ref_dim)), dtype=torch.float32)
    mask = torch.tensor(rng.uniform(size=B) < 0.8)
    return ReferenceRows(stats.topk_index, stats.topk_logp, stats.log_tail, pooled, mask, tuple(layers))


def make_batches(seed: int, sizes: list[int], T: int = 12, d: int = 8, n_layers: int = 3, **kw) -> list[ProbeBatch]:
    rng = np.random.default_rng(seed)
    out, start = [], 0
    for B in sizes:
        out.append(make_batch(rng, B, T, d, n_layers, seq_start=start, **kw))
        start += B
    return out


def rows(batches: list[ProbeBatch], layer: int, mask: str = "keep", source: str = "hidden") -> np.ndarray:
    """Concatenated (b, t)-ordered rows of ``mask`` tokens at ``layer`` (float64)."""
    out = []
    for batch in batches:
        tensors = getattr(batch, source)
        out.append(tensors[layer][getattr(batch, mask)].double().numpy())
    return np.concatenate(out)


def sequences(batches: list[ProbeBatch], layer: int, mask: str = "keep") -> list[np.ndarray]:
    """Per-sequence arrays of the ``mask`` tokens at ``layer``, in position order."""
    return [b.hidden[layer][i][getattr(b, mask)[i]].double().numpy() for b in batches for i in range(b.keep.shape[0])]


def labels(batches: list[ProbeBatch], mask: str = "keep") -> np.ndarray:
    """Domain label of every ``mask`` token, same order as ``rows``."""
    return np.concatenate([b.domains[:, None].expand_as(b.keep)[getattr(b, mask)].numpy() for b in batches])


def run(acc, batches: list[ProbeBatch]):
    for batch in batches:
        acc.update(batch)
    return acc


def assert_values_close(a: MetricValues, b: MetricValues, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    assert a.per_layer.keys() == b.per_layer.keys()
    for key in a.per_layer:
        for x, y in zip(a.per_layer[key], b.per_layer[key], strict=True):
            assert (x is None) == (y is None), key
            if x is not None:
                assert np.isclose(x, y, rtol=rtol, atol=atol), (key, x, y)
    assert a.scalars.keys() == b.scalars.keys()
    for key in a.scalars:
        assert np.isclose(a.scalars[key], b.scalars[key], rtol=rtol), key
