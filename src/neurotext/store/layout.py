"""Results store: ``manifest.json`` plus Parquet shards, one row per neuron.

A shard is written to a temporary name and renamed when complete, so a killed sweep never leaves
half a shard under a final name; a shard that is unreadable or has the wrong rows is reported and
recomputed. Read the store with :func:`read_table`, DuckDB (``neurotext query``) or pyarrow.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import NeurotextError
from ..model.tokens import manifest_kind

# Filenames and schema live here and nowhere else.
MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT = "neurotext-store/1"
SHARD_RE = re.compile(r"^L(\d+)\.(\w+(?:\.f)?)\.(\d+)-(\d+)\.parquet$")


def shard_name(layer: int, site: str, first_unit: int, last_unit: int) -> str:
    return f"L{layer}.{site}.{first_unit:05d}-{last_unit:05d}.parquet"


def schema(d_emb: int) -> pa.Schema:
    """One row per neuron; list columns are best-first."""
    f32, i32 = pa.float32(), pa.int32()
    return pa.schema([
        ("neuron", pa.string()), ("layer", i32), ("site", pa.string()), ("unit", i32),
        ("activation", pa.float64()), ("pre_activation", pa.float64()),
        ("vector", pa.list_(f32, d_emb)),
        ("nearest_token", pa.string()), ("nearest_cosine", pa.float64()),
        ("nearest_ids", pa.list_(i32)), ("nearest_tokens", pa.list_(pa.string())), ("nearest_cosines", pa.list_(f32)),
        ("nearest_activation", pa.float64()), ("retention", pa.float64()),
        ("best_token", pa.string()), ("best_activation", pa.float64()),
        ("best_ids", pa.list_(i32)), ("best_tokens", pa.list_(pa.string())), ("best_activations", pa.list_(f32)),
        ("overlap_at_10", pa.float64()),
        ("steps", i32), ("restarts", i32), ("seconds", pa.float64()), ("seed", pa.int64()),
        ("curve", pa.list_(f32)),
        ("restarts_detail", pa.list_(restart_type(d_emb))),
        ("stability", STABILITY_TYPE),
        ("centroid", CENTROID_TYPE),
        *PHRASE_COLUMNS,
        # what the neuron writes (the output side), best first; readout: how it was read out
        ("promotes_ids", pa.list_(i32)), ("promotes_tokens", pa.list_(pa.string())), ("promotes_logits", pa.list_(f32)),
        ("suppresses_ids", pa.list_(i32)), ("suppresses_tokens", pa.list_(pa.string())),
        ("suppresses_logits", pa.list_(f32)), ("readout", pa.string()),
        ("support", SUPPORT_TYPE),  # a dictionary feature's neuron support; null for a neuron
    ])


_SUPPORT_SIDE = pa.struct([("k90", pa.int32()), ("participation_ratio", pa.float64()),
                           ("top_units", pa.list_(pa.int32())), ("top_weights", pa.list_(pa.float32()))])
#: How many of the site's neurons a feature's encoder and decoder rows spread over
#: (:func:`neurotext.model.dictionary.neuron_support`).
SUPPORT_TYPE = pa.struct([("d", pa.int32()), ("encoder", _SUPPORT_SIDE), ("decoder", _SUPPORT_SIDE)])


# --------------------------------------------------------------------------- dictionaries of a store
def dictionaries_record(model, sites) -> list[dict]:
    """What a manifest records of the dictionaries whose features a run holds: one entry per (layer, site) in
    ``sites`` that is a feature site (``(3, "ffn.f")``)."""
    from ..model.names import is_feature_site

    keys = sorted({(layer, site) for layer, site in sites if is_feature_site(site)})
    return [model.dictionary(layer, site).describe() for layer, site in keys]


def comparable(value, key: str):
    """An identity entry of a manifest as compared on resume: a dictionary is the same by its weights, wherever
    it lies."""
    if key == "dictionaries" and value:
        return [{k: v for k, v in d.items() if k != "path"} for d in value]
    return value


def recorded_features(manifest: dict) -> dict:
    """{(layer, site): features} of the dictionaries a manifest records (for parsing ``L3.ffn.f12``)."""
    out = {}
    for d in manifest.get("dictionaries") or []:
        layer, _, site = d["site"][1:].partition(".")
        out[(int(layer), site)] = int(d["width"])
    return out


def attach_recorded(model, manifest: dict, paths=None) -> None:
    """Attach the dictionaries a manifest records to ``model`` (from ``paths``, the ``--dictionary`` values, when
    given; else from where they were), checked by their weight fingerprints."""
    recorded = manifest.get("dictionaries") or []
    if not recorded:
        return
    if paths:
        model.attach(paths)
    for d in recorded:
        layer, _, site = d["site"][1:].partition(".")
        key = (int(layer), site)
        if key not in model.dictionaries:
            if not d.get("path") or not Path(d["path"]).is_dir():
                raise NeurotextError(f"the dictionary on {d['site']} that the store records is gone from "
                                     f"{d.get('path')}: give it with --dictionary DIR")
            model.attach(d["path"])
        if model.dictionaries[key].fingerprint() != d["fingerprint"]:
            raise NeurotextError(f"the dictionary on {d['site']} at {model.dictionaries[key].path} is not the one the "
                                 "store was made with (other weights)")


# Columns added after the first stores were written; a store without them still opens (see missing_columns).
RESTART_COLUMNS = ("restarts_detail", "stability", "centroid")
STABILITY_COLUMNS = ("restarts_detail", "stability")  # what the stability measures need (centroid: optional)

STABILITY_TYPE = pa.struct([
    ("cosine", pa.float64()), ("jaccard_at_10", pa.float64()),
    ("consensus", pa.list_(pa.struct([("token", pa.string()), ("id", pa.int32()), ("support", pa.float64())]))),
    ("activation_spread", pa.float64()), ("restarts", pa.int32()),
])


CENTROID_TYPE = pa.struct([
    ("activation", pa.float64()), ("pre_activation", pa.float64()), ("nearest_ids", pa.list_(pa.int32())),
    ("nearest_tokens", pa.list_(pa.string())), ("nearest_cosines", pa.list_(pa.float32())), ("restarts", pa.int32()),
])


def restart_type(d_emb: int) -> pa.DataType:
    """One restart's optimum (an element of ``restarts_detail``, best first)."""
    return pa.struct([
        ("restart", pa.int32()), ("activation", pa.float64()), ("pre_activation", pa.float64()),
        ("nearest_ids", pa.list_(pa.int32())), ("nearest_tokens", pa.list_(pa.string())),
        ("nearest_cosines", pa.list_(pa.float32())),
        ("vector", pa.list_(pa.float32(), d_emb)),
    ])


