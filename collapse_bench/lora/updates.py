"""Per-module weight updates from (a) a PEFT LoRA adapter dir + its base checkpoint, or (b) two full checkpoints
with the same architecture (dW = W_t - W_parent for every 2-D weight inside a numbered decoder block, i.e. the
linear weights of attention and MLP). Weights are read lazily from the checkpoint files (safetensors, sharded or
not, else PyTorch ``.bin``) and upcast to float64; every check that can fail reads only tensor headers and
adapter factors, so it runs before any model is loaded.

LoRA (PEFT convention): dW = scaling * B A with scaling = alpha / r (``use_rslora``: alpha / sqrt(r)), r and alpha
per module from ``rank_pattern`` / ``alpha_pattern`` (PEFT's ``get_pattern_key`` rule), r = rows of A.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CollapseBenchError
from .geometry import SVD, lowrank_svd, thin_svd

TYPE_NAMES = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
}
TYPE_ORDER = ("q", "k", "v", "o", "gate", "up", "down")
_LAYER = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")


def module_type(module: str) -> str:
    """q, k, v, o, gate, up, down for Llama-style projection names; otherwise the module's own leaf name."""
    leaf = module.rsplit(".", 1)[-1]
    return TYPE_NAMES.get(leaf, leaf)


def layer_index(module: str) -> int | None:
    """Decoder block index of a module path (``...layers.<i>...``), None outside the blocks."""
    found = _LAYER.search(f".{module}.")
    return int(found.group(1)) if found else None


def type_rank(t: str) -> tuple[int, str]:
    return (TYPE_ORDER.index(t) if t in TYPE_ORDER else len(TYPE_ORDER), t)


@dataclass(frozen=True)
class ModuleUpdate:
    module: str  # module path, e.g. model.layers.3.self_attn.q_proj
    type: str
    layer: int | None
    W0: torch.Tensor  # parent weight, float64, (out, in)
    delta: SVD  # thin SVD of dW: r triplets (LoRA) or min(m, n) (dense difference)
    rank: int | None  # LoRA rank r; None for a dense difference


class WeightFiles:
    """The tensors of one checkpoint dir, by name; shapes come from the file headers, tensors on demand."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path, self.what = Path(path), what
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._file: dict[str, Path] = {}
        self._bin: dict[str, Any] = {}
        st = sorted(self.path.glob("*.safetensors"))
        files = st or sorted([*self.path.glob("pytorch_model*.bin"), *self.path.glob("adapter_model.bin")])
        if not files:
            raise CollapseBenchError(f"{what} {self.path} holds no weights (*.safetensors or *.bin)")
        for f in files:
            self._index(f, safetensors=bool(st))

    def _index(self, f: Path, safetensors: bool) -> None:
        try:
            if safetensors:
                from safetensors import safe_open

                with safe_open(str(f), framework="pt") as handle:
                    for key in handle.keys():  # noqa: SIM118 -- a safetensors handle, not a dict
                        self.shapes[key] = tuple(handle.get_slice(key).get_shape())
                        self._file[key] = f
            else:
                tensors = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
                for key, value in tensors.items():
                    self.shapes[key], self._bin[key] = tuple(value.shape), value
        except CollapseBenchError:
            raise
        except Exception as exc:
            raise CollapseBenchError(f"cannot read {self.what} weights {f}: {type(exc).__name__}: {_first_line(exc)}") from None

    def get(self, key: str) -> torch.Tensor:
        """The tensor as float64 (a one-line error for NaN/inf)."""
        if key in self._bin:
            value = self._bin[key]
        else:
            from safetensors import safe_open

            with safe_open(str(self._file[key]), framework="pt") as handle:
                value = handle.get_tensor(key)
        value = value.to(torch.float64)
        if not bool(torch.isfinite(value).all()):
            raise CollapseBenchError(f"{self.what} {self.path}: tensor {key} holds NaN or inf")
        return value

    def block_linears(self) -> dict[str, tuple[int, ...]]:
        """{module path: shape} of every 2-D ``.weight`` inside a numbered decoder block."""
        return {
            k.removesuffix(".weight"): s
            for k, s in self.shapes.items()
            if k.endswith(".weight") and len(s) == 2 and layer_index(k) is not None
        }

    def weight_key(self, module: str) -> str | None:
        """Key of ``module``'s weight: exact ``<module>.weight``, else the one key with the same block-relative path."""
        if f"{module}.weight" in self.shapes:
            return f"{module}.weight"
        found = _LAYER.search(f".{module}.")
        tail = f".{module}.weight"[found.start() :] if found else f".{module}.weight"
        hits = [k for k in self.shapes if f".{k}".endswith(tail)]
        return hits[0] if len(hits) == 1 else None


@dataclass
class Adapter:
    """A PEFT LoRA adapter: config and float64 factors {module: (A, B)}."""

    path: Path
    base_name: str
    config: dict[str, Any]
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    skipped: list[str] = field(default_factory=list)  # tensors that are not lora_A/lora_B of a module

    def scaling(self, module: str) -> float:
        r = self.factors[module][0].shape[0]
        alpha = self.config.get("lora_alpha", 8)
        pattern = _pattern_key(self.config.get("alpha_pattern") or {}, module)
        if pattern is not None:
            alpha = self.config["alpha_pattern"][pattern]
        return float(alpha) / (math.sqrt(r) if self.config.get("use_rslora") else r)

    def delta(self, module: str) -> SVD:
        A, B = self.factors[module]
        return lowrank_svd(B, A, self.scaling(module))

    def summary(self) -> dict[str, Any]:
        ranks = sorted({a.shape[0] for a, _ in self.factors.values()})
        return {
            "rank": ranks[0] if len(ranks) == 1 else ranks,
            "lora_alpha": self.config.get("lora_alpha"),
            "use_rslora": bool(self.config.get("use_rslora")),
            "modules": len(self.factors),
            "skipped_tensors": len(self.skipped),
        }


