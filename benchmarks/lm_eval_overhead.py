"""lm-eval path overhead, measured side by side in one run on the same docs with the same HF model object.

harness  what ``evaluate`` runs for each ``kind: lm_eval`` task: ``prepare`` (data references read and
         sha256-hashed, seeded sample, per-run include dir, lm-eval task built offline), ``run`` (lm-eval's
         ``HFLM`` around the loaded model, ``simple_evaluate(log_samples=True)``, per-sample records,
         calibration of both variants) and the samples file written next to the result;
plain    ``HFLM(pretrained=<the same model object>)`` + ``TaskManager(include_path)`` +
         ``lm_eval.simple_evaluate(tasks, limit)`` on the same lm-eval YAMLs, pointed at JSONL files that hold
         exactly the docs the harness selects (written before timing), one call for all tasks.

The two alternate ``--reps`` times (plain first, then harness, then the other order) so that machine drift
hits both alike; times are summed over repetitions. Both wall time and the CPU time of this process
(``time.process_time``, all its threads) are reported: on a shared machine other processes stretch wall
time by whole seconds, CPU time much less, so the CPU-time ratio is the headline. Every batched forward
(``HFLM._model_call``) is timed too, on both paths, with its padded token count: the time outside it is
the harness's and lm-eval's own work, also shown put onto the plain run's forward time (which removes the
forward's run-to-run noise, and with it the forward-work difference: one ``simple_evaluate`` per task
batches a little differently from one call for all tasks, hence the padded token counts). Before timing,
one small untimed call of each warms up imports and lazy initialisation. The model is loaded once (not
timed); the task registry too.

Usage: python benchmarks/lm_eval_overhead.py [--model smollm2-135m-instruct] [--tasks arc_easy,piqa]
       [--limit 32] [--reps 4] [--batch-size 8] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars that do not pass disable= explicitly, both sides

import torch  # noqa: E402

from collapse_bench.context import RunContext  # noqa: E402
from collapse_bench.data import resolve_data_dir  # noqa: E402
from collapse_bench.data.sources import load_ref  # noqa: E402
from collapse_bench.models import load_model  # noqa: E402
from collapse_bench.ood import backends, lmeval  # noqa: E402
from collapse_bench.ood import task as lm_task  # noqa: E402
from collapse_bench.tasks import TaskRegistry, lmeval_yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def harness_path(tasks: list[Any], loaded: Any, data_dir: Path, limit: int, batch_size: int, out_dir: Path) -> dict[str, Any]:
    """``evaluate``'s lm_eval work for ``tasks``: prepare all, run each, write the samples file; the task blocks."""
    backends._CACHE.clear()  # a fresh evaluate process builds its HFLM and lm-eval's env info once
    lmeval._ENV_INFO.clear()
    preps = {t.name: lm_task.prepare(t, data_dir, limit) for t in tasks}
    ctx = RunContext(loaded, batch_size=batch_size, limit=limit, data_dir=data_dir, output=out_dir / "r.json", progress=False)
    blocks = {t.name: lm_task.run(t, preps[t.name], ctx) for t in tasks}
    for hook in ctx.on_result:
        hook({"tasks": blocks}, ctx.output)
    return blocks


def plain_setup(tasks: list[Any], data_dir: Path, limit: int, root: Path) -> Path:
    """An include dir with the same lm-eval YAMLs, their data files holding exactly the harness's docs (untimed)."""
    inc = root / "plain_tasks"
    shutil.copytree(lmeval_yaml.builtin_include_dir(), inc)
    for t in tasks:
        src = inc / lmeval_yaml.index(lmeval_yaml.builtin_include_dir())[t.name].name
        config = lmeval_yaml.read_config(src)
        splits = dict(zip(("eval", "fewshot"), lmeval.data_split_names(lmeval_yaml.merged_config(src))))
        files = {}
        for role, split in splits.items():
            refs = [ref for ref in t.data if ref.get("role", "eval") == role]
            rows = [r for ref in refs for r in load_ref(ref, task_path=t.path, data_dir=data_dir, seed=t.params["seed"],
                                                        limit=limit if role == "eval" else None).rows]
            if rows:
                files[split] = str(root / f"{t.name}.{role}.jsonl")
                Path(files[split]).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        lmeval.write_config(src, {**config, "dataset_path": "json", "dataset_kwargs": {"data_files": files}})
    return inc


def plain_path(names: list[str], loaded: Any, include: Path, limit: int, batch_size: int) -> dict[str, Any]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    tm = TaskManager(include_path=str(include), include_defaults=False)
    return lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=tm, limit=limit)["results"]