def missing_columns(directory, needed=STABILITY_COLUMNS) -> list[str]:
    """The columns of ``needed`` that the store's shards lack (stores written before they existed)."""
    paths = shard_paths(directory)
    if not paths:
        return []
    have = set(pq.read_schema(paths[0]).names)
    return [c for c in needed if c not in have]


def old_store_hint(directory, what: str) -> str:
    """The one-line message for a store without the per-restart columns."""
    return (f"{directory} was written before per-restart results were stored (no restarts_detail/stability "
            f"columns), so {what} is not available; recompute with neurotext sweep ... --force")


#: Best real phrases (``sweep --phrases``); null when the sweep ran without them. Lists run over the
#: lengths, shortest first; ``phrase_token_activation`` is the best allowed single token's activation.
PHRASE_COLUMNS = [
    ("phrase_lengths", pa.list_(pa.int32())), ("phrase_texts", pa.list_(pa.string())),
    ("phrase_tokens", pa.list_(pa.list_(pa.string()))), ("phrase_ids", pa.list_(pa.list_(pa.int32()))),
    ("phrase_activations", pa.list_(pa.float64())), ("phrase_positions", pa.list_(pa.int32())),
    ("phrase_curves", pa.list_(pa.list_(pa.float32()))),
    ("best_phrase", pa.string()), ("best_phrase_activation", pa.float64()), ("best_phrase_length", pa.int32()),
    ("phrase_token_activation", pa.float64()),
]


