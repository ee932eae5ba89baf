"""Entry point for data-parallel plasticity runs (one task, scores as JSON).

    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 \
        -m collapse_bench.plasticity.launch MODEL --task plasticity_quick --output s.json     # 2 CPU processes, gloo
    accelerate launch --multi_gpu --num_processes 8 -m collapse_bench.plasticity.launch MODEL --task plasticity_full_gsm8k

(accelerate 1.15 runs ``accelerate launch --cpu --num_processes N`` as one process unless given
``--mpirun_hostfile``; this module warns when that happens. ``torchrun --nproc_per_node N -m ...`` works too.)

Every rank prepares the data and loads the model (on its own device); the global batch, its micro-batch
partition and the dropout seeds are those of one process, so the scores equal the single-process ones
within float summation order. Rank 0 prints the metrics and writes ``--output`` atomically. Run without
``accelerate launch`` it is a plain single-process run of the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ..cliutil import add_common, positive_int, quiet_libraries
from ..errors import CollapseBenchError
from ..io import atomic_write_json


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m collapse_bench.plasticity.launch",
        description="Run one plasticity task (optionally under accelerate launch) and print its scores.",
    )
    ap.add_argument("model", metavar="MODEL", help="checkpoint (same forms as collapse-bench evaluate)")
    ap.add_argument("--task", required=True, help="a kind: plasticity task name")
    add_common(ap, "tasks_dir", "data_dir")
    ap.add_argument("--output", metavar="PATH", help="write the task's result block as JSON (rank 0)")
    add_common(ap, "dtype")
    ap.add_argument("--eval-batch-size", type=positive_int, metavar="N", help="override the eval batch size")
    ap.add_argument("--limit", type=positive_int, metavar="N", help="at most N items per data source")
    add_common(ap, "no_progress")
    return ap


def silently_single(env: dict[str, str]) -> bool:
    """True when ``accelerate launch --cpu --num_processes N>1`` started one process: without
    ``--mpirun_hostfile`` accelerate's CPU launcher runs the script once and only sets MASTER_ADDR."""
    sizes = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    return env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env and not any(k in env for k in sizes)


def run(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState

    from ..data import resolve_data_dir
    from ..models import load_model
    from ..parallel import Parallel
    from ..tasks import TaskRegistry
    from .task import prepare, run_task

    task = TaskRegistry(args.tasks_dir or []).task(args.task)
    if task.kind != "plasticity":
        raise CollapseBenchError(f"task '{args.task}' is kind '{task.kind}', not plasticity")
    data = prepare(task, resolve_data_dir(args.data_dir), args.limit)
    if silently_single(dict(os.environ)):
        print(
            "collapse-bench: warning: accelerate launch --cpu started a single process (several CPU processes "
            "need --mpirun_hostfile); for gloo data parallelism without MPI use CUDA_VISIBLE_DEVICES= accelerate "
            "launch --multi_gpu --num_processes N (torchrun). Scores are the same either way.",
            file=sys.stderr,
        )
    state = PartialState()  # initialises the process group under accelerate launch (gloo on CPU)
    if state.num_processes > 1 and state.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // state.num_processes))
    try:
        loaded = load_model(args.model, device=str(state.device), dtype=args.dtype)
        par = Parallel()
        block = run_task(
            loaded.model,
            loaded.tokenizer,
            data,
            task.params,
            eval_batch_size=args.eval_batch_size,
            progress=not args.no_progress,
            desc=task.name,
            par=par,
        )
        if par.main:
            out = {
                "task": task.name,
                "model": loaded.info["name"],
                "model_sha256": loaded.info["sha256"],
                "world_size": par.world,
                "data": data.data_hashes,
                **block,
            }
            if args.output:
                atomic_write_json(args.output, out)
            print(json.dumps({"task": task.name, "world_size": par.world, "metrics": block["metrics"]}, indent=1))
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return run(args)
    except CollapseBenchError as exc:
        print(f"collapse-bench: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
