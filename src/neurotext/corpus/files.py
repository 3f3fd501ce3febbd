"""Local corpus files: .txt, .jsonl, .csv, .parquet (and gzip-compressed text formats), and folders of them.

Each file type is one :class:`FileFormat` in :data:`FORMATS`: a ``check`` that ``open_corpus`` runs on
every file before a pass (readable, the text column there, a JSONL file's first line parses) and a
``read`` that yields the raw texts in file order. Bytes that are not UTF-8 are decoded with replacement
characters and counted per line; rows that do not parse are skipped and counted.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import NeurotextError
from .hub import is_saved_dataset, open_saved
from .source import DEFAULT_TEXT_COLUMN, SPEC_HELP, Corpus, listing, missing_column, no_problems, one_line

PARQUET_BATCH_ROWS = 1024  # rows per batch read from a Parquet file
CSV_FIELD_LIMIT = 2**31 - 1  # characters per CSV field (the csv module's default, 128 Ki, is too small for a book)
_SURROGATE = re.compile("[\ud800-\udfff]")  # what json.loads leaves of an unpaired "\ud800" escape


# -- bytes to text --------------------------------------------------------------------------------------

def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _decode(raw: bytes, problems: dict[str, int]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        problems["invalid_utf8"] += 1
        return raw.decode("utf-8", "replace")


def decoded_lines(path: Path, problems: dict[str, int]) -> Iterator[str]:
    """The file's lines as text (gunzipped for ``.gz``), line endings kept, a leading byte-order mark dropped.

    Args:
        path: the file.
        problems: counters; ``invalid_utf8`` counts the lines decoded with replacement characters.

    Returns:
        An iterator over the lines; the file is closed when it ends or is closed.
    """
    with _open_binary(path) as f:
        for i, raw in enumerate(f):
            line = _decode(raw, problems)
            yield line[1:] if i == 0 and line.startswith("\ufeff") else line


def _check_readable(path: Path) -> None:
    try:
        open(path, "rb").close()
    except PermissionError as e:
        raise NeurotextError(f"cannot read {path}: permission denied") from e
    except OSError as e:
        raise NeurotextError(f"cannot read {path}: {e.strerror or one_line(e)}") from e


def _first_line(path: Path, skip_blank: bool = False) -> tuple[int, str | None]:
    """(1-based line number, text) of the file's first (non-blank) line; (0, None) for an empty file.

    Reading it also proves a ``.gz`` file a gzip file: the error becomes a NeurotextError.
    """
    try:
        for n, line in enumerate(decoded_lines(path, no_problems()), 1):
            if not skip_blank or line.strip():
                return n, line
        return 0, None
    except (OSError, EOFError) as e:
        raise NeurotextError(f"cannot read {path}: {one_line(e)}") from e


# -- the formats ------------------------------------------------------------------------------------------

def _check_txt(path: Path, column: str) -> None:
    _first_line(path)


def _read_txt(path: Path, column: str, problems: dict[str, int]) -> Iterator[str]:
    for line in decoded_lines(path, problems):
        line = line.rstrip("\r\n")
        if line.strip():  # blank lines are skipped, not counted
            yield line


def _json_type(value) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _json_text(line: str, column: str) -> str:
    """The text field of one JSONL line; ValueError(why) when the line is not usable."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {_json_type(record)}, not an object")
    if column not in record:
        raise ValueError(f"no {column!r} field; fields: {listing(record)} (pick one with --text-column)")
    text = record[column]
    if not isinstance(text, str):
        raise ValueError(f"{column!r} is a JSON {_json_type(text)}, not a string")
    return text


def _check_jsonl(path: Path, column: str) -> None:
    n, line = _first_line(path, skip_blank=True)
    if line is not None:
        try:
            _json_text(line, column)
        except ValueError as e:
            raise NeurotextError(f"{path}: line {n}: {e}") from None


def _read_jsonl(path: Path, column: str, problems: dict[str, int]) -> Iterator[str]:
    for line in decoded_lines(path, problems):
        if not line.strip():
            continue
        try:
            text = _json_text(line, column)
        except ValueError:  # not JSON, not an object, no such field, or not a string
            problems["malformed_lines"] += 1
            continue
        if _SURROGATE.search(text):  # an escaped lone surrogate ("\ud800") is no text
            problems["invalid_utf8"] += 1
            text = _SURROGATE.sub("\ufffd", text)
        yield text


def _csv_rows(lines: Iterator[str], problems: dict[str, int]) -> Iterator[list[str]]:
    """Rows of CSV text; a row the csv module rejects is counted as malformed and skipped."""
    rows = csv.reader(lines)
    while True:
        try:
            yield next(rows)
        except StopIteration:
            return
        except csv.Error:
            problems["malformed_lines"] += 1


def _csv_column(path: Path, header: list[str] | None, column: str) -> int:
    if not header:
        raise NeurotextError(f"{path}: no header row (a .csv corpus starts with the column names)")
    if column not in header:
        raise NeurotextError(missing_column(path, column, header))
    return header.index(column)


def _check_csv(path: Path, column: str) -> None:
    _first_line(path)
    rows = _csv_rows(decoded_lines(path, no_problems()), no_problems())
    try:
        _csv_column(path, next((r for r in rows if r), None), column)
    finally:
        rows.close()


def _read_csv(path: Path, column: str, problems: dict[str, int]) -> Iterator[str]:
    limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        rows = _csv_rows(decoded_lines(path, problems), problems)
        header = next((r for r in rows if r), None)
        index = _csv_column(path, header, column)
        for row in rows:
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                problems["malformed_lines"] += 1
                continue
            yield row[index]
    finally:
        csv.field_size_limit(limit)


