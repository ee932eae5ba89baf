"""Helpers shared by the CLI's commands (``cli`` and every subcommand module): argument types and quiet libraries."""

from __future__ import annotations

import argparse
import os


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """``0`` (off) or a positive integer."""
    return 0 if text.strip() == "0" else positive_int(text)


def batch_size_arg(text: str) -> int | str:
    """``--batch-size``: a positive integer or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None


def quiet_libraries() -> None:
    """Library noise off for CLI runs: transformers' info logs and load bars, deprecation notices."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# The options several commands share, defined once (same flag, default and help text everywhere).
COMMON_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, object]]] = {
    "device": (("--device",), {"default": "auto", "help": "auto | cpu | cuda | cuda:N (default: auto = cuda when available)"}),
    "dtype": (
        ("--dtype",),
        {"default": "auto", "help": "auto | float32 | bfloat16 | float16 (default: auto = float32 on CPU, bfloat16 on CUDA)"},
    ),
    "data_dir": (
        ("--data-dir",),
        {"metavar": "DIR", "help": "data mirror (<dataset>/<split>.jsonl; default: $COLLAPSE_BENCH_DATA or the user cache)"},
    ),
    "tasks_dir": (
        ("--tasks-dir",),
        {"action": "append", "metavar": "DIR", "help": "extra directory of task YAMLs (repeatable)"},
    ),
    "include_path": (
        ("--include-path", "--include_path"),
        {
            "action": "append",
            "dest": "include_path",
            "metavar": "DIR",
            "help": "lm-eval's --include_path: a directory of lm-eval task YAMLs, each task usable by name in --tasks "
            "(as DIR/lm_eval/ of a --tasks-dir is; repeatable)",
        },
    ),
    "no_progress": (("--no-progress",), {"action": "store_true", "help": "no progress bars"}),
}


def add_common(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the shared options ``names`` (keys of :data:`COMMON_OPTIONS`) to ``parser``."""
    for name in names:
        flags, kwargs = COMMON_OPTIONS[name]
        parser.add_argument(*flags, **kwargs)  # type: ignore[arg-type]  # kwargs are argparse's own keywords
