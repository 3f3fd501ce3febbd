"""CPU threads for many small tensor operations."""

from __future__ import annotations

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
