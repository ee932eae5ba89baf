"""One chain stage = TRL training of a fresh LoRA adapter on the incoming merged checkpoint, or (``method:
full``) full fine-tuning of all its weights.

SFT-type stages use ``trl.SFTTrainer`` (prompt-completion, completion-only loss, the tokenizer's chat
template), ``dpo`` stages ``trl.DPOTrainer`` (reference = the same model with adapters disabled).
Interventions add loss terms through ``compute_loss``; a replay-arranged example list is consumed in
order (``train_sampling_strategy="sequential"``) and the replay share of every batch is measured from the
token ids the trainer actually received.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..interventions import Intervention, StageContext
from ..interventions.replay import REPLAY_KEY
from .recipe import Stage

if TYPE_CHECKING:
    from transformers import Trainer as _TrainerBase  # what the mixin is combined with (TRL's trainers subclass it)
else:
    _TrainerBase = object


class _InterventionMixin(_TrainerBase):
    """compute_loss + per-batch replay measurement shared by the SFT and DPO trainers."""

    interventions: Sequence[Intervention] = ()  # set per trainer instance
    replay_rows: list[tuple[tuple[int, ...], bool]] | None = None  # processed rows in consumption order
    replay_fractions: list[float]
    _cursor = 0
    pairwise = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # return_outputs=True would make TRL recompute the logits with an extra forward: pass it through
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = result[0] if isinstance(result, tuple) else result  # a (loss, outputs) tuple iff return_outputs
        for intervention in self.interventions:
            extra = intervention.penalty(model, inputs)
            if extra is not None:
                loss = loss + extra
        return (loss, *result[1:]) if return_outputs else loss

    def training_step(self, model, inputs, *args, **kwargs):
        if self.replay_rows is not None:  # the batch must be the next rows of the arranged order
            keys = _row_keys(inputs, pairwise=self.pairwise)
            expected = self.replay_rows[self._cursor : self._cursor + len(keys)]
            if [k for k, _ in expected] != keys:
                raise RuntimeError("replay: the trainer's batch is not the arranged one (its order was changed)")
            self.replay_fractions.append(sum(flag for _, flag in expected) / len(keys))
            self._cursor += len(keys)
        return super().training_step(model, inputs, *args, **kwargs)


def _row_keys(inputs: dict[str, torch.Tensor], pairwise: bool) -> list[tuple[int, ...]]:
    """Token ids of every example of a batch without padding. DPO batches stack the B prompt+chosen rows
    on top of the B prompt+rejected rows: the first half identifies the examples."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if pairwise:
        ids, mask = ids[: len(ids) // 2], mask[: len(mask) // 2]
    return [tuple(r[m.bool()].tolist()) for r, m in zip(ids, mask)]


def _processed_keys(dataset: Any, max_length: int) -> list[tuple[int, ...]]:
    """Token ids of every processed training row as the batch will hold them (``_row_keys`` form;
    DPO truncates prompt + completion to ``max_length`` in its collator, keeping the start)."""
    if "prompt_ids" in dataset.column_names:  # DPO
        return [(tuple(p) + tuple(c))[:max_length] for p, c in zip(dataset["prompt_ids"], dataset["chosen_ids"])]
    return [tuple(r) for r in dataset["input_ids"]]


def train_stage(
    model: Any,
    tokenizer: Any,
    stage: Stage,
    examples: list[dict[str, Any]],
    interventions: list[Intervention],
    ctx: StageContext,
    work_dir: Path,
    *,
    device: str,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` with TRL (a fresh LoRA adapter, or all weights); returns (trained model, training log)."""
    import datasets
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    if not progress:
        datasets.disable_progress_bars()

    arranged = any(REPLAY_KEY in e for e in examples)
    rows = [{**e, REPLAY_KEY: bool(e.get(REPLAY_KEY, False))} for e in examples] if arranged else examples
    opt, lora = stage.optimizer, stage.lora
    common = dict(
        output_dir=str(work_dir),
        max_steps=stage.steps,
        per_device_train_batch_size=stage.batch_size,
        learning_rate=opt["lr"],
        weight_decay=opt["weight_decay"],
        lr_scheduler_type=opt["schedule"],
        warmup_steps=float(opt["warmup_ratio"]),
        bf16=False,
        fp16=False,
        use_cpu=device == "cpu",
        seed=ctx.seed,
        data_seed=ctx.seed,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        activation_checkpointing=False,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        max_length=stage.max_length,
        train_sampling_strategy="sequential" if arranged else "random",
        include_num_input_tokens_seen="non_padding",
    )
    peft_config = (
        LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]),
            task_type="CAUSAL_LM",
        )
        if stage.method == "lora"
        else None
    )
    dataset = datasets.Dataset.from_list(rows)
    if stage.kind == "dpo":
        cls: Any = type("ChainDPOTrainer", (_InterventionMixin, DPOTrainer), {"pairwise": True})
        trainer = cls(
            model=model,
            args=DPOConfig(beta=stage.beta, **common),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    else:
        cls = type("ChainSFTTrainer", (_InterventionMixin, SFTTrainer), {})
        trainer = cls(
            model=model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
        )
    trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; the log history is kept
    trainer.interventions = interventions
    trainer.replay_fractions = []
    if arranged:
        trainer.replay_rows = list(
            zip(_processed_keys(trainer.train_dataset, stage.max_length), trainer.train_dataset[REPLAY_KEY])
        )
    for intervention in interventions:
        intervention.attach(trainer.model, ctx)
    try:
        trainer.train()
    finally:
        for intervention in interventions:
            intervention.detach()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    log: dict[str, Any] = {
        "train_loss": losses,
        "steps": trainer.state.global_step,
        "tokens": int(trainer.state.num_input_tokens_seen),
        "examples": len(rows),
        "trainer": type(trainer).__name__,
    }
    if arranged:
        log["replay_fraction_measured"] = trainer.replay_fractions
    return trainer.model, log
