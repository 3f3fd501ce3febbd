"""Linear layers through oneDNN's packed weights, for the corpus pass on the CPU.

PyTorch runs an ``nn.Linear`` on the CPU as one BLAS call (``addmm``: the bias copied into the output, then the
product). oneDNN, which PyTorch ships, multiplies by a weight reordered once into its own blocked layout, the
bias added inside the product: on the 2-core AMD EPYC that is 17-20% more GFLOP/s at MiniLM's shapes, and a
corpus pass's forward 1.17-1.19x faster (``docs/performance.md``). The values agree with ``nn.Linear``'s to
float32 rounding, not bit for bit. Each module's packed forward is checked against its own on a few rows
before it is used; a module without oneDNN, or whose check fails, runs as it is.
"""

from __future__ import annotations

import warnings

import torch

#: The number of rows oneDNN is told to expect when it reorders a weight (a hint for its layout: a batch of the
#: corpus pass holds 300 to 4,300 positions; the hint moved nothing measurable between 64 and 4,096).
ROWS_HINT = 2048


def available() -> bool:
    """Whether this PyTorch has oneDNN's packed linear operators."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return (torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight"))
    except (AttributeError, RuntimeError):
        return False


def packable(module: torch.nn.Module) -> bool:
    """A plain ``nn.Linear`` (no subclass: quantized layers are not touched) with float32 weights on the CPU,
    running its class's forward (a module given its own forward, as accelerate's hooks give one, keeps it)."""
    return (type(module) is torch.nn.Linear and module.weight.dtype == torch.float32
            and module.weight.device.type == "cpu" and "forward" not in vars(module))


def _key(module: torch.nn.Linear) -> tuple:
    """What the packed weight was made from: the tensors' memory and in-place version (a weight edited in place
    or replaced is packed again)."""
    w, b = module.weight, module.bias
    return (w.data_ptr(), w._version, tuple(w.shape)) + ((b.data_ptr(), b._version) if b is not None else (None,))


class PackedLinears:
    """The packed forwards of linear modules, made once per module and weight and kept for the next batches."""

    def __init__(self):
        self._made: dict = {}  # {module: (key, forward or None)}
        self.failed = not available()

    def forwards(self, modules) -> dict:
        """{module: its packed forward} for the modules that can run packed (:func:`packable`, checked)."""
        out = {}
        if self.failed:
            return out
        for m in modules:
            if not packable(m):
                continue
            key = _key(m)
            made = self._made.get(m)
            if made is None or made[0] != key:
                made = self._made[m] = (key, self._pack(m))
            if made[1] is not None:
                out[m] = made[1]
        return out

    def _pack(self, m: torch.nn.Linear):
        """The module's packed forward, or None where oneDNN refuses it or its values differ from the module's."""
        try:
            with torch.no_grad():
                weight = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), ROWS_HINT)
                bias = None if m.bias is None else m.bias.detach()

                def forward(x, _w=weight, _b=bias):
                    return torch.ops.mkldnn._linear_pointwise(x, _w, _b, "none", [], "")

                x = torch.randn(5, m.in_features, generator=torch.Generator().manual_seed(0))
                want = torch.nn.functional.linear(x, m.weight, m.bias)
                ok = torch.allclose(forward(x), want, rtol=1e-4, atol=1e-4 * (float(want.abs().max()) + 1))
        except Exception as e:  # noqa: BLE001 - no oneDNN kernel for this layer: it runs as it is
            why = str(e).splitlines()[0][:200] if str(e) else ""
            warnings.warn(f"the linear layers run unpacked ({type(e).__name__}: {why})", stacklevel=3)
            self.failed = True
            return None
        return forward if ok else None

    def __len__(self) -> int:
        """How many modules run packed."""
        return sum(f is not None for _, f in self._made.values())

    def clear(self) -> None:
        """Drop every packed weight (their memory: one copy of the packed layers' weights)."""
        self._made.clear()
