"""The atlas's real text: a store's corpus examples (``neurotext examples ... --out DIR``), read for the site.

A neuron's examples fill the real-text section of its page (:func:`neurotext.display.card.examples_section`); the
index gets four compact columns per neuron (:data:`DATA_COLUMNS`): the corpus max, the share of positions
above 0, the distinct max tokens of the top contexts (what the index's real-text search matches) and a
snippet of the top context around its max token. Full texts stay on the pages, so ``data/neurons.js`` stays
small for thousands of neurons; the examples are read a batch of rows at a time, never all at once.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..display.card import context_snippet, max_tokens
from ..errors import NeurotextError
from ..model.names import SITES, base_site, parse_name
from ..model.tokens import manifest_kind
from ..store import examples as ex_store

#: Columns of each row in ``data/neurons.js`` that come from the examples (atlas.js reads them by name).
DATA_COLUMNS = ["corpus_max", "corpus_share", "corpus_tokens", "corpus_context"]
#: Rows read at a time when the pages are written.
BATCH_ROWS = 64
_KIND_ROWS = 16  # rows whose top contexts' tokens tell the vocabulary kind when no manifest records it


def complete_manifest(store_dir, log=print, required: bool = False) -> dict | None:
    """The examples manifest of ``store_dir`` when its corpus pass is complete; None when it holds no
    examples, or (with a warning) an unfinished pass. ``required``: an unfinished pass is an error."""
    if not ex_store.has_examples(store_dir):
        return None
    manifest = ex_store.read_manifest(store_dir)
    if manifest.get("status") != "complete":
        if required:
            raise NeurotextError(f"{store_dir}: the corpus pass has not finished; rerun the same neurotext examples "
                                 "command to resume it")
        log(f"neurotext: warning: the corpus examples in {store_dir} are unfinished and not shown (rerun the same "
            "neurotext examples command to finish them)")
        return None
    return manifest


def is_canonical(name, layer, site, unit) -> bool:
    """Whether a row is a unit with a page: a neuron (``L3.ffn.42``) or a dictionary feature (``L3.ffn.f12``) on a
    known site whose name is the canonical name of its (layer, site, unit) (a name becomes a filename in the site);
    a direction's row is not."""
    n = parse_name(name) if isinstance(name, str) else None
    return n is not None and base_site(n.site) in SITES and (n.layer, n.site, n.unit) == (layer, site, unit)


def neurons(store_dir, log=print) -> list[dict]:
    """``{"neuron", "layer", "site", "unit"}`` of every neuron and feature with examples, in (layer, site, unit)
    order (the store's: a feature site ``ffn.f`` after ``ffn``); directions (no unit) have no page and are skipped
    with a message."""
    import pyarrow.parquet as pq

    out, skipped = [], 0
    for p in ex_store.shard_paths(store_dir):
        for r in pq.read_table(p, columns=["neuron", "layer", "site", "unit"]).to_pylist():
            if is_canonical(r["neuron"], r["layer"], r["site"], r["unit"]):
                out.append(r)
            else:
                skipped += 1
    if skipped:
        log(f"neurotext: {skipped} examples of directions (not neurons) have no atlas page")
    return sorted(out, key=lambda r: (r["layer"], r["site"], r["unit"]))


def _page_columns() -> list[str]:
    return [f.name for f in ex_store.schema() if f.name not in ex_store.PART_LISTS]


def iter_examples(store_dir, manifest: dict, batch_rows: int = BATCH_ROWS) -> Iterator:
    """Every neuron's :class:`neurotext.examples.NeuronExamples` (without the per-part lists, which the
    pages do not show), read ``batch_rows`` rows at a time; directions are skipped."""
    import pyarrow.parquet as pq

    columns = _page_columns()
    contexts = ex_store.read_contexts(store_dir)  # once: the examples of every batch refer to them
    for p in ex_store.shard_paths(store_dir):
        try:
            batches = pq.ParquetFile(p).iter_batches(batch_size=batch_rows, columns=columns)
            for batch in batches:
                for row in batch.to_pylist():
                    if not is_canonical(row["neuron"], row["layer"], row["site"], row["unit"]):
                        continue
                    row.update(dict.fromkeys(ex_store.PART_LISTS))
                    yield ex_store.row_to_examples(row, manifest, contexts)
        except (OSError, ValueError) as e:
            raise NeurotextError(f"{p} is unreadable ({e}); recompute with neurotext examples ... --force") from e


def token_kind(store_dir, manifest: dict) -> str:
    """How the examples' tokens are shown: the manifest's vocabulary kind, else the kind the tokens of the
    first rows' top contexts show."""
    import pyarrow.parquet as pq

    def tokens():
        path = ex_store.examples_dir(store_dir) / ex_store.CONTEXTS
        if path.is_file():
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_KIND_ROWS * 8, columns=["tokens"]):
                for toks in batch.column("tokens").to_pylist():
                    yield from toks or []
                return

    return manifest_kind(manifest, tokens())


def summary(ex, kind: str) -> list:
    """The neuron's :data:`DATA_COLUMNS` values: corpus max, share of positions above 0, the distinct max
    tokens of its top contexts (shown text, rank order) and ``[left, max token, right]`` of its top context."""
    st = ex.stats or {}

    def num(v, digits=5):
        return None if v is None else float(f"{v:.{digits}g}")

    return [num(st.get("max")), num(st.get("share_positive"), 4), max_tokens(ex, kind),
            context_snippet(ex.top[0], kind) if ex.top else None]


def corpus_rows(manifest: dict) -> list[tuple[str, object]]:
    """The index's description of the corpus pass (name, content fingerprint, counts, settings)."""
    c, s = manifest.get("corpus") or {}, manifest.get("settings") or {}
    rows = [("corpus", c.get("name", "?")), ("source", c.get("source", "?")),
            ("content fingerprint", c.get("fingerprint", "?")), ("documents", manifest.get("documents", "?")),
            ("contexts", manifest.get("contexts", "?")), ("text tokens", manifest.get("tokens", "?")),
            ("neurons", (manifest.get("neurons") or {}).get("count", "?"))]
    rows += [(k.replace("_", " "), s[k]) for k in ("top", "ranges", "per_range", "random", "max_length",
                                                   "test_share", "seed", "max_docs", "dtype") if k in s]
    rows += [("finished", manifest.get("finished", "?"))]
    return rows
