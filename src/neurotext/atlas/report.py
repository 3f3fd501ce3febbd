"""Neuron atlas: a self-contained static HTML site built from a store (DESIGN.md section 5).

Layout of a site::

    index.html              model, sweep config, Q1 plots and table, Q2 plot, corpus, searchable neuron table
    assets/atlas.css, atlas.js
    data/neurons.js         the neuron table's rows, loaded asynchronously by atlas.js
    plots/q1.png, q2.png
    plots/corpus_*.png      with a sweep and corpus examples: the read-out scores per layer (Which reading predicts
                            real text?), the token identity share and optimization over the corpus max
    neurons/L3.ffn.42.html  one page per neuron (no script): its card and, when the store holds corpus examples
                            (``DIR/examples``), its real text and each read-out's scores beside chance
    neurons/L3.ffn.f12.html one page per dictionary feature, the same page plus what its decoder direction writes
                            and its neuron support (linked to the pages of the neurons that carry it)
    q2.html                 with probe results (``neurotext probe --out``): Q2 on real text, per word its curves
                            and numbers per layer and site, FT's recovery beside them (no script)
    atlas.json              marks the folder as an atlas; records what it was built from

A folder of probe results alone (``probe.json``, or ``probe/probe.json``) builds an atlas too: the index's Q2 section
and the Q2 page, no neuron pages.

Nothing in a site refers to the network; it works from the folder (``file://``) or from ``neurotext serve``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np

from .. import __version__, store
from ..analysis import plots, reproducible
from ..analysis import scores as analysis_scores
from ..analysis.encode import SELECTIONS
from ..analysis.words import WordsConfig, word_like
from ..errors import NeurotextError
from ..files import replace_dir
from ..model.names import base_site, is_feature_site, unit_name
from ..model.tokens import display_tokens, manifest_kind
from ..store import examples as ex_store
from . import pages, probes, readouts, realtext
from .realtext import is_canonical

# Filenames of a site live here and nowhere else.
MARKER = "atlas.json"
FORMAT = "neurotext-atlas/1"
ASSETS = "assets"
ASSET_FILES = ("card.css", "atlas.css", "atlas.js")
DATA = "data/neurons.js"
NEURONS = "neurons"
Q1_PLOT = "plots/q1.png"
Q2_PLOT = "plots/q2.png"
STABILITY_PLOT = "plots/stability.png"
#: The real-text figures (a store with a sweep and corpus examples): one per score, the token identity share and
#: optimization over the corpus maximum.
CORPUS_PLOTS = {"correlation": "plots/corpus_correlation.png", "detection_auroc": "plots/corpus_detection_auroc.png",
                "token_identity": "plots/corpus_token_identity.png", "optimization": "plots/corpus_over_max.png"}
ENCODE = "encode.json"  # written by ``neurotext encode --out OUT`` (Q2)
Q2_PAGE = "q2.html"  # Q2 on real text, from ``neurotext probe --out OUT`` (its probe.json)

#: Store columns the atlas reads (everything but the FT vectors).
COLUMNS = ["neuron", "layer", "site", "unit", "activation", "pre_activation", "nearest_token", "nearest_cosine",
           "nearest_ids", "nearest_tokens", "nearest_cosines", "nearest_activation", "retention", "best_token",
           "best_activation", "best_ids", "best_tokens", "best_activations", "overlap_at_10", "steps", "restarts",
           "seconds", "seed", "curve"]
#: The output side (what a neuron writes), read when the store has it (stores before it lack these columns).
WRITE_COLUMNS = ["promotes_tokens", "promotes_ids", "promotes_logits", "suppresses_tokens", "suppresses_ids",
                 "suppresses_logits", "readout"]
#: A dictionary feature's neuron support (stores before features lack it; null for a neuron).
SUPPORT_COLUMN = "support"
#: Columns of each row in ``data/neurons.js`` (atlas.js reads them by these names).
DATA_COLUMNS = ["neuron", "layer", "site", "unit", "activation", "best_activation", "nearest_cosine", "retention",
                "overlap_at_10", "nearest_tokens", "best_tokens", "stability_jaccard", "stability_cosine",
                "reproducible", "consensus_tokens", "phrase_activation", "phrase_tokens"]
#: Per-restart store columns (absent in stores written before they existed; the atlas then says so).
RESTART_FIELDS = ("restart", "activation", "nearest_tokens", "nearest_ids", "nearest_cosines")
#: Store columns of the best real phrases, read when the sweep stored them (``sweep --phrases``).
PHRASE_COLUMNS = ["phrase_lengths", "phrase_texts", "phrase_tokens", "phrase_ids", "phrase_activations",
                  "phrase_positions", "best_phrase", "best_phrase_activation", "best_phrase_length",
                  "phrase_token_activation"]

#: The Q1 word-like criterion, with the defaults of ``neurotext words`` (one definition, in words.py).
_WORDS = WordsConfig()
WORD_LIKE_RULE = (f"word-like: retention >= {_WORDS.min_retention} and the FT vector's nearest token is among the "
                  f"{_WORDS.best_k} best real tokens of the vocabulary scan")
REPRODUCIBLE_RULE = (
    "reproducible: at least two restarts reached within the stability tolerance of the best activation, a token is "
    "in the top-10 of at least half of them, and their mean pairwise Jaccard@10 exceeds the 95th percentile of the "
    "chance baseline (the same measure over optima of different neurons of the layer and site)")


# --------------------------------------------------------------------------- inputs
def read_rows(store_dir) -> tuple[dict, list[dict]]:
    """The store's manifest and its rows (without vectors), every neuron name checked to be canonical
    (a name becomes a filename in the site)."""
    manifest = store.read_manifest(store_dir)
    import pyarrow.parquet as pq

    shards = store.shard_paths(store_dir)
    have = set(pq.read_schema(shards[0]).names) if shards else set()
    has_restarts = not store.missing_columns(store_dir)
    table = store.read_table(store_dir, columns=COLUMNS + (["stability"] if has_restarts else [])
                             + (["centroid"] if "centroid" in have else [])
                             + (PHRASE_COLUMNS if "phrases" in manifest else [])
                             + [c for c in WRITE_COLUMNS + [SUPPORT_COLUMN] if c in have])
    if has_restarts:
        table = table.append_column("restarts_detail", _restarts_without_vectors(store_dir))
    rows = table.to_pylist()
    for r in rows:
        if not is_canonical(r["neuron"], r["layer"], r["site"], r["unit"]):
            raise NeurotextError(f"{store_dir}: the store holds a malformed neuron name {r['neuron']!r}")
    return manifest, rows


def dictionaries(*manifests) -> list[dict]:
    """The dictionaries the manifests record (a sweep's and its corpus examples'), each once (by site and weight
    fingerprint), in site order."""
    seen: dict[tuple, dict] = {}
    for m in manifests:
        for d in (m or {}).get("dictionaries") or []:
            seen.setdefault((d.get("site"), d.get("fingerprint")), d)
    return [seen[k] for k in sorted(seen, key=lambda k: (str(k[0]), str(k[1])))]


def add_support(entries: list[dict], recorded: list[dict], log=print) -> None:
    """Give the features among ``entries`` that have no neuron support (those with corpus examples only: the
    support is kept in sweep rows) the support of their dictionary, when it is still where the manifest recorded
    it with the same weights; otherwise their pages go without it (with a message)."""
    need: dict[tuple[int, str], list[dict]] = {}
    for r in entries:
        if is_feature_site(r["site"]) and not r.get(SUPPORT_COLUMN):
            need.setdefault((r["layer"], r["site"]), []).append(r)
    if not need:
        return
    from ..model.dictionary import load_dictionary, neuron_support

    by_site = {d.get("site"): d for d in recorded}
    for (layer, site), rs in sorted(need.items()):
        d = by_site.get(f"L{layer}.{base_site(site)}")
        try:
            if d is None or not d.get("path") or not Path(d["path"]).is_dir():
                raise NeurotextError("not where the store recorded it")
            dic = load_dictionary(d["path"])
            if dic.fingerprint() != d.get("fingerprint"):
                raise NeurotextError(f"{d['path']} holds other weights now")
            for r, sup in zip(rs, neuron_support(dic, [r["unit"] for r in rs])):
                r[SUPPORT_COLUMN] = sup
        except (NeurotextError, OSError, ValueError, RuntimeError) as e:
            log(f"neurotext: the neuron support of {len(rs)} features of L{layer}.{base_site(site)} is not shown: "
                f"their dictionary is {e}")


def _restarts_without_vectors(store_dir):
    """The ``restarts_detail`` column with each restart's vector dropped (the pages show tokens only), in the
    row order of :func:`store.read_table`, without converting the vectors to Python objects."""
    import pyarrow as pa

    col = store.read_table(store_dir, columns=["layer", "site", "unit", "restarts_detail"]).column(
        "restarts_detail").combine_chunks()
    inner = col.values  # StructArray of every restart
    slim = pa.StructArray.from_arrays([inner.field(f) for f in RESTART_FIELDS], names=list(RESTART_FIELDS))
    return pa.ListArray.from_arrays(col.offsets, slim, mask=col.is_null())


def stability_groups(store_dir, manifest: dict) -> list[dict] | None:
    """Q1's stability arm on the store (restarts vs the chance baseline), None for a store without it."""
    if store.missing_columns(store_dir):
        return None
    table = store.read_table(store_dir, columns=list(reproducible.COLUMNS))
    return reproducible.analyze(table, int(manifest.get("config", {}).get("seed", 0)))


