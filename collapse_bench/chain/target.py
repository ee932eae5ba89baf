"""A stage's own held-out target, measured on the incoming model (before) and the trained one (after).

Per stage kind (items never trained on: rows of the stage's own files outside its training sample,
or XSTest for ``safety``):
  sft / math / code / long_cot -> ``bits_per_byte``: completion NLL (tokens of the chat-templated
      completion, as TRL's completion-only loss sees them) / ln 2 / UTF-8 bytes of the completion text;
  dpo    -> ``pref_margin``: log p(chosen | prompt) − log p(rejected | prompt) in nats (summed over the
      answer tokens), and ``pref_accuracy`` = share of pairs with margin > 0;
  safety -> ``refusal_rate_unsafe`` / ``refusal_rate_safe`` on XSTest prompts (greedy replies,
      ``ood.refusal.is_refusal``).
The noise floor of the move is the paired standard error SE = sd(after_i − before_i) / √n over the
held-out items (per-item bits per byte are averaged unweighted); ``moved`` = |mean Δ| > 3 SE in the direction
training should move it (``EXPECTED``): the criterion for "the stage did its job".
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.datadir import dataset_file
from ..data.examples import Example, stage_examples
from ..data.sources import DataRef, LoadedRef, load_ref
from ..errors import CollapseBenchError
from ..io import read_jsonl
from ..ood.refusal import is_refusal
from .leakage import primary_text, text_hash

TARGETS = {"sft": "bits_per_byte", "math": "bits_per_byte", "code": "bits_per_byte", "long_cot": "bits_per_byte"}
TARGETS |= {"dpo": "pref_margin", "safety": "refusal_rate_unsafe"}
EXPECTED = {"bits_per_byte": -1, "pref_margin": 1, "refusal_rate_unsafe": 1}  # the direction training should move it
REPLY_TOKENS = 32


def heldout_refs(stage: Any, train: list[LoadedRef], recipe_path: Path, data_dir: Path | None, seed: int) -> list[LoadedRef]:
    """``stage.heldout`` rows per reference file, seeded, from the rows the training sample left out."""
    out = []
    for loaded in train:
        used = {text_hash(t) for t in map(primary_text, loaded.rows) if t} | {str(r.get("id")) for r in loaded.rows}
        whole = DataRef(**loaded.ref)
        whole.pop("n", None)
        full = load_ref(whole, task_path=recipe_path, data_dir=data_dir, seed=seed)
        rest = [r for r in full.rows if str(r.get("id")) not in used and text_hash(primary_text(r) or "") not in used]
        rows = sorted(random.Random(f"heldout-{seed}").sample(range(len(rest)), min(stage.heldout, len(rest))))
        out.append(LoadedRef(full.key, full.sha256, [rest[i] for i in rows], full.domain, full.ref))
    return out


def _answer_logprobs(model: Any, tok: Any, examples: list[Example], key: str, device: str, batch: int = 8) -> np.ndarray:
    """Per example: (sum log p of the answer tokens, UTF-8 bytes of the answer text)."""
    rows = []
    for ex in examples:
        prompt = tok.apply_chat_template(list(ex["prompt"]), add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(list(ex["prompt"]) + list(ex[key]), tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        f_ids = tok(full, add_special_tokens=False)["input_ids"]
        rows.append((f_ids, len(p_ids), len(ex[key][0]["content"].encode())))
    out = np.zeros((len(rows), 2))
    model.eval()
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        width = max(len(r[0]) for r in chunk)
        ids = torch.full((len(chunk), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, (f_ids, _, _) in enumerate(chunk):
            ids[i, : len(f_ids)] = torch.tensor(f_ids)
            mask[i, : len(f_ids)] = 1
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for i, (f_ids, n_prompt, n_bytes) in enumerate(chunk):
            target = torch.tensor(f_ids[n_prompt:], device=logp.device)
            lp = logp[i, n_prompt - 1 : len(f_ids) - 1].gather(-1, target[:, None]).sum()
            out[start + i] = (float(lp), n_bytes)
    return out


def _replies(model: Any, tok: Any, prompts: list[str], device: str, batch: int = 10) -> list[str]:
    side, tok.padding_side = tok.padding_side, "left"
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch):
            texts = [
                tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                for p in prompts[start : start + batch]
            ]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=REPLY_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return out


class HeldoutTarget:
    """Measures one stage's own target on fixed held-out items: ``measure(model)`` twice, then ``block()``."""

    def __init__(self, stage: Any, refs: list[LoadedRef], tok: Any, device: str, data_dir: Path | None, seed: int):
        self.kind, self.tok, self.device = stage.kind, tok, device
        self.metric = TARGETS[stage.kind]
        self.items: list[Any]
        if stage.kind == "safety":
            if data_dir is None:
                raise CollapseBenchError("a safety stage's held-out target reads XSTest: give --data-dir")
            rows = list(read_jsonl(dataset_file(data_dir, "xstest", "test")))
            rng = random.Random(f"xstest-{seed}")
            self.items = []
            for flag in (True, False):  # stage.heldout unsafe prompts, then as many safe ones
                group = [r for r in rows if r["should_refuse"] is flag]
                self.items += [group[i] for i in sorted(rng.sample(range(len(group)), min(stage.heldout, len(group))))]
        else:
            self.items = stage_examples(stage.kind, refs, seed)
        self.values: list[dict[str, np.ndarray]] = []

    def measure(self, model: Any) -> None:
        if self.kind == "safety":
            replies = _replies(model, self.tok, [r["prompt"] for r in self.items], self.device)
            refused = np.array([float(is_refusal(r)) for r in replies])
            unsafe = np.array([bool(r["should_refuse"]) for r in self.items])
            self.values.append({"refusal_rate_unsafe": refused[unsafe], "refusal_rate_safe": refused[~unsafe]})
        elif self.kind == "dpo":
            chosen = _answer_logprobs(model, self.tok, self.items, "chosen", self.device)
            rejected = _answer_logprobs(model, self.tok, self.items, "rejected", self.device)
            margin = chosen[:, 0] - rejected[:, 0]
            self.values.append({"pref_margin": margin, "pref_accuracy": (margin > 0).astype(float)})
        else:
            lp = _answer_logprobs(model, self.tok, self.items, "completion", self.device)
            self.values.append({"bits_per_byte": -lp[:, 0] / math.log(2) / np.maximum(lp[:, 1], 1)})

    def block(self) -> dict[str, Any]:
        before, after = self.values
        out: dict[str, Any] = {"target": self.metric, "n": len(before[self.metric]), "metrics": {}}
        for name in before:
            b, a = before[name], after[name]
            d = a - b
            se = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
            out["metrics"][name] = {
                "before": float(b.mean()),
                "after": float(a.mean()),
                "delta": float(d.mean()),
                "se_paired": se,
                "moved_3se": se is not None and bool(abs(d.mean()) > 3 * se),
            }
        main = out["metrics"][self.metric]
        out["moved"] = bool(main["moved_3se"] and np.sign(main["delta"]) == EXPECTED[self.metric])
        return out
