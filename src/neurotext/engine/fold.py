"""The fold: one batch's values merged into a pass's state (:mod:`neurotext.engine.pass_state`).

Dense points (neurons, directions): one pass over a point's values (B, T, u) reduces them to what every
selection needs (:func:`reduce`, compiled on the CPU). Sparse points (a dictionary's features,
:class:`SparseValues`): the fold touches only the non-zero values, n of them (a TopK dictionary: k per
position), never the B·T·u zeros: per (context, unit) maxima by a scatter over the n values, then the same
merges. The merges of a reduced batch into the top-K, the samples and the statistics are many small
operations, run on one thread.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from .merge import enter_smallest, merge_slots, top_entering
from .pass_state import (
    HIST_BINS,
    NB,
    WORST,
    PassState,
    PointState,
    positive_bucket,
    sample_order,
    signed_bin,
    top_order,
)
from .threads import one_thread


@dataclass
class SparseValues:
    """A point's values in one batch where most are exactly 0 (a dictionary's features): the others, n of them,
    at text positions only, each > 0."""

    rows: torch.Tensor  # (n,) int64 flat position b * T + t in the batch, ascending
    cols: torch.Tensor  # (n,) int64 unit (the probe's column)
    vals: torch.Tensor  # (n,) float32
    shape: tuple  # (B, T, u)

    @classmethod
    def from_dense(cls, vals: torch.Tensor, text: torch.Tensor) -> SparseValues:
        """The non-zero values at the text positions of dense values (B, T, u)."""
        b, t, u = vals.shape
        flat = vals.float().reshape(b * t, u) * text.reshape(-1, 1)
        rows, cols = flat.nonzero(as_tuple=True)
        return cls(rows, cols, flat[rows, cols], (b, t, u))

    def dense(self) -> torch.Tensor:
        """The values as (B, T, u) float32, zeros included."""
        b, t, u = self.shape
        out = torch.zeros(b * t, u)
        out[self.rows, self.cols] = self.vals.float()
        return out.view(b, t, u)

    def pairs(self, rows: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """The values of (batch row, unit) pairs at every position: (m, T) float32, zeros where none is stored."""
        b, t, u = self.shape
        out = torch.zeros((len(rows), t))
        if len(rows):
            where = torch.full((b * u,), -1, dtype=torch.int64)
            where[rows * u + units] = torch.arange(len(rows))
            brow = self.rows // t
            r = where[brow * u + self.cols]
            sel = r >= 0
            out[r[sel], (self.rows - brow * t)[sel]] = self.vals[sel].float()
        return out


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
    """Fold one batch's values into ``state``: ``found`` is {(layer, site): (B, T, u) tensor or
    :class:`SparseValues`} (from :meth:`CorpusPass.forward`); ``engine`` is the
    :class:`neurotext.engine.corpus_pass.CorpusPass` that ran it. Sparse values fold sparsely into a sparse
    point's state, densely into a dense one's (the reference the tests compare with)."""
    p, order = batch.part, sample_order(batch.key, batch.ctx)
    dense, sparse = {}, {}
    for point, vals in found.items():
        if state.points[point].sparse:
            sparse[point] = vals if isinstance(vals, SparseValues) else SparseValues.from_dense(vals, batch.text)
        elif isinstance(vals, SparseValues):
            dense[point] = vals.dense()
        else:
            dense[point] = vals.float()  # a direction's product under bf16 autocast
    reduced = {}
    for point, vals in dense.items():  # the one pass over the values
        ps = state.points[point]
        reduced[point] = reduce(vals, batch.text, batch.ctx, order, ps.top[p].min(1).values, ps.slot[:, :, -1])
    with one_thread():  # the rest is many small operations, which threads only slow down
        _fold(engine, state, batch, dense, reduced, sparse, order)


def _fold(engine, state: PassState, batch, dense: dict, reduced: dict, sparse: dict, order: torch.Tensor) -> None:
    s, p, text = engine.settings, batch.part, batch.text
    ntext = text.sum(1)  # (B,)
    state.widen_if_needed(int(ntext.sum()) + len(batch.ctx))
    state.contexts[p] += len(batch.ctx)
    state.tokens[p] += int(ntext.sum())
    in_hist = batch.key < engine.hist_below  # (B,) the contexts whose positions the position histogram bins
    hist_rows = in_hist.nonzero().flatten()
    state.hist_contexts[p] += len(hist_rows)
    state.hist_tokens[p] += int(ntext[hist_rows].sum())
    enter_smallest(state.rand[p], order, s.random)  # random sample: the same for every unit
    enter_smallest(state.first[p], batch.ctx, s.top)  # the smallest contexts: a sparse unit's zero contexts
    tok = None
    if s.token_stats:
        tok_ids = batch.ids[text]  # (N,) token ids at the text positions, row-major
        gen = torch.Generator().manual_seed(int(batch.ctx.min()) * 1_000_003 + len(batch.ctx))
        perm_ids = tok_ids[torch.randperm(len(tok_ids), generator=gen)]
        state.tok_count[p] += torch.bincount(tok_ids, minlength=engine.vocab)
        tok = (tok_ids, perm_ids)
    for point, vals in dense.items():
        _fold_dense(state.points[point], p, vals, text, reduced[point], order, hist_rows, tok)
    for point, sv in sparse.items():
        _fold_sparse(state.points[point], batch, sv, order, in_hist, tok)


def _fold_dense(ps: PointState, p: int, vals, text, reduced, order, hist_rows, tok) -> None:
    """One dense point's values (B, T, u), reduced by :func:`reduce`, into its state."""
    u = vals.shape[-1]
    cmax, cpos, rs, rss, rpos, sbin, bucket, enters, top, units = reduced  # see _reduce
    ps.s[p] += rs.double().sum(0)
    ps.ss[p] += rss.double().sum(0)
    ps.npos[p] += rpos.sum(0)
    off = torch.arange(u).unsqueeze(0) * HIST_BINS  # (1, u)
    ps.ctx_hist += torch.bincount(sbin.view(-1), minlength=u * HIST_BINS).view(u, -1).to(ps.ctx_hist.dtype)
    if len(hist_rows):
        flat = vals[hist_rows][text[hist_rows]]  # (n, u): the sampled contexts' text positions
        ps.hist += torch.bincount((signed_bin(flat) + off).view(-1), minlength=u * HIST_BINS).view(u, -1).to(
            ps.hist.dtype)
    rows = units.nonzero().flatten()
    if len(rows):
        row, slot, brow = top_entering(ps.top[p][rows], top[rows])
        unit = rows[row]
        _set_top(ps, p, unit, slot, top[unit, brow], cpos[brow, unit],
                 vals[brow, :, unit].masked_fill(~text[brow], float("nan")))
    bi, ui = enters.nonzero(as_tuple=True)
    if len(bi):
        merge_slots(ps, ui, bucket[bi, ui], order[bi], cmax[bi, ui], cpos[bi, ui])
    if tok is not None:
        flat_all = vals[text]  # (N, u)
        ps.tok_sum[p].index_add_(0, tok[0], flat_all)
        ps.perm_sum.index_add_(0, tok[1], flat_all)


