"""One spec per metric: the facts about a metric id that the rest of the project reads.

Each module that defines metric ids declares, next to its code, ``SPECS = (MetricSpec(...), ...)``; the
registry is :data:`SPEC_MODULES` (order matters: the FIRST spec whose ``id`` glob matches a metric id
decides, as in a list of rules). From the specs come ``validate``'s ranges, ``reproduce``'s default
tolerances, the plot labels, the site's glossary and the docs' metric card; ``composite.yaml``'s
``better:`` directions are checked against them by a test.

The registry is read from the modules' source (``ast``), not by importing them: the metric modules import
torch, and ``validate`` must not. A ``SPECS`` tuple must therefore be written with literals and
:class:`MetricSpec` / :class:`Range` / :class:`Tolerance` calls only (the module imports them from here, so
at run time the same tuple is also a plain attribute of the module).

A metric id that matches no spec only has to be a finite number or null and is reproduced within
:data:`DEFAULT_TOLERANCE`.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["probe", "lm_eval", "plasticity", "diversity", "lora"]
Direction = Literal["higher", "lower"]
Bound = float | int | str | None
KINDS: tuple[str, ...] = ("probe", "lm_eval", "plasticity", "diversity", "lora")
# bounds that name a model field (ln_vocab_size = ln vocab_size, the maximum entropy in nats)
MODEL_FIELDS: tuple[str, ...] = ("hidden_size", "num_layers", "vocab_size", "ln_vocab_size")

# The registry, first match wins. A module that defines metric ids = one line here, except a probe metric
# family: PROBE_REGISTRY stands for every module that collapse_bench/metrics/registry.py imports (in its import
# order) and that declares SPECS, so registering the accumulator there registers its specs too.
PROBE_REGISTRY = "collapse_bench.metrics.registry"
SPEC_MODULES: tuple[str, ...] = (
    "collapse_bench.plasticity.scores",  # first: its "*_std" (spread over seeds) precedes every family glob
    PROBE_REGISTRY,  # before lm_eval: "nll_per_token*" precedes "nll*"
    "collapse_bench.ood.lmeval",
    "collapse_bench.metrics.calibration",
    "collapse_bench.ood.refusal",
    "collapse_bench.metrics.diversity",
    "collapse_bench.ood.diversity",
    "collapse_bench.lora.geometry",
)


@dataclass(frozen=True)
class Range:
    """Valid values: ``lo`` … ``hi`` (None = unbounded; a str names a model field, see :data:`MODEL_FIELDS`).
    Closed bounds get a relative slack of 1e-9 for float rounding."""

    lo: Bound = None
    hi: Bound = None
    lo_open: bool = False
    hi_open: bool = False

    def __post_init__(self) -> None:
        for b in (self.lo, self.hi):
            if isinstance(b, str) and b not in MODEL_FIELDS:
                raise ValueError(f"unknown range bound {b!r} (numbers or one of {', '.join(MODEL_FIELDS)})")

    def show(self) -> str:
        lo = "-∞" if self.lo is None else str(self.lo)
        hi = "∞" if self.hi is None else str(self.hi)
        return f"{'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"


@dataclass(frozen=True)
class Tolerance:
    """``reproduce`` passes a metric when |reproduced - recorded| <= abs + rel * |recorded|."""

    abs: float = 0.0
    rel: float = 0.0


DEFAULT_TOLERANCE = Tolerance(abs=1.0e-6, rel=0.01)


@dataclass(frozen=True)
class MetricSpec:
    """The facts about one metric (or one family: ``id`` is an exact id or an fnmatch glob)."""

    id: str
    kind: Kind
    definition: str  # one line; the formula stays in the module docstring
    direction: Direction | None = None  # which way is healthier; None = not scored as good or bad
    range: Range | None = None  # None: any finite number
    tolerance: Tolerance = DEFAULT_TOLERANCE
    streams: bool = False  # computed by a streaming accumulator of the probe pass (mergeable, one pass)
    reservoir: bool = False  # uses the token reservoir (a sample of token states)
    backward: bool = False  # needs a backward pass (training)
    label: str = ""  # plot / glossary label; empty = the id
    reference: str = ""  # where the definition comes from (paper; the library a test checks it against)
    module: str = field(default="", compare=False)  # the declaring module, filled in by the registry

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric spec {self.id!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.direction not in ("higher", "lower", None):
            raise ValueError(f"metric spec {self.id!r}: direction {self.direction!r} is not higher, lower or None")
        if "\n" in self.definition or not self.definition.strip():
            raise ValueError(f"metric spec {self.id!r}: the definition is one non-empty line")

    def matches(self, metric: str) -> bool:
        return fnmatch.fnmatchcase(metric, self.id)

    @property
    def display_label(self) -> str:
        return self.label or self.id

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓"}.get(self.direction or "", "–")


_NAMESPACE = {"MetricSpec": MetricSpec, "Range": Range, "Tolerance": Tolerance}


def module_path(name: str) -> Path:
    """The source file of ``name``, found without importing it (or its package)."""
    root = Path(__file__).resolve().parent.parent
    head, _, rest = name.partition(".")
    if head == root.name and rest:
        return root.joinpath(*rest.split(".")).with_suffix(".py")
    found = importlib.util.find_spec(name)
    if found is None or found.origin is None:
        raise ValueError(f"metric spec module {name!r} not found")
    return Path(found.origin)


def read_specs(name: str) -> tuple[MetricSpec, ...]:
    """The ``SPECS`` tuple of module ``name``, evaluated from its source."""
    path = module_path(name)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "SPECS":
            code = compile(ast.Expression(value), str(path), "eval")
            specs = eval(code, {"__builtins__": {}}, dict(_NAMESPACE))  # literals and the 3 classes only
            return tuple(MetricSpec(**{**s.__dict__, "module": name}) for s in specs)
    raise ValueError(f"{path}: no module-level SPECS = (MetricSpec(...), ...)")


def _has_specs(tree: ast.Module) -> bool:
    return any(
        isinstance(n, ast.Assign | ast.AnnAssign)
        and any(isinstance(x, ast.Name) and x.id == "SPECS" for x in (n.targets if isinstance(n, ast.Assign) else [n.target]))
        for n in tree.body
    )


def registry_modules(name: str = PROBE_REGISTRY) -> tuple[str, ...]:
    """The modules ``name`` imports from its own package (``from .x import ...``) that declare SPECS, in order."""
    package = name.rpartition(".")[0]
    tree = ast.parse(module_path(name).read_text(encoding="utf-8"))
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            mod = f"{package}.{node.module}"
            if mod not in out and _has_specs(ast.parse(module_path(mod).read_text(encoding="utf-8"))):
                out.append(mod)
    return tuple(out)


def expand(modules: tuple[str, ...]) -> tuple[str, ...]:
    """SPEC_MODULES with PROBE_REGISTRY replaced by the probe metric modules it registers."""
    return tuple(m for name in modules for m in (registry_modules(name) if name == PROBE_REGISTRY else (name,)))


@functools.lru_cache(maxsize=8)
def load_specs(modules: tuple[str, ...]) -> tuple[MetricSpec, ...]:
    return tuple(s for name in expand(modules) for s in read_specs(name))


def all_specs() -> tuple[MetricSpec, ...]:
    """Every registered spec, in registry order (first match wins)."""
    return load_specs(SPEC_MODULES)


def spec_for(metric: str, specs: tuple[MetricSpec, ...] | None = None) -> MetricSpec | None:
    """The spec that decides ``metric`` (the first whose id glob matches), or None. Lookups in the registry are
    memoised per registry object: a leaderboard build asks for the same few hundred ids ~10^5 times."""
    if specs is not None:
        return _first_match(metric, specs)
    registry = all_specs()
    if _memo.registry is not registry:
        _memo.registry, _memo.found = registry, {}
    if metric not in _memo.found:
        _memo.found[metric] = _first_match(metric, registry)
    return _memo.found[metric]


@dataclass
class _Memo:
    registry: tuple[MetricSpec, ...] | None = None
    found: dict[str, MetricSpec | None] = field(default_factory=dict)


_memo = _Memo()


def _first_match(metric: str, specs: tuple[MetricSpec, ...]) -> MetricSpec | None:
    for s in specs:
        if s.matches(metric):
            return s
    return None


def __getattr__(name: str) -> tuple[MetricSpec, ...]:  # SPECS: the registry as a module attribute
    if name == "SPECS":
        return all_specs()
    raise AttributeError(name)
