"""Train and held-out eval examples of a plasticity task, built before the model loads.

An example is a (prompt, target) pair of strings: the prompt is context only, the target is the span
that is trained on and scored (a plain-text item has an empty prompt and is scored whole).

Two sources:

* ``world`` (novel knowledge, offline): the facts of ``World.generate(seed, n_entities)``. Train = every
  fact in statement form ("" -> "Zorbin lives in the city of Kaldor.") and in QA form
  ("Question: Where does Zorbin live?\\nAnswer:" -> " Kaldor\\n"). Held-out eval = the paraphrase form,
  never trained on, scoring the object only ("The home city of Zorbin is" -> " Kaldor."). Exact match:
  greedy answers to the QA prompts. Generator version: ``WORLD_VERSION`` . ``FORMS_VERSION``.
* ``data`` (real domain): the task's single data reference, rendered with ``prompt_template`` /
  ``target_template``; a seeded permutation of all its rows gives the train slice (first ``n_train``)
  and the disjoint held-out slice (next ``n_eval``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.sources import DataRef, load_ref, render
from ..data.world import PARAPHRASES, WORLD_VERSION, Fact, World
from ..errors import CollapseBenchError
from ..io import sha256_json

if TYPE_CHECKING:
    from ..tasks import Task

FORMS_VERSION = 1  # the statement / QA / paraphrase forms below
QA_PROMPT = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class Example:
    prompt: str  # context, never scored
    target: str  # trained on and scored


@dataclass
class PlasticityData:
    train: list[Example]
    eval: list[Example]
    qa: list[tuple[str, str]] = field(default_factory=list)  # (prompt, answer) for exact match
    data_hashes: dict[str, str] = field(default_factory=dict)
    source: str = "data"


def cut_text(text: str, max_chars: int | None) -> str:
    """Cut at the last whitespace at or before ``max_chars`` characters (text level, same for every tokenizer)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    head = text[:max_chars]
    space = max(head.rfind(" "), head.rfind("\n"))
    return head[:space] if space > 0 else head


def object_split(template: str, fact: Fact) -> Example:
    """Split a template ``... {o}...`` into the prompt before `` {o}`` and the target from the space on."""
    before, after = template.split(" {o}")
    return Example(before.format(s=fact.subject), f" {fact.obj}{after.format(s=fact.subject)}")


def world_data(world_seed: int, n_entities: int, limit: int | None) -> PlasticityData:
    """Novel-knowledge examples from the seeded fictional world (see module docstring)."""
    facts = list(World.generate(world_seed, n_entities).facts)
    if limit is not None and limit < len(facts):
        picked = sorted(random.Random(f"plasticity-world-{world_seed}").sample(range(len(facts)), limit))
        facts = [facts[i] for i in picked]
    train = [Example("", f.statement) for f in facts]
    train += [Example(QA_PROMPT.format(question=f.question), f" {f.obj}\n") for f in facts]
    held_out = [object_split(PARAPHRASES[f.relation], f) for f in facts]
    qa = [(QA_PROMPT.format(question=f.question), f.obj) for f in facts]
    rows = {"train": [[e.prompt, e.target] for e in train], "eval": [[e.prompt, e.target] for e in held_out], "qa": qa}
    key = f"world:v{WORLD_VERSION}.{FORMS_VERSION}:seed{world_seed}:n{n_entities}" + (f":limit{limit}" if limit else "")
    return PlasticityData(train, held_out, qa, {key: sha256_json(rows)}, "world")


def ref_data(task: Task, data_dir: Path | None, limit: int | None) -> PlasticityData:
    """Real-domain examples: one data reference split into disjoint seeded train / eval slices."""
    p = task.params
    if len(task.data) != 1:
        raise CollapseBenchError(f"task {task.name}: a plasticity task with source 'data' needs exactly one data reference")
    ref = DataRef(**task.data[0])
    if "n" in ref:
        raise CollapseBenchError(f"task {task.name}: set n_train / n_eval in params, not n on the data reference")
    loaded = load_ref(ref, task_path=task.path, data_dir=data_dir, seed=p["split_seed"])
    n_train = min(p["n_train"], limit) if limit else p["n_train"]
    n_eval = min(p["n_eval"], limit) if limit else p["n_eval"]
    rows = list(loaded.rows)
    if n_train + n_eval > len(rows):
        raise CollapseBenchError(
            f"task {task.name}: {loaded.key} has {len(rows)} rows, fewer than n_train + n_eval = {n_train + n_eval}"
        )
    random.Random(f"plasticity-split-{p['split_seed']}:{loaded.key}").shuffle(rows)
    where = f"{task.path} ({loaded.key})"

    def example(row: dict[str, Any]) -> Example:
        prompt = render(p["prompt_template"], row, where) if p["prompt_template"] else ""
        return Example(prompt, cut_text(render(p["target_template"], row, where), p["max_target_chars"]))

    train = [example(r) for r in rows[:n_train]]
    held_out = [example(r) for r in rows[n_train : n_train + n_eval]]
    if not any(e.target.strip() for e in held_out):
        raise CollapseBenchError(f"task {task.name}: every held-out target is empty")
    return PlasticityData(train, held_out, [], {loaded.key: loaded.sha256}, "data")


def build_data(task: Task, data_dir: Path | None, limit: int | None) -> PlasticityData:
    p = task.params
    if p["source"] == "world":
        if task.data:
            raise CollapseBenchError(f"task {task.name}: source 'world' generates its data; remove the data references")
        return world_data(p["world_seed"], p["world_entities"], limit)
    return ref_data(task, data_dir, limit)
