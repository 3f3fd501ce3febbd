"""CPU threads: one for many small tensor operations, a few workers that run independent ones side by side, and a
background one that folds behind the forward pass."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

import torch


@contextmanager
def one_thread():
    """Run a block on one CPU thread (torch's small operations, index_add_, topk and searchsorted among them, are
    measured up to a hundred times slower on two threads than on one when the cores are busy)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


_side = {}  # {(pid, workers): ThreadPoolExecutor}
_side_lock = threading.Lock()


def side_by_side(calls: list, workers: int) -> None:
    """Run independent calls ``[(fn, *args), ...]`` on ``workers`` threads at once, torch on one thread in each
    (their work is many small operations, each alone on a core), and wait for all; the first error is raised.
    With one worker, or one call, they run in the caller's thread, one after the other.

    The calls must not write the same tensors (the fold gives each its own point's state)."""
    if workers <= 1 or len(calls) <= 1:
        for fn, *args in calls:
            fn(*args)
        return
    key = (os.getpid(), workers)  # a forked child makes its own pool
    with _side_lock:
        pool = _side.get(key)
        if pool is None:
            pool = _side[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neurotext-fold",
                                                  initializer=torch.set_num_threads, initargs=(1,))
    futures = [pool.submit(*call) for call in calls]
    wait(futures)  # all of them, before an error is raised: none is left writing
    for f in futures:
        f.result()


class Behind:
    """Run calls one at a time on one background thread, at most one at once, in the order given: the caller
    goes on (the next batch's forward pass) while the last call (the previous batch's fold) runs. ``submit``
    first waits for the call before it; leaving the block waits for the last one, and an error of a call is
    raised in the caller, at the next ``submit`` or at the end. ``enabled=False`` runs each call at once, in the
    caller's thread. Used as ``with Behind() as behind: ... behind.submit(fn, *args)``.

    The background thread runs torch on one thread (torch's thread count is per thread: the caller keeps its
    own), so the caller's work and the calls share the cores instead of fighting over them."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._pool = self._pending = None

    def __enter__(self):
        if self.enabled:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurotext-behind",
                                            initializer=torch.set_num_threads, initargs=(1,))
        return self

    def submit(self, fn, *args) -> None:
        if not self.enabled:
            fn(*args)
            return
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __exit__(self, kind, err, tb):
        if self._pool is None:
            return False
        try:
            if kind is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)  # on an error in the caller too: never leave a call running
            self._pool = self._pending = None
        return False