def _fold_sparse(ps: PointState, batch, sv: SparseValues, order, in_hist, tok) -> None:
    """One sparse point's non-zero values into its state: every step is over the n values or the (context, unit)
    pairs they make, the zeros are never touched (a context without a value of a unit is a zero context of it)."""
    p, text = batch.part, batch.text
    b_, t_, u = sv.shape
    v = sv.vals.float()
    keep = v > 0  # an encoding's exact zeros (a ReLU'd TopK value) are zeros like the others
    if not bool(keep.all()):
        sv = SparseValues(sv.rows[keep], sv.cols[keep], v[keep], sv.shape)
        v = sv.vals
    f, brow = sv.cols, sv.rows // t_
    t = sv.rows - brow * t_
    vd = v.double()
    ps.s[p].index_add_(0, f, vd)
    ps.ss[p].index_add_(0, f, vd * vd)
    ps.npos[p] += torch.bincount(f, minlength=u)
    # per (context, unit): the activation (max over text positions) and its first position
    pair = brow * u + f
    cmax = torch.zeros(b_ * u).scatter_reduce_(0, pair, v, "amax")
    at_max = v == cmax[pair]
    cpos = torch.full((b_ * u,), t_, dtype=torch.int64).scatter_reduce_(0, pair[at_max], t[at_max], "amin")
    hit = (cmax > 0).nonzero().flatten()  # the positive (context, unit) pairs, by context then unit
    hb, hu = hit // u, hit % u
    hv, hp = cmax[hit], cpos[hit]
    bucket = positive_bucket(hv)
    ones = torch.ones(len(hit), dtype=ps.ctx_hist.dtype)
    ps.ctx_hist.view(-1).index_put_((hu * NB + bucket,), ones, accumulate=True)  # the zero bin: counted, not stored
    sel = in_hist[brow]
    if bool(sel.any()):
        ps.hist.view(-1).index_put_((f[sel] * NB + positive_bucket(v[sel]),), torch.ones(int(sel.sum()),
                                    dtype=ps.hist.dtype), accumulate=True)
    enters = order[hb] < ps.slot[hu, bucket, -1]
    if bool(enters.any()):
        merge_slots(ps, hu[enters], bucket[enters], order[hb[enters]], hv[enters], hp[enters])
    cand = top_order(hv, batch.ctx[hb])
    ent = cand > ps.top[p].min(1).values[hu]
    if bool(ent.any()):
        eu, eb = hu[ent], hb[ent]
        units, inv = torch.unique(eu, return_inverse=True)
        cm = torch.full((len(units), b_), WORST, dtype=torch.int64)  # (n, B): the units' candidates by context
        cm[inv, eb] = cand[ent]
        row, slot, col = top_entering(ps.top[p][units], cm)
        unit = units[row]
        acts = sv.pairs(col, unit).masked_fill_(~text[col], float("nan"))
        _set_top(ps, p, unit, slot, cm[row, col], cpos[col * u + unit], acts)
    if tok is not None:
        index = text.reshape(-1).cumsum(0) - 1  # flat position -> its index among the text positions
        at = index[sv.rows]
        ps.tok_sum[p].view(-1).index_add_(0, tok[0][at] * u + f, v)
        ps.perm_sum.view(-1).index_add_(0, tok[1][at] * u + f, v)


def _set_top(ps: PointState, p: int, unit, slot, order, pos, acts) -> None:
    """Put entries into the part's top: units (m,), the slots they take (m,), their top_order (m,), max positions
    (m,) and values at every position (m, T), NaN outside text."""
    ps.top[p][unit, slot] = order
    ps.top_pos[p][unit, slot] = pos.to(ps.top_pos[p].dtype)
    a = ps.top_acts[p]
    a[unit, slot] = float("nan")
    a[unit, slot, :acts.shape[1]] = acts
