"""A finished pass's state as Arrow tables: one per (layer, site), one row per neuron, and the contexts they refer
to (:class:`Finalizer`); their schemas; the token statistics.

Finalizing streams: the tables come group of units by group of units (``GROUP_UNITS``), each made from its
units' part of the state and handed to the caller (a store writes it and lets it go), so the memory it takes
beyond the pass's state is one group's tables, whatever the number of units. What it needs beyond the state
is computed before the first group: the range samples (bounds and contexts, a few numbers per unit) and the
values of their contexts at every position, in one batched replay of just those contexts over every point at
once (``units x ranges x per_range x W`` float32: 3,168 bytes per unit at the defaults); the random contexts'
values are replayed point by point (R contexts per part). A store's finalize (``release``) frees the sample
slots once the range samples are drawn, before the replay: the replay's values then take the place of the
state's largest part instead of adding to it.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch

from ..engine.contexts import PARTS, Context, batches
from ..engine.fold import SparseValues
from ..engine.pass_state import EMPTY, HIST_BINS, NB, WORST, PassState, bucket_edges, sample_ctx, top_order, top_parts
from .config import LOOKUP_K, LOOKUP_MIN_COUNT

GROUP_UNITS = 1024  # units per finalized group: its tables take about 60 kB per unit at the defaults
REPLAY_WINDOW = 4096  # contexts read back from the corpus at a time for a replay, sorted by length into batches
CONTEXT_ROWS = 8192  # rows of the contexts table made at a time


#: One example in a results table: the context (its text, tokens and ids are in the contexts table), the max
#: position in the model input, the activation there, and the unit's value at every position (null at template
#: positions).
EXAMPLE = pa.struct([("context", pa.int64()), ("position", pa.int32()), ("activation", pa.float32()),
                     ("activations", pa.list_(pa.float32()))])
RANGE = pa.struct([("range", pa.int32()), ("lo", pa.float64()), ("hi", pa.float64()),
                   ("nominal", pa.list_(pa.float64())), ("contexts", pa.int64()), ("examples", pa.list_(EXAMPLE))])
HIST = pa.struct([("lo", pa.list_(pa.float64())), ("hi", pa.list_(pa.float64())), ("count", pa.list_(pa.int64()))])
LOOKUP = pa.struct([("token", pa.string()), ("id", pa.int32()), ("mean", pa.float64()), ("count", pa.int64())])
EXAMPLE_LISTS = ("top", "random", "top_train", "top_test", "random_train", "random_test")


def results_schema() -> pa.Schema:
    """One row per neuron (or direction) of a (layer, site); example lists best first (random: by sampling key)."""
    f64, i64 = pa.float64(), pa.int64()
    return pa.schema([
        ("neuron", pa.string()), ("layer", pa.int32()), ("site", pa.string()), ("unit", pa.int32()),
        ("contexts", i64), ("tokens", i64), ("mean", f64), ("std", f64), ("max", f64), ("share_positive", f64),
        ("histogram", HIST), ("histogram_positions", i64), ("histogram_contexts", i64), ("context_histogram", HIST),
        *[(name, pa.list_(EXAMPLE)) for name in EXAMPLE_LISTS], ("ranges", pa.list_(RANGE)),
        ("train_contexts", i64), ("train_tokens", i64), ("train_max", f64),
        ("test_contexts", i64), ("test_tokens", i64), ("test_max", f64),
        ("omega_squared", f64), ("omega_squared_permuted", f64), ("distinct_tokens", i64), ("lookup", pa.list_(LOOKUP)),
    ])


def contexts_schema() -> pa.Schema:
    """The contexts the examples refer to, once each: the whole model input (``ids``, ``tokens``: template
    included), the text and each token's characters in it (``spans``; null at template positions)."""
    return pa.schema([("context", pa.int64()), ("doc", pa.int64()), ("piece", pa.int32()), ("part", pa.string()),
                      ("text", pa.string()), ("ids", pa.list_(pa.int32())), ("tokens", pa.list_(pa.string())),
                      ("spans", pa.list_(pa.list_(pa.int32())))])