def _phrase_fields(p) -> dict:
    """A PhraseResult (or None) -> the values of :data:`PHRASE_COLUMNS`."""
    row = {} if p is None else p.to_row()
    return {name: row.get(name) for name, _ in PHRASE_COLUMNS}


def row_to_phrases(row: dict, model: str, token_kind: str = "", model_type: str = ""):
    """A store row (dict) -> PhraseResult, or None when the sweep ran without phrases. ``token_kind`` and
    ``model_type``: the store's (:func:`token_kind`, the manifest's ``model.model_type``), for display."""
    if not row.get("phrase_lengths"):
        return None
    from ..phrases import PhraseResult

    curves = row.get("phrase_curves") or [[]] * len(row["phrase_lengths"])
    phrases = [{"length": n, "tokens": [{"token": t, "id": i} for t, i in zip(toks, ids)], "text": text,
                "activation": a, "position": pos, "curve": list(curve or [])}
               for n, text, toks, ids, a, pos, curve in zip(
                   row["phrase_lengths"], row["phrase_texts"], row["phrase_tokens"], row["phrase_ids"],
                   row["phrase_activations"], row["phrase_positions"], curves)]
    best = max(phrases, key=lambda d: d["activation"])
    return PhraseResult(neuron=row["neuron"], model=model, phrases=phrases,
                        best_phrase={k: v for k, v in best.items() if k != "curve"},
                        best_token_activation=row["phrase_token_activation"], ft_activation=row["activation"],
                        seed=row["seed"], token_kind=token_kind, model_type=model_type)


def results_to_table(results, d_emb: int, phrases: dict | None = None) -> pa.Table:
    """NeuronResults (and optionally their PhraseResults, by neuron name) -> Arrow table with :func:`schema`."""
    phrases = phrases or {}
    rows = [{**r.to_row(), **_phrase_fields(phrases.get(r.neuron))} for r in results]
    return pa.Table.from_pylist(rows, schema=schema(d_emb))


def _side_of(row: dict, name: str) -> list[dict]:
    """promotes / suppresses ({token, id, logit} dicts) from the store's three list columns; empty for stores
    written before these columns existed."""
    return [{"token": t, "id": i, "logit": v}
            for t, i, v in zip(row.get(f"{name}_tokens") or [], row.get(f"{name}_ids") or [],
                               row.get(f"{name}_logits") or [])]


def row_to_result(row: dict, model: str, token_kind: str = "", model_type: str = ""):
    """A store row (dict) -> NeuronResult, for ``show``. ``token_kind`` and ``model_type``: the store's
    (:func:`token_kind`, the manifest's ``model.model_type``), for display."""
    from ..textualize import NeuronResult

    return NeuronResult(
        neuron=row["neuron"], model=model, activation=row["activation"], pre_activation=row["pre_activation"],
        vector=np.asarray(row["vector"], dtype=np.float32),
        nearest=[{"token": t, "id": i, "cosine": c}
                 for t, i, c in zip(row["nearest_tokens"], row["nearest_ids"], row["nearest_cosines"])],
        nearest_activation=row["nearest_activation"], retention=row["retention"],
        best_tokens=[{"token": t, "id": i, "activation": a}
                     for t, i, a in zip(row["best_tokens"], row["best_ids"], row["best_activations"])],
        overlap_at_10=row["overlap_at_10"], steps=row["steps"], seconds=row["seconds"], seed=row["seed"],
        restarts=row["restarts"], curve=list(row["curve"] or []),
        restarts_detail=[{
            "restart": d["restart"], "activation": d["activation"], "pre_activation": d["pre_activation"],
            "nearest": [{"token": t, "id": i, "cosine": c}
                        for t, i, c in zip(d["nearest_tokens"], d["nearest_ids"], d["nearest_cosines"])],
            "vector": np.asarray(d["vector"], dtype=np.float32),
        } for d in (row.get("restarts_detail") or [])],
        stability=row.get("stability"),
        centroid=_centroid_of(row.get("centroid")),
        promotes=_side_of(row, "promotes"), suppresses=_side_of(row, "suppresses"), readout=row.get("readout") or "",
        token_kind=token_kind, model_type=model_type, support=row.get("support"),
    )


