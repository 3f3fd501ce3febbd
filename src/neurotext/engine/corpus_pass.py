"""The streaming corpus pass: every requested unit on real text, one forward pass per batch, reduced on the fly.

One forward pass of a batch of contexts (only as deep as the deepest requested layer) yields every
requested unit at every position. Nothing per token is kept; each batch is folded into fixed-size state
(Neuroscope's ``MaxStore``, extended), so memory does not grow with the corpus:

- ``top``: per unit and part (train/test), the K contexts of highest activation (a context's activation is
  its maximum over its text positions), with the unit's value at every position of each;
- ``random``: per part, the R contexts of smallest sampling key (the same contexts for every unit), with
  every unit's values at every position;
- ``slots``: per unit, for each bucket of a fixed logarithmic grid of positive values, the S contexts of
  smallest key whose activation falls in the bucket: a union of buckets then gives an exact uniform
  sample of the contexts in it (bottom-k sampling), which is how the range samples below the maximum are
  drawn once the maximum is known;
- per part: sums, sums of squares, maxima and counts of positive values over every text position; a
  histogram of the contexts' activations (every context) and one of the positions' values (the positions
  of a fixed uniform sample of contexts: binning every position would cost more than the forward pass);
  optionally per-token sums (per token id: count and sum; with a within-batch permutation of the token
  labels as a baseline).

Selections use total orders (activation descending then context index ascending for ``top``; sampling key
then context index for samples), so the state is a pure function of the set of contexts seen: any
batching, a resumed pass and chunk states merged from Ray actors select the same contexts.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model.adapters import _get, _hooks, _Stop
from ..model.names import base_site

# --------------------------------------------------------------------------- the value grid
SUB_BITS = 3  # 2**3 = 8 buckets per octave: bucket edges (1 + i/8) * 2**e, consecutive edges 6-12% apart
E_MIN, E_MAX = -14, 17  # octaves 2**-14 .. 2**18 (values outside fall in the first or last bucket)
NB = (E_MAX - E_MIN + 1) << SUB_BITS  # positive buckets: 256
HIST_BINS = 2 * NB + 1  # signed grid: NB negative buckets (most negative first), an exact-zero bin, NB positive
WORST = torch.iinfo(torch.int64).min  # an empty top entry (below every real one)
EMPTY = torch.iinfo(torch.int64).max  # an empty sample slot (after every real one)
CTX_BITS = 32  # context indices < 2**32 share an int64 with a 31-bit key or a 32-bit ordered value
KEY_SHIFT = 62 - 31  # a 62-bit sampling key keeps its top 31 bits in a slot's order


def bucket_edges() -> np.ndarray:
    """The NB + 1 edges of the positive buckets (float64); bucket 0 also holds (0, edge 1), the last bucket
    everything from its lower edge up."""
    b = np.arange(NB + 1)
    sub = 1 << SUB_BITS
    return (1 + (b % sub) / sub) * 2.0 ** (b // sub + E_MIN)


def positive_bucket(v: torch.Tensor) -> torch.Tensor:
    """Bucket of each positive float32 value (from its exponent and top mantissa bits): int64 in [0, NB)."""
    bits = v.float().contiguous().view(torch.int32) & 0x7FFFFFFF
    b = (bits >> (23 - SUB_BITS)).long() - ((127 + E_MIN) << SUB_BITS)
    return b.clamp_(0, NB - 1)


def signed_bin(v: torch.Tensor) -> torch.Tensor:
    """Bin of each float32 value on the signed grid: int64 in [0, HIST_BINS)."""
    b = positive_bucket(v)
    return torch.where(v > 0, NB + 1 + b, torch.where(v < 0, NB - 1 - b, torch.full_like(b, NB)))


def top_order(val: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """One int64 per entry that orders by value descending then context ascending (larger = better)."""
    bits = val.float().contiguous().view(torch.int32)
    ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long()  # int32 in the order of the floats
    return (ordered << CTX_BITS) | ((1 << CTX_BITS) - 1 - ctx)


def top_parts(order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(value float32, context int64) of :func:`top_order` values."""
    ctx = (1 << CTX_BITS) - 1 - (order & ((1 << CTX_BITS) - 1))
    o = (order >> CTX_BITS).int()
    return (o ^ ((o >> 31) & 0x7FFFFFFF)).view(torch.float32), ctx


