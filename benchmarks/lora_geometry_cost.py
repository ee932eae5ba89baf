"""Cost of the ``lora`` task: weights-only analysis of every adapted matrix of a 135M model (target: well under a
minute on CPU), measured in one run.

1. A real rank-8 LoRA adapter on all 7 projection types (q, k, v, o, gate, up, down) of SmolLM2-135M, made with
   peft and a few AdamW steps on builtin text (so B != 0), saved to a temp dir.
2. The lora task's ``run()`` on it, end to end (reading the adapter and the base weights, every metric), with the
   time inside the complete parent SVDs (``thin_svd(W0)``) and the fine-tuned top-k SVDs timed separately.
3. Side by side on a sample of layers: the float64 Gram + ``eigh`` complete SVD used for the parent (one thread, as
   the task runs it) vs the same with torch's default thread count vs LAPACK ``torch.linalg.svd`` in float32 and
   float64, on the same matrices, with the intruder counts each gives.

Usage: python benchmarks/lora_geometry_cost.py [--model smollm2-135m-instruct] [--steps 4] [--sample-layers 0,29]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from collapse_bench.cliutil import quiet_libraries
from collapse_bench.data.builtin import builtin_rows
from collapse_bench.lora import geometry, task as lora_task
from collapse_bench.lora.updates import WeightFiles, adapter_updates, read_adapter
from collapse_bench.models import find_source, load_model
from collapse_bench.tasks import TaskRegistry

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(model_name: str, out: Path, steps: int) -> float:
    """Train a rank-8 LoRA for ``steps`` AdamW steps (lr 1e-3, 4 x 64 tokens) and save it; returns seconds."""
    from peft import LoraConfig, get_peft_model

    t0 = time.perf_counter()
    loaded = load_model(model_name, device="cpu", dtype="float32")
    torch.manual_seed(0)
    model = get_peft_model(loaded.model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0))
    model.train()
    texts = [r["text"] for r in builtin_rows("python_docs")][: 4 * steps]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tok = loaded.tokenizer
    for i in range(steps):
        batch = tok(texts[4 * i: 4 * i + 4], return_tensors="pt", padding=True, truncation=True, max_length=64)
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    return time.perf_counter() - t0


class Timed:
    """Wraps ``geometry.thin_svd`` to sum the time of complete (parent) and top-k (fine-tuned) decompositions."""

    def __init__(self) -> None:
        self.inner, self.parent_s, self.topk_s, self.calls = geometry.thin_svd, 0.0, 0.0, 0

    def __call__(self, W, k=None, *, complete=True):
        t0 = time.perf_counter()
        out = self.inner(W, k, complete=complete)
        dt = time.perf_counter() - t0
        if complete and k is None:
            self.parent_s, self.calls = self.parent_s + dt, self.calls + 1
        else:
            self.topk_s += dt
        return out


def side_by_side(adapter_dir: Path, base_dir: Path, layers: set[int]) -> None:
    """Parent-side complete SVD by four methods, interleaved matrix by matrix, with the intruder count each gives."""
    threads = torch.get_num_threads()

    def run(n_threads: int, fn):
        def call(W):
            torch.set_num_threads(n_threads)
            try:
                return fn(W)
            finally:
                torch.set_num_threads(threads)
        return call

    methods = {
        "gram+eigh f64, 1 thread (used)": run(1, lambda W: geometry.thin_svd(W).U),
        f"gram+eigh f64, {threads} threads": run(threads, lambda W: geometry.thin_svd(W).U),
        "LAPACK svd f32, 1 thread": run(1, lambda W: torch.linalg.svd(W.float(), full_matrices=False)[0].double()),
        "LAPACK svd f64, 1 thread": run(1, lambda W: torch.linalg.svd(W, full_matrices=False)[0]),
    }
    rows = {label: [0.0, 0] for label in methods}
    n = 0
    for upd in adapter_updates(read_adapter(adapter_dir), WeightFiles(base_dir, "base")):
        if upd.layer not in layers:
            continue
        n += 1
        Wt_top = geometry.thin_svd(upd.W0 + upd.delta.dense(), k=10, complete=False).U
        for label, fn in methods.items():
            t0 = time.perf_counter()
            U0 = fn(upd.W0)
            rows[label][0] += time.perf_counter() - t0
            rows[label][1] += sum(geometry.intruder_counts(U0, Wt_top, [0.3, 0.5, 0.7]).values())
    ref = rows["gram+eigh f64, 1 thread (used)"][0]
    print(f"\nparent SVD side by side on layers {sorted(layers)} ({n} matrices; intruders summed over eps 0.3/0.5/0.7):")
    for label, (secs, intruders) in rows.items():
        print(f"  {label:32} {secs:8.2f} s  ({secs / ref:6.2f}x)  intruders={intruders}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sample-layers", default="0,29")
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        adapter_dir = Path(tmp) / "adapter"
        made = make_adapter(args.model, adapter_dir, args.steps)
        source = find_source(str(adapter_dir))
        print(f"adapter: rank 8 on {', '.join(TARGETS)}; {args.steps} AdamW steps ({made:.1f} s to make)")
        task = TaskRegistry().task("lora")
        layers = json.loads((Path(source.base.path) / "config.json").read_text())["num_hidden_layers"]
        ctx = SimpleNamespace(model=SimpleNamespace(source=source, info={"num_layers": layers}), parent=None)
        timed = Timed()
        geometry.thin_svd = timed
        try:
            t0 = time.perf_counter()
            block = lora_task.run(task, lora_task.prepare(task, None, None), ctx)
            wall = time.perf_counter() - t0
        finally:
            geometry.thin_svd = timed.inner
        m = block["metrics"]
        print(f"lora task run(): {block['counts']['modules']} matrices in {wall:.2f} s wall (target: well under 60 s)")
        print(f"  complete parent SVDs : {timed.parent_s:6.2f} s  ({timed.parent_s / wall:5.1%})  [{timed.calls} calls]")
        print(f"  fine-tuned top-k SVDs: {timed.topk_s:6.2f} s  ({timed.topk_s / wall:5.1%})")
        rest = wall - timed.parent_s - timed.topk_s
        print(f"  everything else      : {rest:6.2f} s  ({rest / wall:5.1%})  (reading weights, QR trick, metrics)")
        print("  " + ", ".join(f"{k}={m[k]:.4g}" for k in ("delta_effective_rank", "delta_stable_rank", "delta_norm",
                                                            "intruder_count_eps0.3", "intruder_count_eps0.5",
                                                            "intruder_count_eps0.7", "top_alignment")))
        side_by_side(adapter_dir, Path(source.base.path), {int(x) for x in args.sample_layers.split(",")})


if __name__ == "__main__":
    main()