def find_encode(store_dir, encode=None) -> Path | None:
    """Where the Q2 results are: ``encode`` (a file, or a folder holding encode.json) when given, else
    ``DIR/encode/encode.json`` or ``DIR/encode.json`` when present, else None."""
    if encode is not None:
        p = Path(encode)
        p = p / ENCODE if p.is_dir() else p
        if not p.is_file():
            raise NeurotextError(f"--encode {encode}: no such file (expected the {ENCODE} of neurotext encode --out)")
        return p
    for p in (Path(store_dir) / "encode" / ENCODE, Path(store_dir) / ENCODE):
        if p.is_file():
            return p
    return None


def read_encode(path: Path) -> dict:
    """Load and check the Q2 document of ``neurotext encode``; bad content is a NeurotextError."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NeurotextError(f"{path}: unreadable Q2 results ({e})") from e
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        raise NeurotextError(f"{path}: not a neurotext encode result (no 'results' list)")
    for r in results:
        ok = (isinstance(r, dict) and isinstance(r.get("layer"), int) and r.get("select") in SELECTIONS
              and isinstance(r.get("k"), int) and r["k"] > 0 and isinstance(r.get("top1"), (int, float))
              and isinstance(r.get("top10", 0), (int, float)))
        if not ok:
            raise NeurotextError(f"{path}: malformed Q2 result {json.dumps(r)[:120]} (needs layer, select "
                                 f"{'|'.join(SELECTIONS)}, k > 0, top1, top10)")
    return doc


# --------------------------------------------------------------------------- statistics
def _finite(values) -> np.ndarray:
    a = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return a[np.isfinite(a)]


def act_ratio(row: dict) -> float | None:
    """FT activation / best real-token activation (None unless both are positive)."""
    a, b = row["activation"], row["best_activation"]
    return a / b if a is not None and b is not None and a > 0 and b > 0 else None


def is_word_like(row: dict) -> bool:
    """See :data:`WORD_LIKE_RULE`."""
    near = row["nearest_ids"] or []
    return bool(near) and word_like(row["retention"], near[0], row["best_ids"] or [], _WORDS, _WORDS.best_k)


def q1_columns(rows: list[dict]) -> dict[str, dict[tuple[int, str], np.ndarray]]:
    """Per Q1 statistic, the finite values of each (layer, site)."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["layer"], r["site"]), []).append(r)
    out = {k: {} for k in ("nearest_cosine", "retention", "overlap_at_10", "act_ratio")}
    for key, rs in groups.items():
        for col in ("nearest_cosine", "retention", "overlap_at_10"):
            out[col][key] = _finite(r[col] for r in rs)
        out["act_ratio"][key] = _finite(act_ratio(r) for r in rs)
    return out