def _example_list(counts, ctx, pos, act, acts, lengths) -> pa.ListArray:
    """A list<EXAMPLE> column from flat arrays: ``counts`` (rows,) examples per row; ctx, pos, act (E,); acts (E, W)
    the values at every position (NaN = null), cut to each context's model-input length ``lengths`` (E,)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    acts = np.asarray(acts, dtype=np.float32)
    acts = acts.reshape(len(ctx), -1) if acts.size else np.zeros((len(ctx), 0), dtype=np.float32)
    keep = np.arange(acts.shape[1])[None, :] < lengths[:, None]
    values = acts[keep]
    inner = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)),
                                     pa.array(values, mask=np.isnan(values), type=pa.float32()))
    struct = pa.StructArray.from_arrays(
        [pa.array(np.asarray(ctx, dtype=np.int64)), pa.array(np.asarray(pos, dtype=np.int32)),
         pa.array(np.asarray(act, dtype=np.float32)), inner], fields=list(EXAMPLE))
    return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)), struct)


class Finalizer:
    """Turns a finished :class:`PassState` into Arrow tables: per (layer, site) one row per unit, made group of
    units by group (:meth:`groups`), and the contexts they refer to (:meth:`contexts_tables`). Vectorized over a
    group's units: nothing per example is a Python object.

    Args:
        run: the pass's :class:`neurotext.examples.run.CorpusRun` (engine, registry, corpus).
        state: its finished state.
        group_units: units per group (None: ``GROUP_UNITS``).
        release: drop every point's sample slots once the range samples are drawn, and each point's state once
            its tables are made (the state is then unusable).
    """

    def __init__(self, run, state: PassState, group_units: int | None = None, release: bool = False):
        self.run, self.state = run, state
        self.model, self.engine, self.config = run.model, run.engine, run.config
        self.group_units = group_units or GROUP_UNITS
        self.release = release
        self.edges = bucket_edges()
        self.prefix = len(self.engine.prefix)
        self.template = self.prefix + len(self.engine.suffix)
        self.used: list[np.ndarray] = []  # context indices the tables refer to, group by group
        self.random: dict[int, Context] = {}  # the random contexts (read back with the range samples')
        self._random_values_of: dict = {}  # {point: its random contexts' values}, a layer's points at a time

    # ------------------------------------------------------------------ the whole
    def tables(self) -> tuple[dict, pa.Table]:
        """({(layer, site): results table}, contexts table): every group, concatenated."""
        out: dict = {}
        for point, table in self.groups():
            out.setdefault(point, []).append(table)
        contexts = list(self.contexts_tables())
        return ({point: pa.concat_tables(t) for point, t in out.items()},
                pa.concat_tables(contexts) if contexts else contexts_schema().empty_table())

    def groups(self):
        """Yield (point, table) for every group of at most ``group_units`` units of every point, in the points'
        order and each point's unit order; call :meth:`contexts_tables` after the last."""
        points = list(self.state.points)
        ranges = {point: self._ranges(point) for point in points}
        if self.release:  # the range samples are drawn: their slots go before the replay allocates its values
            for point in points:
                self.state.points[point].drop_samples()
        range_acts = self._replay_ranges(ranges)
        for point in points:
            rand = self._replay_random(point)
            u = self.state.points[point].units
            for a in range(0, u, self.group_units):
                yield point, self._table(point, slice(a, min(u, a + self.group_units)), ranges[point],
                                         range_acts.get(point), rand)
            range_acts.pop(point, None)
            del rand
            if self.release:
                del self.state.points[point]

    def contexts_tables(self):
        """The contexts the tables refer to, once each, in context order: tables of at most CONTEXT_ROWS rows,
        their text read back from the corpus (:meth:`Registry.fetch`)."""
        used = np.unique(np.concatenate(self.used)) if self.used else np.zeros(0, dtype=np.int64)
        rows = []
        for c in self.run.registry.fetch(self.run.corpus, self.run.tokenize, used):
            ids = self.engine.model_input(c)
            spans = [None] * len(ids)
            if c.spans is not None:
                for k, (a, b) in enumerate(c.spans.tolist()):
                    spans[self.prefix + k] = [a, b]
            rows.append({"context": c.index, "doc": c.doc, "piece": c.piece, "part": PARTS[c.part], "text": c.text,
                         "ids": ids, "tokens": [self.model.tokens[t] for t in ids], "spans": spans})
            if len(rows) == CONTEXT_ROWS:
                yield pa.Table.from_pylist(rows, schema=contexts_schema())
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows, schema=contexts_schema())

    # ------------------------------------------------------------------ ranges
    def _ranges(self, point) -> dict:
        """Every unit's ranges below the top fifth, as arrays: ``valid`` (u,) units with a positive maximum (the
        others have no ranges), the maximum ``top`` and ``width`` (u,), bucket bounds ``lo_b``/``hi_b`` and their
        snapped values ``lo``/``hi`` (u, R), the contexts in each range ``count`` (u, R), and the entries drawn
        for each, the per_range of smallest sampling key among the slots of its buckets: ``ctx`` (-1: none),
        ``pos``, ``val`` (u, R, per_range)."""
        ps, c, e = self.state.points[point], self.config, self.edges
        rr, k = c.ranges, c.per_range
        u = ps.units
        best = torch.stack([t.max(1).values for t in ps.top]).max(0).values
        top = top_parts(best)[0].double().numpy()
        with np.errstate(invalid="ignore"):
            valid = (best != WORST).numpy() & (top > 0) & np.isfinite(top)
        top = np.where(valid, top, 1.0)  # (bounds of the others are never read)
        width = top / (rr + 1)
        lo_b = np.zeros((u, rr), dtype=np.int64)
        hi_b = np.zeros((u, rr), dtype=np.int64)
        for r in range(rr):
            if r:
                lo_b[:, r] = _nearest(e, r * width)
            hi_b[:, r] = _nearest(e, (r + 1) * width)
        lo = np.where(lo_b == 0, 0.0, e[lo_b])
        hi = e[hi_b]
        positive = ps.ctx_hist if ps.sparse else ps.ctx_hist[:, NB + 1:]  # (u, NB) the positive buckets
        csum = torch.cat([torch.zeros((u, 1), dtype=torch.int64), positive.cumsum(1)], 1).numpy()
        count = np.where(hi_b > lo_b, np.take_along_axis(csum, hi_b, 1) - np.take_along_axis(csum, lo_b, 1), 0)
        ctx = np.full((u, rr, k), -1, dtype=np.int64)
        pos = np.zeros((u, rr, k), dtype=np.int64)
        val = np.zeros((u, rr, k), dtype=np.float32)
        buckets = torch.arange(NB)
        for a in range(0, u, self.group_units):
            sl = slice(a, min(u, a + self.group_units))
            g = sl.stop - sl.start
            inside = (buckets >= torch.from_numpy(lo_b[sl]).unsqueeze(-1)) \
                & (buckets < torch.from_numpy(hi_b[sl]).unsqueeze(-1))  # (g, R, NB)
            orders = torch.where(inside.unsqueeze(-1), ps.slot[sl].unsqueeze(1), EMPTY).reshape(g, rr, -1)
            first, idx = orders.topk(k, dim=2, largest=False)  # the smallest sample orders, ascending
            ok = (first != EMPTY) & torch.from_numpy(valid[sl]).view(g, 1, 1)
            ctx[sl] = torch.where(ok, sample_ctx(first), -1).numpy()
            j = torch.arange(g).view(g, 1, 1).expand_as(idx)
            pos[sl] = ps.slot_pos[sl].reshape(g, -1)[j, idx].long().numpy()
            val[sl] = ps.slot_val[sl].reshape(g, -1)[j, idx].numpy()
        return {"valid": valid, "top": top, "width": width, "lo": lo, "hi": hi, "count": count, "ctx": ctx,
                "pos": pos, "val": val}

    def _ranges_column(self, rg: dict, sl: slice, acts: torch.Tensor | None) -> pa.ListArray:
        """The ``ranges`` column of a group: each valid unit's R ranges with their entries (``acts`` (u, R *
        per_range, W): the entries' replayed values)."""
        rr, k = self.config.ranges, self.config.per_range
        valid = rg["valid"][sl]
        g = len(valid)
        units = np.nonzero(valid)[0]  # rows of the group with ranges
        n = len(units) * rr
        ctx = rg["ctx"][sl][units].reshape(n, k)
        has = ctx >= 0
        w = self.engine.width
        a = np.full((len(units), rr * k, w), np.nan, dtype=np.float32) if acts is None \
            else acts[sl][torch.from_numpy(units)].numpy()
        flat_ctx = ctx[has]
        self.used.append(flat_ctx)
        examples = _example_list(has.sum(1), flat_ctx, rg["pos"][sl][units].reshape(n, k)[has],
                                 rg["val"][sl][units].reshape(n, k)[has], a.reshape(n, k, w)[has],
                                 self._lengths(flat_ctx))
        r = np.tile(np.arange(rr), len(units))
        width = rg["width"][sl][units].repeat(rr)
        nominal = np.stack([r * width, (r + 1) * width], 1).reshape(-1)
        struct = pa.StructArray.from_arrays(
            [pa.array(r.astype(np.int32)), pa.array(rg["lo"][sl][units].reshape(-1)),
             pa.array(rg["hi"][sl][units].reshape(-1)),
             pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), pa.array(nominal)),
             pa.array(rg["count"][sl][units].reshape(-1).astype(np.int64)), examples], fields=list(RANGE))
        counts = np.where(valid, rr, 0)
        assert len(counts) == g
        return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)), struct)

    # ------------------------------------------------------------------ replays
    def _replay_ranges(self, ranges: dict) -> dict:
        """Every position's values of the range samples' contexts: {point: (u, R * per_range, W) float32, NaN
        where no entry}, from one batched pass over just those contexts (read back from the corpus a window at
        a time, every point at once); the random contexts are read back on the way (``self.random``)."""
        rr, k, w = self.config.ranges, self.config.per_range, self.engine.width
        need, wanted = {}, []
        for point, rg in ranges.items():
            ctx = rg["ctx"]
            unit, r, i = np.nonzero(ctx >= 0)
            if len(unit):
                cx = ctx[unit, r, i]
                order = np.argsort(cx, kind="stable")
                need[point] = (torch.from_numpy(cx[order]), torch.from_numpy(unit[order]),
                               torch.from_numpy((r * k + i)[order]))
                wanted.append(np.unique(cx))
        acts = {point: torch.full((ranges[point]["ctx"].shape[0], rr * k, w), float("nan")) for point in need}
        rand = self._random_order()
        wanted = np.unique(np.concatenate([*wanted, rand])) if wanted else rand
        rand_set = set(rand.tolist())
        window: list[Context] = []

        def replay():
            for b, found in self._forward(window):
                bctx = b.ctx
                for point, (cx, unit, slot) in need.items():
                    lo = torch.searchsorted(cx, bctx)
                    n = torch.searchsorted(cx, bctx, right=True) - lo
                    if int(n.sum()) == 0:
                        continue
                    row = torch.repeat_interleave(torch.arange(len(bctx)), n)
                    e = torch.repeat_interleave(lo - (n.cumsum(0) - n), n) + torch.arange(int(n.sum()))
                    vals = _pairs(found[point], row, unit[e]).masked_fill_(~b.text[row], float("nan"))
                    acts[point][unit[e], slot[e], :vals.shape[1]] = vals
            window.clear()

        for c in self.run.registry.fetch(self.run.corpus, self.run.tokenize, wanted):
            if c.index in rand_set:
                self.random[c.index] = c
            window.append(c)
            if len(window) == REPLAY_WINDOW:
                replay()
        if window:
            replay()
        return acts

    def _random_order(self) -> np.ndarray:
        """The random contexts of both parts, each part's by sampling order, the train part's first."""
        out = []
        for order in self.state.rand:
            keep = order[order != EMPTY]
            out.append(sample_ctx(keep.sort().values))
        return torch.cat(out).numpy()

    def _replay_random(self, point) -> tuple:
        """The random contexts' values for one point: (contexts C, values (C, W, u) float32 with NaN outside text,
        or None and for a sparse point a list of (rows, SparseValues, text) to make them from). Every point of the
        point's layer is replayed at once (one forward as deep as the layer) and kept until its turn."""
        if point not in self._random_values_of:
            layer = point[0]
            probes = {p: probe for p, probe in self.engine.probes.items() if p[0] == layer and p in self.state.points}
            ctx = self._random_order()
            index = {int(c): i for i, c in enumerate(ctx.tolist())}
            w = self.engine.width
            out = {p: (len(ctx), None if probe.sparse else torch.full((len(ctx), w, probe.size), float("nan")), [])
                   for p, probe in probes.items()}
            for b, found in self._forward([self.random[int(c)] for c in ctx.tolist()], probes):
                rows = torch.tensor([index[int(c)] for c in b.ctx.tolist()], dtype=torch.int64)
                for p, v in found.items():
                    _, dense, parts = out[p]
                    if dense is None:
                        parts.append((rows, v, b.text))
                    else:
                        dense[rows, :v.shape[1]] = v.masked_fill(~b.text.unsqueeze(-1), float("nan"))
            self._random_values_of.update(out)
        return self._random_values_of.pop(point)

    def _random_values(self, rand: tuple, sl: slice) -> torch.Tensor:
        """The random contexts' values of a group's units: (C, W, g) float32, NaN outside text."""
        n, dense, parts = rand
        if dense is not None:
            return dense[:, :, sl]
        g = sl.stop - sl.start
        out = torch.full((n, self.engine.width, g), float("nan"))
        for rows, sv, text in parts:
            keep = (sv.cols >= sl.start) & (sv.cols < sl.stop)
            part = SparseValues(sv.rows[keep], sv.cols[keep] - sl.start, sv.vals[keep], (*sv.shape[:2], g))
            v = part.dense()
            out[rows, :v.shape[1]] = v.masked_fill(~text.unsqueeze(-1), float("nan"))
        return out

    def _forward(self, contexts: list[Context], probes: dict | None = None):
        """(batch, values) of contexts of any part, batched by length (the pass's batch limits)."""
        same = [Context(c.index, c.doc, c.piece, 0, c.key, c.ids, c.text, c.spans) for c in contexts]
        for group in batches(same, *self.run._batch_limits()):
            yield from self.run.forward(group, probes)

    # ------------------------------------------------------------------ one group
    def _lengths(self, ctx) -> np.ndarray:
        """Model-input lengths (template included) of contexts."""
        return self.run.registry.lengths(ctx) + self.template

    def _tops(self, ps, sl: slice) -> list:
        """Each part's top-K of a group's units, best first: [(order (g, K), pos (g, K), acts (g, K, W))]; a sparse
        point's zero contexts filled in (:meth:`_zero_fill`)."""
        out = []
        for p in range(len(PARTS)):
            cur, pos, acts = ps.top[p][sl], ps.top_pos[p][sl].long(), ps.top_acts[p][sl]
            if ps.sparse:
                cur, pos, acts = self._zero_fill(p, cur, pos, acts)
            order, idx = cur.sort(dim=1, descending=True)
            out.append((order, pos.gather(1, idx), acts.gather(1, idx.unsqueeze(-1).expand(-1, -1, acts.shape[2]))))
        return out

    def _zero_fill(self, p: int, cur, pos, acts):
        """A sparse unit's top of part ``p`` with its zero contexts: where it holds fewer than K positive contexts,
        the rest are contexts where the unit is 0 everywhere, which tie at 0 and so go by context index: the
        smallest indices of the part (``state.first``) that are not among its positive ones."""
        first = self.state.first[p]
        cand = first[first != EMPTY]  # (k0,) ascending
        if not len(cand) or not bool((cur == WORST).any()):
            return cur, pos, acts
        k, w = cur.shape[1], acts.shape[2]
        held = cur != WORST
        taken = ((top_parts(cur)[1].unsqueeze(2) == cand.view(1, 1, -1)) & held.unsqueeze(2)).any(1)  # (g, k0)
        zeros = torch.where(taken, WORST, top_order(torch.zeros(len(cand)), cand).unsqueeze(0))
        allo = torch.cat([cur, zeros], 1)
        idx = torch.topk(allo, k, dim=1).indices  # positives first, then zeros by context index
        kept = idx < k
        i = idx.clamp(max=k - 1)
        zacts = torch.full((len(cand), w), float("nan"))
        for j, n in enumerate(self.run.registry.lengths(cand.numpy()).tolist()):
            zacts[j, self.prefix:self.prefix + n] = 0.0
        return (allo.gather(1, idx), torch.where(kept, pos.gather(1, i), self.prefix),
                torch.where(kept.unsqueeze(-1), acts.gather(1, i.unsqueeze(-1).expand(-1, -1, w)),
                            zacts[(idx - k).clamp(min=0)]))

    def _flatten(self, valid, vals, ctxs, pos, acts) -> pa.ListArray:
        """The examples column of the valid entries (row-major)."""
        m = valid.numpy()
        ctx = ctxs.numpy()[m]
        self.used.append(ctx)
        return _example_list(m.sum(1), ctx, pos.numpy()[m], vals.numpy()[m], acts.numpy()[m], self._lengths(ctx))

    def _table(self, point, sl: slice, rg: dict, range_acts, rand) -> pa.Table:
        st, c = self.state, self.config
        ps = st.points[point]
        g = sl.stop - sl.start
        layer, site = point
        names = self.run.names[point][sl]
        units = self.engine.probes[point].units
        cols: dict = {}
        tops = self._tops(ps, sl)
        for p, part in enumerate(PARTS):
            order, pos, acts = tops[p]
            cols[f"top_{part}"] = self._flatten(order != WORST, *top_parts(order), pos, acts)
        # over both parts: the K best of the parts' tops
        allo = torch.cat([t[0] for t in tops], 1)  # (g, 2K)
        best = torch.topk(allo, c.top, dim=1).indices  # (g, K), best first
        order = allo.gather(1, best)
        acts_all = torch.cat([t[2] for t in tops], 1)
        pos_all = torch.cat([t[1] for t in tops], 1)
        cols["top"] = self._flatten(order != WORST, *top_parts(order), pos_all.gather(1, best),
                                    acts_all.gather(1, best.unsqueeze(-1).expand(-1, -1, acts_all.shape[2])))
        # the random contexts: the same for every unit, each part's by sampling order
        values = self._random_values(rand, sl).permute(2, 0, 1)  # (g, C, W)
        masked = torch.where(torch.isfinite(values), values, torch.tensor(-float("inf")))
        vals, pos = masked.max(dim=2)  # (g, C)
        rorder = [torch.sort(o[o != EMPTY]).values for o in st.rand]
        ctxs = sample_ctx(torch.cat(rorder)).unsqueeze(0).expand(g, -1)
        start = 0
        for p, part in enumerate(PARTS):
            cs = slice(start, start + len(rorder[p]))
            start = cs.stop
            cols[f"random_{part}"] = self._flatten(torch.ones((g, cs.stop - cs.start), dtype=torch.bool), vals[:, cs],
                                                   ctxs[:, cs], pos[:, cs], values[:, cs])
        pick = torch.argsort(torch.cat(rorder))[:c.random]
        cols["random"] = self._flatten(torch.ones((g, len(pick)), dtype=torch.bool), vals[:, pick], ctxs[:, pick],
                                       pos[:, pick], values[:, pick])
        cols["ranges"] = self._ranges_column(rg, sl, range_acts)
        n = float(st.tokens.sum())
        s, ss = ps.s[:, sl].sum(0).numpy(), ps.ss[:, sl].sum(0).numpy()
        mean = s / n if n else np.full(g, np.nan)
        std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0)) if n else np.full(g, np.nan)
        top_val = [_finite(v) for v in top_parts(allo.max(1).values)[0].tolist()]
        part_max = [[_finite(v) for v in top_parts(t[0].max(1).values)[0].tolist()] for t in tops]
        hist = ps.signed_hist("hist", int(st.hist_tokens.sum()), sl)
        ctx_hist = ps.signed_hist("ctx_hist", int(st.contexts.sum()), sl)
        tok = self._token_stats(ps, sl)
        data = {
            "neuron": names, "layer": [layer] * g, "site": [site] * g,
            "unit": [int(x) for x in units[sl].tolist()] if units is not None else [None] * g,
            "contexts": [int(st.contexts.sum())] * g, "tokens": [int(n)] * g,
            "mean": [_finite(v) for v in mean.tolist()], "std": [_finite(v) for v in std.tolist()], "max": top_val,
            "share_positive": [v / n if n else None for v in ps.npos[:, sl].sum(0).tolist()],
            "histogram": _histograms(hist), "histogram_positions": [int(x) for x in hist.sum(1).tolist()],
            "histogram_contexts": [int(st.hist_contexts.sum())] * g,
            "context_histogram": _histograms(ctx_hist),
            "train_contexts": [int(st.contexts[0])] * g, "train_tokens": [int(st.tokens[0])] * g,
            "train_max": part_max[0], "test_contexts": [int(st.contexts[1])] * g,
            "test_tokens": [int(st.tokens[1])] * g, "test_max": part_max[1], **tok,
        }
        schema = results_schema()
        arrays = [cols[f.name] if f.name in cols else pa.array(data[f.name], type=f.type) for f in schema]
        return pa.Table.from_arrays(arrays, schema=schema)

    # ------------------------------------------------------------------ token statistics
    def _token_stats(self, ps, sl: slice) -> dict:
        """Per unit: how much of its variance over every text position the token there explains (omega squared
        of a one-way analysis of variance by token id; a word neuron would be near 1), the same with the token
        labels permuted (the chance level), and the corpus lookup table: the train part's tokens of highest mean
        activation (seen at least LOOKUP_MIN_COUNT times). Nulls without per-token sums."""
        st = self.state
        g = sl.stop - sl.start
        if ps.tok_sum is None:
            return {"omega_squared": [None] * g, "omega_squared_permuted": [None] * g,
                    "distinct_tokens": [None] * g, "lookup": [None] * g}
        counts = (st.tok_count[0] + st.tok_count[1]).double()  # (V,)
        total, total_sq = ps.s[:, sl].sum(0), ps.ss[:, sl].sum(0)  # (g,)
        omega = omega_squared(counts, (ps.tok_sum[0][:, sl] + ps.tok_sum[1][:, sl]).double(), total, total_sq)
        perm = omega_squared(counts, ps.perm_sum[:, sl].double(), total, total_sq)
        train_n = st.tok_count[0].double()
        ok = train_n >= LOOKUP_MIN_COUNT
        means = ps.tok_sum[0][:, sl].double() / train_n.clamp_min(1).unsqueeze(1)  # (V, g)
        means[~ok] = -float("inf")
        kk = min(LOOKUP_K, int(ok.sum()))
        lookup = [[] for _ in range(g)]
        if kk:
            top = torch.topk(means, kk, dim=0)  # (kk, g)
            for j in range(g):
                lookup[j] = [{"token": self.model.tokens[t], "id": t, "mean": float(v), "count": int(train_n[t])}
                             for t, v in zip(top.indices[:, j].tolist(), top.values[:, j].tolist())]
        return {"omega_squared": omega, "omega_squared_permuted": perm,
                "distinct_tokens": [int((counts > 0).sum())] * g, "lookup": lookup}