def _centroid_of(c: dict | None) -> dict | None:
    if c is None:
        return None
    return {"activation": c["activation"], "pre_activation": c["pre_activation"], "restarts": c["restarts"],
            "nearest": [{"token": t, "id": i, "cosine": v}
                        for t, i, v in zip(c["nearest_tokens"], c["nearest_ids"], c["nearest_cosines"])]}


def token_kind(directory) -> str:
    """How the store's tokens are shown (:data:`neurotext.model.tokens.KINDS`): the manifest's
    ``vocabulary.kind``, or for a store written before it was recorded, the kind its token strings show."""
    manifest = read_manifest(directory)
    if (manifest.get("vocabulary") or {}).get("kind"):
        return manifest_kind(manifest)
    table = read_table(directory, columns=["nearest_tokens", "best_tokens"])
    return manifest_kind(manifest, (t for col in table.columns for lst in col.to_pylist() for t in lst or []))


def write_shard(directory: Path, name: str, table: pa.Table) -> Path:
    """Write atomically: temporary file, fsync, rename. Returns the final path."""
    final = Path(directory) / SHARDS / name
    final.parent.mkdir(parents=True, exist_ok=True)
    return write_parquet(final, table)


def write_parquet(final: Path, table: pa.Table) -> Path:
    """Write a Parquet file atomically (temporary file, fsync, rename): a reader sees the old file or the new."""
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def shard_is_complete(path: Path, expected_rows: int) -> bool:
    """A shard counts only if its Parquet footer reads and it holds the expected number of rows."""
    try:
        return pq.ParquetFile(path).metadata.num_rows == expected_rows
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a complete shard
        return False


def read_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise NeurotextError(f"{directory}: no such store directory")
    if not path.is_file():
        raise NeurotextError(f"{directory} is not a neurotext store (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise NeurotextError(f"{path} is corrupt: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise NeurotextError(f"{path} is not a {FORMAT} manifest")
    return manifest


def write_manifest(directory, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def shard_paths(directory) -> list[Path]:
    d = Path(directory) / SHARDS
    return sorted(p for p in d.glob("*.parquet") if SHARD_RE.match(p.name)) if d.is_dir() else []


def read_table(directory, columns=None) -> pa.Table:
    """Every complete shard of a store as one Arrow table (sorted by layer, site, unit)."""
    read_manifest(directory)
    paths = shard_paths(directory)
    if not paths:
        raise NeurotextError(f"{directory}: the store has no shards yet (run neurotext sweep)")
    tables = []
    for p in paths:
        try:
            tables.append(pq.read_table(p, columns=columns))
        except Exception as e:  # noqa: BLE001
            raise NeurotextError(f"{p} is unreadable ({e}); rerun the sweep to recompute it") from e
    table = pa.concat_tables(tables, promote_options="default")  # shards written before a column was added
    if columns is None or {"layer", "site", "unit"} <= set(columns):
        table = table.sort_by([("layer", "ascending"), ("site", "ascending"), ("unit", "ascending")])
    return table


def find_neuron(directory, spec: str) -> dict:
    """The store row of one neuron (validated against the store's model), as a dict."""
    import pyarrow.compute as pc

    from ..model.names import parse_neurons

    manifest = read_manifest(directory)
    model = manifest["model"]
    neurons = parse_neurons(spec, model["n_layers"], model["sizes"], model["name"], recorded_features(manifest))
    if len(neurons) != 1:
        raise NeurotextError(f"{spec!r} names {len(neurons)} neurons; show takes exactly one")
    n = neurons[0]
    for p in shard_paths(directory):
        layer, site, lo, hi = SHARD_RE.match(p.name).groups()
        if (int(layer), site) == (n.layer, n.site) and int(lo) <= n.unit <= int(hi):
            try:
                table = pq.read_table(p)
            except Exception as e:  # noqa: BLE001
                raise NeurotextError(f"{p} is unreadable ({e}); rerun the sweep to recompute it") from e
            rows = table.filter(pc.equal(table["neuron"], n.name)).to_pylist()
            if rows:
                return rows[0]
    raise NeurotextError(f"{n.name} is not in the store {directory} (not swept yet?)")
