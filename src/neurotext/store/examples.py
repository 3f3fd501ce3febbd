"""Corpus examples on disk: ``DIR/examples/`` beside (or without) a sweep store, resumable, local or on Ray.

Layout::

    DIR/examples/manifest.json        model, corpus (source, content fingerprint, counts), settings, neurons
    DIR/examples/checkpoint.pt        the running pass (state, kept contexts, position); removed when complete
    DIR/examples/L3.ffn.parquet       one row per neuron of a (layer, site), written when the pass is complete

The checkpoint is written atomically every ``checkpoint_seconds`` and after the last chunk, so a pass killed
at any point (SIGKILL included) resumes from its last checkpoint with the same batches, and ends identical
to an uninterrupted pass. A directory that also holds a sweep (``neurotext sweep --out DIR``) must have been
swept with the same model weights; ``show``, ``query``, ``report`` and ``words`` then join both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .. import __version__
from ..errors import NeurotextError
from ..model.devices import describe
from . import layout
from .lock import StoreLock

# Filenames and schema live here and nowhere else.
EXAMPLES = "examples"
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint.pt"
FORMAT = "neurotext-examples/1"
SHARD_RE = re.compile(r"^L(\d+)\.(\w+(?:\.f)?)\.parquet$")
PART_LISTS = ("top_train", "top_test", "random_train", "random_test")


def examples_dir(directory) -> Path:
    return Path(directory) / EXAMPLES


def has_examples(directory) -> bool:
    return (examples_dir(directory) / MANIFEST).is_file()


# --------------------------------------------------------------------------- schema
CONTEXTS = "contexts.parquet"


def schema() -> pa.Schema:
    """One row per neuron (see :func:`neurotext.examples.results_schema`); examples refer to ``contexts.parquet``."""
    from ..examples import results_schema

    return results_schema()


# --------------------------------------------------------------------------- reading
def read_manifest(directory) -> dict:
    path = examples_dir(directory) / MANIFEST
    if not path.is_file():
        raise NeurotextError(f"{directory} holds no corpus examples (run neurotext examples NEURONS --out "
                             f"{directory})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise NeurotextError(f"{path} is corrupt: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise NeurotextError(f"{path} is not a {FORMAT} manifest: the examples were written by another version "
                             "of neurotext (before the train/test split); recompute them with neurotext examples "
                             "... --force")
    return manifest


def shard_paths(directory) -> list[Path]:
    d = examples_dir(directory)
    return sorted(p for p in d.glob("*.parquet") if SHARD_RE.match(p.name)) if d.is_dir() else []


def _read(path: Path, **kw) -> pa.Table:
    try:
        return pq.read_table(path, **kw)
    except Exception as e:  # noqa: BLE001
        raise NeurotextError(f"{path} is unreadable ({e}); recompute with neurotext examples ... --force") from e


def _complete(directory) -> dict:
    manifest = read_manifest(directory)
    if manifest.get("status") != "complete":
        raise NeurotextError(f"{directory}: the corpus pass has not finished; rerun the same neurotext examples "
                             "command to resume it")
    return manifest


def read_contexts(directory, ids=None) -> dict:
    """{context: its row of ``contexts.parquet``} (only ``ids`` when given)."""
    import pyarrow.compute as pc

    table = _read(examples_dir(directory) / CONTEXTS)
    if ids is not None:
        table = table.filter(pc.is_in(table["context"], value_set=pa.array(sorted(set(ids)), type=pa.int64())))
    return {r["context"]: r for r in table.to_pylist()}


def _referenced(row: dict) -> set[int]:
    from ..examples import EXAMPLE_LISTS

    ids = {e["context"] for name in EXAMPLE_LISTS for e in row.get(name) or []}
    return ids | {e["context"] for g in row.get("ranges") or [] for e in g["examples"] or []}


def _join_row(row: dict, contexts: dict) -> dict:
    from ..examples import EXAMPLE_LISTS
    from ..examples.records import _join

    out = dict(row)
    for name in EXAMPLE_LISTS:
        if out.get(name) is not None:
            out[name] = [_join(e, contexts) for e in out[name]]
    if out.get("ranges") is not None:
        out["ranges"] = [{**g, "examples": [_join(e, contexts) for e in g["examples"] or []]} for g in out["ranges"]]
    return out


def read_rows(directory, columns=None, join: bool = True) -> tuple[dict, list[dict]]:
    """(manifest, rows) of a complete examples store; with ``join`` each example holds its context's text, tokens,
    ids and spans (the record of :mod:`neurotext.examples`). An unfinished pass is an error saying how to finish."""
    manifest = _complete(directory)
    rows = []
    for p in shard_paths(directory):
        rows += _read(p, columns=columns).to_pylist()
    if join and rows:
        ctx = read_contexts(directory, set().union(*(_referenced(r) for r in rows)))
        rows = [_join_row(r, ctx) for r in rows]
    return manifest, rows


def row_to_examples(row: dict, manifest: dict, contexts: dict):
    """A stored row (not joined) and its contexts -> :class:`neurotext.examples.NeuronExamples`."""
    from ..examples import row_to_examples as convert

    corpus = {k: manifest.get("corpus", {}).get(k) for k in ("name", "source", "fingerprint")}
    return convert(row, contexts, manifest.get("model", {}).get("name", "?"), corpus, manifest.get("settings", {}))


def iter_examples(directory):
    """Every neuron's :class:`NeuronExamples`, one row group (a group of units as the pass wrote them) at a time
    (memory: one group's examples, whatever the number of units)."""
    manifest = _complete(directory)
    for p in shard_paths(directory):
        try:
            f = pq.ParquetFile(p)
        except Exception as e:  # noqa: BLE001
            raise NeurotextError(f"{p} is unreadable ({e}); recompute with neurotext examples ... --force") from e
        for g in range(f.num_row_groups):
            rows = f.read_row_group(g).to_pylist()
            ctx = read_contexts(directory, set().union(*(_referenced(r) for r in rows))) if rows else {}
            for r in rows:
                yield row_to_examples(r, manifest, ctx)


def find_examples(directory, name: str):
    """The stored examples of one neuron (canonical name) as NeuronExamples, or None when it has none."""
    import pyarrow.compute as pc

    manifest = read_manifest(directory)
    if manifest.get("status") != "complete":
        return None
    from ..textualize import name_fields

    f = name_fields(name)
    for p in shard_paths(directory):
        layer, site = SHARD_RE.match(p.name).groups()
        if f["layer"] is not None and (int(layer), site) != (f["layer"], f["site"]):
            continue
        table = _read(p)
        rows = table.filter(pc.equal(table["neuron"], name)).to_pylist()
        if rows:
            return row_to_examples(rows[0], manifest, read_contexts(directory, _referenced(rows[0])))
    return None


# --------------------------------------------------------------------------- identity and files
def identity(model, corpus, config, names: list[str], directions: dict | None, points=()) -> dict:
    """What must match for a rerun to continue a pass: model weights, corpus content, settings, neurons (and the
    dictionaries of the feature points among ``points``)."""
    digest = hashlib.blake2b("\n".join(names).encode(), digest_size=16).hexdigest()
    c = corpus.describe()
    dictionaries = layout.dictionaries_record(model, points)
    return {**({"dictionaries": dictionaries} if dictionaries else {}),
        "model": {"name": model.name, "source": model.source, "model_type": model.model_type,
                  "fingerprint": model.fingerprint(), "n_layers": model.n_layers, "sizes": model.sizes,
                  "vocab_size": int(model.embeddings.shape[0])},
        "corpus": {k: c.get(k) for k in ("name", "source", "kind", "fingerprint", "text_column", "max_docs",
                                         "categories", "revision")},
        "settings": config.identity(),
        "neurons": {"count": len(names), "digest": digest, **({"directions": directions} if directions else {})},
    }


CHECKPOINT_FORMAT = 2  # 2: a registry of numbers and a state without per-unit random values; sparse points


def _save_checkpoint(out: Path, run, state) -> None:
    path = out / CHECKPOINT
    tmp = path.with_name(f".{CHECKPOINT}.tmp{os.getpid()}")
    fields = {f: getattr(state, f) for f in state.__dataclass_fields__ if f != "points"}
    points = {k: {f: getattr(ps, f) for f in ps.__dataclass_fields__} for k, ps in state.points.items()}
    torch.save({"format": CHECKPOINT_FORMAT, "state": {**fields, "points": points}, "position": run.position,
                "registry": run.registry.to_numpy()}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_checkpoint(out: Path, run) -> object | None:
    from ..engine.pass_state import PassState, PointState
    from ..examples.registry import Registry

    path = out / CHECKPOINT
    if not path.is_file():
        return None
    try:
        doc = torch.load(path, weights_only=False)
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint costs the work since the start, never a wrong result
        raise NeurotextError(f"{path} is unreadable ({type(e).__name__}); rerun with --force to start over") from e
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise NeurotextError(f"{path} was written by another version of neurotext (another layout of the pass's "
                             "state); rerun with --force to start over")
    try:
        st = doc["state"]
        points = {tuple(k): PointState(**v) for k, v in st.pop("points").items()}  # keys: (layer, site)
        state = PassState(points=points, **st)
        registry = Registry.from_numpy(doc["registry"])
    except Exception as e:  # noqa: BLE001
        raise NeurotextError(f"{path} is unreadable ({type(e).__name__}); rerun with --force to start over") from e
    run.position = doc["position"]
    run.registry = registry
    return state


def write_results(exdir: Path, finalizer) -> list[Path]:
    """Write a finished pass's tables as the :class:`neurotext.examples.tables.Finalizer` makes them, group by
    group: one Parquet file per (layer, site), a row group per group of units, and the contexts table; each file
    written under a temporary name and renamed when complete. Returns the paths written."""
    written, writer, current, tmp = [], None, None, None

    def close():
        if writer is not None:
            writer.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, exdir / current)
            written.append(exdir / current)

    for (layer, site), table in finalizer.groups():
        name = f"L{layer}.{site}.parquet"
        if name != current:
            close()
            current, tmp = name, exdir / f".{name}.tmp{os.getpid()}"
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
        del table
    close()
    writer, current = None, CONTEXTS
    tmp = exdir / f".{CONTEXTS}.tmp{os.getpid()}"
    from ..examples import contexts_schema

    writer = pq.ParquetWriter(tmp, contexts_schema())
    for table in finalizer.contexts_tables():
        writer.write_table(table)
    close()
    return written


def _write_manifest(out: Path, manifest: dict) -> None:
    path = out / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _check_sweep(directory: Path, model) -> None:
    """A sweep in the same directory must be of the same model weights."""
    if (directory / layout.MANIFEST).is_file():
        sweep = layout.read_manifest(directory)
        fp = sweep.get("model", {}).get("fingerprint")
        if fp != model.fingerprint():
            raise NeurotextError(f"{directory} holds a sweep of another model ({sweep.get('model', {}).get('name')}, "
                                 f"weights {fp}); corpus examples of {model.name} go in another --out")


# --------------------------------------------------------------------------- running
def run_examples(neurons, out, corpus=None, model=None, config=None, directions=None, executor: str = "local",
                 workers: int = 1, ray_address: str | None = None, force: bool = False, device: str | None = "auto",
                 text_column: str | None = None, checkpoint_seconds: float = 60.0, log=print,
                 progress: bool | None = None) -> dict:
    """A resumable corpus pass into ``out``/examples.

    Args:
        neurons: neuron specs (None or empty with ``directions``).
        out: the store directory (new, or a sweep's).
        corpus: a corpus source (None: the default corpus).
        model: name, path or loaded Model (None: bundled).
        config: :class:`neurotext.examples.ExamplesConfig`.
        directions: ``((layer, site), rows (N, U), names, description)`` or None.
        executor: ``local`` or ``ray`` (chunks computed by Ray actors, merged here in order).
        workers: Ray actors.
        force: discard examples made with another model, corpus or settings.
        checkpoint_seconds: the pass's state is saved at least this often (and after the last chunk).

    Returns:
        {"computed": whether a pass ran, "neurons": count, "contexts", "tokens", "seconds", "resumed": bool}.
    """
    from ..corpus import open_corpus
    from ..examples import CorpusRun, Examiner, ExamplesConfig
    from ..model.adapters import Model, load_model
    from .sweep import EXECUTORS, ensure_dir

    if executor not in EXECUTORS:
        raise NeurotextError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    cfg = config or ExamplesConfig()
    m = model if isinstance(model, Model) else load_model(model, device="cpu" if executor == "ray" else device)
    ex = Examiner(m, cfg, progress=progress)
    probes, names = ex.probes(neurons, None if directions is None else directions[:3])
    all_names = [n for point in names for n in names[point]]
    corp = open_corpus(corpus, text_column=text_column, max_docs=cfg.max_docs)
    run = CorpusRun(ex, probes, names, corp)
    run.check_nonempty()
    out = Path(out)
    ensure_dir(out)
    _check_sweep(out, m)
    ident = identity(m, corp, cfg, all_names, None if directions is None else directions[3], names)
    exdir = examples_dir(out)
    exdir.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    with StoreLock(exdir, log=log):
        if force and (exdir / MANIFEST).exists():
            for p in exdir.iterdir():
                if p.name != ".sweep.lock":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        for p in exdir.glob(".*.tmp*"):
            p.unlink()  # what a killed run was still writing
        state, resumed = None, False
        if (exdir / MANIFEST).exists():
            old = read_manifest(out)
            for key, what in (("model", "model"), ("corpus", "corpus"), ("settings", "settings"),
                              ("neurons", "neuron set"), ("dictionaries", "dictionary")):
                if layout.comparable(old.get(key), key) != layout.comparable(ident.get(key), key):
                    raise NeurotextError(f"{exdir} holds corpus examples with another {what}; refusing to mix "
                                         "results (use another --out, or --force to discard them)")
            if old.get("status") == "complete":
                log(f"neurotext: corpus examples already complete: {len(all_names)} neurons in {exdir}; "
                    "nothing to do")
                return {"computed": False, "neurons": len(all_names), "contexts": old.get("contexts"),
                        "tokens": old.get("tokens"), "seconds": 0.0, "resumed": False}
            state = _load_checkpoint(exdir, run)
            resumed = state is not None
            if resumed:
                log(f"neurotext: resuming the corpus pass at context {run.position['index']} "
                    f"({run.position['tokens']} tokens done)")
        else:
            foreign = [p.name for p in exdir.iterdir() if not p.name.startswith(".")]
            if foreign:
                raise NeurotextError(f"{exdir} is not empty and holds no examples manifest ({', '.join(foreign[:3])}); "
                                     "choose another --out")
            _write_manifest(exdir, {"format": FORMAT, "status": "running", "neurotext_version": __version__,
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "device": describe(m.device if executor == "local" else "cpu", cfg.dtype),
                                    "vocabulary": {"kind": m.token_kind}, "names": all_names, **ident})
        state = state if state is not None else run.new_state()
        last = time.monotonic()

        def checkpoint(force_now=False):
            nonlocal last
            if force_now or time.monotonic() - last >= checkpoint_seconds:
                _save_checkpoint(exdir, run, state)
                last = time.monotonic()

        if executor == "local":
            for _, contexts in run.chunks():
                run.process(state, contexts)
                checkpoint()
        else:
            from .ray_executor import run_examples_on_ray

            paths = [str(d.path) for d in m.dictionaries.values()]
            for flush in run_examples_on_ray(run, m.source, probes, cfg, workers, ray_address, dictionaries=paths,
                                             flush_seconds=checkpoint_seconds):
                for part in flush.states():  # one actor's state at a time
                    run.engine.merge(state, part)
                    del part
                redone = flush.redone()
                if redone:
                    log(f"neurotext: a Ray actor died; {redone} chunks were folded again by a new one")
                run.position = flush.position
                run.keep(state, flush.contexts)
                run._progress(flush.contexts)
                checkpoint()
        run.close()
        checkpoint(force_now=True)
        write_results(exdir, run.finalizer(state, release=True))
        manifest = read_manifest(out)
        manifest.update(status="complete", contexts=int(state.contexts.sum()), tokens=int(state.tokens.sum()),
                        parts={"train": {"contexts": int(state.contexts[0]), "tokens": int(state.tokens[0])},
                               "test": {"contexts": int(state.contexts[1]), "tokens": int(state.tokens[1])}},
                        documents=run.position["doc"] + 1, problems=dict(corp.problems),
                        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        token_stats=run.settings.token_stats)
        _write_manifest(exdir, manifest)
        (exdir / CHECKPOINT).unlink(missing_ok=True)
    return {"computed": True, "neurons": len(all_names), "contexts": int(state.contexts.sum()),
            "tokens": int(state.tokens.sum()), "seconds": time.perf_counter() - t0, "resumed": resumed,
            "problems": dict(corp.problems)}