def _parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a file that is not Parquet
        raise NeurotextError(f"{path}: not a readable Parquet file ({one_line(e)})") from e


def _check_parquet(path: Path, column: str) -> None:
    import pyarrow as pa

    schema = _parquet(path).schema_arrow
    if column not in schema.names:
        raise NeurotextError(missing_column(path, column, schema.names))
    kind = schema.field(column).type
    is_view = getattr(pa.types, "is_string_view", lambda t: False)  # pyarrow >= 16
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)):
        raise NeurotextError(f"{path}: column {column!r} holds {kind}, not text")


def _read_parquet(path: Path, column: str, problems: dict[str, int]) -> Iterator[str]:
    with _parquet(path) as f:
        for batch in f.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[column]):
            for text in batch.column(0).to_pylist():
                yield "" if text is None else text  # a null is an empty document


@dataclass(frozen=True)
class FileFormat:
    """How one file type is read."""

    kind: str  # Corpus.kind of a single file of this type
    has_columns: bool  # whether the text sits in a named column/field
    check: Callable[[Path, str], None]  # raises NeurotextError when the file cannot be read as this type
    read: Callable[[Path, str, dict[str, int]], Iterator[str]]  # raw texts in order, counting problems


#: The file types a corpus can be made of, by file-name ending (matched case-insensitively).
FORMATS = {
    ".txt": FileFormat("txt", False, _check_txt, _read_txt),  # one document per line
    ".jsonl": FileFormat("jsonl", True, _check_jsonl, _read_jsonl),  # one JSON object per line
    ".csv": FileFormat("csv", True, _check_csv, _read_csv),  # a header row, then one document per row
    ".parquet": FileFormat("parquet", True, _check_parquet, _read_parquet),  # one document per row
    ".txt.gz": FileFormat("txt", False, _check_txt, _read_txt),
    ".jsonl.gz": FileFormat("jsonl", True, _check_jsonl, _read_jsonl),
    ".csv.gz": FileFormat("csv", True, _check_csv, _read_csv),
}


def format_of(path: Path) -> FileFormat | None:
    """The file's format by its name's ending, or None for a type no corpus is read from."""
    name = path.name.lower()
    return next((FORMATS[e] for e in sorted(FORMATS, key=len, reverse=True) if name.endswith(e)), None)


# -- files and folders --------------------------------------------------------------------------------------

def corpus_files(folder: Path) -> list[tuple[Path, FileFormat]]:
    """Every corpus file below ``folder``, sorted by relative path; hidden files and folders left out.

    Args:
        folder: the directory to search, recursively (symbolic links to folders are not followed).

    Returns:
        (path, format) pairs in reading order.
    """
    found = []

    def fail(e: OSError):
        raise NeurotextError(f"cannot read {e.filename}: {e.strerror or one_line(e)}")

    for root, dirs, names in os.walk(folder, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(root) / name
            fmt = format_of(path)
            if fmt is not None and not name.startswith("."):
                found.append((path.relative_to(folder).as_posix(), path, fmt))
    if not found:
        raise NeurotextError(f"{folder}: no corpus files in this directory or below "
                             f"(looked for {', '.join(FORMATS)})")
    return [(path, fmt) for _, path, fmt in sorted(found, key=lambda t: t[0])]


def _read_files(files: list[tuple[Path, FileFormat]], column: str, problems: dict[str, int]) -> Iterator[str]:
    for path, fmt in files:
        yield from fmt.read(path, column, problems)


def open_path(spec: str, text_column: str | None) -> Corpus:
    """A file, a directory of files, or a ``save_to_disk`` folder (``PATH:SPLIT`` for a split), checked.

    Args:
        spec: the path as given (``~`` is expanded).
        text_column: the column/field holding the text (default ``text``); an error where no file has one.

    Returns:
        An unchecked-for-emptiness :class:`Corpus` (``open_corpus`` reads up to its first document).
    """
    path, split = Path(spec).expanduser(), None
    if not path.exists():
        head, sep, tail = spec.rpartition(":")
        if not (sep and head and is_saved_dataset(Path(head).expanduser())):
            raise NeurotextError(f"no such file or directory: {spec} (a corpus is {SPEC_HELP})")
        path, split = Path(head).expanduser(), tail
    path = path.resolve()
    if path.is_dir() and is_saved_dataset(path):
        return open_saved(path, split, text_column)
    if path.is_dir():
        files = corpus_files(path)
        where = f"{path}: no file in it has a text column"
    else:
        fmt = format_of(path)
        if fmt is None:
            raise NeurotextError(f"{path}: unsupported file type; supported: {', '.join(FORMATS)}, "
                                 "a directory of such files, or a datasets save_to_disk folder")
        files = [(path, fmt)]
        where = f"{path}: a {fmt.kind} file has no columns"
    has_columns = any(fmt.has_columns for _, fmt in files)
    if text_column is not None and not has_columns:
        raise NeurotextError(f"{where}: leave out the text column")
    column = text_column or DEFAULT_TEXT_COLUMN
    for file, fmt in files:
        _check_readable(file)
        fmt.check(file, column)
    kind = "directory" if path.is_dir() else files[0][1].kind
    return Corpus(name=path.name, source=str(path), kind=kind, text_column=column if has_columns else None,
                  read=lambda problems: _read_files(files, column, problems))
