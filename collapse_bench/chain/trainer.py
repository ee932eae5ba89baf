"""One chain stage = TRL training of a fresh LoRA adapter on the incoming merged checkpoint, or (``method:
full``) full fine-tuning of all its weights.

SFT-type stages use ``trl.SFTTrainer`` (prompt-completion, completion-only loss, the tokenizer's chat
template), ``dpo`` stages ``trl.DPOTrainer`` (reference = the same model with adapters disabled).
Interventions add loss terms through ``compute_loss``; a replay-arranged example list is consumed in
order (``train_sampling_strategy="sequential"``) and the replay share of every batch is measured from the
token ids the trainer actually received.

A stage survives a killed process: with a checkpoint dir, the Trainer saves every ``checkpoint_steps``
steps (weights/adapter, optimiser, scheduler, RNG, log history) and this module adds ``chain_state.json``
last (replay cursor and fractions, intervention running reports, training wall time), which marks the
checkpoint complete; a re-run resumes from the newest complete one (``tests/test_chain_resume.py``: a
resumed stage is bit-identical to an uninterrupted one).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..interventions import Intervention, StageContext
from ..interventions.replay import REPLAY_KEY
from ..io import atomic_write_json
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
    wall_before = 0.0  # training seconds of earlier (interrupted) runs of this stage
    resumed_at: list[int]
    _t_start = 0.0

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        run_dir = Path(str(self.args.output_dir))
        ckpt = run_dir / f"checkpoint-{self.state.global_step}"
        atomic_write_json(ckpt / CHAIN_STATE, self.chain_state())  # last: marks the checkpoint complete
        for old in run_dir.glob("checkpoint-*"):
            if _step_of(old) < self.state.global_step:
                shutil.rmtree(old, ignore_errors=True)

    def chain_state(self) -> dict[str, Any]:
        return {
            "cursor": self._cursor,
            "replay_fractions": list(self.replay_fractions),
            "interventions": {i.name: i.report() for i in self.interventions},
            "wall_s": self.wall_before + time.perf_counter() - self._t_start,
            "resumed_at": list(self.resumed_at),
        }

    def load_chain_state(self, state: dict[str, Any], step: int) -> None:
        self._cursor, self.replay_fractions = state["cursor"], list(state["replay_fractions"])
        for intervention in self.interventions:
            intervention.load_report(state["interventions"][intervention.name])
        self.wall_before, self.resumed_at = state["wall_s"], [*state["resumed_at"], step]

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


CHAIN_STATE = "chain_state.json"


def _step_of(path: Path) -> int:
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def checkpoint_dir(sdir: Path, key: dict[str, Any]) -> Path:
    """``.NN-stage.ckpt``: the stage's Trainer checkpoints, kept across killed runs while ``key`` (its exact
    inputs) is unchanged, emptied otherwise."""
    ckpt = sdir.parent / f".{sdir.name}.ckpt"
    stamp = ckpt / "key.json"
    if ckpt.exists() and not (stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(key))):
        shutil.rmtree(ckpt)
    if not stamp.is_file():
        ckpt.mkdir(parents=True, exist_ok=True)
        atomic_write_json(stamp, key)
    return ckpt


def last_complete_checkpoint(directory: Path) -> Path | None:
    """The newest ``checkpoint-N`` under ``directory`` whose ``chain_state.json`` was written, or None."""
    done = [p for p in directory.glob("checkpoint-*") if (p / CHAIN_STATE).is_file() and _step_of(p) >= 0]
    return max(done, key=_step_of, default=None)


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
    checkpoint_steps: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` with TRL (a fresh LoRA adapter, or all weights); returns (trained model, training log).
    ``checkpoint_steps`` > 0: checkpoints in ``work_dir`` every that many steps, resuming from the newest
    complete one found there (the caller keys ``work_dir`` to the stage's exact inputs)."""
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
        save_strategy="steps" if checkpoint_steps else "no",
        save_steps=checkpoint_steps or 500,
        save_total_limit=None,  # older checkpoints are removed once the newer one is complete (_save_checkpoint)
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
    trainer.replay_fractions, trainer.resumed_at = [], []
    if arranged:
        trainer.replay_rows = list(
            zip(_processed_keys(trainer.train_dataset, stage.max_length), trainer.train_dataset[REPLAY_KEY])
        )
    for intervention in interventions:
        intervention.attach(trainer.model, ctx)
    resume = last_complete_checkpoint(work_dir) if checkpoint_steps else None
    if resume is not None:
        trainer.load_chain_state(json.loads((resume / CHAIN_STATE).read_text()), _step_of(resume))
    trainer._t_start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
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
        "wall_s": trainer.wall_before + time.perf_counter() - trainer._t_start,
        "resumed_at": trainer.resumed_at,
    }
    if arranged:
        log["replay_fraction_measured"] = trainer.replay_fractions
    return trainer.model, log
