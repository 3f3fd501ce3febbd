"""The CPU threads: the background fold runs calls one at a time, in order, off the caller's thread, and errors
reach the caller; side-by-side calls run at once on one torch thread each."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from neurotext.engine.threads import Behind, side_by_side


def test_calls_run_in_order_one_at_a_time_behind_the_caller():
    log, running, caller = [], [], threading.get_ident()
    threads_seen = []

    def call(i):
        running.append(i)
        assert len(running) == 1  # never two at once
        threads_seen.append((threading.get_ident(), torch.get_num_threads()))
        time.sleep(0.02)
        log.append(i)
        running.remove(i)

    before = torch.get_num_threads()
    with Behind() as behind:
        for i in range(5):
            behind.submit(call, i)
            assert log == list(range(i))  # submit returned before its call ended, after the previous one's
    assert log == list(range(5))  # leaving the block waited for the last call
    assert all(t != caller and n == 1 for t, n in threads_seen)  # a background thread on one torch thread
    assert torch.get_num_threads() == before  # the caller's count is its own


def test_an_error_reaches_the_caller_and_nothing_runs_on():
    done = []

    def bad():
        raise ValueError("fold failed")

    with pytest.raises(ValueError, match="fold failed"):
        with Behind() as behind:
            behind.submit(bad)
            behind.submit(done.append, 1)  # raises the first call's error before submitting
    assert done == []


def test_an_error_in_the_caller_waits_for_the_running_call():
    done = []

    def slow():
        time.sleep(0.1)
        done.append(1)

    with pytest.raises(KeyError):
        with Behind() as behind:
            behind.submit(slow)
            raise KeyError("interrupted")
    assert done == [1]  # the call had finished before the error left the block: no thread touches state after


def test_disabled_runs_each_call_at_once_in_the_caller():
    seen = []
    with Behind(enabled=False) as behind:
        behind.submit(lambda: seen.append(threading.get_ident()))
        assert seen == [threading.get_ident()]


def test_side_by_side_runs_every_call_at_once_on_one_torch_thread_each():
    barrier = threading.Barrier(3, timeout=10)  # three calls on three workers: each waits for the others
    seen = []

    def call(i):
        seen.append((i, threading.get_ident(), torch.get_num_threads()))
        barrier.wait()  # deadlocks (a BrokenBarrierError after 10 s) unless all three run at once

    side_by_side([(call, i) for i in range(3)], workers=3)
    assert sorted(i for i, _, _ in seen) == [0, 1, 2]
    assert len({t for _, t, _ in seen}) == 3 and all(n == 1 for _, _, n in seen)


def test_side_by_side_with_one_worker_runs_in_order_in_the_caller():
    seen = []
    side_by_side([(lambda i: seen.append((i, threading.get_ident())), i) for i in range(4)], workers=1)
    assert seen == [(i, threading.get_ident()) for i in range(4)]


def test_side_by_side_waits_for_every_call_before_raising():
    done = []

    def slow():
        time.sleep(0.1)
        done.append(1)

    def bad():
        raise ValueError("a point failed")

    with pytest.raises(ValueError, match="a point failed"):
        side_by_side([(bad,), (slow,)], workers=2)
    assert done == [1]  # no call is left writing when the error reaches the caller
