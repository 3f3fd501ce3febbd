"""Devices: the one place that turns ``--device auto|cpu|cuda|cuda:N`` into a torch device.

Every command that runs a model resolves its device here, so the spellings, the error for a CUDA
request on a machine without CUDA, and the machine's name (recorded in stores and benchmark JSON)
are the same everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import NeurotextError

#: The spellings ``--device`` accepts (``cuda:N`` is any GPU index); ``auto`` = CUDA when available.
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device for a ``--device`` value.

    Args:
        spec: ``auto`` (or None): ``cuda`` when a CUDA device is available, else ``cpu``;
            ``cpu``; ``cuda`` (the current CUDA device); ``cuda:N``; or a ``torch.device``.

    Raises:
        NeurotextError: a malformed value, or CUDA asked for where there is none (or not that many GPUs).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else str(spec).strip().lower()
    m = _SPEC.match(spec)
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise NeurotextError(f"device must be one of {', '.join(DEVICES)}, got {spec!r}")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise NeurotextError(f"device {spec!r} was asked for, but {why}; use --device cpu or auto")
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise NeurotextError(f"device {spec!r} does not exist: this machine has {count} CUDA GPU(s), "
                             f"cuda:0-{count - 1}")
    return torch.device(spec)


def cpu_name() -> str | None:
    """The CPU model name (from /proc/cpuinfo; None where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or None


def device_name(device: torch.device | str) -> str | None:
    """What the arithmetic runs on: the GPU's name for CUDA, the CPU model name for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":  # None where this process sees no GPU (Ray actors on another machine)
        return torch.cuda.get_device_name(device) if torch.cuda.is_available() else None
    return cpu_name()


def describe(device: torch.device | str, dtype: str = "float32") -> dict:
    """The record a store's manifest and the benchmark JSON keep: device type, index, name and dtype."""
    device = torch.device(device)
    return {"type": device.type, "index": device.index, "name": device_name(device), "dtype": dtype}
