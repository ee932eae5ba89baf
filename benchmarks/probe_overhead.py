"""Probe-pass overhead, measured side by side in one run on the same tokens and batches.

(a) full metric pass (forward with hidden states + every accumulator) / bare forward (``model(ids)``),
    interleaved batch by batch so that machine drift hits both alike; reported without and with the
    one-off ``compute()`` (eigendecompositions) at the end;
(b) the same ratio for a naive implementation: ``output_hidden_states`` + keep every state + a
    per-layer SVD at the end;
(c) peak RSS of the metric pass (and of the naive one) with N and 8N probe texts (the task's max_tokens), each in a fresh
    subprocess; target: growth <= 10% for the streaming pass.

Usage: python benchmarks/probe_overhead.py [--model smollm2-135m-instruct] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from collapse_bench.metrics import registry
from collapse_bench.metrics.spectral import effective_rank_from_eigvals, participation_ratio_from_eigvals
from collapse_bench.models import load_model
from collapse_bench.probe.corpus import ProbeCorpus, build_corpus, tokenize
from collapse_bench.probe.runner import ProbePass, make_batch_tensors
from collapse_bench.tasks import TaskRegistry

REPO = Path(__file__).resolve().parents[1]


def corpus_for(data_dir: Path | None) -> tuple[ProbeCorpus, dict]:
    """The probe task the benchmark mirrors (standard with a data dir, else quick): its corpus and params."""
    task = TaskRegistry().task("probe_standard" if data_dir else "probe_quick")
    return build_corpus(task, data_dir, None), {"name": task.name, **task.params}


def bare_step(model, t) -> None:
    with torch.inference_mode():
        model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], use_cache=False)


class NaivePass:
    """output_hidden_states=True, every kept state stored, per-layer SVD at the end."""

    def __init__(self, model) -> None:
        self.model, self.states = model, None

    def step(self, t) -> None:
        with torch.inference_mode():
            out = self.model(input_ids=t["input_ids"], attention_mask=t["attention_mask"], output_hidden_states=True,
                             use_cache=False)
            keep = t["keep"]
            rows = [h[keep].double() for h in out.hidden_states]
            self.states = rows if self.states is None else [torch.cat([a, b]) for a, b in zip(self.states, rows)]

    def finish(self) -> list[float | None]:
        out = []
        for H in self.states:
            s = torch.linalg.svdvals(H - H.mean(0))
            out.append(effective_rank_from_eigvals(s**2))
            participation_ratio_from_eigvals(s**2)
        return out


def timing(model, tokens, domains, pad_id, n_domains: int, batch_size: int, reps: int) -> dict[str, float]:
    batches = [tokens[i : i + batch_size] for i in range(0, len(tokens), batch_size)]
    tensors = [make_batch_tensors(b, pad_id, "cpu") for b in batches]
    bare_step(model, tensors[0])  # warm-up
    factory = registry.probe_accumulators(n_domains=n_domains, reservoir_size=2048, seed=0)
    sums = {"bare": 0.0, "metric": 0.0, "metric_compute": 0.0, "naive": 0.0, "naive_finish": 0.0}
    for _ in range(reps):
        probe, naive = ProbePass(model, factory), NaivePass(model)
        for i, (items, t) in enumerate(zip(batches, tensors)):
            t0 = time.perf_counter()
            bare_step(model, t)
            t1 = time.perf_counter()
            probe.step(items, i * batch_size, domains[i * batch_size : i * batch_size + len(items)], pad_id)
            t2 = time.perf_counter()
            naive.step(t)
            t3 = time.perf_counter()
            sums["bare"] += t1 - t0
            sums["metric"] += t2 - t1
            sums["naive"] += t3 - t2
        t0 = time.perf_counter()
        for acc in probe.accumulators:
            acc.compute()
        t1 = time.perf_counter()
        naive.finish()
        t2 = time.perf_counter()
        sums["metric_compute"] += t1 - t0
        sums["naive_finish"] += t2 - t1
    n_tok = sum(len(t.ids) for t in tokens) * reps
    return {**{k: v / reps for k, v in sums.items()}, "tokens": n_tok / reps,
            "ratio_metric_pass": sums["metric"] / sums["bare"],
            "ratio_metric_pass_with_compute": (sums["metric"] + sums["metric_compute"]) / sums["bare"],
            "ratio_naive": (sums["naive"] + sums["naive_finish"]) / sums["bare"]}


def rss_child(args: argparse.Namespace) -> None:
    """Run one pass over the first ``n`` texts and print the peak RSS (kB) as JSON."""
    lm = load_model(args.model, device="cpu")
    corpus, params = corpus_for(args.data_dir)
    texts = (corpus.texts * 8)[: args.rss_child]
    domains = (corpus.domains * 8)[: args.rss_child]
    tokens = tokenize(lm.tokenizer, texts, params["max_tokens"], params["tokens_per_sequence"], 0)
    if args.naive:
        naive = NaivePass(lm.model)
        for i in range(0, len(tokens), args.batch_size):
            naive.step(make_batch_tensors(tokens[i : i + args.batch_size], lm.tokenizer.pad_token_id, "cpu"))
        naive.finish()
    else:
        probe = ProbePass(lm.model, registry.probe_accumulators(n_domains=len(corpus.domain_names), reservoir_size=2048, seed=0))
        for i in range(0, len(tokens), args.batch_size):
            probe.step(tokens[i : i + args.batch_size], i, domains[i : i + args.batch_size], lm.tokenizer.pad_token_id)
        for acc in probe.accumulators:
            acc.compute()
    print(json.dumps({"n": args.rss_child, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "tokens": sum(len(t.ids) for t in tokens)}))


def rss(args: argparse.Namespace, n: int, naive: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--rss-child", str(n), "--model", args.model, "--batch-size", str(args.batch_size)] + (["--data-dir", str(args.data_dir)] if args.data_dir else []) + (["--naive"] if naive else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    default_data = REPO.parent / "shared" / "data"
    ap.add_argument("--data-dir", type=Path, default=default_data if default_data.is_dir() else None)
    ap.add_argument("--texts", type=int, default=64, help="texts in the timing run")
    ap.add_argument("--rss-n", type=int, default=32, help="N for the RSS comparison (N vs 8N)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--skip-rss", action="store_true", help="only (a) and (b)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        return rss_child(args)
    lm = load_model(args.model, device="cpu")
    corpus, params = corpus_for(args.data_dir)
    stride = max(1, len(corpus.texts) // args.texts)
    picked = list(range(0, len(corpus.texts), stride))[: args.texts]
    tokens = tokenize(lm.tokenizer, [corpus.texts[i] for i in picked], params["max_tokens"], params["tokens_per_sequence"], 0)
    domains = [corpus.domains[i] for i in picked]
    t = timing(lm.model, tokens, domains, lm.tokenizer.pad_token_id, len(corpus.domain_names), args.batch_size, args.reps)
    print(f"model {args.model}, corpus {params['name']}, {len(tokens)} texts, {t['tokens']:.0f} tokens, batch {args.batch_size}, "
          f"max_tokens {params['max_tokens']}, tokens_per_sequence {params['tokens_per_sequence']}, torch threads {torch.get_num_threads()}, {args.reps} interleaved reps")
    print(f"(a) bare forward {t['bare']:.2f} s | metric pass {t['metric']:.2f} s -> ratio {t['ratio_metric_pass']:.3f} "
          f"(target <= 1.05); with final compute() {t['metric_compute']:.2f} s -> {t['ratio_metric_pass_with_compute']:.3f}")
    print(f"(b) naive keep-all + per-layer SVD {t['naive']:.2f} + {t['naive_finish']:.2f} s -> ratio {t['ratio_naive']:.3f}")
    for naive in () if args.skip_rss else (False, True):
        small, big = rss(args, args.rss_n, naive), rss(args, 8 * args.rss_n, naive)
        growth = big["maxrss_kb"] / small["maxrss_kb"] - 1
        label = "naive" if naive else "metric pass"
        print(f"(c) peak RSS {label}: N={small['n']} ({small['tokens']} tok) {small['maxrss_kb'] / 1024:.0f} MiB, "
              f"8N={big['n']} ({big['tokens']} tok) {big['maxrss_kb'] / 1024:.0f} MiB -> growth {100 * growth:+.1f}%"
              + (" (target <= 10%)" if not naive else ""))


if __name__ == "__main__":
    main()
