"""Tokenization, collation and the target-span NLL of the plasticity protocol.

A sequence is ``prompt_ids + target_ids``, the two parts tokenized separately, so the scored tokens
cover exactly the target text:

* ``prompt_ids`` = ``tok(prompt, add_special_tokens=True)`` (BOS where the tokenizer adds one); with
  ``chat_template`` the prompt is first rendered as one user turn plus the generation prompt. When this
  is empty (empty prompt, no BOS) it is ``[eos_token_id]`` as a document separator, so that the first
  target token is predicted too.
* ``target_ids`` = ``tok(target, add_special_tokens=False)``; the bpb denominator is
  ``len(target.encode("utf-8"))``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import CollapseBenchError
from .data import Example


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    start: int  # index of the first target token (tokens start.. are scored)
    n_bytes: int  # UTF-8 bytes of the target text


def prompt_ids(tok: Any, prompt: str, chat_template: bool) -> list[int]:
    if chat_template and prompt:
        if not getattr(tok, "chat_template", None):
            raise CollapseBenchError("the task sets chat_template: true but the model's tokenizer has no chat template")
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False).input_ids
    else:
        ids = tok(prompt, add_special_tokens=True).input_ids
    if not ids:
        if tok.eos_token_id is None:
            raise CollapseBenchError("the tokenizer has neither a BOS nor an EOS token to start a plain-text item")
        ids = [tok.eos_token_id]
    return list(ids)


def encode(tok: Any, examples: Sequence[Example], chat_template: bool, max_len: int | None = None) -> list[Encoded]:
    """Tokenize examples; ``max_len`` cuts training sequences from the right (eval sequences are never cut)."""
    out = []
    for ex in examples:
        p = prompt_ids(tok, ex.prompt, chat_template)
        ids = p + list(tok(ex.target, add_special_tokens=False).input_ids)
        out.append(Encoded(ids[:max_len] if max_len else ids, len(p), len(ex.target.encode("utf-8"))))
    return out


def collate(items: Sequence[Encoded], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``scored`` (True at target token positions)."""
    T = max(len(e.ids) for e in items)
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), T), dtype=torch.long)
    scored = torch.zeros((len(items), T), dtype=torch.bool)
    for i, e in enumerate(items):
        ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        attn[i, : len(e.ids)] = 1
        scored[i, e.start : len(e.ids)] = True
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device), "scored": scored.to(device)}


def left_padded(seqs: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask for batched greedy generation."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        attn[i, T - len(s) :] = 1
    return ids.to(device), attn.to(device)


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the (HF) model's forward can compute logits at selected positions only."""
    return "logits_to_keep" in inspect.signature(type(model).forward).parameters


def forward_nll(model: Any, batch: dict[str, torch.Tensor], keep: bool) -> tuple[torch.Tensor, int]:
    """Forward pass and summed NLL (nats, float32, differentiable) of the scored tokens, each predicted
    from the previous position. With ``keep`` the LM head runs only at positions where some row is scored."""
    scored, targets = batch["scored"][:, 1:], batch["input_ids"][:, 1:]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    if keep:
        pos = scored.any(0).nonzero().squeeze(1)
        pos = pos if len(pos) else torch.zeros(1, dtype=torch.long, device=pos.device)
        logits = model(**inputs, logits_to_keep=pos).logits
        scored, targets = scored[:, pos], targets[:, pos]
    else:
        logits = model(**inputs).logits[:, :-1]
    picked = logits[scored].float()
    return F.cross_entropy(picked, targets[scored], reduction="sum"), int(scored.sum())
