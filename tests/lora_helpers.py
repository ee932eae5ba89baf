"""Real PEFT adapters, merged checkpoints and lineage files on the tiny Llama, for the lora/lineage tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error  # noqa: F401  (re-exported for the lora tests)

from collapse_bench.cli import main
from collapse_bench.yamlio import dump_yaml

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(
    base: Path, out: Path, *, seed: int, r: int = 4, alpha: int = 8, targets: list[str] | None = None, **config: Any
) -> Path:
    """A real PEFT LoRA adapter on ``base`` with random non-zero A and B (``init_lora_weights=False``)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets or TARGETS, init_lora_weights=False, **config)
    )
    peft_model.save_pretrained(out)
    return out


def merge(base: Path, adapter: Path, out: Path) -> Path:
    """base + adapter merged by PEFT itself, saved as a full checkpoint (with the base's tokenizer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def peft_deltas(base: Path, adapter: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{module: (W0, dW)} in float64 with dW = B A * PEFT's own per-module ``scaling`` (rank/alpha patterns, rsLoRA),
    checked against PEFT's merged weights; independent of the project's adapter reader."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plain = {k: v.double().numpy() for k, v in AutoModelForCausalLM.from_pretrained(base).state_dict().items()}
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    out = {}
    for name, module in peft_model.named_modules():
        if "default" in getattr(module, "lora_A", {}):
            key = name.removeprefix("base_model.model.")
            B, A = module.lora_B["default"].weight.double(), module.lora_A["default"].weight.double()
            out[key] = (plain[f"{key}.weight"], (B @ A * module.scaling["default"]).detach().numpy())
    merged = peft_model.merge_and_unload().state_dict()
    for key, (W0, dW) in out.items():
        np.testing.assert_allclose(merged[f"{key}.weight"].double().numpy(), W0 + dW, atol=1e-5)
    return out


def write_lineage(directory: Path, **fields: Any) -> Path:
    path = directory / "lineage.yaml"
    path.write_text(dump_yaml(fields))
    return path


def evaluate_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["evaluate", *args, "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def np_erank(s: np.ndarray) -> float:
    s = s[s > 1e-12 * s.max()]
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def np_intruders(W0: np.ndarray, Wt: np.ndarray, k: int, eps: float) -> int:
    """Shuttleworth et al. Algorithm 1 with numpy's LAPACK SVD (full, thin)."""
    U0 = np.linalg.svd(W0, full_matrices=False)[0]
    Ut = np.linalg.svd(Wt, full_matrices=False)[0][:, :k]
    return int((np.abs(U0.T @ Ut).max(axis=0) < eps).sum())


def np_top_alignment(W0: np.ndarray, dW: np.ndarray, k: int) -> float:
    """||U0_k^T dW||_F^2 / ||dW||_F^2 with U0_k the top-k left singular vectors of W0 (numpy SVD)."""
    U0 = np.linalg.svd(W0, full_matrices=False)[0][:, :k]
    return float(np.linalg.norm(U0.T @ dW) ** 2 / np.linalg.norm(dW) ** 2)
