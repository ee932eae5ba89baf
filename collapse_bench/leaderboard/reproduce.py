"""``collapse-bench reproduce SUBMISSION``: re-run a published row and compare every metric.

Before any model is loaded, each a one-line refusal: the submission is validated; a config key ``evaluate``
does not know, or ``trust_remote_code`` without ``--trust-remote-code`` (never taken from the row), is refused;
the checkpoint -- given with ``--model PATH`` (required for a local dir, adapter or GGUF row: results record
those by display name only), else the recorded alias/hub name -- must have the recorded sha256 in the same hash
scheme (likewise a local CKA reference, ``--reference PATH``); every task must match this repo's current config
(a row recorded with an older released config needs that release); each task's data is prepared from
``--data-dir`` and its sha256s must equal the recorded ones. Then ``evaluate`` runs with the recorded suite,
tasks, seed, batch size, limit and backend (and parent: a chain stage records its parent by lineage name, found
as the checkpoint next to one of the stage's recorded adapters, or given with ``--parent``), and a per-metric
diff table is printed; exit 0 only if every metric is within its tolerance (from the metric specs,
:mod:`collapse_bench.metrics.spec`, or ``--tolerance FILE``: |new - old| <= abs + rel * |old|). With ``--record``
a passing run writes the evidence ``<stem>.verified.json`` beside the submission (:mod:`.verified`); a failing
one writes nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import tempfile
from pathlib import Path
from typing import Any

from ..cliutil import add_common
from ..data import resolve_data_dir
from ..errors import CollapseBenchError
from ..evaluate import EvaluateRequest
from ..io import clip, sha256_file
from ..kinds import kind_module
from ..metrics import spec as metric_spec
from ..models import SourceKind
from ..results.model import ModelInfo, Result
from ..tasks import TaskRegistry
from ..yamlio import load_yaml_text
from . import verified
from .submission import SubmissionError
from .validate import validate_file

KNOWN_CONFIG = {"seed", "batch_size", "limit", "device", "dtype", "trust_remote_code", "tasks_dirs", "reference"}
BACKEND_CONFIG = ("backend", "tensor_parallel_size", "data_parallel_size")  # passed on to evaluate as options


def load_tolerances(path: str | Path | None) -> list[dict[str, Any]]:
    """The tolerance rules (first ``metric`` glob matching ``<task>.<metric>`` or ``<metric>`` decides): those of
    the metric specs (:mod:`collapse_bench.metrics.spec`) in registry order, then a catch-all
    ``metric_spec.DEFAULT_TOLERANCE``; or those of ``path`` (``tolerances: [{metric, abs, rel}, ...]``)."""
    if path is None:
        return spec_tolerances(metric_spec.all_specs())
    try:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise CollapseBenchError(f"cannot read --tolerance {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CollapseBenchError(f"--tolerance {path}: not UTF-8 text") from None
    try:
        rules = load_yaml_text(text, where)["tolerances"]
        return [{"metric": str(r["metric"]), "abs": float(r.get("abs", 0.0)), "rel": float(r.get("rel", 0.0))} for r in rules]
    except (KeyError, TypeError, ValueError) as exc:
        raise CollapseBenchError(f"{where}: expected 'tolerances: [{{metric, abs, rel}}, ...]' ({type(exc).__name__})") from None


def spec_tolerances(specs: tuple[metric_spec.MetricSpec, ...]) -> list[dict[str, Any]]:
    default = metric_spec.DEFAULT_TOLERANCE
    rules = [{"metric": s.id, "abs": s.tolerance.abs, "rel": s.tolerance.rel} for s in specs]
    return [*rules, {"metric": "*", "abs": default.abs, "rel": default.rel}]


def tolerance_for(task: str, metric: str, rules: list[dict[str, Any]]) -> tuple[float, float]:
    for r in rules:
        if fnmatch.fnmatchcase(f"{task}.{metric}", r["metric"]) or fnmatch.fnmatchcase(metric, r["metric"]):
            return r["abs"], r["rel"]
    return 0.0, 0.0


def diff_metrics(old: dict[str, Any], new: dict[str, Any], rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, metric) in either result: values, |Δ|, tolerance and whether it passes. A metric the
    reproduction has and the recorded task lacks (added by a later release) is listed and passes; a recorded
    metric the reproduction lacks fails."""
    rows = []
    for task in sorted(set(old["tasks"]) | set(new["tasks"])):
        a = (old["tasks"].get(task) or {}).get("metrics", {})
        b = (new["tasks"].get(task) or {}).get("metrics", {})
        for metric in sorted(set(a) | set(b)):
            x, y = a.get(metric, "absent"), b.get(metric, "absent")
            tol_abs, tol_rel = tolerance_for(task, metric, rules)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                delta = abs(y - x)
                ok = delta <= tol_abs + tol_rel * abs(x)
            elif x == "absent" and task in old["tasks"]:  # a metric this release adds to a recorded task: nothing
                delta, ok = None, True  # was claimed, so nothing can fail (every recorded value is still checked)
            else:
                delta, ok = None, x == y
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "recorded": x,
                    "reproduced": y,
                    "delta": delta,
                    "tolerance": tol_abs + tol_rel * abs(x) if isinstance(x, (int, float)) else 0.0,
                    "ok": ok,
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    def show(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else "null" if v is None else str(v)

    head = ("task", "metric", "recorded", "reproduced", "|Δ|", "tolerance", "")
    body = [
        (
            r["task"],
            r["metric"],
            show(r["recorded"]),
            show(r["reproduced"]),
            show(r["delta"]) if r["delta"] is not None else "-",
            show(r["tolerance"]),
            "ok" if r["ok"] else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body])


def preflight(path: Path, result: Result, data_dir: Path | None) -> None:
    """Refuse (one line) unless this repo's tasks and the data dir are the recorded ones."""
    registry = TaskRegistry()
    suite = registry.suite(result.suite.name)
    limit = result.config.get("limit")
    for name, block in result.tasks.items():
        task = registry.tasks.get(name)
        if task is None or task.version != block.version or task.task_hash(block.data) != block.hash:
            raise SubmissionError(
                path,
                f"tasks/{name}",
                "was recorded with a task config this repo no longer has "
                "(a released older version); reproduce it with that collapse-bench release",
            )
        hashes = kind_module(task.kind).prepare(task, data_dir, limit or suite.limits.get(name)).data_hashes
        for key in sorted(set(hashes) | set(block.data)):
            if hashes.get(key) != block.data.get(key):
                have, want = (hashes.get(key) or "nothing")[:12], (block.data.get(key) or "nothing")[:12]
                raise SubmissionError(
                    path,
                    f"tasks/{name}/data/{key}",
                    f"this data dir gives {have}…, the submission "
                    f"recorded {want}…; refusing to reproduce on different data (use --data-dir)",
                )


def check_config(path: Path, doc: dict[str, Any], trust_remote_code: bool) -> None:
    """Refuse (one line, before anything runs) a config key ``evaluate`` does not know, a bad backend option, or
    a row recorded with ``trust_remote_code`` when ``--trust-remote-code`` was not given (never taken from the row)."""
    cfg = doc["config"]
    for key in cfg:
        if key not in KNOWN_CONFIG and key not in BACKEND_CONFIG:
            raise SubmissionError(
                path,
                f"config/{clip(key, 80)}",
                "is not a setting this release knows "
                f"({', '.join(sorted(KNOWN_CONFIG | set(BACKEND_CONFIG)))}); refusing to pass it on",
            )
    if cfg.get("backend", "hf") not in ("hf", "vllm"):
        raise SubmissionError(path, "config/backend", f"{clip(cfg['backend'], 80)!r} is not hf or vllm")
    for key in ("tensor_parallel_size", "data_parallel_size"):
        value = cfg.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SubmissionError(path, f"config/{key}", f"{clip(value, 80)!r} is not a positive integer")
    if cfg.get("trust_remote_code") and not trust_remote_code:
        raise SubmissionError(
            path,
            "config/trust_remote_code",
            "the row was evaluated with the checkpoint's own code; reproduce runs it only when you pass --trust-remote-code",
        )
    if cfg.get("backend") == "vllm":
        from ..ood.backends import require_vllm

        require_vllm()


def locate_checkpoint(path: Path, block: ModelInfo, given: str | None, flag: str, fld: str) -> str:
    """The checkpoint to re-evaluate for a recorded model block: ``given`` (``--model``/``--reference``), needed
    for a local dir, adapter or GGUF file (a result records those by display name only), else the recorded
    alias/hub name; its sha256 (same scheme) must be the recorded one."""
    from ..models import find_source

    if block.is_local and not given:
        raise SubmissionError(
            path,
            f"{fld}/name",
            f"'{clip(block.name, 80)}' was evaluated from a local "
            f"checkpoint ({block.source.value}); pass that checkpoint with {flag} PATH",
        )
    name = given or block.name
    source = find_source(name)
    recorded = block.sha256_scheme or ("file" if block.source is SourceKind.GGUF or block.raw.get("gguf_file") else None)
    if recorded != source.sha256_scheme:
        raise SubmissionError(
            path,
            f"{fld}/sha256",
            f"was recorded with checkpoint hash scheme {recorded or 'v1 (weights and *.json only)'}, "
            f"this release hashes with {source.sha256_scheme}; re-evaluate the checkpoint with this release",
        )
    if source.sha256 != block.sha256:
        raise SubmissionError(
            path,
            f"{fld}/sha256",
            f"'{clip(name, 120)}' here has sha256 {str(source.sha256)[:12]}…, "
            f"the submission recorded {str(block.sha256)[:12]}…; refusing to evaluate a different checkpoint",
        )
    return name


def locate_parent(path: Path, result: Result, override: str | None, model: str) -> str | None:
    """What ``evaluate --parent`` gets: ``override``, else the checkpoint beside one of the model's lineage
    adapters whose lineage name is the recorded parent (a chain run's ``NN-stage/model`` next to
    ``NN-stage/adapter``; YAML reads only), else the recorded parent when it resolves as a model name."""
    from ..lineagefile import read_lineage, shown
    from ..models import find_source

    parent = result.model.parent
    if override or not parent:
        return override or None
    model_dir = Path(model).expanduser()
    found = read_lineage(model_dir) if model_dir.is_dir() else None
    for _, adapter in found.adapters if found else ():
        beside = adapter.parent / "model"
        if beside.is_dir() and (lf := read_lineage(beside)) is not None and lf.name and shown(lf.name) == parent:
            return str(beside)
    try:
        find_source(parent)
    except CollapseBenchError:
        raise SubmissionError(
            path,
            "model/parent",
            f"the parent '{parent}' is neither a model name here nor beside "
            "the checkpoint's recorded adapters; pass its checkpoint with --parent PATH",
        ) from None
    return parent


def request_for(
    result: Result,
    data_dir: str | None,
    output: Path,
    device: str,
    dtype: str,
    parent: str | None,
    model: str,
    reference: str | None = None,
    trust_remote_code: bool = False,
) -> EvaluateRequest:
    """The recorded evaluation of checkpoint ``model`` (and ``reference``), with ``parent`` as located by
    :func:`locate_parent`; ``trust_remote_code`` only when the row recorded it and the user allowed it."""
    cfg = result.config
    return EvaluateRequest(
        model=model,
        suite=result.suite.name,
        tasks=list(result.tasks),
        data_dir=data_dir,
        reference=reference,
        output=str(output),
        device=device,
        dtype=dtype,
        batch_size=cfg.get("batch_size"),
        limit=cfg.get("limit"),
        seed=cfg["seed"],
        trust_remote_code=bool(cfg.get("trust_remote_code")) and trust_remote_code,
        progress=False,
        options={k: cfg[k] for k in BACKEND_CONFIG if k in cfg},
        parent=parent,
        stage=result.model.stage or None,
    )


def reproduce(
    submission: Path,
    tolerance: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    output: str | None = None,
    parent: str | None = None,
    model: str | None = None,
    reference: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Validate, check config and checkpoints, preflight, re-evaluate; returns the diff rows and the new result."""
    from ..evaluate import evaluate

    rules = load_tolerances(tolerance)
    sub = validate_file(submission)
    check_config(submission, sub.doc, trust_remote_code)
    result = sub.result
    model = locate_checkpoint(submission, result.model, model, "--model", "model")
    ref_block = result.config.get("reference")
    if isinstance(ref_block, dict):
        reference = locate_checkpoint(submission, ModelInfo.from_doc(ref_block), reference, "--reference", "config/reference")
    elif reference:
        raise CollapseBenchError(f"--reference {reference}: the submission was evaluated without a reference")
    preflight(submission, result, resolve_data_dir(data_dir))
    parent = locate_parent(submission, result, parent, model)
    with tempfile.TemporaryDirectory(prefix="collapse-bench-reproduce-") as tmp:
        target = Path(output) if output else Path(tmp) / "reproduced.json"
        _, new = evaluate(request_for(result, data_dir, target, device, dtype, parent, model, reference, trust_remote_code))
    return diff_metrics(sub.doc, new, rules), new


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..cliutil import quiet_libraries

    submission, started = Path(args.submission), None
    if args.record:  # refused before anything runs: a current verification (without --force), a bad name
        verified.refuse_replacing(submission, args.force)
        verified.check_reproducer(args.reproducer)
        started = sha256_file(submission) if submission.is_file() else None
    elif args.reproducer or args.force:
        raise CollapseBenchError("--reproducer and --force only go with --record")
    quiet_libraries()
    rows, new = reproduce(
        submission,
        args.tolerance,
        args.data_dir,
        args.device,
        args.dtype,
        args.output,
        args.parent,
        args.model,
        args.reference,
        args.trust_remote_code,
    )
    print(format_table(rows))
    failed = [r for r in rows if not r["ok"]]
    if failed:
        f = failed[0]
        raise CollapseBenchError(
            f"{len(failed)} of {len(rows)} metrics outside tolerance (first: {f['task']}.{f['metric']} "
            f"recorded {f['recorded']} reproduced {f['reproduced']})"
        )
    print(f"reproduced: all {len(rows)} metrics within tolerance")
    if args.record:
        rules = load_tolerances(args.tolerance)
        doc = verified.evidence(submission, rows, new, rules, args.tolerance, args.reproducer, started)
        print(f"verification written to {verified.record(submission, doc)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="re-run a submission and diff every metric",
        description="Re-evaluate SUBMISSION with its recorded model, suite, tasks, seed, batch size and "
        "limit on the same data (sha256-checked first); exit 0 only if every metric is within tolerance.",
    )
    p.add_argument("submission", metavar="SUBMISSION", help="a result file, e.g. submissions/<org>/<model>/<suite>-<hash>.json")
    p.add_argument(
        "--tolerance",
        metavar="FILE",
        help="tolerance YAML, tolerances: [{metric, abs, rel}, ...] (default: the metric specs' tolerances)",
    )
    add_common(p, "data_dir", "device", "dtype")
    p.add_argument("--output", metavar="PATH", help="also keep the reproduced result here")
    p.add_argument(
        "--model",
        metavar="PATH",
        help="the checkpoint to re-evaluate (required for a local dir, adapter or "
        ".gguf row; its sha256 must equal the recorded one)",
    )
    p.add_argument("--reference", metavar="PATH", help="the CKA reference checkpoint, for a row with a local reference")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the checkpoint's own code, for a row recorded with trust_remote_code (never taken from the row)",
    )
    p.add_argument(
        "--parent",
        metavar="MODEL",
        help="the parent checkpoint, when the recorded parent name does not "
        "resolve here (default: found beside the recorded adapters)",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="when every metric is within tolerance, write the evidence <same stem>.verified.json next to SUBMISSION "
        "(the site marks the row verified)",
    )
    p.add_argument("--reproducer", metavar="NAME", help="with --record: who reproduced the row (shown on the site)")
    p.add_argument("--force", action="store_true", help="with --record: replace a verification that is still current")
    p.set_defaults(func=cmd_reproduce)
