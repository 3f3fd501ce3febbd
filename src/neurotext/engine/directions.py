"""Any direction: read direction files (probe weights, SAE encoder rows) and scan the vocabulary along them.

A direction over a site's units is textualized like a neuron with :func:`objectives.direction`: FT
maximizes the projection of the site's values onto it, the values :data:`DIRECTION_SITES` names: at ``ffn``
the FFN's post-activation values (what its output projection reads, and what a dictionary on
``mlp.hook_post`` encodes), at ``ffn.pre`` its pre-activations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import NeurotextError
from .scan import SCAN_BATCH, tqdm_disable

SUFFIXES = (".npy", ".safetensors")

#: Where a direction can live (``--at L3.ffn``) and which values it projects.
DIRECTION_SITES = {
    "out": "the layer's output hidden state",
    "ffn": "the FFN's post-activation values (what its output projection reads; SAELens's mlp.hook_post)",
    "ffn.pre": "the FFN's pre-activation values (before the activation function)",
}


def model_site(site: str) -> str:
    """The model site a direction site reads: ``ffn.pre`` -> ``ffn``."""
    return site.split(".")[0]


def projected(acts, site: str):
    """The values a direction at ``site`` projects, from the model site's :class:`SiteActs`: (B, U)."""
    return acts.all() if site == "ffn.pre" else acts.reported_all()


def load_directions(path: str | Path, size: int, where: str = "") -> np.ndarray:
    """Directions from a ``.npy`` or safetensors file: one vector (size,) or a matrix of rows (N, size).

    A safetensors file must hold exactly one tensor. Returns float32 (N, size). Bad input (missing,
    unreadable, wrong shape or size, non-finite values) is a one-line :class:`NeurotextError` that
    names the expected size.
    """
    p = Path(path)
    at = f" at {where}" if where else ""
    expect = f"expected one vector of {size} values or a matrix with {size} columns{at}"
    if not p.is_file():
        raise NeurotextError(f"direction file {str(path)!r} does not exist ({expect})")
    if p.suffix not in SUFFIXES:
        raise NeurotextError(f"direction file {str(path)!r}: unknown type {p.suffix!r}, "
                             f"use one of {', '.join(SUFFIXES)}")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            from safetensors.numpy import load_file

            tensors = load_file(p)
            if len(tensors) != 1:
                raise NeurotextError(f"direction file {str(path)!r} holds {len(tensors)} tensors "
                                     f"({', '.join(sorted(tensors)) or 'none'}); it must hold exactly one")
            arr = next(iter(tensors.values()))
    except NeurotextError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        why = str(e).splitlines()[0] if str(e) else repr(e)
        raise NeurotextError(f"direction file {str(path)!r} is unreadable: {why}") from e
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != size or arr.shape[0] == 0 or not np.issubdtype(arr.dtype, np.number):
        raise NeurotextError(f"direction file {str(path)!r} has shape {tuple(arr.shape)}: {expect}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise NeurotextError(f"direction file {str(path)!r} has non-finite values")
    return arr


@torch.no_grad()
def vocabulary_projection(model, layer: int, site: str, directions: torch.Tensor, k: int,
                          progress: bool | None = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Every vocabulary token in the template, projected onto each direction (N, U) at (layer, site).

    The projection is of the reported activations (post-activation at ``ffn`` and ``ffn.pre``), as the scan's
    ``best_tokens`` are. Returns (values, ids) of the top k tokens per direction, each (N, k), best first.
    """
    emb = model.embeddings
    n_vocab = emb.shape[0]
    d = directions.float().to(model.device)  # (N, U)
    vals = torch.full((len(d), 0), -float("inf"))
    ids_all = torch.empty((len(d), 0), dtype=torch.long)
    starts = range(0, n_vocab, SCAN_BATCH)
    for start in tqdm(starts, desc="direction scan", unit="batch", disable=tqdm_disable(progress)):
        ids = torch.arange(start, min(start + SCAN_BATCH, n_vocab))
        point = (layer, model_site(site))
        acts = model.capture(emb[ids.to(emb.device)], [point])[point]
        proj = (acts.reported_all().float() @ d.T).T.cpu()  # (N, b)
        vals = torch.cat([vals, proj], dim=1)
        ids_all = torch.cat([ids_all, ids.unsqueeze(0).expand(len(d), -1)], dim=1)
        top = vals.topk(min(k, vals.shape[1]), dim=1)
        vals, ids_all = top.values, ids_all.gather(1, top.indices)
    return vals, ids_all
