"""The merge: candidates into kept selections, and whole states into each other, exactly.

Every selection of a pass's state (:mod:`neurotext.engine.pass_state`) keeps the best entries of a total
order, so merging is order-independent: the fold merges a batch into the state, and a pass run in chunks
(a resumed pass, Ray actors) merges chunk states into one; both give the state of one uninterrupted pass.
"""

from __future__ import annotations

import torch

from .pass_state import EMPTY, NB, PassState, PointState
from .threads import one_thread


def enter_smallest(cur: torch.Tensor, cand: torch.Tensor, k: int):
    """Merge candidate sample orders (n,) into the k smallest ``cur`` (k,), in place; returns (slots, cands)
    of the candidates that entered and the slots they took."""
    allv = torch.cat([cur, cand])
    idx = torch.topk(allv, k, largest=False).indices
    keep = torch.zeros(len(allv), dtype=torch.bool)
    keep[idx] = True
    freed = (~keep[:k]).nonzero().flatten()
    entered = keep[k:].nonzero().flatten()
    cur[freed] = cand[entered]
    return freed, entered


def top_entering(cur: torch.Tensor, cand: torch.Tensor):
    """Which candidates enter a top-K: ``cur`` (n, K) the kept top_order values of n units, ``cand`` (n, C) each
    unit's candidates (WORST where none). Returns (row, slot, col), one per entering candidate: the unit's row,
    the slot it takes (a slot whose entry leaves) and its column in ``cand``."""
    k = cur.shape[1]
    idx = torch.topk(torch.cat([cur, cand], 1), k, dim=1).indices  # (n, K) into K + C
    keep = torch.zeros((len(cur), k + cand.shape[1]), dtype=torch.bool)
    keep.scatter_(1, idx, True)
    ev = (~keep[:, :k]).nonzero()  # (m, 2): unit row, freed slot; row-major
    en = keep[:, k:].nonzero()  # (m, 2): unit row, entering candidate; row-major, so the rows pair up
    return ev[:, 0], ev[:, 1], en[:, 1]


def merge_slots(ps: PointState, unit, bucket, order, val, pos, by_order: bool = False) -> None:
    """Merge entries into the slots of their (unit, bucket), keeping the S smallest sample orders, sorted;
    ``by_order``: the entries come sorted by sample order already (a fold's, whose contexts are put in that order).

    The m groups' kept slots and their new entries (at most S each) are laid out as an (m, 2·S) matrix and each
    row sorted (stably: kept slots first on ties, which only empty slots have). Indexing by index_select,
    masked_select and index_copy_: several times faster on the CPU than tensor[index] for the same result."""
    s = ps.slot.shape[-1]
    g = unit * NB + bucket
    idx = torch.arange(len(g)) if by_order else torch.argsort(order, stable=True)
    idx = idx.index_select(0, torch.argsort(g.index_select(0, idx), stable=True))  # by group, then sample order
    gs = g.index_select(0, idx)
    first = torch.ones(len(gs), dtype=torch.bool)
    torch.ne(gs[1:], gs[:-1], out=first[1:])
    gid = first.cumsum(0) - 1  # each entry's row among the groups
    starts = first.nonzero().flatten()
    groups = gs.index_select(0, starts)
    rank = torch.arange(len(gs)) - starts.index_select(0, gid)
    keep = rank < s  # only a group's S smallest new entries can enter
    if not bool(keep.all()):
        idx, gid, rank = idx.masked_select(keep), gid.masked_select(keep), rank.masked_select(keep)
    m = len(groups)
    flat, flat_val, flat_pos = ps.slot.view(-1, s), ps.slot_val.view(-1, s), ps.slot_pos.view(-1, s)
    at = gid * s + rank
    new_o = torch.full((m * s,), EMPTY, dtype=flat.dtype).index_copy_(0, at, order.index_select(0, idx))
    new_v = torch.zeros(m * s, dtype=flat_val.dtype).index_copy_(0, at, val.index_select(0, idx).to(flat_val.dtype))
    new_p = torch.zeros(m * s, dtype=flat_pos.dtype).index_copy_(0, at, pos.index_select(0, idx).to(flat_pos.dtype))
    all_o = torch.cat([flat.index_select(0, groups), new_o.view(m, s)], 1)  # (m, 2S): kept slots, then new
    sel = torch.sort(all_o, dim=1, stable=True).indices[:, :s]
    flat.index_copy_(0, groups, all_o.gather(1, sel))
    flat_val.index_copy_(0, groups, torch.cat([flat_val.index_select(0, groups), new_v.view(m, s)], 1).gather(1, sel))
    flat_pos.index_copy_(0, groups, torch.cat([flat_pos.index_select(0, groups), new_p.view(m, s)], 1).gather(1, sel))


def merge(settings, state: PassState, other: PassState) -> None:
    """Fold ``other`` (the state of other contexts, e.g. one chunk's from a Ray actor) into ``state``;
    ``settings``: the pass's :class:`neurotext.engine.corpus_pass.PassSettings`."""
    with one_thread():
        _merge(settings, state, other)


def _merge(s, state: PassState, other: PassState) -> None:
    state.widen_if_needed(max(int(other.contexts.sum()), int(other.hist_tokens.sum())))
    for name in ("contexts", "tokens", "hist_contexts", "hist_tokens"):
        getattr(state, name).add_(getattr(other, name))
    for p in range(s.parts):
        if state.tok_count is not None:
            state.tok_count[p] += other.tok_count[p]
        enter_smallest(state.rand[p], other.rand[p], s.random)
        enter_smallest(state.first[p], other.first[p], s.top)
    for point, ps in state.points.items():
        po = other.points[point]
        if ps.hist.dtype != po.hist.dtype:
            ps.widen()
        for name in ("s", "ss", "npos", "ctx_hist", "hist"):
            getattr(ps, name).add_(getattr(po, name))
        if ps.perm_sum is not None:
            ps.perm_sum += po.perm_sum
        for p in range(s.parts):
            if ps.tok_sum is not None:
                ps.tok_sum[p] += po.tok_sum[p]
            row, slot, col = top_entering(ps.top[p], po.top[p])
            for name in ("top", "top_pos", "top_acts"):
                getattr(ps, name)[p][row, slot] = getattr(po, name)[p][row, col]
        full = po.slot != EMPTY
        if bool(full.any()):
            unit, bucket, _ = full.nonzero(as_tuple=True)
            merge_slots(ps, unit, bucket, po.slot[full], po.slot_val[full], po.slot_pos[full])
