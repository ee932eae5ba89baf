"""``tiny-random-llama``: a deterministic random Llama (hidden 64, 2 layers) with a byte-level BPE
tokenizer trained on the builtin offline text, built once into the cache. For the chain runner's
``tiny`` profile and for tests: real transformers/peft/TRL code paths at a fraction of a second a step."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

TINY_VERSION = 1
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_model(out: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2, vocab: int = 512) -> Path:
    """Write a random LlamaForCausalLM + its BPE tokenizer (with a chat template) to ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from ..data.builtin import builtin_rows

    corpus = [r["text"] for name in ("python_docs", "synthetic_math", "synthetic_chat") for r in builtin_rows(name)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(fast),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def ensure_tiny(cache: Path) -> Path:
    """The cached tiny checkpoint dir (built atomically on first use)."""
    target = cache / "models" / f"tiny-random-llama-v{TINY_VERSION}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        build_tiny_model(tmp / "m")
        try:
            (tmp / "m").rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