def layer_stats(rows: list[dict]) -> list[dict]:
    """Per (layer, site): neuron count, medians of the Q1 statistics (mean for overlap) and word-like share."""
    cols = q1_columns(rows)
    counts: dict[tuple[int, str], list[int]] = {}
    for r in rows:
        c = counts.setdefault((r["layer"], r["site"]), [0, 0])
        c[0] += 1
        c[1] += is_word_like(r)

    def stat(fn, a):
        return float(fn(a)) if len(a) else None

    return [{"layer": layer, "site": site, "n": n, "word_like_n": w, "word_like": w / n,
             "nearest_cosine": stat(np.median, cols["nearest_cosine"][(layer, site)]),
             "retention": stat(np.median, cols["retention"][(layer, site)]),
             "overlap_at_10": stat(np.mean, cols["overlap_at_10"][(layer, site)]),
             "act_ratio": stat(np.median, cols["act_ratio"][(layer, site)])}
            for (layer, site), (n, w) in sorted(counts.items())]


# --------------------------------------------------------------------------- building
def _num(v, digits: int = 5):
    if v is None or not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def store_token_kind(manifest: dict, rows: list[dict]) -> str:
    """How the store's tokens are shown: its manifest's vocabulary kind, or for a store written before the
    kind was recorded, the kind its token strings show (:func:`neurotext.model.tokens.detect_kind`)."""
    return manifest_kind(manifest, (t for r in rows for key in ("nearest_tokens", "best_tokens", "promotes_tokens",
                                                                 "suppresses_tokens") for t in r.get(key) or []))


