"""Results on disk: the store format (`layout`: manifest, Parquet shards, schema), resumable sweeps
(`sweep`) with local and Ray executors, and DuckDB queries (`query`).

The store format's functions are re-exported here, so ``neurotext.store.read_table(DIR)`` works."""

from .layout import (  # noqa: F401
    FORMAT,
    MANIFEST,
    RESTART_COLUMNS,
    SHARDS,
    attach_recorded,
    find_neuron,
    missing_columns,
    old_store_hint,
    read_manifest,
    read_table,
    recorded_features,
    results_to_table,
    row_to_phrases,
    row_to_result,
    schema,
    shard_is_complete,
    shard_name,
    shard_paths,
    token_kind,
    write_manifest,
    write_shard,
)
