"""Files written whole or not at all: the one helper every writer of a finished directory uses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_dir(tmp: Path, out: Path) -> Path:
    """Move a complete directory ``tmp`` to ``out`` by renames; an existing ``out`` is removed only after the new
    one is in place (a reader sees the old directory or the new one, never a half). Returns ``out``."""
    tmp, out = Path(tmp), Path(out)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