def _best_phrase_tokens(row: dict) -> list[str]:
    """Tokens of the row's best real phrase (empty without phrases)."""
    acts = row.get("phrase_activations") or []
    if not acts:
        return []
    return list(row["phrase_tokens"][max(range(len(acts)), key=acts.__getitem__)])


def data_script(rows: list[dict], token_kind: str = "plain", corpus: dict[str, list] | None = None,
                scores: dict[str, list] | None = None) -> str:
    """``data/neurons.js``: one assignment of a compact, script-safe JSON document (columns + row arrays).
    Tokens are their shown text (:func:`neurotext.model.tokens.display_token` for ``token_kind``).

    Args:
        rows: store rows; a neuron with corpus examples only is ``{"neuron", "layer", "site", "unit"}``.
        corpus: when the store holds corpus examples, each neuron's :data:`realtext.DATA_COLUMNS` values
            (:func:`realtext.summary`); those columns are added.
        scores: when the read-outs were scored on real text, each neuron's :data:`readouts.DATA_COLUMNS` values
            (:func:`readouts.summary`); those columns are added.
    """
    def stab(r, key):
        st = r.get("stability")
        return _num(st[key], 3) if st and st.get(key) is not None else None

    def shown(tokens):
        return display_tokens(tokens or [], token_kind)

    def ft(r):
        return [_num(r.get("activation")), _num(r.get("best_activation")), _num(r.get("nearest_cosine"), 4),
                _num(r.get("retention"), 4), _num(r.get("overlap_at_10"), 3), shown(r.get("nearest_tokens")),
                shown(r.get("best_tokens")), stab(r, "jaccard_at_10"), stab(r, "cosine"), r.get("reproducible"),
                shown(c["token"] for c in (r.get("stability") or {}).get("consensus") or []),
                _num(r.get("best_phrase_activation")), shown(_best_phrase_tokens(r))]

    extra, no_score = [None] * len(realtext.DATA_COLUMNS), readouts.summary(None)
    data = {"columns": DATA_COLUMNS + (realtext.DATA_COLUMNS if corpus is not None else [])
            + (readouts.DATA_COLUMNS if scores is not None else []), "rows": [
        [r["neuron"], r["layer"], r["site"], r["unit"], *ft(r)]
        + ((corpus.get(r["neuron"]) or extra) if corpus is not None else [])
        + ((scores.get(r["neuron"]) or no_score) if scores is not None else []) for r in rows]}
    return f"window.NEUROTEXT_ATLAS = {pages.script_json(data)};\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # errors="replace": a token with a lone surrogate must not stop the build
    path.write_text(text, encoding="utf-8", errors="replace")