def _nearest(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the edge nearest each x (the first of two equally near ones: ``np.abs(edges - x).argmin()``)."""
    i = np.clip(np.searchsorted(edges, x), 1, len(edges) - 1)
    return np.where(np.abs(edges[i - 1] - x) <= np.abs(edges[i] - x), i - 1, i)


def _pairs(values, rows: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """(m, T) float32 values of (batch row, unit) pairs from a forward's values: dense (B, T, u) or sparse."""
    if isinstance(values, SparseValues):
        return values.pairs(rows, units)
    return values[rows, :, units].float()

def omega_squared(counts, sums, total, total_sq):
    """Omega squared of a one-way analysis of variance of values by group (here: by token id).

    The share of the values' variance the group explains, corrected for the number of groups k (Hays):
    ``(SS_between - (k - 1) MS_within) / (SS_total + MS_within)``. 1 for values that are a function of the
    group, about 0 for values unrelated to it (it can dip below 0).

    Args:
        counts: (G,) values per group (groups with 0 are ignored).
        sums: (G,) sum of the values of each group, or (G, u) for u units at once.
        total: sum of all values (a scalar, or (u,)).
        total_sq: sum of their squares (likewise).

    Returns:
        Omega squared (a float, or a list for u units); None where the values do not vary.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    sums = torch.as_tensor(sums, dtype=torch.float64)
    one = sums.dim() == 1
    sums = sums.reshape(len(counts), -1)  # (G, u)
    total = torch.as_tensor(total, dtype=torch.float64).reshape(-1)
    total_sq = torch.as_tensor(total_sq, dtype=torch.float64).reshape(-1)
    seen = counts > 0
    n, k = float(counts.sum()), int(seen.sum())
    ss_t = total_sq - total * total / n
    ss_b = (sums[seen] ** 2 / counts[seen].unsqueeze(1)).sum(0) - total * total / n
    ms_w = (ss_t - ss_b) / max(n - k, 1.0)
    omega = (ss_b - (k - 1) * ms_w) / (ss_t + ms_w)
    out = [float(o) if t > 0 else None for o, t in zip(omega.tolist(), ss_t.tolist())]
    return out[0] if one else out


def _finite(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _bin_bounds() -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of every bin of the signed grid: negative bucket NB-1-i spans (-edge[k+1], -edge[k]], the zero bin
    [0, 0], positive bucket k [edge[k], edge[k+1]) (bucket 0 from 0)."""
    e = bucket_edges()
    k = np.arange(NB)
    neg_lo, neg_hi = -e[NB - k], np.where(NB - 1 - k > 0, -e[NB - 1 - k], 0.0)
    pos_lo, pos_hi = np.where(k > 0, e[k], 0.0), e[k + 1]
    return np.concatenate([neg_lo, [0.0], pos_lo]), np.concatenate([neg_hi, [0.0], pos_hi])


_BIN_LO, _BIN_HI = _bin_bounds()


def _histograms(counts: torch.Tensor) -> list[dict]:
    """The occupied span of each signed-grid histogram of counts (n, HIST_BINS): [{"lo", "hi", "count"} lists]
    (bin i spans [lo[i], hi[i]])."""
    assert counts.shape[1] == HIST_BINS
    held = (counts != 0).numpy()
    any_ = held.any(1)
    first = held.argmax(1)
    last = HIST_BINS - held[:, ::-1].argmax(1)
    c = counts.numpy()
    return [{"lo": _BIN_LO[a:b].tolist(), "hi": _BIN_HI[a:b].tolist(), "count": c[j, a:b].tolist()} if ok
            else {"lo": [], "hi": [], "count": []}
            for j, (ok, a, b) in enumerate(zip(any_.tolist(), first.tolist(), last.tolist()))]

