"""Command line: ``collapse-bench <command> [options]``; every command has ``--help``, ``--version`` prints the
installed version.

User errors print one line (``collapse-bench: error: ...``) and exit 1; usage errors exit 2 (an unknown command
is one line with the closest commands, as unknown tasks, suites and models are). Any OSError that escapes a
command (disk full, file size limit, permissions) is one such line too, naming the file; values quoted in a
message are cut to 200 characters. ``evaluate`` accepts lm-eval's spellings of its options too (``--output_path``,
``--batch_size``, ``--include_path``) and ends with the command to run next.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, allocator
from .cliutil import add_common, batch_size_arg, positive_int, quiet_libraries
from .errors import CollapseBenchError, did_you_mean
from .models import DEFAULT_MODEL

Handler = Callable[[argparse.Namespace], int]

# Commands that live in their own module: each exposes ``register(subparsers)`` which adds its parser
# and sets ``func``. A new command = one module + one entry here.
COMMAND_MODULES: tuple[str, ...] = (
    "collapse_bench.chain.command",
    "collapse_bench.ood.rescore",
    "collapse_bench.ood.parity",
    "collapse_bench.compare",
    "collapse_bench.noise",
    "collapse_bench.leaderboard.submit",
    "collapse_bench.leaderboard.validate",
    "collapse_bench.leaderboard.site",
    "collapse_bench.leaderboard.reproduce",
    "collapse_bench.sweep",
)


def backend_options(args: argparse.Namespace) -> dict[str, object]:
    """lm-eval backend choice for the lm_eval/diversity kinds (recorded in the result's config)."""
    if args.backend == "hf":
        return {"backend": "hf"}
    return {
        "backend": args.backend,
        "tensor_parallel_size": args.tensor_parallel_size,
        "data_parallel_size": args.data_parallel_size,
    }


def run_lineage(args: argparse.Namespace, req: Any) -> int:
    """``evaluate --lineage DIR``: one result per stage under ``--output`` (a directory)."""
    from .lineage_run import evaluate_lineage

    run_dir = Path(args.lineage)
    out = Path(args.output) if args.output else Path("results") / run_dir.resolve().name
    if out.exists() and not out.is_dir():
        raise CollapseBenchError(f"--output {out}: with --lineage it is a directory (one result per stage)")
    paths = evaluate_lineage(run_dir, req, out)
    print(f"{len(paths)} stage results written to {out}")
    return 0


def scaling_options(args: argparse.Namespace) -> dict[str, object]:
    """``--probe-layers`` and ``--device-map`` as recorded in the result's config (only when given)."""
    out: dict[str, object] = {}
    if args.probe_layers:
        from .probe.memory import parse_layers

        parse_layers(args.probe_layers)  # one clear line before anything loads
        out["probe_layers"] = args.probe_layers
    if args.device_map:
        out["device_map"] = args.device_map if args.device_map == "auto" else Path(args.device_map).name
    return out


def device_map_arg(value: str | None) -> str | dict[str, object] | None:
    """``--device-map auto`` or a JSON file ``{module: device}`` (devices: ``cpu``, ``disk``, ``cuda:N`` or N)."""
    if value is None or value == "auto":
        return value
    try:
        mapping = json.loads(Path(value).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CollapseBenchError(f"--device-map {value}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in mapping.items()):
        raise CollapseBenchError(f"--device-map {value}: expected a JSON object {{module name: device}}")
    return mapping


class CliParser(argparse.ArgumentParser):
    """argparse with one change: an unknown (sub)command is one line naming the closest commands (exit 2).

    ``add_subparsers`` makes every subcommand parser of this class too."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and action.choices is not None and value not in action.choices:
            prefix = self.prog.split(" ", 1)[1] + " " if " " in self.prog else ""  # "tasks " for `collapse-bench tasks`
            self.one_line_error(
                f"unknown command '{prefix}{value}'{did_you_mean(str(value), action.choices, prefix)} "
                f"(run `{self.prog} --help` for the list)"
            )
        super()._check_value(action, value)

    def one_line_error(self, message: str) -> NoReturn:
        """``collapse-bench: error: <message>`` alone (no usage block), exit 2."""
        self.exit(2, f"collapse-bench: error: {message}\n")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import EvaluateRequest, evaluate, launched

    if args.backend == "vllm":  # one clear line before anything is loaded
        from .ood.backends import require_vllm

        require_vllm()
    quiet_libraries()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    if args.lineage:
        clash = [f for f, v in (("MODEL", args.model), ("--parent", args.parent), ("--stage", args.stage),
                                ("--device-map", args.device_map)) if v]  # fmt: skip
        if clash:
            raise CollapseBenchError(f"--lineage DIR takes each stage's own lineage and placement: not with {clash[0]}")
        if launched():
            raise CollapseBenchError("--lineage runs in one process: launch it without accelerate launch / torchrun")
    if args.offload_folder and not args.device_map:
        raise CollapseBenchError("--offload-folder is used with --device-map (where its disk entries go)")
    req = EvaluateRequest(
        model=args.model or DEFAULT_MODEL,
        suite=args.suite,
        tasks=tasks,
        tasks_dirs=args.tasks_dir or [],
        lm_eval_dirs=args.include_path or [],
        data_dir=args.data_dir,
        reference=args.reference,
        output=args.output,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        limit=args.limit,
        seed=args.seed,
        trust_remote_code=args.trust_remote_code,
        progress=not args.no_progress,
        options={**backend_options(args), **scaling_options(args)},
        parent=args.parent,
        stage=args.stage,
        device_map=device_map_arg(args.device_map),
        offload_folder=args.offload_folder,
    )
    if args.lineage:
        return run_lineage(args, req)
    path, result = evaluate(req)
    if os.environ.get("RANK", "0") != "0":  # a data-parallel run's other ranks: rank 0 reports
        return 0
    for name, block in result["tasks"].items():
        shown = dict(list(block["metrics"].items())[:6])
        print(f"{name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    print(f"result written to {path}")
    from .leaderboard.scorecard import score_card

    try:
        for line in score_card(Path(path)):
            print(line)
    except CollapseBenchError as exc:  # the result is written; a score card that cannot be made is only reported
        print(f"no score card: {exc}")
    print(next_step(path, result))
    return 0


def parent_result(parent: str, suite: str) -> Path | None:
    """The newest result of ``parent`` (a display name) in evaluate's default place, ``results/<parent>/<suite>-*.json``."""
    from .evaluate import slug

    found = sorted((Path("results") / slug(parent)).glob(f"{suite}-*.json"))
    return found[-1] if found else None


def next_step(path: Path, result: dict[str, Any]) -> str:
    """The line ``evaluate`` ends with: the command to run next on the result it wrote."""
    shown = shlex.quote(str(path))
    submit = f"collapse-bench submit {shown}"
    parent = result["model"].get("parent")
    if parent:
        earlier = parent_result(parent, result["suite"]["name"])
        theirs = shlex.quote(str(earlier)) if earlier else f"<result of {parent}>"
        return f"next: collapse-bench compare {theirs} {shown}  (this checkpoint vs. its parent); then {submit}"
    if not result["suite"]["complete"]:
        return f"next: {submit}  (not the whole suite: it is listed on the leaderboard but not ranked)"
    return f"next: {submit}  (validates it and files it under submissions/ for the leaderboard)"


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from .tasks import TaskRegistry

    reg = TaskRegistry(args.tasks_dir or [], args.include_path or [])
    print(f"{'task':28} {'kind':12} {'ver':>3}  description")
    for name in sorted(reg.tasks):
        t = reg.tasks[name]
        print(f"{name:28} {t.kind:12} {t.version:>3}  {t.description.splitlines()[0] if t.description else ''}")
    print(f"\n{'suite':28} {'ver':>3}  tasks")
    for name in sorted(reg.suites):
        s = reg.suites[name]
        print(f"{name:28} {s.version:>3}  {', '.join(s.tasks)}")
    return 0


def cmd_data_pull(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data.datadir import resolve_data_dir
    from .data.pull import pull

    target = Path(args.data_dir).expanduser() if args.data_dir else resolve_data_dir(None)
    datasets = [d.strip() for d in args.datasets.split(",")] if args.datasets else None
    written = pull(target, datasets)
    print(f"wrote {len(written)} files under {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="collapse-bench", description="Representation-collapse benchmark for LLM checkpoints.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument(
        "--version",
        action="version",
        version=f"collapse-bench {__version__}",  # the installed distribution's metadata
        help="print the installed version and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ev = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint and write a result JSON",
        description="Evaluate MODEL (registry alias, HF id org/model[@rev], local dir, .gguf file or PEFT adapter dir).",
    )
    ev.add_argument("model", nargs="?", metavar="MODEL", help=f"checkpoint to evaluate (default: {DEFAULT_MODEL})")
    ev.add_argument(
        "--lineage",
        metavar="DIR",
        help="evaluate every NN-stage checkpoint of a chain run DIR in one process (model built once, each stage's "
        "weights swapped in); --output is then a directory (default results/<DIR name>/), one <NN-stage>.json each",
    )
    ev.add_argument("--suite", default="quick", help="suite name: quick | standard | full (default: quick)")
    ev.add_argument("--tasks", help="comma-separated task names (default: all tasks of the suite)")
    add_common(ev, "tasks_dir", "include_path", "data_dir")
    ev.add_argument(
        "--reference", metavar="MODEL", help="reference checkpoint for CKA, KL and neighbourhood agreement (same tokenizer)"
    )
    ev.add_argument(
        "--parent",
        metavar="MODEL",
        help="checkpoint MODEL was trained from: lineage (the probe's KL to parent and base), and the weight update the "
        "lora task measures (with --tasks lora)",
    )
    ev.add_argument("--stage", metavar="NAME", help="post-training stage of MODEL (recorded in the result's lineage)")
    ev.add_argument(
        "--output",
        "--output_path",
        metavar="PATH",
        help="result file (default: results/<model>/<suite>-<time>.json); its directories are created, but an existing "
        "directory, a file on the way or an unwritable place is refused before the model loads",
    )
    add_common(ev, "device", "dtype")
    ev.add_argument(
        "--batch-size",
        "--batch_size",
        type=batch_size_arg,
        metavar="N|auto",
        help="override the tasks' batch size; auto: lm-eval finds the largest batch that fits for lm_eval/diversity "
        "tasks (halving on out-of-memory), the other tasks keep their own",
    )
    ev.add_argument("--limit", type=positive_int, metavar="N", help="at most N items per data source (for quick checks)")
    ev.add_argument("--seed", type=int, default=0, help="seed for stochastic tasks (default: 0)")
    ev.add_argument("--trust-remote-code", action="store_true", help="allow model code from the checkpoint (off by default)")
    add_common(ev, "no_progress")
    ev.add_argument(
        "--backend",
        choices=["hf", "vllm"],
        default="hf",
        help="lm-eval backend for lm_eval/diversity tasks: hf (the loaded model, default) or vllm (GPU)",
    )
    ev.add_argument("--tensor-parallel-size", type=positive_int, default=1, metavar="N", help="vLLM tensor parallel size")
    ev.add_argument("--data-parallel-size", type=positive_int, default=1, metavar="N", help="vLLM data parallel size")
    ev.add_argument(
        "--probe-layers",
        metavar="card|all|LIST",
        help="hidden-state layers the probe's d x d scatter families keep (default auto: card when d >= 8192, else all)",
    )
    ev.add_argument(
        "--device-map",
        metavar="auto|FILE.json",
        help="split the model over devices with accelerate (auto, or a JSON {module: device} incl. cpu and disk)",
    )
    ev.add_argument("--offload-folder", metavar="DIR", help="where --device-map's disk entries are offloaded")
    ev.set_defaults(func=cmd_evaluate)

    tasks = sub.add_parser("tasks", help="list tasks and suites", description="Inspect task and suite definitions.")
    tsub = tasks.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND", required=True)
    tl = tsub.add_parser(
        "list", help="list tasks and suites", description="List every task and suite (built-in and --tasks-dir)."
    )
    add_common(tl, "tasks_dir", "include_path")
    tl.set_defaults(func=cmd_tasks_list)

    data = sub.add_parser("data", help="manage the data dir", description="Manage the local data dir.")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    dp = dsub.add_parser(
        "pull",
        help="build the data dir from the HF hub (needs network)",
        description="Download pinned dataset revisions from the HF hub and write the normalised layout.",
    )
    dp.add_argument("--data-dir", metavar="DIR", help="where to write (default: $COLLAPSE_BENCH_DATA or the user cache)")
    dp.add_argument("--datasets", help="comma-separated dataset names (default: all)")
    dp.set_defaults(func=cmd_data_pull)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def one_line(message: object, quoted: int = 200) -> str:
    """``message`` on one line, every quoted value ('...' or "...") longer than ``quoted`` characters cut."""
    text = " ".join(str(message).split())
    return re.sub(rf"""(['"])([^'"]{{{quoted}}})[^'"]{{20,}}\1""", lambda m: f"{m[1]}{m[2]}…{m[1]}", text)


def os_error_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror or type(exc).__name__} ({type(exc).__name__})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CollapseBenchError as exc:
        if args.debug:
            raise
        print(f"collapse-bench: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # safety net: an I/O failure the command did not turn into a CollapseBenchError
        if args.debug:
            raise
        print(f"collapse-bench: error: {one_line(os_error_message(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("collapse-bench: interrupted; no result written", file=sys.stderr)
        return 130


def entry() -> int:
    """The console command: first the heap allocator (``allocator.ensure``: may re-execute this process once)."""
    try:
        allocator.ensure()
    except CollapseBenchError as exc:
        print(f"collapse-bench: error: {one_line(exc)}", file=sys.stderr)
        return 1
    return main()


if __name__ == "__main__":
    sys.exit(entry())
