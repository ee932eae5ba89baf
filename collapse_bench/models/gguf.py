"""GGUF -> safetensors conversion, done once and cached by the GGUF's sha256.

Loading a GGUF through transformers takes ~30 s (metadata parsing + dequantisation) and leaves a
quantizer attached that blocks ``save_pretrained`` and ``Trainer``; the cached safetensors copy
reloads in ~4 s and is a plain fp32 checkpoint (bit-identical logits).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..errors import CollapseBenchError
from ..io import sha256_file
from ..paths import cache_dir

CONVERSION_VERSION = 1  # bump if the conversion recipe changes (invalidates caches)


def converted_dir(gguf_sha256: str) -> Path:
    return cache_dir() / "models" / f"gguf-{gguf_sha256[:24]}-v{CONVERSION_VERSION}"


def ensure_converted(gguf_path: Path, gguf_sha256: str | None = None) -> Path:
    """Return a local HF dir holding the dequantised checkpoint of ``gguf_path`` (convert on first use)."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise CollapseBenchError(f"GGUF file not found: {gguf_path}")
    digest = gguf_sha256 or sha256_file(gguf_path)
    target = converted_dir(digest)
    if (target / "collapse_bench_source.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert(gguf_path, tmp)
        (tmp / "collapse_bench_source.json").write_text(
            json.dumps({"gguf": gguf_path.name, "gguf_sha256": digest, "conversion_version": CONVERSION_VERSION}, indent=2)
        )
        try:
            tmp.rename(target)
        except OSError:  # another process converted it concurrently
            if not (target / "collapse_bench_source.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # local_files_only: saved into the copy's tokenizer_config.json, whatever HF offline mode is (chain/runner.py)
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    except Exception as exc:  # gguf raises many kinds of errors on a corrupt file
        raise CollapseBenchError(f"cannot read GGUF file {gguf_path}: {type(exc).__name__}: {exc}") from None
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # weights are already dequantised; drop the marker that blocks saving
        quantizer.remove_quantization_config(model)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
