"""The streaming corpus pass: every requested unit on real text, one forward pass per batch, reduced on the fly.

One forward pass of a batch of contexts (only as deep as the deepest requested layer) yields every
requested unit at every position; the batch is folded (:mod:`neurotext.engine.fold`) into a fixed-size
state (:mod:`neurotext.engine.pass_state`), and states of disjoint contexts merge exactly
(:mod:`neurotext.engine.merge`). This module holds what is read (:class:`Probe`), the batches, and the pass
that wires them together (:class:`CorpusPass`).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..model.adapters import _get, _hooks, _Stop
from ..model.names import base_site
from . import fold as _fold
from . import merge as _merge
from .fold import SparseValues
from .pass_state import EMPTY, PassState, PointState, state_bytes


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

    @property
    def sparse(self) -> bool:
        """Features of a dictionary: their values are 0 at most positions, read and folded sparsely."""
        return self.dictionary is not None and self.directions is None

    def encode_flops(self) -> int:
        """FLOPs per position of the dictionary's encoding (its encoder's product; 0 without a dictionary)."""
        d = self.dictionary
        return 0 if d is None else 2 * d.d_in * d.width

    def read_sparse(self, h: torch.Tensor, text: torch.Tensor) -> SparseValues:
        """A dictionary probe's non-zero values at the text positions (B, T) of the site's activations h (B, T, U):
        the encoding of the text positions only (the template and the padding are never read)."""
        b, t, _ = h.shape
        where = text.reshape(-1).nonzero().flatten()
        x = h.reshape(b * t, -1).index_select(0, where.to(h.device)).float()  # (N, U)
        rows, cols, vals = self.dictionary.encode_sparse(x)
        if not (self.units.numel() == self.dictionary.width
                and bool((self.units == torch.arange(self.dictionary.width)).all())):
            column = torch.full((self.dictionary.width,), -1, dtype=torch.int64, device=cols.device)
            column[self.units.to(cols.device)] = torch.arange(len(self.units), device=cols.device)
            cols = column[cols]
            keep = cols >= 0
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
        return SparseValues(where[rows.cpu()], cols.cpu(), vals.float().cpu(), (b, t, self.size))

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


# --------------------------------------------------------------------------- compiled layers
#: The corpus's first contexts run through the model as it is; a batch whose contexts all come at or after this
#: context index runs the layers' pieces compiled (:func:`compiled_pieces`). Compiling costs seconds (about 12 s for
#: the bundled model the first time on the 2-core AMD EPYC, 4 s from torch's cache) and saves about 7% of a forward
#: pass, so a short corpus never pays for it. The choice depends on the batch's contexts only, never on how many
#: batches a process has run: a Ray worker, a resumed pass and one uninterrupted pass run every batch alike, and
#: their results are equal bit for bit.
COMPILE_FROM = 2048


def compiled_pieces(model, at) -> list:
    """The modules a batch's forward pass may run compiled: each direct child of the layers it runs that holds no
    module read by a hook (``at``: {(layer, base site)}; an ``ffn`` point reads the FFN's output projection's input,
    an ``out`` point the layer's output, outside its children). For a BERT layer: the attention and the FFN's first
    half; the FFN's output projection, whose input is read, stays as it is. Hooks inside a compiled module would
    not run, so none is compiled around one."""
    depth = max(layer for layer, _ in at)
    read = {id(_get(model.layers[layer], model.arch.ffn_out)) for layer, site in at if site == "ffn"}
    pieces = []
    for layer in range(depth + 1):
        for child in model.layers[layer].children():
            if not any(id(m) in read for m in child.modules()):
                pieces.append(child)
    return pieces


@contextmanager
def _running(pieces: list, forwards: dict):
    """Run a block with ``pieces`` calling their compiled forward (``forwards``: {module: compiled}); always
    restore their own (the class's, or the one a module was given, as accelerate's hooks give one)."""
    own = [(m, vars(m).get("forward")) for m in pieces]
    for m in pieces:
        m.forward = forwards[m]
    try:
        yield
    finally:
        for m, f in own:
            if f is None:
                del m.forward  # the instance attribute: the class's forward again
            else:
                m.forward = f


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
    sparse: bool = True  # fold a dictionary's features sparsely (False: densely, the reference of the tests)


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
        self.compile_from = COMPILE_FROM  # the first context index whose batches run compiled
        self._forwards: dict | None = {}  # {module: its compiled forward}; None once compiling failed

    def _pieces(self, at, batch: Batch) -> list:
        """The modules this batch runs compiled (:func:`compiled_pieces`): none on a device other than the CPU,
        with ``NEUROTEXT_COMPILE=0``, for a batch with a context before :attr:`compile_from`
        (:data:`COMPILE_FROM`), or after compiling failed."""
        if (self._forwards is None or int(batch.ctx.min()) < self.compile_from or self.model.device.type != "cpu"
                or os.environ.get("NEUROTEXT_COMPILE", "1") == "0"):
            return []
        pieces = compiled_pieces(self.model, at)
        for m in pieces:
            if m not in self._forwards:
                self._forwards[m] = torch.compile(m.forward, dynamic=True)
        return pieces

    def empty_state(self) -> PassState:
        s = self.settings
        vocab = self.vocab if s.token_stats else None
        zeros = lambda: torch.zeros(s.parts, dtype=torch.int64)  # noqa: E731
        points = {key: PointState.empty(p.size, s.top, s.slots, self.width, s.parts, vocab,
                                        sparse=s.sparse and p.sparse)
                  for key, p in self.probes.items()}
        return PassState(points=points, rand=[torch.full((s.random,), EMPTY) for _ in range(s.parts)],
                         first=[torch.full((s.top,), EMPTY) for _ in range(s.parts)],
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
    def forward(self, batch: Batch, probes: dict | None = None, sparse: bool = False) -> dict:
        """Run one batch only as deep as the deepest probe; {(layer, site): values (B, T, u) float32}, or with
        ``sparse`` a dictionary probe's :class:`SparseValues` (its text positions' non-zero values).

        One hook per model point (layer, ``ffn`` or ``out``) reads every probe there: the neurons of ``ffn``
        and the features of its dictionary (site ``ffn.f``) come from the same activations, and the
        dictionary's encoding runs inside the forward pass, batch by batch. On the CPU, from the context
        :data:`COMPILE_FROM` of the corpus on, the layers' pieces that hold no hooked module run compiled
        (:func:`compiled_pieces`; the values agree with the model's own to float32 rounding, not bit for bit)."""
        model = self.model
        probes = probes or self.probes
        at: dict = {}  # {(layer, base site): [probe keys]}
        for key in probes:
            at.setdefault((key[0], base_site(key[1])), []).append(key)
        depth = max(layer for layer, _ in at)
        dev = model.device
        found: dict = {}
        text = batch.text.to(dev)
        stop_at = (depth, "out") if (depth, "out") in at else (depth, "ffn")

        def grab(point):
            def hook(module, args, output=None):
                if point[1] == "ffn":
                    h = args[0]  # the FFN's output projection reads the post-activation: (B, T, U)
                else:
                    h = output[0] if isinstance(output, (tuple, list)) else output  # the block's output (B, T, d)
                for key in at[point]:
                    probe = probes[key]
                    found[key] = probe.read_sparse(h, text) if sparse and probe.sparse else probe.read(h).cpu()
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
        pieces = self._pieces(at, batch)
        try:
            with _hooks(install), low, _running(pieces, self._forwards or {}):
                try:
                    run(input_ids=batch.ids.to(dev), attention_mask=batch.attn.to(dev), **extra)
                except _Stop:
                    pass
        except Exception as e:
            if not pieces or isinstance(e, torch.OutOfMemoryError):
                raise
            warnings.warn(f"the corpus pass runs its layers uncompiled ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); set NEUROTEXT_COMPILE=0 to skip the "
                          "attempt", stacklevel=2)
            self._forwards = None
            return self.forward(batch, probes, sparse)
        return found

    # ------------------------------------------------------------------ folding and merging
    def fold(self, state: PassState, batch: Batch, found: dict) -> None:
        """Fold one batch's values (from :meth:`forward`) into ``state`` (:func:`neurotext.engine.fold.fold`)."""
        _fold.fold(self, state, batch, found)

    def merge(self, state: PassState, other: PassState) -> None:
        """Fold ``other`` (the state of other contexts, e.g. one chunk's from a Ray actor) into ``state``."""
        _merge.merge(self.settings, state, other)

    # ------------------------------------------------------------------ cost
    def state_bytes(self) -> int:
        """Bytes of the state this pass keeps (:func:`neurotext.engine.pass_state.state_bytes`, every point)."""
        s = self.settings
        vocab = self.vocab if s.token_stats else None
        return sum(state_bytes(p.size, s.top, s.slots, self.width, s.parts, s.sparse and p.sparse, vocab)
                   for p in self.probes.values())

    def encode_flops_per_token(self) -> int:
        """FLOPs per text token of the dictionaries' encodings (each dictionary once per point, however many of
        its features are read): what the pass adds to the model's forward pass."""
        return sum(p.encode_flops() for p in self.probes.values())
