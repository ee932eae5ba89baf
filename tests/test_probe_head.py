"""The deferred output head (probe/head.py): the probe computes the kept positions' logits from the last hidden
state itself, never the (B, T, V) tensor. Checked against the model's own forward: head(hidden[-1]) equals its
logits (Llama; Gemma 3 with final-logit soft-capping), a pass with the deferred head gives the metrics of a pass with
full logits, and a model whose logits are not head(hidden[-1]) keeps full logits."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from cli_helpers import close
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaForCausalLM

from collapse_bench.metrics import registry
from collapse_bench.metrics.base import LogitRows
from collapse_bench.models import load_model
from collapse_bench.probe import head as head_mod
from collapse_bench.probe.corpus import TokenizedText
from collapse_bench.probe.runner import ProbeInputs, combine, run_probe


def batch(vocab: int, lengths: tuple[int, ...] = (9, 5, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.zeros((len(lengths), max(lengths)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(3, vocab, (n,), generator=gen)
        mask[b, :n] = 1
    return ids, mask


def own_logits(model, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    return out.logits, out.hidden_states[-1]


def tiny_gemma(cap: float | None) -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=cap, sliding_window=8,
    )  # fmt: skip
    return Gemma3ForCausalLM(cfg).eval()


def test_head_of_llama_is_its_logits(tiny_model_dir: Path) -> None:
    model = load_model(str(tiny_model_dir), device="cpu").model
    ids, mask = batch(int(model.config.vocab_size))
    logits, final = own_logits(model, ids, mask)
    fn = head_mod.head_of(model)
    assert fn is not None and fn[1] == logits.shape[-1]
    with torch.inference_mode():
        assert torch.allclose(fn[0](final), logits, rtol=1e-6, atol=1e-6)
        rows = LogitRows(final, fn[0], fn[1], torch.device("cpu"))
        flat = logits.reshape(-1, fn[1])
        pick = torch.tensor([0, 13, 30, 2])
        assert torch.allclose(rows.select(pick), flat[pick], rtol=1e-6, atol=1e-6)
    assert rows.shape == tuple(logits.shape)


def test_gemma3_soft_capping_is_applied() -> None:
    model = tiny_gemma(cap=0.05)  # a cap below the random logits: capped and uncapped differ
    ids, mask = batch(160)
    logits, final = own_logits(model, ids, mask)
    fn = head_mod.head_of(model)
    assert fn is not None
    with torch.inference_mode():
        assert torch.allclose(fn[0](final), logits, rtol=1e-5, atol=1e-6)
        assert float(logits.abs().max()) <= 0.05 < float(model.lm_head(final).abs().max())


class Doubled(LlamaForCausalLM):
    """Logits that are not head(hidden[-1]): the forward scales them after the head."""

    def forward(self, *args, logits_to_keep=0, **kwargs):
        out = super().forward(*args, logits_to_keep=logits_to_keep, **kwargs)
        out.logits = out.logits * 2.0
        return out


def texts(vocab: int, n: int = 10) -> ProbeInputs:
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        length = 6 + (5 * i) % 17  # ragged: batches carry padding
        items.append(
            TokenizedText(torch.randint(3, vocab, (length,), generator=gen).tolist(), 3 * length, list(range(1, length, 3)))
        )
    return ProbeInputs(items, [i % 2 for i in range(n)], 0)


def probe(model, inputs: ProbeInputs):
    factory = registry.probe_accumulators(n_domains=2, reservoir_size=64, seed=0)
    accs, _ = run_probe(model, inputs, factory, batch_size=4, progress=False)
    return combine([a.compute() for a in accs])


def test_a_deferred_pass_gives_the_full_logits_pass_metrics(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(str(tiny_model_dir), device="cpu").model
    inputs = texts(int(model.config.vocab_size))
    calls: list[int] = []
    real = model.forward

    @functools.wraps(real)  # keeps the signature the head check reads
    def spy(*a, **k):
        calls.append(k.get("logits_to_keep", 0))
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(model, "forward", spy)
        lazy = probe(model, inputs)
    assert calls == [0, 1, 1, 1]  # the check (16 tokens, full logits), then every batch with the last position's only
    with monkeypatch.context() as m:
        m.setattr(head_mod, "head_of", lambda model: None)
        full = probe(model, inputs)  # full logits throughout
    for key in ("logit_entropy", "top1_mass", "bits_per_byte", "confident_fraction"):
        assert key in full.scalars, key
    assert set(lazy.scalars) == set(full.scalars) and set(lazy.per_layer) == set(full.per_layer)
    moved = [k for k, v in full.scalars.items() if not close(lazy.scalars[k], v, 1e-6)]
    assert not moved, moved


def test_logits_that_are_not_the_head_keep_full_logits(tiny_model_dir: Path) -> None:
    plain = load_model(str(tiny_model_dir), device="cpu").model
    doubled = Doubled(plain.config).eval()
    doubled.load_state_dict(plain.state_dict())
    ids, mask = batch(int(plain.config.vocab_size))
    cpu = torch.device("cpu")
    for model, want in ((doubled, "off"), (plain, "on")):
        deferred = head_mod.DeferredHead(model)
        assert deferred.state == "unchecked" and deferred.forward_kwargs() == {}
        deferred.check(model, ids, mask)
        assert deferred.state == want
        with torch.inference_mode():
            out = model(
                input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False, **deferred.forward_kwargs()
            )
        z = deferred.logits(out, cpu)
        if want == "off":
            assert isinstance(z, torch.Tensor) and z.shape == (*ids.shape, plain.config.vocab_size)
        else:
            assert isinstance(z, LogitRows) and out.logits.shape[1] == 1 and deferred.forward_kwargs() == {"logits_to_keep": 1}
    assert head_mod.head_of(torch.nn.Linear(2, 2)) is None  # no causal-LM forward
