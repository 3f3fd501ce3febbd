"""How reproducible a textualization is: agreement between the optima of independent restarts.

A neuron has many nearly equally good FT optima (from layer 1 on in the bundled model their nearest
tokens barely overlap), so one optimum's token list is one sample. These functions measure what the
optima share — the mean pairwise cosine of the vectors, the mean pairwise Jaccard of their top-10
nearest-token sets, the tokens most of them agree on — for the restarts of one neuron, and, as the
chance baseline, for optima of *different* neurons of the same layer and site.
"""

from __future__ import annotations

import itertools

import torch

JACCARD_K = 10  # stability compares the top-10 nearest tokens of the optima
COUNT_TOL = 0.05  # a restart counts when its activation is within 5% of the best restart's
CONSENSUS_SHARE = 0.5  # a consensus token is in the top-10 of at least half of the counted restarts


def counted(activations, tol: float = COUNT_TOL) -> list[int]:
    """Indices of the restarts that count: activation >= best - tol * |best| (the best always counts).

    A restart stuck in a clearly poorer optimum answers another question (how good is the optimizer),
    so it is left out of the agreement measures; ``activation_spread`` still reports it.
    """
    acts = [float(a) for a in activations]
    best = max(acts)
    return [i for i, a in enumerate(acts) if a >= best - tol * abs(best)]


def pairwise_cosine(vectors: torch.Tensor) -> float | None:
    """Mean cosine over all pairs of rows of ``vectors`` (R, d); None for fewer than two rows."""
    if len(vectors) < 2:
        return None
    v = vectors.float()
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = v @ v.T  # (R, R)
    r = len(v)
    return float((sim.sum() - sim.diagonal().sum()) / (r * (r - 1)))


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def pairwise_jaccard(top_ids: list[list[int]], k: int = JACCARD_K) -> float | None:
    """Mean Jaccard over all pairs of the rows' top-k id sets; None for fewer than two rows."""
    if len(top_ids) < 2:
        return None
    pairs = list(itertools.combinations(range(len(top_ids)), 2))
    return sum(jaccard(top_ids[i][:k], top_ids[j][:k]) for i, j in pairs) / len(pairs)


def consensus(top_ids: list[list[int]], tokens, k: int = JACCARD_K, share: float = CONSENSUS_SHARE) -> list[dict]:
    """Tokens in the top-k of at least ``share`` of the rows (at least two rows), most supported first.

    Ties are broken by the mean position in the rows' lists (closer first), then by id. ``support`` is
    the share of rows whose top-k holds the token. Fewer than two rows: no consensus (empty list).
    """
    r = len(top_ids)
    if r < 2:
        return []
    count: dict[int, int] = {}
    pos: dict[int, int] = {}
    for ids in top_ids:
        for p, t in enumerate(ids[:k]):
            count[t] = count.get(t, 0) + 1
            pos[t] = pos.get(t, 0) + p
    need = max(2, share * r)
    keep = [t for t, c in count.items() if c >= need - 1e-9]
    keep.sort(key=lambda t: (-count[t], pos[t] / count[t], t))
    return [{"token": tokens[t], "id": int(t), "support": count[t] / r} for t in keep]


def measure(vectors: torch.Tensor, top_ids: list[list[int]], activations, tokens,
            tol: float = COUNT_TOL) -> dict:
    """The ``stability`` record of one neuron from its restarts' optima.

    Args:
        vectors: (R, d) the restarts' FT vectors.
        top_ids: per restart, its nearest token ids by cosine, best first (at least ``JACCARD_K``).
        activations: (R,) the restarts' activations.
        tokens: id -> token string.
        tol: counting rule, see :func:`counted`.

    Returns:
        ``{"cosine", "jaccard_at_10", "consensus", "activation_spread", "restarts"}``: the agreement
        measures over the counted restarts (None with fewer than two), ``activation_spread`` = worst /
        best activation over *all* restarts (None when the best is not positive), ``restarts`` = how
        many were counted.
    """
    acts = [float(a) for a in activations]
    keep = counted(acts, tol)
    best, worst = max(acts), min(acts)
    ids = [top_ids[i] for i in keep]
    return {
        "cosine": pairwise_cosine(vectors[keep]),
        "jaccard_at_10": pairwise_jaccard(ids),
        "consensus": consensus(ids, tokens),
        "activation_spread": worst / best if best > 0 else None,
        "restarts": len(keep),
    }


def centroid(vectors: torch.Tensor) -> torch.Tensor:
    """The normalized mean of optima (R, d): the mean of their unit vectors, rescaled to their mean norm.

    Averaging keeps the direction the optima share and cancels what each restart adds on its own; the
    rescale puts it back inside the projection ball at the optima's typical norm, so its activation is
    comparable with theirs.
    """
    v = vectors.float()
    norms = v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    mean = (v / norms).mean(dim=0)
    return mean / mean.norm().clamp_min(1e-12) * norms.mean()
