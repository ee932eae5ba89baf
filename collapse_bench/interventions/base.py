"""The intervention plugin contract: each intervention is one module with one ``Intervention`` subclass
(documented formula) and its default strength in ``tasks/interventions/<name>.yaml``.

Hooks, all optional, called by the chain runner / trainer in this order for every stage:
  ``arrange(examples, stage_ctx)`` -> the stage's training examples in consumption order (replay);
  ``before_stage(model, stage_ctx)`` on the incoming merged model, before LoRA is attached (feature refresh);
  ``attach(peft_model, stage_ctx)`` once LoRA is attached (hooks, frozen references);
  ``penalty(peft_model, inputs)`` -> extra loss term of the current training step, or None;
  ``detach()`` after training; ``report()`` -> numbers recorded in the stage's log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch


def params_schema(**properties: dict[str, Any]) -> dict[str, Any]:
    """An intervention's parameter schema: exactly these keys, all required."""
    return {"type": "object", "additionalProperties": False, "required": sorted(properties), "properties": properties}


@dataclass
class StageContext:
    """What an intervention may know about the stage being trained."""

    stage: Any  # chain.recipe.Stage
    kind: str
    batch_size: int
    steps: int
    seed: int
    tokenizer: Any
    base_dir: Path  # the chain's base model checkpoint
    recipe_path: Path  # data references with ``path`` are relative to it
    previous_adapters: list[Path] = field(default_factory=list)  # earlier stages' LoRA adapters, in order
    replay_pool: list[dict[str, Any]] = field(default_factory=list)  # earlier stages' examples (SFT format)
    stage_examples: list[dict[str, Any]] = field(default_factory=list)  # this stage's examples, file order
    data_dir: Path | None = None


class Intervention:
    name: ClassVar[str] = ""
    needs_lora: ClassVar[bool] = False  # acts on the stage's LoRA adapter (refused for method: full stages)
    # JSON schema of the parameters (every one required); the default VALUES live only in
    # tasks/interventions/<name>.yaml, overrides are validated against the same schema
    PARAMS_SCHEMA: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}

    def __init__(self, **params: Any) -> None:
        self.params = params
        self._report: dict[str, Any] = {}

    def arrange(self, examples: list[dict[str, Any]], ctx: StageContext) -> list[dict[str, Any]]:
        return examples

    def before_stage(self, model: torch.nn.Module, ctx: StageContext) -> None:
        return None

    def attach(self, model: torch.nn.Module, ctx: StageContext) -> None:
        return None

    def penalty(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return None

    def detach(self) -> None:
        return None

    def report(self) -> dict[str, Any]:
        return dict(self._report)

    def load_report(self, report: dict[str, Any]) -> None:
        """Restore the running report of an interrupted stage (called after ``attach``, before training)."""
        self._report = dict(report)
