"""Batch sizing by device memory, and out-of-memory recovery that halves a batch and retries it.

Rows never interact (see :mod:`neurotext.engine.optimize`), so a batch can be cut into parts at any
point and the parts give the rows the same results (up to float rounding): an out-of-memory error
costs time, never a neuron.
"""

from __future__ import annotations

import torch

from .optimize import FTConfig

#: Share of the device's free memory a batch may plan to use (the rest: allocator slack, scans, fragmentation).
MEMORY_SHARE = 0.8
#: Floats kept per token and layer per row for the backward pass, in units of (d, d_ff, heads * tokens):
#: layer input, Q/K/V, attention output and projection, two LayerNorms (in and out) ~ 11 d, the FFN's
#: pre- and post-activation 2 d_ff, the attention weights heads * tokens; doubled for the gradients
#: alive during the backward pass. An estimate: a wrong one is caught by :class:`OOMSplitter`.
FLOATS_PER_TOKEN_LAYER = (22, 4, 2)


def bytes_per_row(model, layer: int) -> int:
    """Estimated device bytes one (neuron, restart) row needs for a step at ``layer`` (float32)."""
    d, d_ff = model.sizes["out"], model.sizes["ffn"]
    tokens = len(model.prefix_ids) + 1 + len(model.suffix_ids)
    a, b, c = FLOATS_PER_TOKEN_LAYER
    return 4 * tokens * (layer + 1) * (a * d + b * d_ff + c * model.n_heads * tokens)


def rows_that_fit(model, layer: int) -> int | None:
    """Rows per batch that fit in the free memory of the model's device; None on the CPU (no cap:
    host memory is not what limits a CPU batch, ``batch_size`` is)."""
    device = model.device
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    reusable = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # torch's own free cache
    return max(1, int(MEMORY_SHARE * (free + reusable)) // bytes_per_row(model, layer))


def neurons_per_batch(model, layer: int, cfg: FTConfig) -> int:
    """Neurons per optimizer batch at ``layer``: ``batch_size`` rows, fewer where device memory is short."""
    rows = cfg.batch_size
    fit = rows_that_fit(model, layer)
    if fit is not None:
        rows = min(rows, fit)
    return max(1, rows // cfg.restarts)


class OOMSplitter:
    """Runs a batch function over a list; on an out-of-memory error halves the batch and retries it.

    The learned limit is kept, so the batches after the first failure start at the size that worked.
    Results come back in input order, each item exactly once.
    """

    def __init__(self, limit: int | None = None, log=None):
        self.limit = limit  # items per call; None = as many as given
        self.log = log

    def run(self, fn, items: list) -> list:
        """``fn(part) -> list`` over ``items`` in parts; returns the concatenated results."""
        out: list = []
        i = 0
        while i < len(items):
            n = min(len(items) - i, self.limit or len(items))
            try:
                part = fn(items[i : i + n])
            except torch.OutOfMemoryError:
                if n == 1:
                    raise
                part = None  # retry outside the except block, so the failed batch's tensors are freed
            if part is None:
                self.limit = n // 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if self.log:
                    self.log(f"neurotext: out of memory with {n} neurons per batch; retrying with {self.limit}")
                continue
            out += part
            i += n
        return out


#: Bytes per token of a corpus pass's forward batch, in units of (d, d_ff, heads * tokens) per layer run
#: (activations alive at once without a backward pass), plus the captured values (4 bytes per unit read).
CORPUS_FLOATS_PER_TOKEN_LAYER = (8, 2, 1)


def corpus_batch_limits(model, engine, contexts: int, tokens: int) -> tuple[int, int]:
    """(contexts, padded tokens) per corpus-pass batch: the settings, fewer where device memory is short
    (CUDA only; an estimate, an out-of-memory error still halves a batch)."""
    if model.device.type != "cuda":
        return contexts, tokens
    free, _ = torch.cuda.mem_get_info(model.device)
    reusable = torch.cuda.memory_reserved(model.device) - torch.cuda.memory_allocated(model.device)
    d, d_ff = model.sizes["out"], model.sizes["ffn"]
    a, b, c = CORPUS_FLOATS_PER_TOKEN_LAYER
    width = engine.width
    per_token = 4 * ((engine.depth + 1) * (a * d + b * d_ff + c * model.n_heads * width)
                     + sum(p.size for p in engine.probes.values()))
    fit = max(width, int(MEMORY_SHARE * (free + reusable)) // per_token)
    return max(1, min(contexts, fit // width)), min(tokens, fit)
