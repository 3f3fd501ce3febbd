"""SQL over a store with DuckDB: the shards are exposed as the table ``neurons``."""

from __future__ import annotations

from pathlib import Path

from ..errors import NeurotextError
from . import layout

#: The example lists of a corpus-examples row, by the ``kind`` they get in the ``examples`` view.
EXAMPLE_LISTS = {"top": "top", "random": "random", "top_train": "top_train", "top_test": "top_test",
                 "random_train": "random_train", "random_test": "random_test"}


def _files(paths) -> str:
    return "[" + ", ".join("'" + str(Path(p).resolve()).replace("'", "''") + "'" for p in paths) + "]"


def connect(directory):
    """A DuckDB connection over a store: the view ``neurons`` (a sweep: one row per neuron), and where the
    directory holds corpus examples, ``corpus_stats`` (one row per neuron) and ``examples`` (one row per example:
    ``kind`` is top, random, range, top_test, random_test, top_train or random_train; ``rank`` counts from 1) and
    ``contexts`` (one row per context an example refers to: text, ids, tokens, spans)."""
    import duckdb

    from . import examples as ex

    sweep = (Path(directory) / layout.MANIFEST).is_file()
    if not sweep and not ex.has_examples(directory):
        layout.read_manifest(directory)  # the usual message for a missing or foreign store
    con = duckdb.connect()
    if sweep:
        layout.read_manifest(directory)
        paths = layout.shard_paths(directory)
        if not paths:
            raise NeurotextError(f"{directory}: the store has no shards yet (run neurotext sweep)")
        con.execute(f"CREATE VIEW neurons AS SELECT * FROM read_parquet({_files(paths)})")
    if ex.has_examples(directory):
        manifest = ex.read_manifest(directory)
        paths = ex.shard_paths(directory)
        if manifest.get("status") == "complete" and paths:
            src = f"read_parquet({_files(paths)})"
            ctx_file = _files([ex.examples_dir(directory) / ex.CONTEXTS])
            con.execute(f"CREATE VIEW contexts AS SELECT * FROM read_parquet({ctx_file})")
            con.execute(f"CREATE VIEW corpus_stats AS SELECT * EXCLUDE ({', '.join(list(EXAMPLE_LISTS) + ['ranges'])}) "
                        f"FROM {src}")
            parts = [f"SELECT neuron, layer, site, unit, '{kind}' AS kind, NULL::INTEGER AS range, "
                     f"UNNEST(range(1, len({col}) + 1)) AS rank, UNNEST({col}) AS e FROM {src}"
                     for kind, col in EXAMPLE_LISTS.items()]
            parts.append(f"SELECT neuron, layer, site, unit, 'range' AS kind, r.range AS range, "
                         f"UNNEST(range(1, len(r.examples) + 1)) AS rank, UNNEST(r.examples) AS e FROM "
                         f"(SELECT neuron, layer, site, unit, UNNEST(ranges) AS r FROM {src})")
            con.execute("CREATE VIEW examples AS SELECT x.neuron, x.layer, x.site, x.unit, x.kind, x.range, x.rank, "
                        "c.text, c.tokens, c.ids, x.e.activations AS activations, x.e.position AS position, "
                        "x.e.activation AS activation, c.doc, x.e.context AS context, c.part "
                        f"FROM ({' UNION ALL '.join(parts)}) x JOIN contexts c ON c.context = x.e.context")
    return con


def run_query(directory, sql: str) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` against the store; returns (column names, rows)."""
    import duckdb

    con = connect(directory)
    try:
        cur = con.execute(sql)
    except duckdb.Error as e:
        raise NeurotextError(f"query failed: {str(e).splitlines()[0]}") from e
    if cur.description is None:
        return [], []
    return [d[0] for d in cur.description], cur.fetchall()
