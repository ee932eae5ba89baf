"""A chain stage killed mid-training resumes from its newest complete Trainer checkpoint and ends
bit-identical to an uninterrupted run: same weights (stage sha256), same loss curve, same replay fractions
measured from the batches, same intervention reports. The kill is simulated by raising inside the real
Trainer's checkpoint save — after the Trainer wrote its files but before ``chain_state.json`` (an incomplete
checkpoint, which must be skipped), or just after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers

from collapse_bench.chain import trainer
from collapse_bench.chain.runner import ChainRequest, run_chain

pytestmark = pytest.mark.train


class Killed(Exception):
    pass


def stage_logs(out: Path) -> dict[str, dict]:
    logs = {}
    for path in sorted(out.glob("0*/stage.json")):
        log = json.loads(path.read_text())
        log.pop("duration_s")
        log["training"].pop("wall_s")
        log["training"].pop("resumed_at_steps", None)
        logs[path.parent.name] = log
    return logs


@pytest.mark.parametrize(
    ("recipe", "intervention", "kill_at", "marker_written", "stage", "resumed"),
    [
        # the 3rd save = stage 2 (safety, replay from stage 1's pool), step 1, after its marker
        ("sft_safety_math", "replay,diversity_reg", 3, True, "02-safety", [1]),
        # the 4th save = stage 2 (dpo), step 2, before its marker: checkpoint-2 is incomplete, resume from 1
        ("lineage", None, 4, False, "02-dpo", [1]),
    ],
)
def test_a_killed_stage_resumes_bit_identical(
    recipe: str,
    intervention: str | None,
    kill_at: int,
    marker_written: bool,
    stage: str,
    resumed: list[int],
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    req = dict(recipe=recipe, interventions=intervention, profile="tiny", data_dir=str(data_dir), progress=False)
    straight = run_chain(ChainRequest(out=str(tmp_path / "straight"), **req))

    saves = {"n": 0}
    target = trainer._InterventionMixin if marker_written else transformers.Trainer
    original = target._save_checkpoint

    def killing_save(self, model, trial):
        original(self, model, trial)
        saves["n"] += 1
        if saves["n"] == kill_at:
            raise Killed

    monkeypatch.setattr(target, "_save_checkpoint", killing_save)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_chain(ChainRequest(out=str(out), **req))
    monkeypatch.undo()
    ckpt = out / f".{stage}.ckpt"
    steps = sorted(p.name for p in ckpt.glob("checkpoint-*"))
    assert steps == (["checkpoint-1"] if marker_written else ["checkpoint-1", "checkpoint-2"])
    assert (ckpt / "checkpoint-1" / trainer.CHAIN_STATE).is_file()
    assert marker_written or not (ckpt / "checkpoint-2" / trainer.CHAIN_STATE).exists()

    calls = {"n": 0}
    step = trainer._InterventionMixin.training_step

    def counted_step(self, *args, **kwargs):
        calls["n"] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(trainer._InterventionMixin, "training_step", counted_step)
    run_chain(ChainRequest(out=str(out), **req))
    later = len(list(straight.glob("0*/stage.json"))) - int(stage[:2])
    assert calls["n"] == (2 - resumed[0]) + 2 * later  # the resumed stage trains only its remaining steps
    assert not ckpt.exists() and not list(out.glob(".*.tmp"))
    assert stage_logs(out) == stage_logs(straight)  # weights (sha256), losses, replay, intervention reports
    block = json.loads((out / stage / "stage.json").read_text())["training"]
    assert block["resumed_at_steps"] == resumed
    assert all("resumed_at_steps" not in json.loads(p.read_text())["training"] for p in straight.glob("0*/stage.json"))
    if intervention:
        log = json.loads((out / stage / "stage.json").read_text())
        assert log["replay_fraction_measured"] == [0.25, 0.25]
        assert log["interventions"]["diversity_reg"]["steps"] == 2


def test_checkpoints_of_other_inputs_are_discarded(tmp_path: Path) -> None:
    sdir = tmp_path / "02-dpo"
    ckpt = trainer.checkpoint_dir(sdir, {"recipe_hash": "a", "seed": 0})
    (ckpt / "checkpoint-3").mkdir()
    assert trainer.checkpoint_dir(sdir, {"recipe_hash": "a", "seed": 0}) == ckpt and (ckpt / "checkpoint-3").is_dir()
    trainer.checkpoint_dir(sdir, {"recipe_hash": "b", "seed": 0})  # another recipe: its steps are not ours
    assert not (ckpt / "checkpoint-3").exists() and json.loads((ckpt / "key.json").read_text())["recipe_hash"] == "b"


def test_last_complete_checkpoint_skips_unmarked_ones(tmp_path: Path) -> None:
    for step, marked in ((2, True), (10, True), (11, False), (9, True)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if marked:
            (tmp_path / f"checkpoint-{step}" / trainer.CHAIN_STATE).write_text("{}")
    assert trainer.last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # numeric, not lexical order
    assert trainer.last_complete_checkpoint(tmp_path / "nothing") is None
