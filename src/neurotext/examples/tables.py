"""A finished pass's state as Arrow tables: one per (layer, site), one row per neuron, and the contexts they refer
to (:class:`Finalizer`); their schemas; the token statistics."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch

from ..engine.contexts import PARTS, Context
from ..engine.pass_state import EMPTY, HIST_BINS, NB, WORST, bucket_edges, sample_ctx, top_parts
from .config import LOOKUP_K, LOOKUP_MIN_COUNT

if TYPE_CHECKING:
    from ..engine.pass_state import PassState


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
    """Turns a finished :class:`PassState` into Arrow tables: one per (layer, site), one row per neuron, and one
    of the contexts they refer to. Vectorized over the units of a point: nothing per example is a Python
    object, so finalizing every unit of a model costs little memory."""

    def __init__(self, run, state: PassState):
        self.run, self.state = run, state
        self.model, self.engine, self.config = run.model, run.engine, run.config
        self.edges = bucket_edges()
        self.used: set[int] = set()  # contexts the tables refer to

    def tables(self) -> tuple[dict, pa.Table]:
        """({(layer, site): results table}, contexts table)."""
        ranges = {point: self._ranges(point) for point in self.state.points}
        replayed = self._replay(ranges)
        out = {point: self._point_table(point, ranges[point], replayed) for point in self.state.points}
        return out, self._contexts_table()

    def _length(self, ctx: int) -> int:
        return len(self.engine.prefix) + len(self.run.registry[ctx].ids) + len(self.engine.suffix)

    def _contexts_table(self) -> pa.Table:
        rows = []
        p = len(self.engine.prefix)
        for i in sorted(self.used):
            c = self.run.registry[i]
            ids = self.engine.model_input(c)
            spans = [None] * len(ids)
            if c.spans is not None:
                for k, (a, b) in enumerate(c.spans.tolist()):
                    spans[p + k] = [a, b]
            rows.append({"context": c.index, "doc": c.doc, "piece": c.piece, "part": PARTS[c.part], "text": c.text,
                         "ids": ids, "tokens": [self.model.tokens[t] for t in ids], "spans": spans})
        return pa.Table.from_pylist(rows, schema=contexts_schema())

    # ------------------------------------------------------------------ one point
    def _sorted_top(self, ps, p: int):
        """A part's top-K of every unit, best first: (valid (u, K), value, ctx, pos, acts (u, K, W))."""
        order, idx = ps.top[p].sort(dim=1, descending=True)
        vals, ctxs = top_parts(order)
        acts = ps.top_acts[p].gather(1, idx.unsqueeze(-1).expand(-1, -1, ps.top_acts[p].shape[2]))
        return order != WORST, vals, ctxs, ps.top_pos[p].gather(1, idx), acts

    def _flatten(self, valid, vals, ctxs, pos, acts):
        """Flat arrays of the valid entries (row-major) and the examples column built from them."""
        counts = valid.sum(1).numpy()
        m = valid.numpy()
        ctx = ctxs.numpy()[m]
        self.used.update(ctx.tolist())
        col = _example_list(counts, ctx, pos.numpy()[m], vals.numpy()[m], acts.numpy()[m],
                            [self._length(c) for c in ctx.tolist()])
        return col

    def _random(self, ps, p: int, u: int):
        """A part's random contexts, the same for every unit, with each unit's values: the tensors of
        :meth:`_flatten`, rows = units."""
        order = self.state.rand[p]
        keep = (order != EMPTY).nonzero().flatten()
        keep = keep[torch.argsort(order[keep])]
        r = len(keep)
        acts = ps.rand_acts[p][keep].permute(2, 0, 1)  # (u, r, W)
        masked = torch.where(torch.isfinite(acts), acts, torch.tensor(-float("inf")))
        vals, pos = masked.max(dim=2)  # (u, r)
        ctxs = sample_ctx(order[keep]).unsqueeze(0).expand(u, -1)
        return torch.ones((u, r), dtype=torch.bool), vals, ctxs, pos, acts, order[keep]

    def _point_table(self, point, ranges: list, replayed: dict) -> pa.Table:
        st, c = self.state, self.config
        ps = st.points[point]
        u = ps.slot.shape[0]
        layer, site = point
        names = self.run.names[point]
        units = self.run.engine.probes[point].units
        cols: dict = {}
        tops = [self._sorted_top(ps, p) for p in range(len(PARTS))]
        for p, part in enumerate(PARTS):
            cols[f"top_{part}"] = self._flatten(*tops[p])
        # over both parts: the K best of the parts' tops
        allo = torch.cat([ps.top[p] for p in range(len(PARTS))], 1)  # (u, 2K)
        best = torch.topk(allo, c.top, dim=1).indices  # (u, K), best first
        acts_all = torch.cat([ps.top_acts[p] for p in range(len(PARTS))], 1)
        pos_all = torch.cat([ps.top_pos[p] for p in range(len(PARTS))], 1)
        order = allo.gather(1, best)
        vals, ctxs = top_parts(order)
        cols["top"] = self._flatten(order != WORST, vals, ctxs, pos_all.gather(1, best),
                                    acts_all.gather(1, best.unsqueeze(-1).expand(-1, -1, acts_all.shape[2])))
        rands = [self._random(ps, p, u) for p in range(len(PARTS))]
        for p, part in enumerate(PARTS):
            cols[f"random_{part}"] = self._flatten(*rands[p][:5])
        allr = torch.cat([r[5] for r in rands])  # sample orders of both parts
        pick = torch.argsort(allr)[:c.random]
        cols["random"] = self._flatten(*(torch.cat([r[i] for r in rands], 1)[:, pick] for i in range(5)))
        cols["ranges"] = self._ranges_column(point, ranges, replayed)
        n = float(st.tokens.sum())
        s, ss = ps.s.sum(0).numpy(), ps.ss.sum(0).numpy()
        mean = s / n if n else np.full(u, np.nan)
        std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0)) if n else np.full(u, np.nan)
        top_val = [_finite(v) for v in top_parts(allo.max(1).values)[0].tolist()]
        part_max = [[_finite(v) for v in top_parts(ps.top[p].max(1).values)[0].tolist()] for p in range(len(PARTS))]
        hist = [_histogram(ps.hist[j]) for j in range(u)]
        ctx_hist = [_histogram(ps.ctx_hist[j]) for j in range(u)]
        tok = self._token_stats(ps)
        data = {
            "neuron": names, "layer": [layer] * u, "site": [site] * u,
            "unit": [int(x) for x in units.tolist()] if units is not None else [None] * u,
            "contexts": [int(st.contexts.sum())] * u, "tokens": [int(n)] * u,
            "mean": [_finite(v) for v in mean.tolist()], "std": [_finite(v) for v in std.tolist()], "max": top_val,
            "share_positive": [v / n if n else None for v in ps.npos.sum(0).tolist()],
            "histogram": hist, "histogram_positions": [int(x) for x in ps.hist.sum(1).tolist()],
            "histogram_contexts": [int(st.hist_contexts.sum())] * u, "context_histogram": ctx_hist,
            "train_contexts": [int(st.contexts[0])] * u, "train_tokens": [int(st.tokens[0])] * u,
            "train_max": part_max[0], "test_contexts": [int(st.contexts[1])] * u,
            "test_tokens": [int(st.tokens[1])] * u, "test_max": part_max[1], **tok,
        }
        schema = results_schema()
        arrays = [cols[f.name] if f.name in cols else pa.array(data[f.name], type=f.type) for f in schema]
        return pa.Table.from_arrays(arrays, schema=schema)

    # ------------------------------------------------------------------ ranges
    def _ranges(self, point) -> list[list[dict]]:
        """Per unit: the ranges below the top fifth, each with its snapped bounds, its context count and the
        entries (context, position, activation) drawn for it."""
        ps, c, e = self.state.points[point], self.config, self.edges
        tops = torch.stack([t.max(1).values for t in ps.top]).max(0).values
        top_vals = top_parts(tops)[0].tolist()
        out = []
        for j, top in enumerate(top_vals):
            ranges = []
            if top > 0 and math.isfinite(top) and tops[j] != WORST:
                width = top / (c.ranges + 1)
                for r in range(c.ranges):
                    lo_b = 0 if r == 0 else int(np.abs(e - r * width).argmin())
                    hi_b = int(np.abs(e - (r + 1) * width).argmin())
                    lo, hi = (0.0 if lo_b == 0 else float(e[lo_b])), float(e[hi_b])
                    entries, count = [], 0
                    if hi_b > lo_b:
                        order = ps.slot[j, lo_b:hi_b].reshape(-1)
                        sel = (order != EMPTY).nonzero().flatten()
                        sel = sel[torch.argsort(order[sel])][:c.per_range]
                        vals = ps.slot_val[j, lo_b:hi_b].reshape(-1)
                        poss = ps.slot_pos[j, lo_b:hi_b].reshape(-1)
                        entries = [(int(sample_ctx(order[i])), int(poss[i]), float(vals[i])) for i in sel.tolist()]
                        count = int(ps.ctx_hist[j, NB + 1 + lo_b:NB + 1 + hi_b].sum())
                    ranges.append({"range": r, "lo": lo, "hi": hi, "nominal": [r * width, (r + 1) * width],
                                   "contexts": count, "entries": entries})
            out.append(ranges)
        return out

    def _ranges_column(self, point, ranges: list[list[dict]], replayed: dict) -> pa.ListArray:
        flat = [g for unit in ranges for g in unit]
        ctx = [e[0] for g in flat for e in g["entries"]]
        self.used.update(ctx)
        w = self.engine.width
        acts = np.full((len(ctx), w), np.nan, dtype=np.float32)
        k = 0
        for j, unit in enumerate(ranges):
            for g in unit:
                for cx, _, _ in g["entries"]:
                    acts[k] = replayed[(point, j, cx)]
                    k += 1
        examples = _example_list([len(g["entries"]) for g in flat], ctx, [e[1] for g in flat for e in g["entries"]],
                                 [e[2] for g in flat for e in g["entries"]], acts, [self._length(x) for x in ctx])
        struct = pa.StructArray.from_arrays(
            [pa.array([g["range"] for g in flat], type=pa.int32()),
             pa.array([g["lo"] for g in flat], type=pa.float64()),
             pa.array([g["hi"] for g in flat], type=pa.float64()),
             pa.array([g["nominal"] for g in flat], type=pa.list_(pa.float64())),
             pa.array([g["contexts"] for g in flat], type=pa.int64()), examples], fields=list(RANGE))
        counts = [len(unit) for unit in ranges]
        return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)), struct)

    def _replay(self, ranges: dict) -> dict:
        """Every position's values of the range samples' contexts: {(point, unit, context): (W,) array}, from one
        batched pass over just those contexts."""
        need: dict[int, list] = {}
        for point, units in ranges.items():
            for j, rs in enumerate(units):
                for r in rs:
                    for ctx, _, _ in r["entries"]:
                        need.setdefault(ctx, []).append((point, j))
        out = {}
        if not need:
            return out
        contexts = sorted((self.run.registry[i] for i in need), key=lambda c: (len(c.ids), c.index))
        eng = self.engine
        max_contexts, max_tokens = self.run._batch_limits()
        i = 0
        while i < len(contexts):
            group = [contexts[i]]
            while (i + len(group) < len(contexts) and len(group) < max_contexts
                   and len(contexts[i + len(group)].ids) * (len(group) + 1) <= max_tokens):
                group.append(contexts[i + len(group)])
            i += len(group)
            same_part = [Context(c.index, c.doc, c.piece, 0, c.key, c.ids, c.text, c.spans) for c in group]
            for batch, found in self.run.forward(same_part):
                for row, ctx_index in enumerate(batch.ctx.tolist()):
                    full = {}
                    for point, j in need[ctx_index]:
                        if point not in full:
                            v = found[point][row].masked_fill(~batch.text[row].unsqueeze(-1), float("nan"))
                            f = torch.full((eng.width, v.shape[-1]), float("nan"))
                            f[:v.shape[0]] = v
                            full[point] = f.numpy()
                        out[(point, j, ctx_index)] = full[point][:, j]
        return out

    # ------------------------------------------------------------------ token statistics
    def _token_stats(self, ps) -> dict:
        """Per unit: how much of its variance over every text position the token there explains (omega squared
        of a one-way analysis of variance by token id; a word neuron would be near 1), the same with the token
        labels permuted (the chance level), and the corpus lookup table: the train part's tokens of highest mean
        activation (seen at least LOOKUP_MIN_COUNT times). Nulls without per-token sums."""
        st = self.state
        u = ps.slot.shape[0]
        if ps.tok_sum is None:
            return {"omega_squared": [None] * u, "omega_squared_permuted": [None] * u,
                    "distinct_tokens": [None] * u, "lookup": [None] * u}
        counts = (st.tok_count[0] + st.tok_count[1]).double()  # (V,)
        total, total_sq = ps.s.sum(0), ps.ss.sum(0)  # (u,)
        omega = omega_squared(counts, (ps.tok_sum[0] + ps.tok_sum[1]).double(), total, total_sq)
        perm = omega_squared(counts, ps.perm_sum.double(), total, total_sq)
        train_n = st.tok_count[0].double()
        ok = train_n >= LOOKUP_MIN_COUNT
        means = ps.tok_sum[0].double() / train_n.clamp_min(1).unsqueeze(1)  # (V, u)
        means[~ok] = -float("inf")
        kk = min(LOOKUP_K, int(ok.sum()))
        lookup = [[] for _ in range(u)]
        if kk:
            top = torch.topk(means, kk, dim=0)  # (kk, u)
            for j in range(u):
                lookup[j] = [{"token": self.model.tokens[t], "id": t, "mean": float(v), "count": int(train_n[t])}
                             for t, v in zip(top.indices[:, j].tolist(), top.values[:, j].tolist())]
        return {"omega_squared": omega, "omega_squared_permuted": perm,
                "distinct_tokens": [int((counts > 0).sum())] * u, "lookup": lookup}


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


def _histogram(counts: torch.Tensor) -> dict:
    """The occupied span of a signed-grid histogram: {"lo", "hi", "count"} lists (bin i spans [lo[i], hi[i]])."""
    nz = counts.nonzero().flatten()
    if len(nz) == 0:
        return {"lo": [], "hi": [], "count": []}
    a, b = int(nz[0]), int(nz[-1]) + 1
    e = bucket_edges()
    lo, hi = [], []
    for i in range(a, b):
        if i < NB:  # negative bucket NB-1-i: (-edge[k+1], -edge[k]]
            k = NB - 1 - i
            lo.append(-float(e[k + 1]))
            hi.append(-float(e[k]) if k else 0.0)
        elif i == NB:
            lo.append(0.0)
            hi.append(0.0)
        else:
            k = i - NB - 1
            lo.append(float(e[k]) if k else 0.0)
            hi.append(float(e[k + 1]))
    assert len(counts) == HIST_BINS
    return {"lo": lo, "hi": hi, "count": counts[a:b].tolist()}
