"""The fold: one batch's values merged into a pass's state (:mod:`neurotext.engine.pass_state`).

One pass over a point's values (B, T, u) reduces them to what every selection needs (:func:`reduce`,
compiled on the CPU); the merges of the reduced batch into the top-K, the samples and the statistics are
many small operations, run on one thread.
"""

from __future__ import annotations

import os
import warnings

import torch

from .merge import enter_smallest, merge_slots
from .pass_state import (
    HIST_BINS,
    PassState,
    PointState,
    positive_bucket,
    sample_order,
    signed_bin,
    top_order,
)
from .threads import one_thread


def _reduce(vals: torch.Tensor, text: torch.Tensor, ctx: torch.Tensor, order: torch.Tensor,
            top_worst: torch.Tensor, slot_worst: torch.Tensor):
    """Everything a fold needs from one point's values, in one pass over them.

    vals (B, T, u), text (B, T), ctx and order (B,) the contexts' indices and :func:`sample_order`,
    top_worst (u,) the smallest kept :func:`top_order` of each unit, slot_worst (u, NB) the largest kept sample
    order of each (unit, bucket). Returns, per context and unit (B, u): activation (max over text positions),
    its position, the sum, sum of squares and count of positive values over text positions, the
    :func:`signed_bin` of the activation offset by unit (u x HIST_BINS bins in all), its :func:`positive_bucket`
    (0 where not positive), whether it enters its bucket's samples; then the :func:`top_order` of every
    (unit, context) (u, B) and whether a unit has a context that enters its top (u,)."""
    m = text.unsqueeze(-1)
    cmax, cpos = torch.where(m, vals, -float("inf")).max(dim=1)
    z = torch.where(m, vals, 0.0)
    pos = cmax > 0
    sbin = signed_bin(cmax) + torch.arange(cmax.shape[1], device=cmax.device).unsqueeze(0) * HIST_BINS
    bucket = torch.where(pos, positive_bucket(cmax), 0)
    enters = pos & (order.unsqueeze(1) < torch.gather(slot_worst.T, 0, bucket))
    top = top_order(cmax, ctx.unsqueeze(1)).T
    units = (top > top_worst.unsqueeze(1)).any(1)
    return cmax, cpos, z.sum(1), (z * z).sum(1), (z > 0).sum(1), sbin, bucket, enters, top, units


_compiled = {}


