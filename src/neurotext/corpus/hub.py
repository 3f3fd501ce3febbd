"""Sources read through the ``datasets`` library: folders written by ``save_to_disk``, and Hub datasets
(``hf:NAME[:CONFIG][:SPLIT]``) streamed. ``datasets`` is an optional dependency, imported only here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import NeurotextError
from .source import DEFAULT_TEXT_COLUMN, Corpus, missing_column, one_line

DATASETS_INSTALL = "pip install 'neurotext[corpus]' (or pip install datasets)"
DEFAULT_SPLIT = "train"  # the split read from a Hub dataset or a saved DatasetDict unless one is named
BATCH_ROWS = 1024  # rows per batch read from a saved dataset


def _import_datasets(what: str):
    try:
        import datasets
    except ImportError as e:
        raise NeurotextError(f"{what} needs the datasets library: {DATASETS_INSTALL}") from e
    return datasets


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def open_saved(path: Path, split: str | None, text_column: str | None) -> Corpus:
    """A ``save_to_disk`` folder, read with ``datasets.load_from_disk``.

    Args:
        path: the folder of a saved Dataset or DatasetDict.
        split: for a DatasetDict, the split to read (given as ``PATH:SPLIT``); None: ``train`` if there is
            one, else the only split (several splits and no ``train``: an error listing them).
        text_column: the column holding the text (default ``text``).

    Returns:
        An unchecked-for-emptiness :class:`Corpus` of kind ``datasets``.
    """
    datasets = _import_datasets(f"{path} (a folder saved by datasets)")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # a damaged folder: whatever datasets/pyarrow raise
        raise NeurotextError(f"{path}: cannot load the saved dataset ({one_line(e)})") from e
    name = path.name
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if split is None:
            split = DEFAULT_SPLIT if DEFAULT_SPLIT in ds or len(splits) != 1 else splits[0]
        if split not in ds:
            raise NeurotextError(f"{path}: no split {split!r}; splits: {', '.join(splits)} (write {path}:SPLIT)")
        ds, name = ds[split], f"{name}:{split}"
    elif split is not None:
        raise NeurotextError(f"{path} holds one dataset, not splits: leave out ':{split}'")
    column = text_column or DEFAULT_TEXT_COLUMN
    if column not in ds.column_names:
        raise NeurotextError(missing_column(path, column, ds.column_names))
    if getattr(ds.features[column], "dtype", None) not in ("string", "large_string"):
        raise NeurotextError(f"{path}: column {column!r} holds {ds.features[column]}, not text")
    texts = ds.select_columns([column]).with_format(None)

    def read(problems: dict[str, int]) -> Iterator[str]:
        for batch in texts.iter(batch_size=BATCH_ROWS):
            yield from ("" if t is None else t for t in batch[column])  # a null is an empty document

    source = str(path) if split is None else f"{path}:{split}"
    return Corpus(name=name, source=source, kind="datasets", text_column=column, read=read)


def _hub_error(spec: str, e: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    why = ("the Hub is offline (HF_HUB_OFFLINE=1) and streaming needs it" if offline
           else "not found on the Hub, or no network")
    return f"{spec}: cannot stream the dataset: {why} ({type(e).__name__}: {one_line(e)})"


def open_hub(spec: str, text_column: str | None) -> Corpus:
    """``hf:NAME[:CONFIG][:SPLIT]``, streamed with ``datasets`` (split ``train`` unless named).

    The first record is fetched here, so a missing network, dataset, split or column is an error
    before the pass. ``hf:NAME::SPLIT`` names a split without a config.

    Args:
        spec: ``hf:`` and the dataset's Hub name, optionally its config and split.
        text_column: the column holding the text (default ``text``).

    Returns:
        A :class:`Corpus` of kind ``hf`` whose ``revision`` is the Hub commit hash ``datasets`` resolved.
    """
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise NeurotextError(f"{spec!r}: write hf:NAME[:CONFIG][:SPLIT]")
    name, config, split = (parts + ["", ""])[:3]
    config, split = config or None, split or DEFAULT_SPLIT
    datasets = _import_datasets(spec)
    try:  # what load_dataset(name, config, split=split, streaming=True) does, keeping the builder's hash
        builder = datasets.load_dataset_builder(name, config)
        stream = builder.as_streaming_dataset(split=split)
        first = next(iter(stream), None)
    except Exception as e:  # ConnectionError (offline), DatasetNotFoundError, ValueError (bad split), ...
        raise NeurotextError(_hub_error(spec, e)) from e
    column = text_column or DEFAULT_TEXT_COLUMN
    if first is not None:
        if column not in first:
            raise NeurotextError(missing_column(spec, column, first))
        if not isinstance(first[column], str):
            raise NeurotextError(f"{spec}: column {column!r} holds {type(first[column]).__name__}, not text")

    def read(problems: dict[str, int]) -> Iterator[str]:
        for record in stream:
            text = record.get(column, 0)  # 0: the field is missing
            if text is None:
                yield ""  # a null is an empty document
            elif isinstance(text, str):
                yield text
            else:
                problems["malformed_lines"] += 1

    revision = builder.hash if isinstance(builder.hash, str) else None
    return Corpus(name=f"hf:{name}:{config or ''}:{split}", source=spec, kind="hf", text_column=column,
                  revision=revision, read=read)
