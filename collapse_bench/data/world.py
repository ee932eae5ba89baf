"""A seeded fictional world: invented names and facts no model can have seen (contamination-free).

Used as a fiction-like probe domain and as the novel-knowledge plasticity task. The generator is
versioned (``WORLD_VERSION``); the same (version, seed, size) always yields the same world.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

WORLD_VERSION = 1
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "th", "sh", "vr"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "x"]
RELATIONS = {
    # relation: (question template, statement template, object kind)
    "home": ("Where does {s} live?", "{s} lives in the city of {o}.", "city"),
    "craft": ("What is the craft of {s}?", "{s} works as a {o}.", "craft"),
    "mentor": ("Who taught {s}?", "{s} was taught by {o}.", "person"),
    "river": ("Which river flows through {s}?", "The river {o} flows through {s}.", "river"),
    "founded": ("In which year was {s} founded?", "{s} was founded in the year {o}.", "year"),
}
_SUBJECT_RELATIONS = {"person": ["home", "craft", "mentor"], "city": ["river", "founded"]}
# A third surface form per relation, never used by ``stories()`` or the question/statement forms: the
# held-out paraphrase of the plasticity probe. Every template ends in "{o}." so the object can be scored.
PARAPHRASES = {
    "home": "The home city of {s} is {o}.",
    "craft": "By trade, {s} is a {o}.",
    "mentor": "The teacher of {s} was {o}.",
    "river": "The city of {s} lies on the river {o}.",
    "founded": "The founding year of {s} is {o}.",
}


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)).capitalize()


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    obj: str

    @property
    def question(self) -> str:
        return RELATIONS[self.relation][0].format(s=self.subject)

    @property
    def statement(self) -> str:
        return RELATIONS[self.relation][1].format(s=self.subject, o=self.obj)

    @property
    def paraphrase(self) -> str:
        return PARAPHRASES[self.relation].format(s=self.subject, o=self.obj)


@dataclass(frozen=True)
class World:
    seed: int
    facts: tuple[Fact, ...]

    @classmethod
    def generate(cls, seed: int, n_entities: int = 60) -> World:
        rng = random.Random(f"world-v{WORLD_VERSION}-{seed}")
        used: set[str] = set()

        def fresh(syllables: int) -> str:
            while True:
                name = _word(rng, syllables)
                if name not in used and len(name) >= 4:
                    used.add(name)
                    return name

        n_people = max(2, (2 * n_entities) // 3)
        people = [fresh(2) for _ in range(n_people)]
        cities = [fresh(2) for _ in range(max(1, n_entities - n_people))]
        pools = {
            "city": cities,
            "person": people,
            "craft": [fresh(2).lower() + "smith" for _ in range(8)],
            "river": [fresh(3) for _ in range(10)],
            "year": [str(y) for y in rng.sample(range(120, 990), 40)],
        }
        facts: list[Fact] = []
        for kind, subjects in (("person", people), ("city", cities)):
            for s in subjects:
                for rel in _SUBJECT_RELATIONS[kind]:
                    choices = [o for o in pools[RELATIONS[rel][2]] if o != s]
                    facts.append(Fact(s, rel, rng.choice(choices)))
        return cls(seed, tuple(facts))

    def stories(self, facts_per_story: int = 6) -> list[str]:
        """Facts grouped into short paragraphs, in a seeded order."""
        order = list(self.facts)
        random.Random(f"stories-{self.seed}").shuffle(order)
        return [" ".join(f.statement for f in order[i : i + facts_per_story]) for i in range(0, len(order), facts_per_story)]
