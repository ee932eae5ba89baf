"""lm-eval model backends for a loaded checkpoint.

``hf`` (default): ``lm_eval.models.huggingface.HFLM`` wrapping the already loaded model object and
tokenizer (no second load; PEFT adapters are already merged). ``vllm``: lm-eval's ``VLLM`` model on the
checkpoint's local directory (the GGUF alias cache, a local or hub snapshot dir); a PEFT checkpoint is
saved merged to a temp dir first. ``tensor_parallel_size`` / ``data_parallel_size`` are passed through.
Batch size: ``--batch-size N`` or the task's own for ``hf``; ``--batch-size auto`` passes ``batch_size="auto"``
(lm-eval tries the largest batch that fits, halving on out-of-memory); ``vllm`` always batches automatically.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from ..errors import CollapseBenchError
from ..models import SourceKind

if TYPE_CHECKING:
    from ..context import RunContext
    from ..parallel import Parallel

BACKENDS = ("hf", "vllm")
VLLM_GPU_MEMORY_UTILIZATION = 0.8  # leaves room for the HF copy that `evaluate` loads for the probe


@dataclass(frozen=True)
class BackendConfig:
    backend: str = "hf"
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> BackendConfig:
        backend = options.get("backend") or "hf"
        if backend not in BACKENDS:
            raise CollapseBenchError(f"unknown backend '{backend}' (known: {', '.join(BACKENDS)})")
        return cls(backend, int(options.get("tensor_parallel_size") or 1), int(options.get("data_parallel_size") or 1))


def require_vllm() -> None:
    """One clear line, before anything is loaded, when vLLM cannot run here."""
    import torch

    missing = [
        what for what, ok in (("CUDA GPU", torch.cuda.is_available()), ("vllm package", find_spec("vllm") is not None)) if not ok
    ]
    if missing:
        raise CollapseBenchError(
            "--backend vllm needs a CUDA GPU and the vllm package (pip install 'collapse-bench[vllm]'); "
            f"this machine has no {' and no '.join(missing)}; use --backend hf"
        )


_MERGED: dict[int, tempfile.TemporaryDirectory] = {}
_CACHE: dict[str, Any] = {}


def model_dir(loaded: Any) -> str:
    """A local directory vLLM can load: the checkpoint's own, or (PEFT) the merged model saved once."""
    if loaded.source.kind is not SourceKind.PEFT:
        return str(loaded.source.path)
    key = id(loaded.model)
    if key not in _MERGED:
        tmp = tempfile.TemporaryDirectory(prefix="collapse-bench-merged-")
        loaded.model.save_pretrained(tmp.name, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp.name)
        _MERGED[key] = tmp
    return _MERGED[key].name


def clear_cache() -> None:
    """Forget the cached lm-eval model (a new checkpoint is evaluated next in this process)."""
    _CACHE.clear()


def lm_batch_size(ctx: RunContext, default: int) -> int | str:
    """The batch size lm-eval gets: ``"auto"`` under ``--batch-size auto`` (lm-eval's own search for the largest
    batch that fits), else ``--batch-size N`` or the task's ``default``."""
    return "auto" if ctx.auto_batch_size else ctx.batch_size or default


def get_lm(loaded: Any, config: BackendConfig, *, batch_size: int | str, seed: int = 1234, par: Parallel | None = None) -> Any:
    """The lm-eval model for ``loaded`` (one cached instance: vLLM engines are expensive to start).

    Under ``accelerate launch`` / ``torchrun`` (``par`` with several ranks) the ``hf`` model joins lm-eval's own
    data parallelism: lm-eval shards each task's requests by rank, pads the ranks to equal counts and gathers the
    responses on rank 0 (``HFLM`` skips that setup for a model object it did not load -- "custom distributed
    integration" -- so its rank, world size and two collectives are set here, on ``torch.distributed``: accelerate's
    own ``gather`` is a no-op when its state reports no distributed type, as it does for gloo CPU processes). vLLM
    under a launcher is refused by ``evaluate`` before anything loads."""
    key = (id(loaded.model), config, batch_size if config.backend == "hf" else None, par is not None and par.on)
    if _CACHE.get("key") == key:
        return _CACHE["lm"]
    _CACHE.clear()
    if config.backend == "vllm":
        require_vllm()
        from lm_eval.models.vllm_causallms import VLLM

        path = model_dir(loaded)
        lm = VLLM(
            pretrained=path,
            tokenizer=path,
            dtype=str(loaded.info.get("dtype", "auto")),
            tensor_parallel_size=config.tensor_parallel_size,
            data_parallel_size=config.data_parallel_size,
            batch_size="auto",
            seed=seed,
            gpu_memory_utilization=VLLM_GPU_MEMORY_UTILIZATION,
        )
    else:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
        if par is not None and par.on:
            lm._rank, lm._world_size = par.rank, par.world
            lm.all_gather, lm.barrier = par.all_gather, par.barrier
    _CACHE.update(key=key, lm=lm)
    return lm


def has_chat_template(loaded: Any) -> bool:
    return bool(getattr(loaded.tokenizer, "chat_template", None))
