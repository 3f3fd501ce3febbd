"""The registry of referred contexts: which contexts a pass's state refers to, as numbers, never as text.

A finished pass shows each example with its context's text, tokens and ids, so the pass must be able to
find every context its state refers to. It keeps six numbers per context (index, document, piece, part,
sampling key, length: 31 bytes), not the text (a kilobyte or two as Python objects), and reads the text
again from the corpus when the pass is finalized (:meth:`Registry.fetch`): only the documents that hold a
wanted context are tokenized again, and each context read back is checked against its sampling key (a hash
of its document's text) and its length, so a corpus that changed during the pass is an error, never a wrong
example. The registry is cut to what the state refers to whenever it has doubled since the last cut, so it
holds at most twice the referred contexts: its memory does not grow with the documents of the corpus.
"""

from __future__ import annotations

import numpy as np
import torch

from ..engine.contexts import Context, context_key, text_digest
from ..errors import NeurotextError

#: One registry entry (numpy structured dtype): what finds a context again and what the tables need of it.
ENTRY = np.dtype([("index", np.int64), ("doc", np.int64), ("piece", np.int32), ("part", np.int8),
                  ("key", np.int64), ("length", np.int32)])


class Registry:
    """The contexts kept for their text, in context order (chunks arrive in order)."""

    def __init__(self, entries: np.ndarray | None = None):
        self._done = entries if entries is not None else np.zeros(0, dtype=ENTRY)  # sorted by index
        self._new: list[np.ndarray] = []  # added since the last consolidation
        self.kept = len(self._done)  # size after the last cut

    def __len__(self) -> int:
        return len(self._done) + sum(len(a) for a in self._new)

    @property
    def entries(self) -> np.ndarray:
        """Every entry (ENTRY), sorted by context index."""
        if self._new:
            self._done = np.concatenate([self._done, *self._new])
            self._new = []
            if len(self._done) > 1 and not bool((np.diff(self._done["index"]) > 0).all()):
                self._done = np.unique(self._done)  # contexts added twice (a redone Ray chunk) or out of order
        return self._done

    def add(self, contexts: list[Context]) -> None:
        a = np.zeros(len(contexts), dtype=ENTRY)
        a["index"] = [c.index for c in contexts]
        a["doc"] = [c.doc for c in contexts]
        a["piece"] = [c.piece for c in contexts]
        a["part"] = [c.part for c in contexts]
        a["key"] = [c.key for c in contexts]
        a["length"] = [len(c.ids) for c in contexts]
        self._new.append(a)

    def cut(self, referenced: torch.Tensor) -> None:
        """Keep only the ``referenced`` contexts (sorted unique indices, :meth:`PassState.referenced`)."""
        e = self.entries
        self._done = e[np.isin(e["index"], referenced.numpy(), assume_unique=True)]
        self.kept = len(self._done)

    def rows(self, indices) -> np.ndarray:
        """Rows of the entries of context ``indices`` (every one must be kept)."""
        e = self.entries
        indices = np.asarray(indices, dtype=np.int64)
        at = np.searchsorted(e["index"], indices)
        if len(indices) and (at.max() >= len(e) or not bool((e["index"][np.minimum(at, len(e) - 1)]
                                                             == indices).all())):
            missing = indices[(at >= len(e)) | (e["index"][np.minimum(at, len(e) - 1)] != indices)]
            raise AssertionError(f"contexts {missing[:5].tolist()} are not in the registry")
        return at

    def lengths(self, indices) -> np.ndarray:
        """Text tokens of each of the contexts ``indices``."""
        return self.entries["length"][self.rows(indices)].astype(np.int64)

    def fetch(self, corpus, tokenize, indices):
        """The contexts ``indices`` with their text, read again from ``corpus`` with ``tokenize`` (the pass's
        :class:`neurotext.engine.contexts.Tokenize`): yields :class:`Context` in context order, reading the
        corpus only as far as the last one and tokenizing only the documents that hold one."""
        want = self.entries[self.rows(np.unique(np.asarray(indices, dtype=np.int64)))]
        if not len(want):
            return
        by_doc: dict[int, list] = {}
        for e in want.tolist():
            by_doc.setdefault(e[1], []).append(e)
        last = int(want["doc"].max())
        for d, text in enumerate(corpus.documents()):
            if d in by_doc:
                digest = text_digest(text)
                pieces = tokenize.pieces(text)
                for index, doc, piece, part, key, length in by_doc.pop(d):
                    if piece >= len(pieces) or len(pieces[piece][0]) != length \
                            or context_key(digest, piece, tokenize.seed) != key:
                        raise NeurotextError(f"{corpus.source}: document {d} is not the one the corpus pass read "
                                             "(the corpus changed during the pass); run the pass again")
                    ids, span, spans = pieces[piece]
                    yield Context(index, doc, piece, part, key, ids, span, spans)
            if d >= last:
                break
        if by_doc:
            raise NeurotextError(f"{corpus.source}: document {min(by_doc)} is missing (the corpus changed during "
                                 "the pass); run the pass again")

    # ------------------------------------------------------------------ checkpoints
    def to_numpy(self) -> np.ndarray:
        return self.entries.copy()

    @classmethod
    def from_numpy(cls, a: np.ndarray) -> Registry:
        if not isinstance(a, np.ndarray) or a.dtype != ENTRY:
            raise ValueError("not a registry")
        return cls(np.sort(a, order="index"))
