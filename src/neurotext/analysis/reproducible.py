"""How reproducible are the textualizations of a store, against chance? (Q1, stability arm.)

Every neuron's ``stability`` record (written by the sweep; see :mod:`neurotext.engine.stability`) says how
far its counted restarts agree. Agreement only means something against what *unrelated* optima share,
so the chance baseline applies the same measures to groups of optima of different neurons of the same
layer and site: for each neuron with c counted restarts, the best optima of max(c, 2) other neurons drawn
at random (seeded). A neuron's textualization is **reproducible** when at least two restarts counted, they
share a consensus token, and their mean pairwise Jaccard of the top-10 nearest tokens exceeds the
``quantile`` (default 95th percentile) of the baseline's in its layer and site: agreement that
unrelated neurons reach less than 5% of the time.

Everything here reads store columns only (no model), so ``words`` and the atlas share it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..engine import stability
from ..model.names import unit_name
from .stats import quartiles, share

#: Offsets of the chance baseline's seed per site (ffn and out as they always were; features their own).
SITE_SEEDS = {"ffn": 0, "out": 7, "ffn.f": 11, "out.f": 13}

#: The measures compared with the baseline (the one list the tables, JSON and plots read).
REPRO_STATS = {
    "jaccard_at_10": "mean pairwise Jaccard of the optima's top-10 nearest-token sets",
    "cosine": "mean pairwise cosine of the optima (FT vectors)",
    "consensus_size": "tokens in the top-10 of at least half of the optima",
}
COLUMNS = ("layer", "site", "unit", "vector", "nearest_ids", "nearest_tokens", "stability")
QUANTILE = 0.95  # reproducible: above the baseline's 95th percentile


def _record_values(rec: dict | None) -> dict:
    if rec is None or rec.get("restarts", 0) < 2:
        return {"jaccard_at_10": None, "cosine": None, "consensus_size": None}
    return {"jaccard_at_10": rec["jaccard_at_10"], "cosine": rec["cosine"], "consensus_size": len(rec["consensus"])}


def group_baseline(vectors: np.ndarray, top_ids: list[list[int]], sizes: list[int], seed: int) -> dict:
    """The chance baseline of one (layer, site): for neuron i a group of ``sizes[i]`` other neurons' optima.

    Args:
        vectors: (N, d) each neuron's best FT vector.
        top_ids: each neuron's nearest token ids, best first (the first ``stability.JACCARD_K`` are used).
        sizes: per neuron, how many restarts it counted (groups of fewer than two are skipped).
        seed: draws the groups.

    Returns:
        ``{stat: list of values}`` over the groups drawn.
    """
    n = len(vectors)
    out = {s: [] for s in REPRO_STATS}
    g = torch.Generator().manual_seed(seed)
    v = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    for i, size in enumerate(sizes):
        if size < 2 or n - 1 < 2:
            continue
        others = torch.randperm(n - 1, generator=g)[: min(size, n - 1)]
        others = (others + (others >= i).long()).tolist()  # skip neuron i itself
        ids = [list(top_ids[j])[: stability.JACCARD_K] for j in others]
        out["jaccard_at_10"].append(stability.pairwise_jaccard(ids))
        out["cosine"].append(stability.pairwise_cosine(v[others]))
        out["consensus_size"].append(len(stability.consensus(ids, _AnyTokens())))
    return out


class _AnyTokens:
    """Token lookup for consensus when only the count matters."""

    def __getitem__(self, i):
        return str(i)


def threshold(baseline_jaccard, quantile: float = QUANTILE) -> float | None:
    v = [x for x in baseline_jaccard if x is not None]
    return float(np.quantile(v, quantile)) if v else None


def is_reproducible(rec: dict | None, limit: float | None) -> bool:
    """The rule of the module docstring for one neuron's stability record."""
    vals = _record_values(rec)
    if vals["jaccard_at_10"] is None or limit is None:
        return False
    return vals["consensus_size"] > 0 and vals["jaccard_at_10"] > limit


def analyze(table, seed: int = 0, quantile: float = QUANTILE) -> list[dict]:
    """Per (layer, site) of a store table (with :data:`COLUMNS`): the neurons' stability values, the chance
    baseline, the threshold, and which neurons are reproducible.

    Returns:
        A list of ``{"layer", "site", "neurons", "ft": {stat: values}, "baseline": {stat: values},
        "threshold", "reproducible": [bool per neuron]}``, sorted by layer and site.
    """
    cols = {c: table.column(c).to_pylist() for c in COLUMNS if c != "vector"}
    d = len(table.column("vector")[0]) if len(table) else 0
    vectors = np.asarray(table.column("vector").combine_chunks().flatten(), dtype=np.float32).reshape(-1, d)
    by_group: dict[tuple[int, str], list[int]] = {}
    for i, key in enumerate(zip(cols["layer"], cols["site"])):
        by_group.setdefault(key, []).append(i)
    out = []
    for (layer, site), rows in sorted(by_group.items()):
        recs = [cols["stability"][i] for i in rows]
        ft = {s: [_record_values(r)[s] for r in recs] for s in REPRO_STATS}
        sizes = [max(2, (r or {}).get("restarts", 0)) for r in recs]  # a baseline group has at least two
        base = group_baseline(vectors[rows], [cols["nearest_ids"][i] for i in rows], sizes,
                              seed + 1000003 * layer + SITE_SEEDS.get(site, 17))
        limit = threshold(base["jaccard_at_10"], quantile)
        out.append({
            "layer": layer, "site": site, "neurons": [unit_name(layer, site, cols["unit"][i]) for i in rows],
            "ft": ft, "baseline": base, "threshold": limit,
            "reproducible": [is_reproducible(r, limit) for r in recs],
        })
    return out


def summarize(group: dict) -> dict:
    """The JSON summary of one :func:`analyze` group: quartiles beside the baseline, the share reproducible."""
    counted = [v for v in group["ft"]["jaccard_at_10"] if v is not None]
    return {
        "stats": {s: {"ft": quartiles(group["ft"][s]), "baseline": quartiles(group["baseline"][s])}
                  for s in REPRO_STATS},
        "threshold_jaccard_at_10": group["threshold"],
        "reproducible": share(group["reproducible"]) if counted else None,
        "n_reproducible": int(sum(group["reproducible"])),
        "n_with_two_restarts": len(counted),
    }
