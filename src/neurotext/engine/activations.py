"""A site's activations at every text position of one part of a corpus, streamed batch by batch.

Dictionary training and evaluation and the probes of Q2 need the raw activations of whole sites (not the
reductions of the corpus pass): this runs the corpus pass's own tokenization, split and forward pass
(:mod:`neurotext.engine.contexts`, :class:`neurotext.engine.corpus_pass.CorpusPass`) over the contexts of
one part (train or test) and yields, per batch, every unit of the requested points at the text positions
only (template and padding dropped), with the token id at each position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..model.names import is_feature_site
from .contexts import PARTS, SplitConfig, Tokenize, batches
from .corpus_pass import CorpusPass, PassSettings, Probe


@dataclass
class SiteBatch:
    """One forward batch's text positions."""

    values: dict  # {(layer, site): (N, U) float32} every unit at each of the N text positions, row-major
    token_ids: torch.Tensor  # (N,) int64 the token at each position
    contexts: list  # the batch's Context objects (neurotext.engine.contexts.Context)
    lengths: torch.Tensor  # (B,) int64 text positions per context (they sum to N), in the order of ``contexts``


def stream_sites(model, corpus, points, part: str = "train", max_length: int = 64, split: SplitConfig | None = None,
                 seed: int = 0, max_tokens: int | None = None, batch_size: int = 64,
                 batch_tokens: int = 8192, chunk_size: int = 1024, shuffle: int = 0,
                 shuffle_seed: int = 0) -> Iterator[SiteBatch]:
    """Every unit of ``points`` at every text position of one part of ``corpus``, one batch at a time.

    Args:
        model: a loaded :class:`neurotext.model.Model` (features of attached dictionaries are points too:
            ``(3, "ffn.f")`` yields the dictionary's full encoding).
        corpus: an opened :class:`neurotext.corpus.Corpus`.
        points: (layer, site) pairs; all run in one forward pass per batch, only as deep as the deepest.
        part: ``train`` or ``test`` (the corpus pass's document split, ``split``), or ``all``.
        max_length: text tokens per context at most (longer documents are cut into consecutive contexts).
        max_tokens: stop before the context that would pass this many text tokens of the part.
        shuffle: with a positive value, the contexts are read in windows of this many and each window's order is
            permuted (seeded by ``shuffle_seed`` and the window's number) before the forward passes: a window as
            large as the part mixes the whole part (a corpus read in its own order holds long runs of one kind of
            text, which a trainer should not see one after another). 0: the corpus's order.

    Yields:
        :class:`SiteBatch` in the corpus's order of chunks, or the shuffled order (within a chunk, length-sorted
        batches).
    """
    if part not in (*PARTS, "all"):
        raise ValueError(f"part must be one of {', '.join(PARTS)} or all, got {part!r}")
    split = split or SplitConfig()
    want = None if part == "all" else PARTS.index(part)
    probes = []
    for layer, site in sorted(set(points)):
        width = model.width(layer, site)
        dic = model.dictionary(layer, site) if is_feature_site(site) else None
        probes.append(Probe(layer, site, units=torch.arange(width), dictionary=dic))
    engine = CorpusPass(model, probes, PassSettings(max_length=max_length))
    tok = Tokenize(model.tokenizer, max_length, seed, split, vocab_size=int(model.embeddings.shape[0]))
    seen = 0
    chunk = []

    def run(contexts):
        for group in batches(contexts, batch_size, batch_tokens):
            b = engine.prepare(group)
            found = engine.forward(b)
            text = b.text  # (B, T)
            yield SiteBatch(values={p: v[text] for p, v in found.items()}, token_ids=b.ids[text],
                            contexts=group, lengths=text.sum(1))

    def selected():
        nonlocal seen
        for c in tok.contexts(corpus.documents()):
            if want is not None and c.part != want:
                continue
            if max_tokens is not None and seen + len(c.ids) > max_tokens:
                return
            seen += len(c.ids)
            yield c

    contexts = selected() if shuffle <= 0 else _shuffled(selected(), shuffle, shuffle_seed)
    for c in contexts:
        chunk.append(c)
        if len(chunk) == chunk_size:
            yield from run(chunk)
            chunk = []
    if chunk:
        yield from run(chunk)


def _shuffled(contexts, window: int, seed: int):
    """``contexts`` in windows of ``window``, each window in a seeded random order."""
    buf, number = [], 0
    for c in contexts:
        buf.append(c)
        if len(buf) == window:
            yield from _permute(buf, seed, number)
            buf, number = [], number + 1
    if buf:
        yield from _permute(buf, seed, number)


def _permute(buf: list, seed: int, number: int) -> list:
    g = torch.Generator().manual_seed(seed * 1_000_003 + number)
    return [buf[i] for i in torch.randperm(len(buf), generator=g).tolist()]
