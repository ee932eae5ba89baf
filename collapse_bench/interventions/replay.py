"""Mixed-domain replay: a fixed fraction of every batch comes from earlier stages' data and general text.

With batch size B and fraction rho, every batch holds k = floor(rho * B + 1/2) replay examples and B - k
examples of the current stage (the stage's examples cycled in order). Replay examples are drawn with a
seeded RNG from the pool = earlier stages' examples (as prompt-completion; a DPO stage contributes
prompt + chosen) plus general text (``general_text`` reference, share ``general_share`` of the draws).
For a DPO stage, a replay example becomes a pair whose ``chosen`` is its reference completion and whose
``rejected`` is the completion of another pool example. The trainer consumes the arranged list in order,
and the measured per-batch fraction is logged (``replay_fraction_measured``).
"""

from __future__ import annotations

import math
import random
from typing import Any

from ..data.examples import fits, load_stage_refs, stage_examples
from ..tasks.schema import DATA_REF_SCHEMA
from .base import Intervention, StageContext, params_schema

REPLAY_KEY = "_replay"


def to_sft(example: dict[str, Any]) -> dict[str, Any]:
    """Prompt-completion view of any training example (DPO: the chosen answer)."""
    return {"prompt": example["prompt"], "completion": example.get("completion", example.get("chosen"))}


class Replay(Intervention):
    name = "replay"
    PARAMS_SCHEMA = params_schema(
        fraction={"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        general_share={"type": "number", "minimum": 0, "maximum": 1},
        general_text={"anyOf": [DATA_REF_SCHEMA, {"type": "null"}]},
    )

    def arrange(self, examples: list[dict[str, Any]], ctx: StageContext) -> list[dict[str, Any]]:
        rho = float(self.params["fraction"])
        k = math.floor(rho * ctx.batch_size + 0.5)
        usable = lambda e: fits(e, ctx.tokenizer, ctx.stage.max_length)
        pool_stages = [e for e in map(to_sft, ctx.replay_pool) if usable(e)]
        general: list[dict[str, Any]] = []
        if self.params["general_text"] and ctx.data_dir is not None:
            refs = load_stage_refs((self.params["general_text"],), ctx.recipe_path, ctx.data_dir, ctx.seed)
            general = [e for e in stage_examples("sft", refs, ctx.seed) if usable(e)]
        share = float(self.params["general_share"]) if general else 0.0
        if not pool_stages:
            share = 1.0 if general else 0.0
        if k == 0 or not (pool_stages or general):
            self._report = {"replay_fraction_configured": rho, "replay_per_batch": 0, "replay_pool": 0}
            return examples
        rng = random.Random(f"replay-{ctx.seed}-{ctx.stage.index}")
        arranged: list[dict[str, Any]] = []
        cursor = 0
        for _ in range(ctx.steps):
            for _ in range(ctx.batch_size - k):
                arranged.append({**examples[cursor % len(examples)], REPLAY_KEY: False})
                cursor += 1
            for _ in range(k):
                src = general if (rng.random() < share) else pool_stages
                item = dict(rng.choice(src))
                if ctx.kind == "dpo":
                    other = rng.choice(pool_stages or general)
                    item = {"prompt": item["prompt"], "chosen": item["completion"], "rejected": other["completion"]}
                arranged.append({**item, REPLAY_KEY: True})
        self._report = {"replay_fraction_configured": rho, "replay_per_batch": k, "replay_pool": len(pool_stages) + len(general)}
        return arranged
