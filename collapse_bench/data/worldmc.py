"""Offline generated sources for the OOD/diversity tasks: contamination-free, no data dir needed.

``world_mc``      reading-comprehension multiple choice over the seeded fictional world: a passage of
                  four invented facts, a question about one of them, four candidate answers of the same
                  type (distractors taken first from the passage, then from the world), seeded order.
``world_prompts`` open-ended instructions about the world's people and cities (diversity prompts).
"""

from __future__ import annotations

import random

from .world import RELATIONS, World

WORLD_SEED = 11
FACTS_PER_PASSAGE = 4
_PROMPTS = [
    "Write a short story about {p}, who lives in {c}.",
    "Describe the city of {c} to a traveller.",
    "Write a letter from {p} to {q}.",
    "Invent a festival that the people of {c} celebrate.",
    "Tell me about the work of {p}.",
    "Write a poem about the river that flows through {c}.",
]


def world_mc_rows() -> list[dict[str, object]]:
    """Rows in the mirror's multiple-choice schema: id, context, question, choices, label, domain."""
    world = World.generate(seed=WORLD_SEED, n_entities=60)
    rng = random.Random(f"world-mc-{WORLD_SEED}")
    facts = list(world.facts)
    rng.shuffle(facts)
    pool: dict[str, list[str]] = {}
    for f in world.facts:
        pool.setdefault(f.relation, [])
        if f.obj not in pool[f.relation]:
            pool[f.relation].append(f.obj)
    rows: list[dict[str, object]] = []
    for start in range(0, len(facts) - FACTS_PER_PASSAGE + 1, FACTS_PER_PASSAGE):
        passage = facts[start : start + FACTS_PER_PASSAGE]
        context = " ".join(f.statement for f in passage)
        for fact in passage:
            near = [f.obj for f in passage if RELATIONS[f.relation][2] == RELATIONS[fact.relation][2] and f.obj != fact.obj]
            far = [o for o in pool[fact.relation] if o != fact.obj and o not in near and o != fact.subject]
            distractors = list(dict.fromkeys(near))[:3]
            distractors += rng.sample(far, 3 - len(distractors))
            choices = [fact.obj, *distractors]
            rng.shuffle(choices)
            rows.append(
                {
                    "id": f"world-mc-{len(rows)}",
                    "context": context,
                    "question": fact.question,
                    "choices": choices,
                    "label": choices.index(fact.obj),
                    "domain": "world_mc",
                }
            )
    return rows


def world_prompt_rows() -> list[dict[str, object]]:
    """Open-ended prompts (field ``prompt``) about the world's people and cities."""
    world = World.generate(seed=WORLD_SEED, n_entities=60)
    rng = random.Random(f"world-prompts-{WORLD_SEED}")
    homes = [(f.subject, f.obj) for f in world.facts if f.relation == "home"]
    people = [p for p, _ in homes]
    rows: list[dict[str, object]] = []
    for i in range(48):
        p, c = homes[rng.randrange(len(homes))]
        q = rng.choice([x for x in people if x != p])
        rows.append(
            {"id": f"world-prompt-{i}", "prompt": _PROMPTS[i % len(_PROMPTS)].format(p=p, c=c, q=q), "domain": "world_prompts"}
        )
    return rows