def sample_order(key: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """One int64 per entry that orders by sampling key then context (smaller = sampled first)."""
    return ((key >> KEY_SHIFT) << CTX_BITS) | ctx


def sample_ctx(order: torch.Tensor) -> torch.Tensor:
    return order & ((1 << CTX_BITS) - 1)


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


@contextmanager
def one_thread():
    """Run a block on one CPU thread (torch's small operations, index_add_, topk and searchsorted among them, are
    measured up to a hundred times slower on two threads than on one when the cores are busy)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------- state
@dataclass
class PointState:
    """The running reduction of one point (layer, site) over its u units (or directions)."""

    top: list  # per part: (u, K) int64 top_order of value and context, WORST = empty
    top_pos: list  # per part: (u, K) int32: the max position in the model input
    top_acts: list  # per part: (u, K, W) float32 values at every position, NaN outside text
    rand_acts: list  # per part: (R, W, u) float32 values of the part's random contexts
    slot: torch.Tensor  # (u, NB, S) int64 sample_order, sorted within a bucket, EMPTY = empty
    slot_val: torch.Tensor  # (u, NB, S) float32 the context's activation
    slot_pos: torch.Tensor  # (u, NB, S) int32
    s: torch.Tensor  # (P, u) float64 sum over text positions, per part
    ss: torch.Tensor  # (P, u) float64 sum of squares
    npos: torch.Tensor  # (P, u) int64 positions above 0
    ctx_hist: torch.Tensor  # (u, HIST_BINS) int64: every context's activation
    hist: torch.Tensor  # (u, HIST_BINS) int64: the values at the positions of the sampled contexts
    tok_sum: list | None = None  # per part: (V, u) float32 sum of the unit's values at each token id
    perm_sum: torch.Tensor | None = None  # (V, u) float32: the same with token labels permuted within batches

    @classmethod
    def empty(cls, u: int, k: int, r: int, s: int, w: int, parts: int, vocab: int | None):
        i64 = torch.int64
        return cls(
            top=[torch.full((u, k), WORST, dtype=i64) for _ in range(parts)],
            top_pos=[torch.full((u, k), -1, dtype=torch.int32) for _ in range(parts)],
            top_acts=[torch.full((u, k, w), float("nan")) for _ in range(parts)],
            rand_acts=[torch.full((r, w, u), float("nan")) for _ in range(parts)],
            slot=torch.full((u, NB, s), EMPTY, dtype=i64),
            slot_val=torch.full((u, NB, s), float("nan")),
            slot_pos=torch.full((u, NB, s), -1, dtype=torch.int32),
            s=torch.zeros((parts, u), dtype=torch.float64), ss=torch.zeros((parts, u), dtype=torch.float64),
            npos=torch.zeros((parts, u), dtype=i64),
            ctx_hist=torch.zeros((u, HIST_BINS), dtype=i64), hist=torch.zeros((u, HIST_BINS), dtype=i64),
            tok_sum=None if vocab is None else [torch.zeros((vocab, u)) for _ in range(parts)],
            perm_sum=None if vocab is None else torch.zeros((vocab, u)),
        )


@dataclass
class PassState:
    """Everything a pass keeps: one :class:`PointState` per point, the random samples' identities, counts."""

    points: dict  # {(layer, site): PointState}
    rand: list  # per part: (R,) int64 sample_order of the random contexts, EMPTY = empty
    contexts: torch.Tensor  # (P,) int64 contexts seen per part
    tokens: torch.Tensor  # (P,) int64 text tokens seen per part
    hist_contexts: torch.Tensor  # (P,) int64 contexts in the position histogram's sample
    hist_tokens: torch.Tensor  # (P,) int64 their text tokens
    tok_count: list | None = None  # per part: (V,) int64 occurrences of each token id (token_stats only)
    extra: dict = field(default_factory=dict)

    def referenced(self) -> torch.Tensor:
        """Every context index the state refers to (sorted, unique): the contexts whose text must be kept."""
        ids = [sample_ctx(r[r != EMPTY]) for r in self.rand]
        for ps in self.points.values():
            ids += [top_parts(t[t != WORST])[1] for t in ps.top]
            ids.append(sample_ctx(ps.slot[ps.slot != EMPTY]))
        return torch.unique(torch.cat(ids))


# --------------------------------------------------------------------------- probes
@dataclass
class Probe:
    """What is read at one point: units (indices into the site) or directions (U, n) over the site's units; with
    a dictionary (site ``ffn.f``) the units are its features, read from the dictionary's full encoding."""

    layer: int
    site: str
    units: torch.Tensor | None = None  # (u,) int64
    directions: torch.Tensor | None = None  # (U, n) float32: column j is direction j
    dictionary: object = None  # neurotext.model.dictionary.Dictionary for feature units

    @property
    def size(self) -> int:
        return len(self.units) if self.units is not None else self.directions.shape[1]

    def read(self, h: torch.Tensor) -> torch.Tensor:
        """The probe's values from the site's activations h (B, T, U): (B, T, u) float32."""
        h = h.float()
        if self.dictionary is not None:
            h = self.dictionary.encode(h)  # (B, T, F): TopK / JumpReLU thresholds included
        if self.directions is not None:
            return h @ self.directions.to(h.device)  # (B, T, n)
        if self.units.numel() == h.shape[-1] and bool((self.units == torch.arange(h.shape[-1])).all()):
            return h
        return h.index_select(-1, self.units.to(h.device))


@dataclass
class Batch:
    """One forward batch, all of one part: the contexts in the template (B, T) and what folding needs."""

    ids: torch.Tensor  # (B, T) int64 model input, right-padded
    attn: torch.Tensor  # (B, T) int64 attention mask
    text: torch.Tensor  # (B, T) bool: text positions (not template, not padding)
    ctx: torch.Tensor  # (B,) int64 context indices
    key: torch.Tensor  # (B,) int64 sampling keys
    part: int  # 0 = train, 1 = test


# --------------------------------------------------------------------------- the pass
@dataclass
class PassSettings:
    """The sizes of what a pass keeps (see :class:`neurotext.examples.ExamplesConfig` for their meaning)."""

    top: int = 20
    random: int = 10
    slots: int = 3  # per bucket: the most a range sample can draw
    max_length: int = 64
    parts: int = 2
    hist_every: int = 16  # the position histogram bins the contexts whose key lies in the lowest 1/hist_every
    token_stats: bool = False
    dtype: str = "float32"


class CorpusPass:
    """Runs batches of contexts through a model and folds them into a :class:`PassState`.

    Args:
        model: a loaded :class:`neurotext.model.Model`.
        probes: what to read, at most one probe per (layer, site).
        settings: the sizes of the state.
    """

    def __init__(self, model, probes: list[Probe], settings: PassSettings):
        self.model, self.settings = model, settings
        self.probes = {(p.layer, p.site): p for p in probes}
        if len(self.probes) != len(probes):
            raise ValueError("one probe per (layer, site)")
        self.depth = max(layer for layer, _ in self.probes)
        self.prefix = list(model.prefix_ids) if model.decoder else list(model.prefix_ids[:1])
        self.suffix = list(model.suffix_ids)
        self.width = len(self.prefix) + settings.max_length + len(self.suffix)  # W: positions of a stored context
        self.vocab = int(model.embeddings.shape[0])
        pad = model.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None and 0 <= int(pad) < self.vocab else int(self.prefix[0])
        self.hist_below = (1 << 62) // settings.hist_every  # sampling keys below this enter the position histogram

    def empty_state(self) -> PassState:
        s = self.settings
        vocab = self.vocab if s.token_stats else None
        zeros = lambda: torch.zeros(s.parts, dtype=torch.int64)  # noqa: E731
        points = {key: PointState.empty(p.size, s.top, s.random, s.slots, self.width, s.parts, vocab)
                  for key, p in self.probes.items()}
        return PassState(points=points, rand=[torch.full((s.random,), EMPTY) for _ in range(s.parts)],
                         contexts=zeros(), tokens=zeros(), hist_contexts=zeros(), hist_tokens=zeros(),
                         tok_count=None if vocab is None else [torch.zeros(vocab, dtype=torch.int64)
                                                               for _ in range(s.parts)])

    # ------------------------------------------------------------------ forward
    def prepare(self, contexts) -> Batch:
        """A batch's tensors: the contexts (all of one part) in the template, right-padded to the longest."""
        p = len(self.prefix)
        t = p + max(len(c.ids) for c in contexts) + len(self.suffix)
        b = len(contexts)
        ids = torch.full((b, t), self.pad_id, dtype=torch.long)
        attn = torch.zeros((b, t), dtype=torch.long)
        text = torch.zeros((b, t), dtype=torch.bool)
        for i, c in enumerate(contexts):
            n = len(c.ids)
            ids[i, :p] = torch.tensor(self.prefix)
            ids[i, p:p + n] = torch.from_numpy(c.ids.astype(np.int64))
            ids[i, p + n:p + n + len(self.suffix)] = torch.tensor(self.suffix, dtype=torch.long)
            attn[i, :p + n + len(self.suffix)] = 1
            text[i, p:p + n] = True
        parts = {c.part for c in contexts}
        if len(parts) != 1:
            raise ValueError("a batch holds contexts of one part")
        return Batch(ids=ids, attn=attn, text=text, ctx=torch.tensor([c.index for c in contexts], dtype=torch.int64),
                     key=torch.tensor([c.key for c in contexts], dtype=torch.int64), part=parts.pop())

    def model_input(self, context) -> list[int]:
        """The whole model input of one context (template included): what an example's ``ids`` holds."""
        return self.prefix + [int(i) for i in context.ids] + self.suffix

    @torch.no_grad()
    def forward(self, batch: Batch, probes: dict | None = None) -> dict:
        """Run one batch only as deep as the deepest probe; {(layer, site): values (B, T, u) float32}.

        One hook per model point (layer, ``ffn`` or ``out``) reads every probe there: the neurons of ``ffn``
        and the features of its dictionary (site ``ffn.f``) come from the same activations."""
        model = self.model
        probes = probes or self.probes
        at: dict = {}  # {(layer, base site): [probe keys]}
        for key in probes:
            at.setdefault((key[0], base_site(key[1])), []).append(key)
        depth = max(layer for layer, _ in at)
        dev = model.device
        found: dict = {}
        stop_at = (depth, "out") if (depth, "out") in at else (depth, "ffn")

        def grab(point):
            def hook(module, args, output=None):
                if point[1] == "ffn":
                    h = args[0]  # the FFN's output projection reads the post-activation: (B, T, U)
                else:
                    h = output[0] if isinstance(output, (tuple, list)) else output  # the block's output (B, T, d)
                for key in at[point]:
                    found[key] = probes[key].read(h).cpu()
                if point == stop_at:
                    raise _Stop
            return hook

        def install():
            handles = []
            for layer, site in at:
                mod = model.layers[layer]
                if site == "ffn":
                    out = _get(mod, model.arch.ffn_out)
                    handles.append(out.register_forward_pre_hook(grab((layer, site))))
                else:
                    handles.append(mod.register_forward_hook(grab((layer, site))))
            return handles

        run = model.base if model.decoder else model.hf
        extra = {"use_cache": False} if model.decoder else {}
        low = torch.autocast(dev.type, dtype=torch.bfloat16) if self.settings.dtype == "bfloat16" else nullcontext()
        with _hooks(install), low:
            try:
                run(input_ids=batch.ids.to(dev), attention_mask=batch.attn.to(dev), **extra)
            except _Stop:
                pass
        return found

    # ------------------------------------------------------------------ folding
    def fold(self, state: PassState, batch: Batch, found: dict) -> None:
        """Fold one batch's values (from :meth:`forward`) into ``state``."""
        p, order = batch.part, sample_order(batch.key, batch.ctx)
        found = {point: vals.float() for point, vals in found.items()}  # a direction's product under bf16 autocast
        reduced = {}
        for point, vals in found.items():  # the one pass over the values
            ps = state.points[point]
            reduced[point] = reduce(vals, batch.text, batch.ctx, order, ps.top[p].min(1).values, ps.slot[:, :, -1])
        with one_thread():  # the rest is many small operations, which threads only slow down
            self._fold(state, batch, found, reduced, order)

    def _fold(self, state: PassState, batch: Batch, found: dict, reduced: dict, order: torch.Tensor) -> None:
        s, p, text = self.settings, batch.part, batch.text
        ntext = text.sum(1)  # (B,)
        state.contexts[p] += len(batch.ctx)
        state.tokens[p] += int(ntext.sum())
        hist_rows = (batch.key < self.hist_below).nonzero().flatten()
        state.hist_contexts[p] += len(hist_rows)
        state.hist_tokens[p] += int(ntext[hist_rows].sum())
        slots, rows = self._enter(state.rand[p], order, s.random)  # random sample: the same for every unit
        tok_ids = perm_ids = None
        if s.token_stats:
            tok_ids = batch.ids[text]  # (N,) token ids at the text positions, row-major
            gen = torch.Generator().manual_seed(int(batch.ctx.min()) * 1_000_003 + len(batch.ctx))
            perm_ids = tok_ids[torch.randperm(len(tok_ids), generator=gen)]
            state.tok_count[p] += torch.bincount(tok_ids, minlength=self.vocab)

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
                a = torch.full((len(rows), self.width, u), float("nan"))
                a[:, :vals.shape[1]] = vals[rows].masked_fill(~text[rows].unsqueeze(-1), float("nan"))
                ps.rand_acts[p][slots] = a
            self._fold_top(ps, p, vals, text, cpos, top, units)
            self._fold_slots(ps, cmax, cpos, order, bucket, enters)
            if tok_ids is not None:
                flat_all = vals[text]  # (N, u)
                ps.tok_sum[p].index_add_(0, tok_ids, flat_all)
                ps.perm_sum.index_add_(0, perm_ids, flat_all)

        for point in found:
            fold_point(point)

    @staticmethod
    def _enter(cur: torch.Tensor, cand: torch.Tensor, k: int):
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

    def _fold_top(self, ps: PointState, p: int, vals, text, cpos, cand, enter) -> None:
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

    def _fold_slots(self, ps: PointState, cmax, cpos, order, bucket, enters) -> None:
        """Merge the batch's contexts into the per-bucket samples of smallest key (positive activations only):
        bucket (B, u) each activation's, enters (B, u) whether its order is below the largest kept in its bucket."""
        bi, ui = enters.nonzero(as_tuple=True)
        if len(bi):
            self._merge_slots(ps, ui, bucket[bi, ui], order[bi], cmax[bi, ui], cpos[bi, ui].int())

    def _merge_slots(self, ps: PointState, unit, bucket, order, val, pos) -> None:
        """Merge entries into the slots of their (unit, bucket), keeping the S smallest sample orders, sorted."""
        s = ps.slot.shape[-1]
        g_new = unit * NB + bucket
        groups = torch.unique(g_new)
        flat, flat_val, flat_pos = ps.slot.view(-1, s), ps.slot_val.view(-1, s), ps.slot_pos.view(-1, s)
        all_g = torch.cat([groups.repeat_interleave(s), g_new])
        all_o = torch.cat([flat[groups].reshape(-1), order])
        all_v = torch.cat([flat_val[groups].reshape(-1), val])
        all_p = torch.cat([flat_pos[groups].reshape(-1), pos])
        o = torch.argsort(all_o, stable=True)
        o = o[torch.argsort(all_g[o], stable=True)]  # by group, then sample order
        g = all_g[o]
        rank = torch.arange(len(g)) - torch.searchsorted(g, g)
        keep = rank < s
        o, r, g = o[keep], rank[keep], g[keep]
        flat[g, r], flat_val[g, r], flat_pos[g, r] = all_o[o], all_v[o], all_p[o]

    # ------------------------------------------------------------------ merging states
    def merge(self, state: PassState, other: PassState) -> None:
        """Fold ``other`` (the state of other contexts, e.g. one chunk's from a Ray actor) into ``state``."""
        with one_thread():
            self._merge(state, other)

    def _merge(self, state: PassState, other: PassState) -> None:
        s = self.settings
        for name in ("contexts", "tokens", "hist_contexts", "hist_tokens"):
            getattr(state, name).add_(getattr(other, name))
        moves = []
        for p in range(s.parts):
            if state.tok_count is not None:
                state.tok_count[p] += other.tok_count[p]
            moves.append(self._enter(state.rand[p], other.rand[p], s.random))
        for point, ps in state.points.items():
            po = other.points[point]
            for name in ("s", "ss", "npos", "ctx_hist", "hist"):
                getattr(ps, name).add_(getattr(po, name))
            if ps.perm_sum is not None:
                ps.perm_sum += po.perm_sum
            for p in range(s.parts):
                slots, cands = moves[p]
                ps.rand_acts[p][slots] = po.rand_acts[p][cands]
                if ps.tok_sum is not None:
                    ps.tok_sum[p] += po.tok_sum[p]
                k = ps.top[p].shape[1]
                idx = torch.topk(torch.cat([ps.top[p], po.top[p]], 1), k, dim=1).indices
                keep = torch.zeros((len(idx), 2 * k), dtype=torch.bool)
                keep.scatter_(1, idx, True)
                ev, en = (~keep[:, :k]).nonzero(), keep[:, k:].nonzero()
                for name in ("top", "top_pos", "top_acts"):
                    getattr(ps, name)[p][ev[:, 0], ev[:, 1]] = getattr(po, name)[p][en[:, 0], en[:, 1]]
            full = po.slot != EMPTY
            if bool(full.any()):
                unit, bucket, _ = full.nonzero(as_tuple=True)
                self._merge_slots(ps, unit, bucket, po.slot[full], po.slot_val[full], po.slot_pos[full])
