"""``collapse-bench parity MODEL``: the same N multiple-choice items through lm-eval's HF and vLLM
backends; reports max and mean |Δ log-likelihood| over every (item, choice) and the share of items whose
predicted choice agrees. Needs a CUDA GPU and vllm; elsewhere it stops with one line before loading."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cliutil import add_common
from ..errors import CollapseBenchError


def compare(hf: list[dict[str, Any]], vl: list[dict[str, Any]]) -> dict[str, Any]:
    """Parity of two record lists of the same items (matched by doc_id)."""
    by_id = {r["doc_id"]: r for r in vl}
    if set(by_id) != {r["doc_id"] for r in hf}:
        raise CollapseBenchError("parity: the two backends scored different items")
    deltas, agree = [], 0
    for a in hf:
        b = by_id[a["doc_id"]]
        deltas += [abs(x - y) for x, y in zip(a["loglik"], b["loglik"])]
        pa = max(range(len(a["loglik"])), key=lambda k: (a["loglik"][k], -k))
        pb = max(range(len(b["loglik"])), key=lambda k: (b["loglik"][k], -k))
        agree += int(pa == pb)
    n = len(hf)
    return {
        "items": n,
        "choices": len(deltas),
        "max_abs_delta_loglik": max(deltas),
        "mean_abs_delta_loglik": sum(deltas) / len(deltas),
        "prediction_agreement": agree / n,
        "acc_hf": sum(r["correct"] for r in hf) / n,
        "acc_vllm": sum(r["correct"] for r in vl) / n,
    }


def run_parity(args: argparse.Namespace) -> dict[str, Any]:
    from ..data import resolve_data_dir
    from ..models import load_model
    from ..tasks import TaskRegistry
    from . import backends, lmeval
    from .samples import mc_records
    from .task import prepare

    backends.require_vllm()  # before anything is loaded
    registry = TaskRegistry(args.tasks_dir or [])
    tasks = [registry.task(t.strip()) for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t.kind != "lm_eval":
            raise CollapseBenchError(f"parity: task '{t.name}' is of kind {t.kind}, not lm_eval")
    data_dir = resolve_data_dir(args.data_dir)
    preps = {b: {t.name: prepare(t, data_dir, args.n) for t in tasks} for b in backends.BACKENDS}
    for t in tasks:
        if preps["hf"][t.name].resolved.output_type != "multiple_choice":
            raise CollapseBenchError(f"parity: task '{t.name}' is not multiple choice")
    loaded = load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    records: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for backend in backends.BACKENDS:
        config = backends.BackendConfig(backend, args.tensor_parallel_size, 1)
        with lmeval.quiet(False):
            lm = backends.get_lm(loaded, config, batch_size=args.batch_size)
        for t in tasks:
            prep = preps[backend][t.name]
            out = lmeval.run(lm, prep.resolved, progress=False)
            assert out is not None  # a single-process lm (rank 0)
            records.setdefault(t.name, {})[backend] = mc_records(
                prep.resolved.name, prep.resolved.task, out["samples"][prep.resolved.name]
            )[0]
    report = {name: compare(r["hf"], r["vllm"]) for name, r in records.items()}
    # doc ids repeat across tasks: made unique for the pooled comparison
    allr = {
        b: [{**x, "doc_id": (i, x["doc_id"])} for i, r in enumerate(records.values()) for x in r[b]] for b in backends.BACKENDS
    }
    return {"model": loaded.info, "n": args.n, "tasks": report, "overall": compare(allr["hf"], allr["vllm"])}


def cmd_parity(args: argparse.Namespace) -> int:
    from ..cliutil import quiet_libraries
    from ..io import atomic_write_json

    quiet_libraries()
    report = run_parity(args)
    for name, r in {**report["tasks"], "overall": report["overall"]}.items():
        print(
            f"{name:16} items={r['items']:4d} max|Δll|={r['max_abs_delta_loglik']:.4g} "
            f"mean|Δll|={r['mean_abs_delta_loglik']:.4g} "
            f"agreement={r['prediction_agreement']:.4f} acc hf={r['acc_hf']:.4f} vllm={r['acc_vllm']:.4f}"
        )
    if args.output:
        atomic_write_json(Path(args.output), report)
        print(f"report written to {args.output}")
    return 0


def register(sub: Any) -> None:
    from ..cliutil import positive_int
    from ..models import DEFAULT_MODEL

    p = sub.add_parser(
        "parity",
        help="HF vs vLLM log-likelihood parity on the same multiple-choice items (GPU)",
        description="Score the same N items of each task with lm-eval's HF and vLLM backends and report "
        "max |Δ log-likelihood| and prediction agreement.",
    )
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL")
    p.add_argument("--n", type=positive_int, default=100, help="items per task (seeded sample; default 100)")
    p.add_argument("--tasks", default="world_mc", help="comma-separated lm_eval tasks (default: world_mc, no data dir needed)")
    add_common(p, "tasks_dir", "data_dir", "device", "dtype")  # the same dtype for both backends
    p.add_argument("--batch-size", type=positive_int, default=16, help="HF batch size (vLLM batches automatically)")
    p.add_argument("--tensor-parallel-size", type=positive_int, default=1)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--output", metavar="PATH", help="also write the report as JSON")
    p.set_defaults(func=cmd_parity)
