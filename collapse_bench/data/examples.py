"""Training examples for each stage kind, in TRL's conversational formats.

* sft / math / code / long_cot / safety -> prompt-completion: ``{"prompt": [user msg], "completion": [assistant msg]}``
  (TRL applies the tokenizer's chat template and trains on the completion only);
* dpo -> ``{"prompt": [msgs...], "chosen": [assistant msg], "rejected": [assistant msg]}``.

Refusal targets of the ``safety`` stage: data references with ``role: harmful`` (AdvBench goals) get a
refusal drawn deterministically (seeded) from ``REFUSALS``; references with ``role: benign`` keep their
reference answer, so the stage teaches refusing harmful requests without refusing everything.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError
from .sources import DataRef, LoadedRef, load_ref

Example = dict[str, Any]
REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I can't assist with that. It could cause harm to people.",
    "Sorry, I won't help with this. If you are in danger, please contact local emergency services.",
    "I'm not able to provide help with that, but I'm happy to help with something else.",
)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _pair(row: dict[str, Any], kind: str) -> tuple[str, str]:
    """(prompt, target) of one normalised mirror row for an SFT-type stage kind."""
    if "messages" in row:  # instruction data
        msgs = row["messages"]
        return msgs[0]["content"], msgs[-1]["content"]
    if "canonical_solution" in row:  # code
        return row["prompt"], row["canonical_solution"]
    if "solution" in row:  # math / long CoT
        if kind == "math":
            return row["question"], f"The final answer is {row['answer']}."
        return f"{row['question']}\nLet's think step by step.", f"{row['solution']}\nThe final answer is {row['answer']}."
    if "text" in row:  # general text (replay): continue the first sentence
        first, _, rest = row["text"].partition(". ")
        return f"Continue the text: {first}.", rest or first
    raise CollapseBenchError(f"row {row.get('id', '?')} has no fields usable for a '{kind}' stage")


_TURN = re.compile(r"\n\n(Human|Assistant): ")


def dialogue_messages(prompt: str) -> list[dict[str, str]]:
    """HH-RLHF ``\\n\\nHuman: ...\\n\\nAssistant: ...`` text (ending in ``Assistant:``) -> chat messages."""
    text = ("\n\n" + prompt.strip()).removesuffix("Assistant:").rstrip()
    parts = _TURN.split(text)  # ['', 'Human', content, 'Assistant', content, ...]
    msgs = [
        {"role": "user" if role == "Human" else "assistant", "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2])
    ]
    if not msgs or msgs[-1]["role"] != "user":
        raise CollapseBenchError("preference prompt does not end with a Human turn")
    return msgs


def stage_examples(kind: str, refs: list[LoadedRef], seed: int) -> list[Example]:
    """All examples of a stage, references in order, rows in file order."""
    rng = random.Random(f"refusals-{seed}")
    out: list[Example] = []
    for ref in refs:
        role = ref.ref.get("role")
        for row in ref.rows:
            if kind == "dpo":
                out.append(
                    {
                        "prompt": dialogue_messages(row["prompt"]),
                        "chosen": _assistant(row["chosen"]),
                        "rejected": _assistant(row["rejected"]),
                    }
                )
            elif kind == "safety" and role == "harmful":
                out.append({"prompt": _user(row["prompt"]), "completion": _assistant(rng.choice(REFUSALS))})
            else:
                prompt, target = _pair(row, kind)
                out.append({"prompt": _user(prompt), "completion": _assistant(target)})
    if not out:
        raise CollapseBenchError(f"a '{kind}' stage selected no training examples")
    return out


def load_stage_refs(data: tuple[DataRef, ...], recipe_path: Path, data_dir: Path | None, seed: int) -> list[LoadedRef]:
    return [load_ref(ref, task_path=recipe_path, data_dir=data_dir, seed=seed) for ref in data]


def render_example(example: Example, tokenizer: Any) -> str:
    """The chat-templated text of an example (prompt + completion, or prompt + chosen answer)."""
    answer = example.get("completion", example.get("chosen"))
    assert answer is not None  # every example has a completion or a chosen answer
    return tokenizer.apply_chat_template(list(example["prompt"]) + list(answer), tokenize=False)


def fits(example: Example, tokenizer: Any, max_length: int, margin: int = 8) -> bool:
    """True when the chat-templated prompt leaves at least ``margin`` tokens of the answer within
    ``max_length`` (TRL would otherwise drop the example as fully masked, breaking a batch arrangement)."""
    ids = tokenizer.apply_chat_template(list(example["prompt"]), add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids) + margin <= max_length
