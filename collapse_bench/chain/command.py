"""``collapse-bench chain run RECIPE [...]``."""

from __future__ import annotations

import argparse

from ..cliutil import add_common, nonnegative_int, positive_int, quiet_libraries
from .recipe import PROFILES


def cmd_chain_run(args: argparse.Namespace) -> int:
    from .runner import ChainRequest, run_chain

    quiet_libraries()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    out = run_chain(
        ChainRequest(
            recipe=args.recipe,
            interventions=args.intervention,
            profile=args.profile,
            out=args.out,
            evaluate=args.evaluate,
            evaluate_stages=args.evaluate_stages,
            eval_tasks=tasks,
            eval_limit=args.limit,
            seed=args.seed,
            base=args.base,
            data_dir=args.data_dir,
            device=args.device,
            progress=not args.no_progress,
            checkpoint_steps=args.checkpoint_steps,
        )
    )
    print(f"chain written to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    chain = sub.add_parser(
        "chain",
        help="run the reference post-training chain",
        description="Sequential post-training chains with optional interventions.",
    )
    csub = chain.add_subparsers(dest="chain_command", metavar="SUBCOMMAND", required=True)
    run = csub.add_parser(
        "run",
        help="train (and evaluate) every stage of a recipe",
        description="Run RECIPE (a YAML path or a built-in name from tasks/chains/) stage by stage; "
        "resumes from the last finished stage.",
    )
    run.add_argument("recipe", metavar="RECIPE")
    run.add_argument(
        "--intervention",
        metavar="NAME[,NAME]",
        help="replay, feature_refresh, diversity_reg, lora_decorrelation (compose with commas)",
    )
    run.add_argument("--profile", default="cpu", choices=PROFILES, help="scale: tiny | cpu | reference (default: cpu)")
    run.add_argument("--out", metavar="DIR", help="output dir (default: runs/<recipe>-<profile>-<intervention>-s<seed>)")
    run.add_argument("--evaluate", metavar="SUITE", help="evaluate stages on SUITE (results are submission-ready)")
    run.add_argument(
        "--evaluate-stages",
        default="all",
        metavar="all|final|S[,S]",
        help="which stages to evaluate: all (default), final, or stage names (e.g. dpo,safety)",
    )
    run.add_argument("--tasks", help="evaluate only these tasks of the suite (comma-separated)")
    run.add_argument("--limit", type=positive_int, metavar="N", help="evaluation --limit")
    run.add_argument("--seed", type=int, default=0, help="added to every stage's seed (default: 0)")
    run.add_argument("--base", metavar="MODEL", help="override the recipe's base model")
    run.add_argument(
        "--checkpoint-steps",
        type=nonnegative_int,
        metavar="N",
        help="save a resumable checkpoint every N training steps (default: 1 for LoRA stages, 10 for full; 0: off)",
    )
    add_common(run, "data_dir", "device", "no_progress")
    run.set_defaults(func=cmd_chain_run)
    from .retarget import register as register_target

    register_target(csub)
