"""Pure-Python leaderboard work on both cores: forked worker processes (threads would not help under the GIL).

Every job is a pure function of its input, so the results are the sequential ones, in order; one process does it
all where ``fork`` is missing (macOS spawn would re-import the world per worker), there is one core, or the work
is too small to pay for the workers. Kept instead of ``concurrent.futures``: the workers read their inputs from
the parent's memory (``fork``) rather than from pickles, so only the results travel.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import CollapseBenchError

T = TypeVar("T")
_JOB: tuple[Callable[[Any], Any], Sequence[Any]] | None = None  # set in the parent just before the fork


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def forks() -> bool:
    """``fork`` exists and this process may have children (a pool's worker is daemonic: it may not)."""
    return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon


def _run(i: int) -> tuple[bool, Any]:
    assert _JOB is not None
    fn, items = _JOB
    try:
        return True, fn(items[i])
    except CollapseBenchError as exc:  # re-raised in the parent with the same one-line message
        return False, str(exc)


def fork_map(fn: Callable[[Any], T], items: Sequence[Any], min_items: int = 6) -> list[T]:
    """``[fn(x) for x in items]``, split over one forked worker per core when there are ``min_items`` or more;
    a :class:`CollapseBenchError` in a worker is raised here with its message (the first in item order)."""
    global _JOB
    jobs = min(cores(), len(items))
    if jobs < 2 or len(items) < min_items or not forks():
        return [fn(x) for x in items]
    _JOB = (fn, items)
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            done = pool.map(_run, range(len(items)), chunksize=1)
    finally:
        _JOB = None
    for ok, value in done:
        if not ok:
            raise CollapseBenchError(value)
    return [value for _, value in done]


class Background:
    """``fn()`` in one forked process while the parent works on; :meth:`result` waits for it (in one process
    without ``fork`` or with one core: computed on the spot). As a context manager, leaving the block stops a
    worker whose result was never asked for (an error in the parent's own work)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: tuple[bool, Any] | None = None
        self._pool = None
        if cores() < 2 or not forks():
            self._fn: Callable[[], Any] | None = fn
            return
        self._fn = None
        global _JOB
        _JOB = (lambda _: fn(), [None])
        try:
            self._pool = multiprocessing.get_context("fork").Pool(1)
            self._async = self._pool.apply_async(_run, (0,))
        finally:
            _JOB = None

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def result(self) -> Any:
        if self._value is None and self._fn is not None:  # one process: computed once, on the first call
            self._value = (True, self._fn())
        if self._value is None:
            assert self._pool is not None
            try:
                self._value = self._async.get()
            finally:
                self._pool.close()
                self._pool.join()
                self._pool = None
        ok, value = self._value
        if not ok:
            raise CollapseBenchError(value)
        return value
