"""What a corpus pass keeps: fixed-size state per point (layer, site), and the orders its selections use.

Nothing per token is kept; each batch is folded (:mod:`neurotext.engine.fold`) into fixed-size state
(Neuroscope's ``MaxStore``, extended), so memory does not grow with the corpus:

- ``top``: per unit and part (train/test), the K contexts of highest activation (a context's activation is
  its maximum over its text positions), with the unit's value at every position of each;
- ``random``: per part, the R contexts of smallest sampling key (the same contexts for every unit); their
  values are computed again when the pass is finalized (R contexts: a few batches), not kept per unit;
- ``slots``: per unit, for each bucket of a fixed logarithmic grid of positive values, the S contexts of
  smallest key whose activation falls in the bucket: a union of buckets then gives an exact uniform
  sample of the contexts in it (bottom-k sampling), which is how the range samples below the maximum are
  drawn once the maximum is known;
- per part: sums, sums of squares and counts of positive values over every text position; a histogram of
  the contexts' activations (every context) and one of the positions' values (the positions of a fixed
  uniform sample of contexts: binning every position would cost more than the forward pass); optionally
  per-token sums (per token id: count and sum; with a within-batch permutation of the token labels as a
  baseline).

**Sparse points.** A dictionary's features are 0 at most positions (a TopK or JumpReLU encoding). Their state
holds what the non-zero values say, and the zeros are counted, not stored: ``top`` keeps positive contexts
only (a unit with fewer than K of them is filled with zero contexts when finalized: they tie at 0, so the
smallest context indices, which ``first`` keeps per part), and the histograms keep the positive buckets only
(the zero bin is the contexts, or sampled positions, seen minus the positive ones). Finalized, a sparse point
gives exactly what the dense state of the same values gives.

**Memory** is fixed by the settings and the units, never by the corpus (:func:`state_bytes`): per unit,
P·K·(W·4 + 8 + p) bytes of top contexts (P parts, K top contexts, W positions of a stored context, p bytes
per position index: 2 below 32,768 positions), NB·S·(12 + p) of samples, and 2·NB·c (sparse) or
2·(2·NB + 1)·c (dense) of histograms, c = 4 bytes per count (int32, widened to int64 once a pass has seen
2**30 contexts or sampled positions: :meth:`PointState.widen`); at the defaults (K = 20, W = 66, S = 3)
25,864 bytes per neuron and 23,808 per feature.

Selections use total orders (activation descending then context index ascending for ``top``; sampling key
then context index for samples), so the state is a pure function of the set of contexts seen: any
batching, a resumed pass and chunk states merged from Ray actors (:mod:`neurotext.engine.merge`) select the
same contexts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

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


# --------------------------------------------------------------------------- state
def pos_dtype(width: int) -> torch.dtype:
    """The integer type of a position in a stored context of ``width`` positions."""
    return torch.int16 if width < (1 << 15) else torch.int32


def hist_bins(sparse: bool) -> int:
    """Bins a point's histograms keep: the signed grid (dense), or its NB positive buckets (sparse)."""
    return NB if sparse else HIST_BINS


COUNT_LIMIT = 1 << 30  # int32 histogram counts until a pass has seen this many contexts or sampled positions