def source_signature(store_dir, encode_path: Path | None, probe_path: Path | None = None) -> str:
    """Changes whenever the store's manifest or shards, its corpus examples, the Q2 results (encode's, the probe's)
    or neurotext's version change."""
    h = hashlib.blake2b(digest_size=16)
    h.update(__version__.encode())
    d = Path(store_dir)
    sweep = [d / store.MANIFEST, *store.shard_paths(d)] if (d / store.MANIFEST).is_file() else []
    examples = [ex_store.examples_dir(d) / ex_store.MANIFEST, *ex_store.shard_paths(d)] \
        if ex_store.has_examples(d) else []
    for p in sweep + examples + ([encode_path] if encode_path else []) + ([probe_path] if probe_path else []):
        st = p.stat()
        h.update(f"{p.parent.name}/{p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def is_atlas(path) -> bool:
    return (Path(path) / MARKER).is_file() and (Path(path) / "index.html").is_file()


def read_marker(path) -> dict:
    try:
        return json.loads((Path(path) / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NeurotextError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise NeurotextError(f"{out} is not empty and not a neurotext atlas; choose an empty or new --out")


def build_report(store_dir, out, encode=None, probe=None, log=print) -> dict:
    """Build the atlas of the store ``store_dir`` into ``out`` (replacing an earlier atlas there).

    The site is written to a temporary sibling folder and moved into place when complete. A store may hold
    a sweep, corpus examples (``DIR/examples``) or both: a neuron's page shows what the store holds of it. With
    both, every read-out of every neuron is scored on held-out corpus text once (:func:`readouts.compute`).
    Probe results (Q2 on real text) add the Q2 page; a folder of probe results alone gives the index's Q2 section
    and that page.

    Args:
        store_dir: a sweep store (``neurotext sweep --out``), corpus examples (``neurotext examples --out``)
            or both in one folder.
        out: site folder; must be new, empty or an earlier atlas.
        encode: Q2 results (``encode.json`` or its folder); default ``DIR/encode/encode.json`` or
            ``DIR/encode.json`` when present.
        probe: Q2 on real text (``probe.json`` of ``neurotext probe --out`` or its folder); default
            ``DIR/probe/probe.json`` or ``DIR/probe.json`` when present.
        log: progress messages.

    Returns:
        {"index": path of index.html, "neurons": count, "q2": whether a Q2 plot was drawn, "probe": path of the Q2
        page on real text or None, "examples": whether pages show real text, "scores": whether the read-outs were
        scored on it, "seconds": wall time}.
    """
    t0 = time.perf_counter()
    out, store_dir = Path(out), Path(store_dir)
    _check_out(out)
    if not store_dir.is_dir():
        raise NeurotextError(f"{store_dir}: no such store directory")
    probe_path = probes.find_probe(store_dir, probe)
    probe_records = probes.read_probe(probe_path) if probe_path else None
    has_sweep = (store_dir / store.MANIFEST).is_file() or not (ex_store.has_examples(store_dir) or probe_path)
    if has_sweep:
        manifest, rows = read_rows(store_dir)  # names the problem when there is no store at all
    else:
        manifest, rows = None, []
    ex_manifest = realtext.complete_manifest(store_dir, log, required=not has_sweep and probe_path is None)
    stab = stability_groups(store_dir, manifest) if has_sweep else None
    repro = {n: flag for g in stab or [] for n, flag in zip(g["neurons"], g["reproducible"])}
    for r in rows:
        r["reproducible"] = repro.get(r["neuron"]) if stab is not None else None
    encode_path = find_encode(store_dir, encode)
    q2_doc = read_encode(encode_path) if encode_path else None
    model = (manifest or ex_manifest or {}).get("model", {})
    model_name = model.get("name") or (probes.probe_model(probe_records) if probe_records else None) or "?"
    if q2_doc and q2_doc.get("model") not in (None, model_name):
        log(f"neurotext: warning: {encode_path} is for model {q2_doc.get('model')!r}, the store for {model_name!r}")
    if probe_records and probes.probe_model(probe_records) not in (None, model_name):
        log(f"neurotext: warning: {probe_path} is for model {probes.probe_model(probe_records)!r}, the store for "
            f"{model_name!r}")
    swept = {r["neuron"]: r for r in rows}
    seed = int((manifest or {}).get("config", {}).get("seed", 0))
    score = readouts.compute(store_dir, seed, log) if has_sweep and ex_manifest is not None else None
    scored = score is not None and score.arm is not None
    only_examples = [r for r in realtext.neurons(store_dir, log) if r["neuron"] not in swept] if ex_manifest else []
    entries = rows + only_examples  # every neuron with a page: the sweep's, then those with real text only
    recorded = dictionaries(manifest, ex_manifest)
    add_support(only_examples, recorded, log)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name in ASSET_FILES:
            _write(tmp / ASSETS / name, resources.files("neurotext.atlas").joinpath(ASSETS, name).read_text("utf-8"))
        kind = store_token_kind(manifest, rows) if has_sweep else realtext.token_kind(store_dir, ex_manifest) \
            if ex_manifest is not None else manifest_kind({}, probes.token_strings(probe_records or []))
        stab_summary, q1_plot = None, None
        if has_sweep:
            (tmp / Q1_PLOT).parent.mkdir(parents=True, exist_ok=True)
            plots.q1_figure(q1_columns(rows), tmp / Q1_PLOT)
            q1_plot = Q1_PLOT if rows else None
        if stab:
            plots.stability_figure(stab, f"{model_name}: how reproducible is a textualization? restarts of one "
                                   "neuron vs optima of different neurons (chance)", tmp / STABILITY_PLOT)
            stab_summary = {"plot": STABILITY_PLOT, "rule": REPRODUCIBLE_RULE, "groups": [
                {"layer": g["layer"], "site": g["site"], **reproducible.summarize(g)} for g in stab]}
        q2 = None
        if q2_doc and q2_doc["results"]:
            (tmp / Q2_PLOT).parent.mkdir(parents=True, exist_ok=True)
            plots.q2_figure(q2_doc["results"], tmp / Q2_PLOT, q2_doc.get("site"))
            q2 = {"plot": Q2_PLOT, "source": str(encode_path), "words": _count(q2_doc.get("words")),
                  "skipped": _count(q2_doc.get("skipped")),
                  **{k: q2_doc.get(k) for k in ("model", "site", "objective")}}
        names = {r["neuron"] for r in entries}

        def unit_href(name, prefix=""):  # a unit with a page in the atlas: its URL
            return f"{prefix}{name}.html" if name in names else None

        probe_info = None
        if probe_records is not None:
            fts = probes.ft_results(q2_doc if probes.same_model(probe_records, q2_doc) else None)
            probe_info = probes.index_info(probe_records, probe_path, fts, Q2_PAGE)
            _write(tmp / Q2_PAGE, pages.q2_page(probe_records, probe_path, encode=q2_doc, encode_source=encode_path,
                                                token_kind=kind,
                                                unit_href=lambda n: unit_href(n, f"{NEURONS}/")))
        real_text = None
        if score is not None:
            doc = score.arm.to_dict() if scored else None
            real_text = {"doc": doc, "note": score.note, "seed": score.seed,
                         "plots": readouts.write_plots(doc, model_name, tmp, dict(CORPUS_PLOTS)) if scored else None}
        _write(tmp / "index.html", pages.index_page(manifest, layer_stats(rows), len(entries), q1_plot, q2,
                                                    WORD_LIKE_RULE, stab_summary, token_kind=kind,
                                                    examples=ex_manifest, scores=real_text,
                                                    n_features=sum(is_feature_site(r["site"]) for r in entries),
                                                    dictionaries=recorded, probe=probe_info))
        (tmp / NEURONS).mkdir()

        phrases = has_sweep and "phrases" in manifest

        def page(r, ex):
            prev_name, next_name = (unit_name(r["layer"], r["site"], r["unit"] + d) for d in (-1, 1))
            rec = score.record(r["neuron"]) if scored and ex is not None else None
            tokens = analysis_scores.readout_tokens(r if r["neuron"] in swept else None,
                                                    (ex.token_stats or {}).get("lookup"), phrases) if rec else None
            html = pages.neuron_page(r, model_name, prev_name if prev_name in names else None,
                                     next_name if next_name in names else None, model_type=model.get("model_type"),
                                     token_kind=kind, examples=ex, corpus=ex_manifest is not None, sweep=has_sweep,
                                     scores=rec, readout_tokens=tokens, unit_href=unit_href)
            _write(tmp / NEURONS / f"{r['neuron']}.html", html)

        corpus: dict[str, list] = {}
        token_stats: dict[str, dict | None] = {}  # the token identity of every neuron with examples
        if ex_manifest is not None:
            stubs = {r["neuron"]: r for r in only_examples}
            for ex in realtext.iter_examples(store_dir, ex_manifest):  # a batch of rows at a time
                corpus[ex.neuron] = realtext.summary(ex, kind)
                token_stats[ex.neuron] = ex.token_stats
                page(swept.get(ex.neuron) or stubs[ex.neuron], ex)
        for r in rows:
            if r["neuron"] not in corpus:
                page(r, None)
        per_neuron = {n: readouts.summary(score.record(n), token_stats.get(n)) for n in names} if scored else None
        _write(tmp / DATA, data_script(entries, kind, corpus if ex_manifest is not None else None, per_neuron))
        marker = {"format": FORMAT, "neurotext_version": __version__, "store": str(store_dir.resolve()),
                  "encode": str(encode_path) if encode_path else None,
                  "probe": str(probe_path) if probe_path else None, "neurons": len(entries),
                  "sweep": has_sweep, "examples": ex_manifest is not None, "scores": scored,
                  "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "source_signature": source_signature(store_dir, encode_path, probe_path)}
        _write(tmp / MARKER, json.dumps(marker, indent=2))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    what = " with their real text and read-out scores" if scored else \
        " with their real text" if ex_manifest is not None and has_sweep else \
        " (real text only: no sweep)" if not has_sweep and ex_manifest is not None else ""
    n_features = sum(is_feature_site(r["site"]) for r in entries)
    units = f"{len(entries)} units ({n_features} dictionary features)" if n_features else f"{len(entries)} neurons"
    if probe_info is not None:
        q2_text = f"the Q2 page on real text ({probe_info['words']} words)"
        units = q2_text if not entries and not has_sweep else f"{units} and {q2_text}"
    log(f"neurotext: atlas of {units}{what} written to {out} in {seconds:.1f} s "
        f"(open {out / 'index.html'}, or: neurotext serve {out})")
    return {"index": out / "index.html", "neurons": len(entries), "q2": q2 is not None,
            "probe": out / Q2_PAGE if probe_info is not None else None, "examples": ex_manifest is not None,
            "scores": scored, "seconds": seconds}


def _count(v):
    return len(v) if isinstance(v, (list, dict)) else v


