"""The forked workers of the leaderboard build: the sequential results, in order, computed in other processes where
there are two cores; a worker's one-line error reaches the caller; one process where there is one core."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from collapse_bench.errors import CollapseBenchError
from collapse_bench.leaderboard import forked

TWO_CORES = forked.cores() >= 2 and forked.forks()


def square_and_pid(x: int) -> tuple[int, int]:
    if x == 7:
        raise CollapseBenchError(f"item {x} is bad")
    return x * x, os.getpid()


def test_fork_map_is_the_sequential_map() -> None:
    items = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    got = forked.fork_map(square_and_pid, items)
    assert [v for v, _ in got] == [x * x for x in items]
    pids = {p for _, p in got}
    assert (os.getpid() not in pids) == TWO_CORES  # the work ran in the workers (where there are two cores)
    few = forked.fork_map(square_and_pid, items[:3])  # below min_items: in this process
    assert [v for v, _ in few] == [9, 1, 16] and {p for _, p in few} == {os.getpid()}
    assert forked.fork_map(square_and_pid, []) == []


def test_fork_map_raises_the_first_error_in_item_order() -> None:
    with pytest.raises(CollapseBenchError, match=r"^item 7 is bad$"):
        forked.fork_map(square_and_pid, [1, 2, 7, 3, 4, 7, 5])


def test_background_is_the_value_and_carries_errors() -> None:
    job = forked.Background(lambda: square_and_pid(12))
    value, pid = job.result()
    assert value == 144 and (pid != os.getpid()) == TWO_CORES
    with pytest.raises(CollapseBenchError, match=r"^item 7 is bad$"):
        forked.Background(lambda: square_and_pid(7)).result()


def test_one_core_means_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forked, "cores", lambda: 1)
    assert {p for _, p in forked.fork_map(square_and_pid, list(range(7)))} == {os.getpid()}
    calls: list[int] = []
    job = forked.Background(lambda: calls.append(1) or square_and_pid(2))
    assert job.result() == (4, os.getpid()) and job.result() == (4, os.getpid()) and calls == [1]  # computed once


def test_leaving_the_block_stops_an_unread_worker() -> None:
    """An error in the parent's own work: the worker is stopped on the way out, not waited for."""
    start = time.monotonic()
    with pytest.raises(ValueError, match="parent failed"), forked.Background(lambda: time.sleep(60)):
        raise ValueError("parent failed")
    assert time.monotonic() - start < 30 and multiprocessing.active_children() == []
    with forked.Background(lambda: square_and_pid(3)) as job:  # read inside the block: the value stays
        assert job.result()[0] == 9
    assert job.result()[0] == 9


def nested(x: int) -> list[int]:
    """fork_map inside a worker: a daemonic process, so the inner map runs in that worker."""
    return [v for v, _ in forked.fork_map(square_and_pid, [x, x + 1, x + 2, x + 3, x + 4, x + 5])]


def test_a_worker_maps_in_its_own_process() -> None:
    got = forked.fork_map(nested, [0, 10, 20, 30, 40, 50])
    assert got == [[(x + i) ** 2 for i in range(6)] for x in (0, 10, 20, 30, 40, 50)]
    assert forked.Background(lambda: nested(1)).result() == [1, 4, 9, 16, 25, 36]