@dataclass
class PointState:
    """The running reduction of one point (layer, site) over its u units (or directions)."""

    top: list  # per part: (u, K) int64 top_order of value and context, WORST = empty (sparse: positive only)
    top_pos: list  # per part: (u, K) int16/int32 (pos_dtype): the max position in the model input
    top_acts: list  # per part: (u, K, W) float32 values at every position, NaN outside text
    slot: torch.Tensor  # (u, NB, S) int64 sample_order, sorted within a bucket, EMPTY = empty
    slot_val: torch.Tensor  # (u, NB, S) float32 the context's activation
    slot_pos: torch.Tensor  # (u, NB, S) int16/int32
    s: torch.Tensor  # (P, u) float64 sum over text positions, per part
    ss: torch.Tensor  # (P, u) float64 sum of squares
    npos: torch.Tensor  # (P, u) int64 positions above 0
    ctx_hist: torch.Tensor  # (u, hist_bins) int32 (int64 past COUNT_LIMIT): every context's activation
    hist: torch.Tensor  # (u, hist_bins) int32 (likewise): the values at the positions of the sampled contexts
    sparse: bool = False  # zeros counted, not stored (see the module docstring)
    tok_sum: list | None = None  # per part: (V, u) float32 sum of the unit's values at each token id
    perm_sum: torch.Tensor | None = None  # (V, u) float32: the same with token labels permuted within batches

    @classmethod
    def empty(cls, u: int, k: int, s: int, w: int, parts: int, vocab: int | None, sparse: bool = False):
        i64, pos = torch.int64, pos_dtype(w)
        bins = hist_bins(sparse)
        return cls(
            top=[torch.full((u, k), WORST, dtype=i64) for _ in range(parts)],
            top_pos=[torch.full((u, k), -1, dtype=pos) for _ in range(parts)],
            top_acts=[torch.full((u, k, w), float("nan")) for _ in range(parts)],
            slot=torch.full((u, NB, s), EMPTY, dtype=i64),
            slot_val=torch.full((u, NB, s), float("nan")),
            slot_pos=torch.full((u, NB, s), -1, dtype=pos),
            s=torch.zeros((parts, u), dtype=torch.float64), ss=torch.zeros((parts, u), dtype=torch.float64),
            npos=torch.zeros((parts, u), dtype=i64),
            ctx_hist=torch.zeros((u, bins), dtype=torch.int32), hist=torch.zeros((u, bins), dtype=torch.int32),
            sparse=sparse,
            tok_sum=None if vocab is None else [torch.zeros((vocab, u)) for _ in range(parts)],
            perm_sum=None if vocab is None else torch.zeros((vocab, u)),
        )

    @property
    def units(self) -> int:
        return self.slot.shape[0]

    def drop_samples(self) -> None:
        """Free the sample slots (a finalize that has drawn the range samples no longer needs them: about two
        fifths of the state at the defaults); the state then refers to no sample and cannot fold or merge again."""
        u, s = self.slot.shape[0], self.slot.shape[2]
        self.slot = torch.empty((u, 0, s), dtype=self.slot.dtype)
        self.slot_val = torch.empty((u, 0, s), dtype=self.slot_val.dtype)
        self.slot_pos = torch.empty((u, 0, s), dtype=self.slot_pos.dtype)

    def widen(self) -> None:
        """Histogram counts as int64 from now on (a pass past COUNT_LIMIT contexts or sampled positions: a bin's
        count could pass int32's range)."""
        self.ctx_hist, self.hist = self.ctx_hist.long(), self.hist.long()

    def signed_hist(self, which: str, total: int, units: slice = slice(None)) -> torch.Tensor:
        """A histogram (``ctx_hist`` or ``hist``) of ``units`` on the whole signed grid (n, HIST_BINS); a sparse
        point's zero bin is ``total`` (contexts, or sampled positions, seen) minus its positive counts."""
        h = getattr(self, which)[units].long()
        if not self.sparse:
            return h
        out = torch.zeros((h.shape[0], HIST_BINS), dtype=torch.int64)
        out[:, NB + 1:] = h
        out[:, NB] = total - h.sum(1)
        return out


def state_bytes(units: int, top: int, slots: int, width: int, parts: int, sparse: bool,
                vocab: int | None = None) -> int:
    """Bytes of a :class:`PointState` of ``units`` units: the formula of the module docstring (without Python's
    per-object overhead, a few hundred bytes per point)."""
    p = torch.tensor([], dtype=pos_dtype(width)).element_size()
    per_unit = parts * top * (4 * width + 8 + p) + NB * slots * (8 + 4 + p) + 2 * 4 * hist_bins(sparse) + 3 * 8 * parts
    if vocab is not None:
        per_unit += 4 * vocab * (parts + 1)
    return units * per_unit


@dataclass
class PassState:
    """Everything a pass keeps: one :class:`PointState` per point, the random samples' identities, counts."""

    points: dict  # {(layer, site): PointState}
    rand: list  # per part: (R,) int64 sample_order of the random contexts, EMPTY = empty
    first: list  # per part: (K,) int64 the K smallest context indices seen, ascending, EMPTY = empty
    contexts: torch.Tensor  # (P,) int64 contexts seen per part
    tokens: torch.Tensor  # (P,) int64 text tokens seen per part
    hist_contexts: torch.Tensor  # (P,) int64 contexts in the position histogram's sample
    hist_tokens: torch.Tensor  # (P,) int64 their text tokens
    tok_count: list | None = None  # per part: (V,) int64 occurrences of each token id (token_stats only)
    extra: dict = field(default_factory=dict)

    def widen_if_needed(self, more: int = 0) -> None:
        """Widen every point's histogram counts (:meth:`PointState.widen`) once the contexts or the sampled
        positions seen, plus ``more`` to come, reach COUNT_LIMIT."""
        if max(int(self.contexts.sum()), int(self.hist_tokens.sum())) + more >= COUNT_LIMIT:
            for ps in self.points.values():
                ps.widen()

    def referenced(self, step: int = 4096) -> torch.Tensor:
        """Every context index the state refers to (sorted, unique): the contexts whose text must be kept.
        Computed ``step`` units at a time, so it needs memory for a few of them, not for the whole state."""
        ids = torch.unique(torch.cat([sample_ctx(r[r != EMPTY]) for r in self.rand]
                                     + [f[f != EMPTY] for f in self.first]))
        for ps in self.points.values():
            for a in range(0, ps.units, step):
                part = [top_parts(t[a:a + step][t[a:a + step] != WORST])[1] for t in ps.top]
                slot = ps.slot[a:a + step]
                part.append(sample_ctx(slot[slot != EMPTY]))
                ids = torch.unique(torch.cat([ids, *part]))
        return ids
