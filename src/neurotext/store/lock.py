"""The store's write lock: one sweep writes a store at a time.

The lock is an advisory ``flock`` on ``DIR/.sweep.lock``, which also holds the holder's pid, host and
start time so that a refused sweep can name it. The kernel releases a ``flock`` when its process dies,
however it dies (SIGKILL included), so a lock left by a killed sweep never blocks the resume; the file
itself stays and is simply locked again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import NeurotextError

LOCK = ".sweep.lock"


def holder(directory) -> dict:
    """What the lock file says about its last holder (empty if unreadable)."""
    try:
        info = json.loads((Path(directory) / LOCK).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def describe_holder(info: dict) -> str:
    if not info.get("pid"):
        return "another process"
    return f"pid {info['pid']} on {info.get('host', '?')}, started {info.get('started', '?')}"


class StoreLock:
    """Exclusive write lock on a store directory, as a context manager.

    Args:
        directory: the store (must exist).
        wait: block until the running sweep releases the store instead of refusing at once.
        log: where the "waiting for" message goes.

    Raises:
        NeurotextError: the store is locked by another sweep and ``wait`` is False.
    """

    def __init__(self, directory, wait: bool = False, log=print):
        self.path = Path(directory) / LOCK
        self.wait = wait
        self.log = log
        self._fd: int | None = None

    def __enter__(self) -> StoreLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise NeurotextError(f"cannot create the lock file {self.path}: {e.strerror or e}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = describe_holder(holder(self.path.parent))
                if not self.wait:
                    raise NeurotextError(
                        f"{self.path.parent} is being written by another sweep ({who}); wait for it to finish "
                        "or rerun with --wait") from None
                self.log(f"neurotext: {self.path.parent} is being written by another sweep ({who}); waiting")
                fcntl.flock(fd, fcntl.LOCK_EX)
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # released: nobody holds it now
            except OSError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