def _pattern_key(patterns: dict[str, Any], module: str) -> str | None:
    """PEFT's ``get_pattern_key``: the first pattern p with re.match(rf"(.*\\.)?({p})$", module)."""
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return key
        except re.error:
            raise CollapseBenchError(f"adapter config: invalid module pattern {key!r}") from None
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def read_adapter(path: str | Path) -> Adapter:
    """Config + factors of the PEFT LoRA adapter in ``path``; one-line errors for anything malformed."""
    path = Path(path)
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CollapseBenchError(
            f"{path}/adapter_config.json is not a readable PEFT adapter config ({_first_line(exc)})"
        ) from None
    if not isinstance(config, dict) or not config.get("base_model_name_or_path"):
        raise CollapseBenchError(f"{path}/adapter_config.json does not name its base model (base_model_name_or_path)")
    if config.get("peft_type", "LORA") != "LORA":
        raise CollapseBenchError(f"adapter {path} is a {config.get('peft_type')} adapter; the lora task reads LoRA adapters only")
    if config.get("use_dora"):
        raise CollapseBenchError(
            f"adapter {path} is a DoRA adapter (its update is not scaling * B A); not supported by the lora task"
        )
    files = WeightFiles(path, "adapter")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    skipped = []
    for key in sorted(files.shapes):
        found = _LORA_KEY.match(key)
        if not found or len(files.shapes[key]) != 2:
            skipped.append(key)
            continue
        pairs.setdefault(found.group(1), {})[found.group(2)] = files.get(key)
    factors = {}
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise CollapseBenchError(
                f"adapter {path} is corrupt: module {module} has lora_{'A' if 'A' in ab else 'B'} but no "
                f"lora_{'B' if 'A' in ab else 'A'}"
            )
        A, B = ab["A"], ab["B"]
        if A.shape[0] != B.shape[1]:
            raise CollapseBenchError(
                f"adapter {path} is corrupt: module {module}: lora_A is {_shape(A.shape)} but lora_B is {_shape(B.shape)}"
            )
        factors[module] = (A, B)
    if not factors:
        raise CollapseBenchError(f"adapter {path} holds no lora_A/lora_B weights")
    return Adapter(path, str(config["base_model_name_or_path"]), config, factors, skipped)


def _shape(shape: Any) -> str:
    return "x".join(str(int(d)) for d in shape)


def match_adapter(adapter: Adapter, base: WeightFiles) -> dict[str, str]:
    """{adapter module: base weight key}; a one-line error for a module the base lacks or a shape mismatch."""
    keys = {}
    transpose = bool(adapter.config.get("fan_in_fan_out"))
    for module, (A, B) in adapter.factors.items():
        key = base.weight_key(module)
        if key is None:
            raise CollapseBenchError(
                f"adapter {adapter.path} does not fit base {base.path}: the base has no weight for module {module} (wrong base?)"
            )
        shape = base.shapes[key][::-1] if transpose else base.shapes[key]
        if tuple(shape) != (B.shape[0], A.shape[1]):
            raise CollapseBenchError(
                f"adapter {adapter.path} does not fit base {base.path}: module {module}: B·A is "
                f"{B.shape[0]}x{A.shape[1]} but the base weight is {_shape(shape)} (wrong base?)"
            )
        keys[module] = key
    return keys


def adapter_updates(adapter: Adapter, base: WeightFiles) -> Iterator[ModuleUpdate]:
    """One ModuleUpdate per adapted module (sorted by layer, then module type), W0 read from the base."""
    keys = match_adapter(adapter, base)
    transpose = bool(adapter.config.get("fan_in_fan_out"))
    for module in sorted(keys, key=_order):
        W0 = base.get(keys[module])
        yield ModuleUpdate(
            module,
            module_type(module),
            layer_index(module),
            W0.T if transpose else W0,
            adapter.delta(module),
            adapter.factors[module][0].shape[0],
        )


def _order(module: str) -> tuple[int, tuple[int, str], str]:
    layer = layer_index(module)
    return (-1 if layer is None else layer, type_rank(module_type(module)), module)


def match_checkpoints(model: WeightFiles, parent: WeightFiles) -> dict[str, tuple[int, ...]]:
    """The block linear weights of two checkpoints; a one-line error unless names and shapes agree."""
    mine, theirs = model.block_linears(), parent.block_linears()
    if not mine:
        raise CollapseBenchError(f"{model.path}: no linear weights inside numbered decoder blocks (unsupported architecture)")
    for name in sorted(set(mine) | set(theirs), key=_order):
        if mine.get(name) != theirs.get(name):
            a = _shape(mine[name]) if name in mine else "absent"
            b = _shape(theirs[name]) if name in theirs else "absent"
            raise CollapseBenchError(
                f"model {model.path} and --parent {parent.path} have different architectures: "
                f"{name} is {a} in the model but {b} in the parent"
            )
    return mine


def checkpoint_updates(model: WeightFiles, parent: WeightFiles, unchanged: list[str]) -> Iterator[ModuleUpdate]:
    """dW = W_t - W_parent per block linear weight; modules with dW == 0 exactly are appended to ``unchanged``."""
    for module in sorted(match_checkpoints(model, parent), key=_order):
        key = f"{module}.weight"
        W0 = parent.get(key)
        D = model.get(key) - W0
        if not bool(D.any()):
            unchanged.append(module)
            continue
        yield ModuleUpdate(module, module_type(module), layer_index(module), W0, thin_svd(D, complete=False), None)
