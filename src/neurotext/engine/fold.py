"""The fold: one batch's values merged into a pass's state (:mod:`neurotext.engine.pass_state`).

Dense points (neurons, directions): one pass over a point's values (B, T, u) reduces them to what every
selection needs (:func:`reduce`, compiled on the CPU). Sparse points (a dictionary's features,
:class:`SparseValues`): the fold touches only the non-zero values, n of them (a TopK dictionary: k per
position), never the B·T·u zeros: per (context, unit) maxima by a scatter over the n values, then the same
merges. The merges of a reduced batch into the top-K, the samples and the statistics are many small
operations, run on one thread per point, the points side by side on as many threads as torch would use.
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
from .threads import one_thread, side_by_side


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
    # the maximum and its first position in one max over int64 keys: the value's bits in an order-keeping int,
    # then the position reversed in the low 31 bits (a max with indices compiles into a slower loop)
    bits = vals.contiguous().view(torch.int32)
    bits = torch.where(bits == -0x80000000, 0, bits)  # -0.0 as 0.0: they tie, as in a max over floats
    t = torch.arange(vals.shape[1], device=vals.device).view(1, -1, 1)
    key = torch.where(m, ((bits ^ ((bits >> 31) & 0x7FFFFFFF)).long() << 31) | (0x7FFFFFFF - t), WORST).amax(dim=1)
    cpos = 0x7FFFFFFF - (key & 0x7FFFFFFF)
    o = (key >> 31).int()
    cmax = (o ^ ((o >> 31) & 0x7FFFFFFF)).view(torch.float32)
    z = torch.where(m, vals, 0.0)
    pos = cmax > 0
    sbin = signed_bin(cmax) + torch.arange(cmax.shape[1], device=cmax.device).unsqueeze(0) * HIST_BINS
    bucket = torch.where(pos, positive_bucket(cmax), 0)
    enters = pos & (order.unsqueeze(1) < torch.gather(slot_worst.T, 0, bucket))
    top = top_order(cmax, ctx.unsqueeze(1)).T
    units = (top > top_worst.unsqueeze(1)).any(1)
    return cmax, cpos, z.sum(1), (z * z).sum(1), (z > 0).sum(1), sbin, bucket, enters, top, units


def _position_bins(flat: torch.Tensor) -> torch.Tensor:
    """The :func:`signed_bin` of positions' values (n, u), offset by unit (u x HIST_BINS bins in all)."""
    return signed_bin(flat) + torch.arange(flat.shape[1], device=flat.device).unsqueeze(0) * HIST_BINS


_compiled = {}


def compiled(fn):
    """``fn`` compiled by torch.compile into a few loops over its tensors on the CPU (many times faster than
    eager torch, which makes a pass per operation); eager where compiling is unavailable or
    ``NEUROTEXT_COMPILE=0``."""
    name = fn.__name__.lstrip("_")

    def run(vals: torch.Tensor, *args):
        if vals.device.type != "cpu" or os.environ.get("NEUROTEXT_COMPILE", "1") == "0":
            return fn(vals, *args)
        c = _compiled.get(name)
        if c is None:
            c = _compiled[name] = torch.compile(fn, dynamic=True)
        if c is False:
            return fn(vals, *args)
        try:
            return c(vals, *args)
        except Exception as e:  # noqa: BLE001 - no compiler: the same values, more slowly
            warnings.warn(f"the corpus pass runs uncompiled ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "set NEUROTEXT_COMPILE=0 to skip the attempt", stacklevel=2)
            _compiled[name] = False
            return fn(vals, *args)

    run.__name__, run.__doc__ = name, f":func:`{fn.__name__}`, compiled (:func:`compiled`)."
    return run


reduce = compiled(_reduce)
position_bins = compiled(_position_bins)


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
    workers = torch.get_num_threads()
    with one_thread():  # the rest is many small operations, which threads only slow down
        _fold(engine, state, batch, dense, reduced, sparse, order, workers)


def _fold(engine, state: PassState, batch, dense: dict, reduced: dict, sparse: dict, order: torch.Tensor,
          workers: int = 1) -> None:
    """The merges of a reduced batch: first what every point shares, then each point's own state, the points
    side by side on ``workers`` threads (:func:`side_by_side`; a point's merges touch its state only)."""
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
    calls = [(_fold_dense, state.points[point], p, vals, text, reduced[point], order, hist_rows, tok)
             for point, vals in dense.items()]
    calls += [(_fold_sparse, state.points[point], batch, sv, order, in_hist, tok) for point, sv in sparse.items()]
    side_by_side(calls, workers)


def _fold_dense(ps: PointState, p: int, vals, text, reduced, order, hist_rows, tok) -> None:
    """One dense point's values (B, T, u), reduced by :func:`reduce`, into its state."""
    u = vals.shape[-1]
    cmax, cpos, rs, rss, rpos, sbin, bucket, enters, top, units = reduced  # see _reduce
    ps.s[p] += rs.double().sum(0)
    ps.ss[p] += rss.double().sum(0)
    ps.npos[p] += rpos.sum(0)
    # counts by scatter_add_ (several times faster here than adding a bincount of u x HIST_BINS bins)
    ps.ctx_hist.view(-1).scatter_add_(0, sbin.reshape(-1), torch.ones(sbin.numel(), dtype=ps.ctx_hist.dtype))
    if len(hist_rows):
        h = vals.index_select(0, hist_rows)
        at = text.index_select(0, hist_rows).view(-1).nonzero().flatten()
        bins = position_bins(h.reshape(-1, u).index_select(0, at)).view(-1)  # the sampled contexts' text positions
        ps.hist.view(-1).scatter_add_(0, bins, torch.ones(len(bins), dtype=ps.hist.dtype))
    rows = units.nonzero().flatten()
    if len(rows):
        row, slot, brow = top_entering(ps.top[p].index_select(0, rows), top.index_select(0, rows))
        unit = rows.index_select(0, row)
        _set_top(ps, p, unit, slot, top[unit, brow], cpos[brow, unit],
                 vals[brow, :, unit].masked_fill(~text.index_select(0, brow), float("nan")))
    by_order = torch.argsort(order)  # the contexts in sample order: entries come sorted by it (merge_slots)
    bi, ui = enters.index_select(0, by_order).nonzero(as_tuple=True)
    if len(bi):
        bi = by_order.index_select(0, bi)
        flat = bi * u + ui
        merge_slots(ps, ui, bucket.reshape(-1).index_select(0, flat), order.index_select(0, bi),
                    cmax.reshape(-1).index_select(0, flat), cpos.reshape(-1).index_select(0, flat), by_order=True)
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
