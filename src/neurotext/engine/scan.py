"""Exhaustive vocabulary scan: every token in the template, every unit of a layer and site at once.

The scan answers "what is the best any real single word can do for this neuron?" (``best_tokens``)
and gives the per-unit mean and standard deviation over the vocabulary (the z-scores of Q2). One
forward pass to layer L yields every layer up to L and both sites, so a scan is run once per depth
and cached in memory and on disk (keyed by the model's weight fingerprint and the template).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..model.bundled import default_cache_dir
from ..model.names import is_feature_site

SCAN_TOP = 64  # best tokens kept per unit in the cache (the CLI's --top can be at most this)
SCAN_BATCH = 2048  # tokens per scan forward pass


@dataclass
class Scan:
    """Vocabulary scan of one (layer, site) over all its units."""

    top_ids: torch.Tensor  # (U, K) token ids, best first, by reported activation
    top_vals: torch.Tensor  # (U, K) reported activation (post-activation for ffn)
    mean: torch.Tensor  # (U,) mean over the vocabulary of the objective quantity (pre-activation for ffn)
    std: torch.Tensor  # (U,) its standard deviation

    def to_dict(self):
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def tqdm_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a progress flag: None = only on a terminal (tqdm auto-disables otherwise)."""
    return None if progress is None else not progress


class ScanCache:
    """Scans of one model, computed on demand for all units of a depth at once, kept in memory and on disk."""

    def __init__(self, model, cache_dir: str | Path | None = None, progress: bool | None = None):
        self.model = model
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        self.progress = progress
        self._mem: dict[tuple[int, str], Scan] = {}

    def _path(self, layer: int, site: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.blake2b(
            f"{self.model.fingerprint()}|{self.model.prefix_ids}|{self.model.suffix_ids}|{SCAN_TOP}".encode(),
            digest_size=12,
        ).hexdigest()
        if is_feature_site(site):  # a dictionary's features: keyed by its weights too
            fp = self.model.dictionary(layer, site).fingerprint()[:16]
            return self.cache_dir / "scans" / key / f"L{layer}.{site}-{fp}.pt"
        return self.cache_dir / "scans" / key / f"L{layer}.{site}.pt"

    def prefetch(self, depth: int) -> None:
        """Make sure every layer up to ``depth`` is scanned, in one pass to the deepest missing layer
        (scanning layer by layer would run the early layers again for every depth)."""
        missing = [(layer, site) for layer in range(depth + 1) for site in self.model.sites(layer)
                   if (layer, site) not in self._mem]
        if missing:
            self.get(max(layer for layer, _ in missing), missing[0][1])
            for layer, site in missing:
                self.get(layer, site)

    def get(self, layer: int, site: str) -> Scan:
        if (layer, site) in self._mem:
            return self._mem[(layer, site)]
        path = self._path(layer, site)
        if path is not None and path.is_file():
            try:
                self._mem[(layer, site)] = Scan(**torch.load(path, weights_only=True))
                return self._mem[(layer, site)]
            except Exception:  # a corrupt cache file is recomputed, never trusted
                path.unlink(missing_ok=True)
        for (lay, s), scan in self._compute(layer).items():
            if (lay, s) in self._mem:
                continue  # a scan once handed out never changes (a deeper pass rounds a little differently)
            p = self._path(lay, s)
            if p is not None and p.is_file() and (lay, s) != (layer, site):
                try:  # the cached copy stays the reference, so every run with this cache sees the same scan
                    self._mem[(lay, s)] = Scan(**torch.load(p, weights_only=True))
                    continue
                except Exception:  # noqa: BLE001 - a corrupt cache file is replaced below
                    pass
            self._mem[(lay, s)] = scan
            if p is not None:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    tmp = p.with_suffix(f".tmp{os.getpid()}")
                    torch.save(scan.to_dict(), tmp)
                    os.replace(tmp, p)
                except OSError:
                    pass  # an unwritable cache only costs time
        return self._mem[(layer, site)]

    @torch.no_grad()
    def _compute(self, depth: int) -> dict[tuple[int, str], Scan]:
        """Scan every token through layers 0..depth; return scans for every layer <= depth and site."""
        model = self.model
        emb = model.embeddings  # (V, d_emb)
        n_vocab = emb.shape[0]
        points = [(layer, site) for layer in range(depth + 1) for site in model.sites(layer)]
        k = min(SCAN_TOP, n_vocab)
        state = {}
        for p in points:
            u = model.width(*p)
            state[p] = dict(
                vals=torch.full((u, 0), -float("inf")),
                ids=torch.empty((u, 0), dtype=torch.long),
                s=torch.zeros(u, dtype=torch.float64),
                ss=torch.zeros(u, dtype=torch.float64),
            )
        starts = range(0, n_vocab, SCAN_BATCH)
        bar = tqdm(starts, desc=f"vocabulary scan to layer {depth}", unit="batch", disable=tqdm_disable(self.progress))
        for start in bar:
            ids = torch.arange(start, min(start + SCAN_BATCH, n_vocab))
            found = model.capture(emb[ids], points)
            for p in points:
                obj = found[p].all().float()  # (b, U) objective quantity (a feature's pre-activation)
                rep = model.post(p[0], p[1], obj)  # (b, U) reported activation (a feature's encoding)
                st = state[p]
                st["s"] += obj.double().sum(0).cpu()
                st["ss"] += (obj.double() ** 2).sum(0).cpu()
                vals = torch.cat([st["vals"], rep.T.cpu()], dim=1)  # (U, K + b)
                cand = torch.cat([st["ids"], ids.unsqueeze(0).expand(rep.shape[1], -1)], dim=1)
                top = vals.topk(min(k, vals.shape[1]), dim=1)
                st["vals"], st["ids"] = top.values, cand.gather(1, top.indices)
        out = {}
        for p, st in state.items():
            mean = st["s"] / n_vocab
            out[p] = Scan(
                top_ids=st["ids"],
                top_vals=st["vals"].float(),
                mean=mean.float(),
                std=(st["ss"] / n_vocab - mean**2).clamp_min(0).sqrt().float(),
            )
        return out
