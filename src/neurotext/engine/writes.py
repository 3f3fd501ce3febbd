"""What a neuron writes: the tokens its output vector promotes and suppresses when read out into the vocabulary.

A neuron has two sides. FT and the vocabulary scan show what it reads; this module shows what it writes.
For an ffn unit u the written vector is column u of the FFN's output projection; for an ``out`` unit it
is the residual-stream basis vector e_u; for a direction it is the direction itself (at ``ffn``: the
output projection applied to it); for a dictionary feature its decoder direction, read the same way.
The vector is read out as ``transform(v) @ W_U.T`` with the model's
:meth:`~neurotext.model.adapters.Model.readout` (decoders: the final norm's scale and the unembedding;
encoders: the input embeddings), the logit-lens reading of weights (Geva et al. 2022). One (V, d) x
(d, U) product per layer and site, chunked over units, kept in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.names import is_feature_site
from .scan import SCAN_TOP

WRITE_CHUNK = 256  # units per readout product: (V, 256) logits at a time


@dataclass
class Writes:
    """Top promoted and suppressed tokens of every unit of one (layer, site)."""

    promote_ids: torch.Tensor  # (U, K) highest logits first
    promote_logits: torch.Tensor  # (U, K)
    suppress_ids: torch.Tensor  # (U, K) lowest logits first
    suppress_logits: torch.Tensor  # (U, K)
    readout: str  # which readout was used, e.g. "final RMSNorm scale + input embeddings (tied)"


@torch.no_grad()
def top_writes(model, vectors: torch.Tensor, k: int = SCAN_TOP) -> Writes:
    """Read residual-stream vectors (N, d) out into the vocabulary; keep the k highest and lowest logits."""
    transform, w_u, what = model.readout()
    k = min(k, w_u.shape[0])
    if transform is None:  # no readout for this model: empty lists
        empty = torch.empty((len(vectors), 0))
        return Writes(empty.long(), empty, empty.long(), empty, readout=what)
    parts = []
    for start in range(0, len(vectors), WRITE_CHUNK):
        logits = transform(vectors[start:start + WRITE_CHUNK].to(w_u.device)) @ w_u.T  # (n, V)
        hi, lo = logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)
        parts.append((hi.indices, hi.values, lo.indices, lo.values))
    cat = [torch.cat([p[i] for p in parts]).cpu() for i in range(4)]
    return Writes(*cat, readout=what)


def written_vectors(model, layer: int, site: str) -> torch.Tensor:
    """What each unit of (layer, site) writes into the residual stream: (U, d). A dictionary feature writes its
    decoder direction into its site, which at ``ffn`` the FFN's output projection carries on."""
    if is_feature_site(site):
        d = model.dictionary(layer, site)
        return direction_writes(model, d.site, layer, d.decoder_directions())
    if site == "ffn":
        return model.ffn_out_weight(layer).float()
    return torch.eye(model.sizes["out"], device=model.device)


def direction_writes(model, site: str, layer: int, directions: torch.Tensor) -> torch.Tensor:
    """The residual-stream vectors (N, d) that directions (N, U) over a site's units write."""
    if site == "ffn":
        return directions.float().to(model.device) @ model.ffn_out_weight(layer).float()  # (N, d)
    return directions.float().to(model.device)


class WritesCache:
    """:func:`top_writes` of every unit, computed once per (layer, site) and kept in memory."""

    def __init__(self, model):
        self.model = model
        self._mem: dict[tuple[int, str], Writes] = {}

    def get(self, layer: int, site: str) -> Writes:
        if (layer, site) not in self._mem:
            self._mem[(layer, site)] = top_writes(self.model, written_vectors(self.model, layer, site))
        return self._mem[(layer, site)]
