"""Generation throughput on a GPU: vLLM vs HF ``generate``, tokens/s on the same prompts (one run).

Prompts: the offline ``world_prompts`` (48 open-ended instructions), rendered with the model's chat template
when it has one and tokenized once; both engines get the same prompt token ids. Each engine generates
exactly ``--max-new-tokens`` tokens per prompt greedily (HF: ``min_new_tokens = max_new_tokens``; vLLM:
``ignore_eos``), so both produce the same number of tokens. HF: the loaded model in the given dtype, left
padding, ``--hf-batch-size`` prompts per ``generate`` call (default: all at once, its best case). vLLM:
``vllm.LLM`` on the checkpoint's local directory with the settings of ``--backend vllm``
(``gpu_memory_utilization`` 0.8, the same dtype). One untimed warm-up call per engine; wall time of the
timed call (HF with ``torch.cuda.synchronize``). Reports tokens/s for each and the vLLM / HF ratio, and how
many prompts' greedy outputs agree token for token.

Usage: python benchmarks/gen_throughput.py [MODEL] [--max-new-tokens 128] [--repeat 4] [--dtype bfloat16] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def prompt_ids(tokenizer: Any, n_repeat: int) -> list[list[int]]:
    from collapse_bench.data.worldmc import world_prompt_rows

    texts = [r["prompt"] for r in world_prompt_rows()] * n_repeat
    if getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
                 for t in texts]
        return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return [tokenizer(t)["input_ids"] for t in texts]


def hf_generate(model: Any, tokenizer: Any, prompts: list[list[int]], new_tokens: int,
                batch_size: int) -> tuple[float, list[list[int]]]:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outs: list[list[int]] = []
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=model.device)
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=model.device)
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, pad_token_id=pad)
        outs += gen[:, width:].tolist()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, outs


def vllm_generate(llm: Any, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)
    t0 = time.perf_counter()
    res = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return time.perf_counter() - t0, [list(r.outputs[0].token_ids) for r in res]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=4, help="the 48 prompts repeated this many times (default 4: 192 prompts)")
    ap.add_argument("--hf-batch-size", type=int, default=0, help="prompts per HF generate call (0: all at once)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()

    import torch

    from collapse_bench.models import load_model
    from collapse_bench.ood import backends

    backends.require_vllm()
    loaded = load_model(args.model, device="cuda", dtype=args.dtype)
    prompts = prompt_ids(loaded.tokenizer, args.repeat)
    n_new = len(prompts) * args.max_new_tokens
    bs = args.hf_batch_size or len(prompts)
    hf_generate(loaded.model, loaded.tokenizer, prompts[:8], 8, 8)  # warm-up
    hf_s, hf_out = hf_generate(loaded.model, loaded.tokenizer, prompts, args.max_new_tokens, bs)
    path = backends.model_dir(loaded)
    del loaded
    torch.cuda.empty_cache()

    from vllm import LLM

    llm = LLM(model=path, tokenizer=path, dtype=args.dtype, seed=1234,
              gpu_memory_utilization=backends.VLLM_GPU_MEMORY_UTILIZATION)
    vllm_generate(llm, prompts[:8], 8)  # warm-up
    vl_s, vl_out = vllm_generate(llm, prompts, args.max_new_tokens)
    assert all(len(o) == args.max_new_tokens for o in hf_out + vl_out), "an engine stopped early"
    report = {"model": args.model, "dtype": args.dtype, "prompts": len(prompts), "new_tokens_per_prompt": args.max_new_tokens,
              "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts), "hf_batch_size": bs,
              "hf_s": hf_s, "vllm_s": vl_s, "hf_tokens_per_s": n_new / hf_s, "vllm_tokens_per_s": n_new / vl_s,
              "vllm_over_hf": hf_s / vl_s, "greedy_outputs_identical": sum(a == b for a, b in zip(hf_out, vl_out))}
    print(f"{report['prompts']} prompts (mean {report['mean_prompt_tokens']:.0f} tokens) x {args.max_new_tokens} new tokens, "
          f"{args.dtype}: HF {report['hf_tokens_per_s']:.0f} tok/s ({hf_s:.2f} s, batch {bs}) | "
          f"vLLM {report['vllm_tokens_per_s']:.0f} tok/s ({vl_s:.2f} s) -> vLLM/HF {report['vllm_over_hf']:.2f}x; "
          f"greedy outputs identical for {report['greedy_outputs_identical']}/{len(prompts)} prompts")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    from collapse_bench.errors import CollapseBenchError

    try:
        main()
    except CollapseBenchError as exc:
        raise SystemExit(f"gen_throughput: error: {exc}") from None