class ForwardMeter:
    """Times every ``HFLM._model_call`` (the batched forward pass), on both paths alike."""

    def __init__(self) -> None:
        from lm_eval.models.huggingface import HFLM

        self.cls, self.orig = HFLM, HFLM._model_call
        meter = self

        def timed(lm: Any, inps: Any, *a: Any, **kw: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            out = meter.orig(lm, inps, *a, **kw)
            t = meter.totals
            t["fwd_wall"] += time.perf_counter() - t0
            t["fwd_cpu"] += time.process_time() - c0
            t["padded_tokens"] += inps.numel()
            t["calls"] += 1
            return out

        HFLM._model_call = timed
        self.reset()

    def reset(self) -> None:
        self.totals = {"fwd_wall": 0.0, "fwd_cpu": 0.0, "padded_tokens": 0.0, "calls": 0.0}

    def restore(self) -> None:
        self.cls._model_call = self.orig


def report(sums: dict[str, dict[str, float]], reps: int) -> None:
    h, p = sums["harness"], sums["plain"]
    for clock in ("cpu", "wall"):
        print(f"harness lm-eval path / plain simple_evaluate, {clock} time: {h[clock] / p[clock]:.3f}  "
              f"({h[clock]:.2f} s / {p[clock]:.2f} s){'   target <= 1.05' if clock == 'cpu' else ''}")
    for clock in ("cpu", "wall"):
        oh, op = h[clock] - h[f"fwd_{clock}"], p[clock] - p[f"fwd_{clock}"]
        print(f"  outside the model forward ({clock}): harness {oh / reps:.2f} s, plain {op / reps:.2f} s per run; "
              f"on the plain run's forward time: ({p[f'fwd_{clock}']:.2f} + {oh:.2f}) / ({p[f'fwd_{clock}']:.2f} + {op:.2f}) = "
              f"{(p[f'fwd_{clock}'] + oh) / (p[f'fwd_{clock}'] + op):.3f}")
    print(f"  forward work: harness {h['padded_tokens'] / reps:.0f} padded tokens in {h['calls'] / reps:.0f} batches, "
          f"plain {p['padded_tokens'] / reps:.0f} in {p['calls'] / reps:.0f} per run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tasks", default="arc_easy,piqa", help="comma-separated lm_eval tasks with mirror data")
    ap.add_argument("--limit", type=int, default=32, help="docs per task (the harness's seeded --limit sample)")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    default_data = REPO.parent / "shared" / "data"
    ap.add_argument("--data-dir", type=Path, default=default_data if default_data.is_dir() else None)
    args = ap.parse_args()
    for name in ("lm_eval", "lm-eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)

    registry = TaskRegistry([])
    tasks = [registry.task(n.strip()) for n in args.tasks.split(",") if n.strip()]
    data_dir = resolve_data_dir(str(args.data_dir) if args.data_dir else None)
    loaded = load_model(args.model, device="cpu", dtype="float32")
    root = Path(tempfile.mkdtemp(prefix="lm-eval-overhead-"))
    include = plain_setup(tasks, data_dir, args.limit, root)
    names = [t.name for t in tasks]
    print(f"model {args.model}, tasks {', '.join(names)}, {args.limit} docs each, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, {args.reps} alternating repetitions")
    warm = plain_setup(tasks, data_dir, 2, root / "warm")
    harness_path(tasks, loaded, data_dir, 2, args.batch_size, root)  # warm-up, untimed
    plain_path(names, loaded, warm, 2, args.batch_size)

    meter = ForwardMeter()
    sums = {w: dict.fromkeys(("wall", "cpu", "fwd_wall", "fwd_cpu", "padded_tokens", "calls"), 0.0) for w in ("plain", "harness")}
    last: dict[str, Any] = {}
    for rep in range(args.reps):
        for which in (("plain", "harness") if rep % 2 == 0 else ("harness", "plain")):
            meter.reset()
            t0, c0 = time.perf_counter(), time.process_time()
            if which == "plain":
                last["plain"] = plain_path(names, loaded, include, args.limit, args.batch_size)
            else:
                last["harness"] = harness_path(tasks, loaded, data_dir, args.limit, args.batch_size, root)
            m = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, **meter.totals}
            for k, v in m.items():
                sums[which][k] += v
            print(f"  rep {rep} {which:8s} wall {m['wall']:7.2f} s  cpu {m['cpu']:7.2f} s   of which model forward: "
                  f"wall {m['fwd_wall']:6.2f} s, cpu {m['fwd_cpu']:6.2f} s "
                  f"({m['calls']:.0f} batches, {m['padded_tokens']:.0f} padded tokens)", flush=True)
    meter.restore()
    for n in names:  # the same docs, the same numbers
        a, hm = last["plain"][n]["acc,none"], last["harness"][n]["metrics"]
        print(f"  {n}: acc plain {a:.4f} harness {hm['acc']:.4f} (acc_norm {hm.get('acc_norm', float('nan')):.4f}, "
              f"ece {hm['ece']:.4f})" + ("" if a == hm["acc"] else "  MISMATCH"))
    report(sums, args.reps)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
