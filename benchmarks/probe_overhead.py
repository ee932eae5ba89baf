"""Probe-pass overhead, measured side by side in one run on the same tokens and batches.

(a) metric pass (forward with hidden states + every accumulator) / bare forward (``model(ids)``), interleaved
    batch by batch so that machine drift hits both alike; reported without and with the one-off ``compute()``;
(a+) the same for the **full** pass of a lineage stage: every accumulator plus KL and the neighbourhood sample to
    two references (``base`` and ``parent``, each read from a reference cache on disk) and this checkpoint's own
    cache writer (the references are the same model here: the cost does not depend on their weights); the order of
    the metric and the full pass alternates batch by batch;
(a++) inside the full pass, the time of the reference machinery alone (cache readers, KL and neighbour
    accumulators with the shared top-64 logit pass, the writer), as a share of the bare forward: the added cost
    with less noise than a difference of two passes;
(b) the same ratio for a naive implementation: ``output_hidden_states`` + keep every state + a per-layer SVD;
(c) peak RSS of the full pass (and of the naive one) with N and 8N probe texts (the task's max_tokens; N = every
    8th of the 8N, so both have the same length mix and batch shapes), each in a fresh subprocess: the peak of the
    pass itself (``VmHWM`` reset after the model is loaded, so the load's transient peak, the same for both, does
    not dilute the growth) and the process-lifetime ``ru_maxrss``; target: growth <= 10% for the streaming pass
    (the reference cache is streamed to and from disk; the KL accumulator keeps ~30 bytes per position).

Usage: python benchmarks/probe_overhead.py [--model smollm2-135m-instruct] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from collapse_bench import allocator
from collapse_bench.metrics import registry
from collapse_bench.metrics.divergence import KLAccumulator
from collapse_bench.metrics.neighbours import NeighbourAccumulator
from collapse_bench.metrics.reference import SAMPLE_SIZE, sequence_sample
from collapse_bench.metrics.spectral import effective_rank_from_eigvals, participation_ratio_from_eigvals
from collapse_bench.models import load_model
from collapse_bench.probe.corpus import ProbeCorpus, build_corpus, tokenize
from collapse_bench.probe.refcache import CacheWriter, ReferenceCache
from collapse_bench.probe.references import CachedProvider
from collapse_bench.probe.runner import ProbePass, align_layers, make_batch_tensors
from collapse_bench.probe.task import summary_layers
from collapse_bench.tasks import TaskRegistry

REPO = Path(__file__).resolve().parents[1]
ROLES = ("base", "parent")


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
            out = self.model(
                input_ids=t["input_ids"], attention_mask=t["attention_mask"], output_hidden_states=True, use_cache=False
            )
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


def layers_of(model) -> list[int]:
    return summary_layers(model.config.num_hidden_layers + 1)


def writer(model, path: Path, n_seq: int) -> CacheWriter:
    return CacheWriter(
        path, {"tokens_sha256": "benchmark"}, sample=sequence_sample(0, n_seq, SAMPLE_SIZE), layers=layers_of(model)
    )


def write_reference(model, tokens, domains, pad_id: int, batch_size: int, path: Path) -> ReferenceCache:
    """A cache-only pass (forward + writer) over ``tokens``: the references the full pass reads."""
    w = writer(model, path, len(tokens))
    probe = ProbePass(model, lambda *_: [], writers={"model": w})
    for i in range(0, len(tokens), batch_size):
        probe.step(tokens[i : i + batch_size], i, domains[i : i + batch_size], pad_id)
    assert w.commit() is not None
    return ReferenceCache(path)


class Clocked:
    """Forwards ``method`` (and every other attribute) to ``inner``, adding the time of each call to ``clock[0]``."""

    def __init__(self, inner, method: str, clock: list[float]) -> None:
        self.inner, self.method, self.clock = inner, method, clock

    def __getattr__(self, name: str):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return attr(*a, **k)
            finally:
                self.clock[0] += time.perf_counter() - t0

        return timed


def full_pass(model, factory, cache: ReferenceCache, own: Path, n_seq: int, clock: list[float] | None = None) -> ProbePass:
    """The pass of a lineage stage; with ``clock``, the reference machinery's calls are timed into clock[0]: the
    providers' rows, the KL and neighbour accumulators' updates (incl. the shared logit pass) and the writer."""
    layers = tuple(layers_of(model))
    align = align_layers(len(layers), len(cache.meta["layers"]))
    providers = {role: CachedProvider(cache, layers, align) for role in ROLES}  # one reader per role, as in a chain
    w = writer(model, own, n_seq)
    if clock is None:
        return ProbePass(model, factory, providers=providers, writers={"model": w})
    timed = (KLAccumulator, NeighbourAccumulator)

    def clocked_factory(*args):
        return [Clocked(a, "update", clock) if isinstance(a, timed) else a for a in factory(*args)]

    readers = {role: Clocked(p, "rows", clock) for role, p in providers.items()}
    return ProbePass(model, clocked_factory, providers=readers, writers={"model": Clocked(w, "update", clock)})


def timing(model, tokens, domains, pad_id, n_domains: int, batch_size: int, reps: int, naive_too: bool, tmp: Path) -> dict:
    batches = [tokens[i : i + batch_size] for i in range(0, len(tokens), batch_size)]
    tensors = [make_batch_tensors(b, pad_id, "cpu") for b in batches]
    bare_step(model, tensors[0])  # warm-up
    cache = write_reference(model, tokens, domains, pad_id, batch_size, tmp / "ref")
    plain = registry.probe_accumulators(n_domains=n_domains, reservoir_size=2048, seed=0)
    full = registry.probe_accumulators(n_domains=n_domains, reservoir_size=2048, seed=0, references=ROLES)
    keys = ("bare", "metric", "metric_full_logits", "metric_compute", "full", "full_compute", "full_commit")
    keys += ("naive", "naive_finish")
    sums = dict.fromkeys(keys, 0.0)
    clock = [0.0]
    for rep in range(reps):
        probe, naive = ProbePass(model, plain), NaivePass(model)
        eager = ProbePass(model, plain)
        eager.head.state = "off"  # the same metric pass with the model's full (B, T, V) logits (probe/head.py off)
        fullp = full_pass(model, full, cache, tmp / f"own{rep}", len(tokens), clock)
        for i, (items, t) in enumerate(zip(batches, tensors)):
            doms = domains[i * batch_size : i * batch_size + len(items)]
            t0 = time.perf_counter()
            bare_step(model, t)
            sums["bare"] += time.perf_counter() - t0
            passes = (("metric", probe), ("full", fullp), ("metric_full_logits", eager))
            for name, p in passes[:: 1 if i % 2 == 0 else -1]:  # alternate the order
                t0 = time.perf_counter()
                p.step(items, i * batch_size, doms, pad_id)
                sums[name] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if naive_too:
                naive.step(t)
            sums["naive"] += time.perf_counter() - t0
        for name, p in (("metric_compute", probe), ("full_compute", fullp)):
            t0 = time.perf_counter()
            for acc in p.accumulators:
                acc.compute()
            sums[name] += time.perf_counter() - t0
        t0 = time.perf_counter()
        fullp.writers["model"].inner.commit()
        sums["full_commit"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if naive_too:
            naive.finish()
        sums["naive_finish"] += time.perf_counter() - t0
    n_tok = sum(len(t.ids) for t in tokens)
    out = {**{k: v / reps for k, v in sums.items()}, "tokens": n_tok, "references": clock[0] / reps}
    out["share_references"] = clock[0] / sums["bare"]
    out["ratio_metric_pass"] = sums["metric"] / sums["bare"]
    out["ratio_metric_full_logits"] = sums["metric_full_logits"] / sums["bare"]
    out["ratio_metric_pass_with_compute"] = (sums["metric"] + sums["metric_compute"]) / sums["bare"]
    out["ratio_full_pass"] = sums["full"] / sums["bare"]
    out["ratio_full_pass_with_compute"] = (sums["full"] + sums["full_compute"] + sums["full_commit"]) / sums["bare"]
    out["ratio_naive"] = (sums["naive"] + sums["naive_finish"]) / sums["bare"] if naive_too else float("nan")
    out["cache_mb"] = sum(f.stat().st_size for f in (tmp / "ref").iterdir()) / 2**20
    return out


def report_timing(args: argparse.Namespace, lm, tokens, domains, corpus: ProbeCorpus, params: dict, tmp: Path) -> None:
    pad = lm.tokenizer.pad_token_id
    t = timing(lm.model, tokens, domains, pad, len(corpus.domain_names), args.batch_size, args.reps, not args.skip_naive, tmp)
    print(
        f"model {args.model}, corpus {params['name']}, {len(tokens)} texts, {t['tokens']:.0f} tokens, "
        f"batch {args.batch_size}, max_tokens {params['max_tokens']}, tokens_per_sequence {params['tokens_per_sequence']}, "
        f"torch threads {torch.get_num_threads()}, {args.reps} interleaved reps"
    )
    print(
        f"(a) bare forward {t['bare']:.2f} s | metric pass {t['metric']:.2f} s -> ratio {t['ratio_metric_pass']:.3f} "
        f"(target <= 1.05); with final compute() {t['metric_compute']:.2f} s -> {t['ratio_metric_pass_with_compute']:.3f}"
    )
    print(
        f"(a-) the metric pass with full logits (the deferred head off) {t['metric_full_logits']:.2f} s -> ratio "
        f"{t['ratio_metric_full_logits']:.3f}; deferred / full logits {t['metric'] / t['metric_full_logits']:.3f}"
    )
    print(
        f"(a+) full pass (+ KL and kNN sample to 2 cached references + own cache writer) {t['full']:.2f} s -> ratio "
        f"{t['ratio_full_pass']:.3f} (target <= 1.05); one-off compute() {t['full_compute']:.2f} s + cache commit "
        f"{t['full_commit']:.2f} s -> {t['ratio_full_pass_with_compute']:.3f}; reference cache {t['cache_mb']:.1f} MiB"
    )
    print(
        f"(a++) timed inside the full pass, the reference machinery (2 cache readers, 2 KL + 2 neighbour accumulators "
        f"incl. the shared top-64 logit pass, the cache writer) {t['references']:.2f} s = "
        f"{100 * t['share_references']:.1f}% of the bare forward"
    )
    if not args.skip_naive:
        print(f"(b) naive keep-all + per-layer SVD {t['naive']:.2f} + {t['naive_finish']:.2f} s -> ratio {t['ratio_naive']:.3f}")


def texts_for(corpus: ProbeCorpus, n: int, of: int | None = None) -> tuple[list[str], list[int]]:
    """The first ``of`` texts of the corpus (repeated as needed), every (of / n)-th of them: N and 8N texts then
    span the same domains and lengths, so the batch shapes (the forward's own peak) are alike."""
    of = of or n
    texts, domains = (corpus.texts * 8)[:of], (corpus.domains * 8)[:of]
    step = max(1, of // n)
    return texts[::step][:n], domains[::step][:n]


def rss_child(args: argparse.Namespace) -> None:
    """One pass over the first ``n`` texts (full pass: references read from ``--cache``); prints the peak RSS (kB)."""
    lm = load_model(args.model, device="cpu")
    corpus, params = corpus_for(args.data_dir)
    texts, domains = texts_for(corpus, args.rss_child, args.rss_of)
    tokens = tokenize(lm.tokenizer, texts, params["max_tokens"], params["tokens_per_sequence"], 0)
    pad = lm.tokenizer.pad_token_id
    loaded = reset_peak()  # the pass's own peak from here (the model's load peak is the same for N and 8N)
    if args.naive:
        naive = NaivePass(lm.model)
        for i in range(0, len(tokens), args.batch_size):
            naive.step(make_batch_tensors(tokens[i : i + args.batch_size], pad, "cpu"))
        naive.finish()
    else:
        factory = registry.probe_accumulators(n_domains=len(corpus.domain_names), reservoir_size=2048, seed=0, references=ROLES)
        with tempfile.TemporaryDirectory() as tmp:
            probe = full_pass(lm.model, factory, ReferenceCache(Path(args.cache)), Path(tmp) / "own", len(tokens))
            for i in range(0, len(tokens), args.batch_size):
                probe.step(tokens[i : i + args.batch_size], i, domains[i : i + args.batch_size], pad)
                if args.trace:
                    print(json.dumps({"batch": i // args.batch_size, **heap_stats()}), file=sys.stderr, flush=True)
            for acc in probe.accumulators:
                acc.compute()
            probe.writers["model"].commit()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"n": args.rss_child, "maxrss_kb": rss, "tokens": sum(len(t.ids) for t in tokens), "allocator": allocator.in_use()}
    if loaded is not None:
        out |= {"loaded_kb": loaded, "pass_peak_kb": status_kb("VmHWM")}
    print(json.dumps(out))


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def heap_stats() -> dict[str, int]:
    """RSS, peak and glibc's heap figures now (MiB): in use, free inside the heap, mmapped (``mallinfo2``)."""
    out = {"rss": status_kb("VmRSS") // 1024, "hwm": status_kb("VmHWM") // 1024}
    try:
        import ctypes

        class Info(ctypes.Structure):
            names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
            _fields_ = [(n, ctypes.c_size_t) for n in names]

        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = Info
        m = libc.mallinfo2()
        out |= {"heap": m.arena >> 20, "used": m.uordblks >> 20, "free": m.fordblks >> 20, "mmapped": m.hblkhd >> 20}
    except (OSError, AttributeError):
        pass
    return out


def reset_peak() -> int | None:
    """Reset this process's peak RSS (``VmHWM``; Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``) and return the
    RSS now (kB); None where that is not available (the process-lifetime ``ru_maxrss`` is then the only figure)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return status_kb("VmRSS")
    except OSError:
        return None


def rss(args: argparse.Namespace, n: int, naive: bool, cache: Path | None, alloc: str) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", str(n), "--rss-of", str(8 * args.rss_n), "--model", args.model]
    cmd += ["--batch-size", str(args.batch_size)]
    cmd += ["--data-dir", str(args.data_dir)] if args.data_dir else []
    cmd += ["--naive"] if naive else ["--cache", str(cache)]
    env = {**os.environ, allocator.ENV: alloc}
    env.pop(allocator.GUARD, None)
    if alloc == "system":  # the parent's own preload (``auto`` re-executed it) must not reach this child
        env["LD_PRELOAD"] = " ".join(x for x in env.get("LD_PRELOAD", "").split() if "tcmalloc" not in x)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
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
    ap.add_argument("--skip-naive", action="store_true", help="no naive pass (b) and no naive RSS child")
    ap.add_argument("--skip-timing", action="store_true", help="only (c)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--rss-of", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rss-allocators", default="auto,system", help=f"(c): the {allocator.ENV} settings, side by side")
    ap.add_argument("--cache-dir", type=Path, help="(c)'s reference caches: reused from here if present, else written")
    args = ap.parse_args()
    allocator.ensure()  # as the CLI does (children too: each re-executes with tcmalloc under ``auto``)
    if args.rss_child:
        return rss_child(args)
    lm = load_model(args.model, device="cpu")
    corpus, params = corpus_for(args.data_dir)
    stride = max(1, len(corpus.texts) // args.texts)
    picked = list(range(0, len(corpus.texts), stride))[: args.texts]
    tokens = tokenize(lm.tokenizer, [corpus.texts[i] for i in picked], params["max_tokens"], params["tokens_per_sequence"], 0)
    domains = [corpus.domains[i] for i in picked]
    pad = lm.tokenizer.pad_token_id
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_timing:
            report_timing(args, lm, tokens, domains, corpus, params, tmp)
        if args.skip_rss:
            return
        caches = {}  # the references each child reads: a cache of exactly its texts
        for n in (args.rss_n, 8 * args.rss_n):
            caches[n] = (args.cache_dir or tmp) / f"ref{n}-of{8 * args.rss_n}-{args.model}"
            if not (caches[n] / "meta.json").is_file():
                texts, doms = texts_for(corpus, n, 8 * args.rss_n)
                toks = tokenize(lm.tokenizer, texts, params["max_tokens"], params["tokens_per_sequence"], 0)
                write_reference(lm.model, toks, doms, pad, args.batch_size, caches[n])
        del lm
        runs = [(False, a) for a in args.rss_allocators.split(",")] + [(True, "auto")] * (not args.skip_naive)
        for naive, alloc in runs:
            small, large = (rss(args, n, naive, caches[n], alloc) for n in (args.rss_n, 8 * args.rss_n))
            label = f"{'naive' if naive else 'full pass'}, {allocator.ENV}={alloc} (in use: {small['allocator']})"
            for key, what in (("pass_peak_kb", "of the pass"), ("maxrss_kb", "of the process, model load included")):
                if key not in small:
                    continue
                growth = large[key] / small[key] - 1
                print(
                    f"(c) peak RSS {what}, {label}: N={small['n']} ({small['tokens']} tok) {small[key] / 1024:.0f} MiB, "
                    f"8N={large['n']} ({large['tokens']} tok) {large[key] / 1024:.0f} MiB -> growth {100 * growth:+.1f}%"
                    + (" (target <= 10%)" if not naive else "")
                )
            if "loaded_kb" in small:
                before = f"{small['loaded_kb'] / 1024:.0f} / {large['loaded_kb'] / 1024:.0f} MiB"
                print(f"    RSS after the model load, before the pass (N / 8N): {before}")


if __name__ == "__main__":
    main()
