"""Resumable sweeps: textualize a neuron set shard by shard into a store, locally or on Ray.

The plan (which neurons go in which shard) is a pure function of the neuron set and the shard size,
and every shard is optimized as one batch, so a resumed sweep recomputes exactly the batches an
uninterrupted one would have: the store ends identical, every neuron exactly once. One sweep writes a
store at a time (:class:`neurotext.store.lock.StoreLock`), and a store is continued only on the device
type it was started on (:func:`check_device`).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from .. import __version__
from ..engine.optimize import FTConfig
from ..errors import NeurotextError
from ..model.devices import describe
from ..model.names import Neuron
from . import layout
from .lock import StoreLock
from .shards import Shard, compute_shard, plan_shards

EXECUTORS = ("local", "ray")


def _identity(model, cfg: FTConfig, neurons: list[Neuron], shard_size: int, phrases=None) -> dict:
    """What must match for a rerun to continue a store: model weights, settings, neuron set, sharding
    (and the phrase settings, recorded only for a sweep with ``--phrases``; the dictionaries, only for a sweep of
    features)."""
    import hashlib

    digest = hashlib.blake2b("\n".join(n.name for n in neurons).encode(), digest_size=16).hexdigest()
    extra = {} if phrases is None else {"phrases": phrase_settings(phrases)}
    dictionaries = layout.dictionaries_record(model, {(n.layer, n.site) for n in neurons})
    if dictionaries:
        extra["dictionaries"] = dictionaries
    return {**extra,
        "model": {"name": model.name, "source": model.source, "model_type": model.model_type,
                  "fingerprint": model.fingerprint(), "n_layers": model.n_layers, "sizes": model.sizes,
                  "d_emb": int(model.embeddings.shape[1]), "vocab_size": int(model.embeddings.shape[0])},
        "config": asdict(cfg),
        "neurons": {"count": len(neurons), "digest": digest, "shard_size": shard_size},
    }


def phrase_settings(cfg) -> dict:
    """A PhraseConfig as recorded in the manifest: every field that changes results (not batch_size)."""
    d = asdict(cfg)
    d.pop("batch_size", None)
    d["lengths"] = list(d["lengths"])
    return d


class Progress:
    """A tqdm bar on a terminal; otherwise a plain line every ``every`` seconds and at the end."""

    def __init__(self, total: int, done: int = 0, desc: str = "sweep", every: float = 30.0):
        self.total, self.done, self.desc, self.every = total, done, desc, every
        self.start = self.last = time.monotonic()
        self.base = done
        self.bar = tqdm(total=total, initial=done, desc=desc, unit="neuron", file=sys.stderr) \
            if sys.stderr.isatty() else None

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            rate = (self.done - self.base) / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"{self.desc}: {self.done}/{self.total} neurons ({100 * self.done / self.total:.1f}%), "
                  f"{rate:.2f} neurons/s, ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def ensure_dir(out: Path) -> None:
    """Create the store directory if needed and check that it can be written."""
    if out.exists() and not out.is_dir():
        raise NeurotextError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise NeurotextError(f"cannot write to {out}: {e.strerror or e}") from e


def check_device(out: Path, old: dict, device: dict) -> None:
    """Refuse to continue a store on another device type (cpu vs cuda); see docs/cli/sweep.md.

    A store keeps results of one device type: CUDA and CPU kernels round differently, so the same
    neuron's optimum can differ in its last digits (and, where two basins are nearly equal, in its
    nearest tokens), and a resumed store would no longer equal an uninterrupted one. Stores written
    before devices were recorded were all written on the CPU.
    """
    was = old.get("device") or {"type": "cpu", "name": None}
    if was.get("type") != device["type"]:
        name = f" ({was['name']})" if was.get("name") else ""
        raise NeurotextError(
            f"{out} was swept on {was.get('type')}{name} and this run is on {device['type']}; a store keeps one "
            f"device type so that cpu and cuda rounding never mix: resume with --device {was.get('type')}, "
            "or use another --out (or --force to discard the store)")


def prepare_store(out: Path, identity: dict, shards: list[Shard], force: bool, log=print,
                  device: dict | None = None, vocabulary: dict | None = None) -> list[Shard]:
    """Create or check the store; return the shards still to compute. The caller holds the store's lock
    (:class:`neurotext.store.lock.StoreLock`): only then may temporary files be removed.

    A new store's manifest also records ``vocabulary`` (``{"kind": ...}``, how its tokens are shown), outside
    the identity that a resumed sweep must match: stores written before it was recorded still resume.

    Refuses a store made with another model, config, neuron set or device type unless ``force`` (which
    clears it). Removes temporary files of a killed run; detects truncated or unreadable shards and
    schedules them again; refuses files it did not write.
    """
    out = Path(out)
    device = device or describe("cpu", identity["config"]["dtype"])
    ensure_dir(out)
    if force and (out / layout.MANIFEST).exists():
        shutil.rmtree(out / layout.SHARDS, ignore_errors=True)
        (out / layout.MANIFEST).unlink()
    if (out / layout.MANIFEST).exists():
        old = layout.read_manifest(out)
        for key, what in (("model", "model"), ("config", "settings"), ("neurons", "neuron set or shard size"),
                          ("phrases", "phrase settings"), ("dictionaries", "dictionary")):
            if layout.comparable(old.get(key), key) != layout.comparable(identity.get(key), key):
                raise NeurotextError(
                    f"{out} holds a sweep with another {what}; refusing to mix results "
                    f"(use another --out, or --force to discard the existing store)")
        check_device(out, old, device)
    else:
        foreign = [p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != "examples"]
        if foreign:
            raise NeurotextError(f"{out} is not empty and not a neurotext store ({', '.join(sorted(foreign)[:3])}"
                                 f"{'...' if len(foreign) > 3 else ''}); choose an empty or new --out")
        layout.write_manifest(out, {"format": layout.FORMAT, "neurotext_version": __version__,
                                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": device,
                                   **({"vocabulary": vocabulary} if vocabulary else {}), **identity})
    shard_dir = out / layout.SHARDS
    shard_dir.mkdir(exist_ok=True)
    planned = {s.name: s for s in shards}
    for p in shard_dir.iterdir():
        if p.name.startswith(".") and ".tmp" in p.name:
            p.unlink()  # a shard a killed run was still writing
        elif p.name not in planned:
            raise NeurotextError(f"{p} is not part of this sweep's plan: a foreign or corrupt file in the store; "
                                 "move it away or use --force")
    pending = []
    for s in shards:
        path = shard_dir / s.name
        if path.exists() and not layout.shard_is_complete(path, len(s.neurons)):
            log(f"neurotext: shard {s.name} is truncated or unreadable: recomputing it")
            path.unlink()
        if not path.exists():
            pending.append(s)
    return pending


def run_sweep(neurons, out, model=None, config: FTConfig | None = None, shard_size: int | None = None,
              executor: str = "local", ray_address: str | None = None, workers: int = 1, force: bool = False,
              cache_dir=None, log=print, device: str | None = "auto", wait: bool = False,
              gpus_per_worker: float = 0.0, phrases=None, dictionaries=None) -> dict:
    """Textualize every neuron of ``neurons`` into the store ``out``; resumable.

    Args:
        neurons: neuron specs, e.g. ``"L*.ffn.*"``.
        out: store directory.
        model: name, path or loaded Model (None: bundled).
        config: FT settings.
        shard_size: neurons per shard (default: one optimizer batch, ``batch_size // restarts``).
        executor: ``local`` or ``ray``.
        ray_address: existing Ray cluster (``auto`` or ``host:port``); None starts a local one.
        workers: Ray actors (each loads the model once).
        force: discard an existing store made with other settings.
        device: ``auto|cpu|cuda|cuda:N`` for a model loaded here (a given Model stays where it is). With
            Ray the actors compute on ``cuda`` when ``gpus_per_worker`` > 0, else on the CPU.
        wait: if another sweep is writing ``out``, wait for it instead of refusing.
        gpus_per_worker: GPUs per Ray actor (fractions share a GPU); 0 = CPU actors.
        phrases: a :class:`neurotext.engine.phrase.PhraseConfig`: also store each neuron's best real
            phrases of its lengths (None: no phrases).
        dictionaries: ``--dictionary`` paths whose features the neuron set may name (``L3.ffn.f*``); the
            store records them (path and weight fingerprint).

    Returns:
        {"computed": neurons computed now, "total": neurons in the sweep, "seconds": wall time}.
    """
    from ..model.adapters import Model, load_model

    if executor not in EXECUTORS:
        raise NeurotextError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    cfg = config or FTConfig()
    shard_size = shard_size or max(1, cfg.batch_size // cfg.restarts)
    if shard_size < 1:
        raise NeurotextError(f"shard size must be positive, got {shard_size}")
    if executor == "ray":
        from .ray_executor import check_gpus_per_worker, worker_device

        check_gpus_per_worker(gpus_per_worker)
        run_on = worker_device(device, gpus_per_worker)  # the driver only plans: its model stays on the CPU
        m = model if isinstance(model, Model) else load_model(model, device="cpu")
    else:
        if gpus_per_worker:
            raise NeurotextError("--gpus-per-worker is for --executor ray; the local executor uses --device")
        m = model if isinstance(model, Model) else load_model(model, device=device)
        run_on = m.device
    if dictionaries:
        m.attach(dictionaries)
    record = describe(run_on, cfg.dtype)
    parsed = m.parse(neurons)
    shards = plan_shards(parsed, shard_size)
    out = Path(out)
    ensure_dir(out)
    with StoreLock(out, wait=wait, log=log):  # tmp files are removed and shards written only under the lock
        pending = prepare_store(out, _identity(m, cfg, parsed, shard_size, phrases), shards, force, log,
                                device=record, vocabulary={"kind": m.token_kind})
        return _compute(pending, parsed, out, m, cfg, executor, ray_address, workers, cache_dir, log,
                        gpus_per_worker, phrases)


def _compute(pending, parsed, out, m, cfg, executor, ray_address, workers, cache_dir, log, gpus_per_worker,
             phrases) -> dict:
    total = len(parsed)
    todo = sum(len(s.neurons) for s in pending)
    if not pending:
        log(f"neurotext: sweep already complete: {total} neurons in {out}; nothing to do")
        return {"computed": 0, "total": total, "seconds": 0.0}
    if todo < total:
        log(f"neurotext: resuming: {total - todo} of {total} neurons already in {out}")
    t0 = time.perf_counter()
    progress = Progress(total, total - todo)
    d_emb = int(m.embeddings.shape[1])
    try:
        if executor == "local":
            from ..textualize import Textualizer

            tx = Textualizer(m, cfg, cache_dir=cache_dir, progress=False)
            phraser = None
            if phrases is not None:
                from ..phrases import Phraser

                phraser = Phraser(m, phrases, progress=False, scans=tx.scans)
            for s in pending:
                layout.write_shard(out, s.name, compute_shard(tx, phraser, s.neurons, d_emb))
                progress.update(len(s.neurons))
        else:
            from .ray_executor import run_on_ray

            paths = [str(d.path) for d in m.dictionaries.values()]
            for s, table in run_on_ray(pending, m.source, cfg, ray_address, workers, cache_dir,
                                       gpus_per_worker=gpus_per_worker, phrases=phrases, dictionaries=paths):
                layout.write_shard(out, s.name, table)
                progress.update(len(s.neurons))
    finally:
        progress.close()
    return {"computed": todo, "total": total, "seconds": time.perf_counter() - t0}