def reduce(vals: torch.Tensor, *args):
    """:func:`_reduce`, compiled into a few loops over the values on the CPU (many times faster than eager
    torch, which makes a pass per operation); eager where compiling is unavailable or ``NEUROTEXT_COMPILE=0``."""
    if vals.device.type != "cpu" or os.environ.get("NEUROTEXT_COMPILE", "1") == "0":
        return _reduce(vals, *args)
    fn = _compiled.get("reduce")
    if fn is None:
        fn = _compiled["reduce"] = torch.compile(_reduce, dynamic=True)
    if fn is False:
        return _reduce(vals, *args)
    try:
        return fn(vals, *args)
    except Exception as e:  # noqa: BLE001 - no compiler: the same values, more slowly
        warnings.warn(f"the corpus pass runs uncompiled ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "set NEUROTEXT_COMPILE=0 to skip the attempt", stacklevel=2)
        _compiled["reduce"] = False
        return _reduce(vals, *args)


def fold(engine, state: PassState, batch, found: dict) -> None:
    """Fold one batch's values (``found``: {(layer, site): (B, T, u)}, from :meth:`CorpusPass.forward`) into
    ``state``; ``engine`` is the :class:`neurotext.engine.corpus_pass.CorpusPass` that ran it."""
    p, order = batch.part, sample_order(batch.key, batch.ctx)
    found = {point: vals.float() for point, vals in found.items()}  # a direction's product under bf16 autocast
    reduced = {}
    for point, vals in found.items():  # the one pass over the values
        ps = state.points[point]
        reduced[point] = reduce(vals, batch.text, batch.ctx, order, ps.top[p].min(1).values, ps.slot[:, :, -1])
    with one_thread():  # the rest is many small operations, which threads only slow down
        _fold(engine, state, batch, found, reduced, order)


def _fold(engine, state: PassState, batch, found: dict, reduced: dict, order: torch.Tensor) -> None:
    s, p, text = engine.settings, batch.part, batch.text
    ntext = text.sum(1)  # (B,)
    state.contexts[p] += len(batch.ctx)
    state.tokens[p] += int(ntext.sum())
    hist_rows = (batch.key < engine.hist_below).nonzero().flatten()
    state.hist_contexts[p] += len(hist_rows)
    state.hist_tokens[p] += int(ntext[hist_rows].sum())
    slots, rows = enter_smallest(state.rand[p], order, s.random)  # random sample: the same for every unit
    tok_ids = perm_ids = None
    if s.token_stats:
        tok_ids = batch.ids[text]  # (N,) token ids at the text positions, row-major
        gen = torch.Generator().manual_seed(int(batch.ctx.min()) * 1_000_003 + len(batch.ctx))
        perm_ids = tok_ids[torch.randperm(len(tok_ids), generator=gen)]
        state.tok_count[p] += torch.bincount(tok_ids, minlength=engine.vocab)

    def fold_point(point) -> None:  # touches only this point's state
        vals, ps = found[point], state.points[point]
        u = vals.shape[-1]
        cmax, cpos, rs, rss, rpos, sbin, bucket, enters, top, units = reduced[point]  # see _reduce
        ps.s[p] += rs.double().sum(0)
        ps.ss[p] += rss.double().sum(0)
        ps.npos[p] += rpos.sum(0)
        off = torch.arange(u).unsqueeze(0) * HIST_BINS  # (1, u)
        ps.ctx_hist += torch.bincount(sbin.view(-1), minlength=u * HIST_BINS).view(u, -1)
        if len(hist_rows):
            flat = vals[hist_rows][text[hist_rows]]  # (n, u): the sampled contexts' text positions
            ps.hist += torch.bincount((signed_bin(flat) + off).view(-1), minlength=u * HIST_BINS).view(u, -1)
        if len(rows):
            a = torch.full((len(rows), engine.width, u), float("nan"))
            a[:, :vals.shape[1]] = vals[rows].masked_fill(~text[rows].unsqueeze(-1), float("nan"))
            ps.rand_acts[p][slots] = a
        _fold_top(ps, p, vals, text, cpos, top, units)
        _fold_slots(ps, cmax, cpos, order, bucket, enters)
        if tok_ids is not None:
            flat_all = vals[text]  # (N, u)
            ps.tok_sum[p].index_add_(0, tok_ids, flat_all)
            ps.perm_sum.index_add_(0, perm_ids, flat_all)

    for point in found:
        fold_point(point)


def _fold_top(ps: PointState, p: int, vals, text, cpos, cand, enter) -> None:
    """Merge the batch's contexts (their top_order cand (u, B); enter (u,): the units where one beats the
    smallest kept) into the part's top-K of every unit."""
    cur = ps.top[p]  # (u, K)
    units = enter.nonzero().flatten()
    if len(units) == 0:
        return
    k = cur.shape[1]
    idx = torch.topk(torch.cat([cur[units], cand[units]], 1), k, dim=1).indices  # (n, K) into K + B
    keep = torch.zeros((len(units), k + cand.shape[1]), dtype=torch.bool)
    keep.scatter_(1, idx, True)
    ev = (~keep[:, :k]).nonzero()  # (m, 2): unit row, freed slot; row-major
    en = keep[:, k:].nonzero()  # (m, 2): unit row, entering batch row
    unit, slot, brow = units[ev[:, 0]], ev[:, 1], en[:, 1]
    cur[unit, slot] = cand[unit, brow]
    ps.top_pos[p][unit, slot] = cpos[brow, unit].int()
    t = vals.shape[1]
    acts = ps.top_acts[p]
    acts[unit, slot] = float("nan")
    acts[unit, slot, :t] = vals[brow, :, unit].masked_fill(~text[brow], float("nan"))  # (m, T)


def _fold_slots(ps: PointState, cmax, cpos, order, bucket, enters) -> None:
    """Merge the batch's contexts into the per-bucket samples of smallest key (positive activations only):
    bucket (B, u) each activation's, enters (B, u) whether its order is below the largest kept in its bucket."""
    bi, ui = enters.nonzero(as_tuple=True)
    if len(bi):
        merge_slots(ps, ui, bucket[bi, ui], order[bi], cmax[bi, ui], cpos[bi, ui].int())
