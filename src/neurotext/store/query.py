"""SQL over a store with DuckDB: the shards are exposed as the table ``neurons``."""

from __future__ import annotations

from pathlib import Path

from ..errors import NeurotextError
from . import layout


def connect(directory):
    """A DuckDB connection with the view ``neurons`` over the store's shards."""
    import duckdb

    layout.read_manifest(directory)
    paths = layout.shard_paths(directory)
    if not paths:
        raise NeurotextError(f"{directory}: the store has no shards yet (run neurotext sweep)")
    con = duckdb.connect()
    files = ", ".join("'" + str(Path(p).resolve()).replace("'", "''") + "'" for p in paths)
    con.execute(f"CREATE VIEW neurons AS SELECT * FROM read_parquet([{files}])")
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
