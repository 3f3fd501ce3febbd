"""Ray executor: shards run on Ray actors, each loading the model once; the driver writes the store.

Ray is an optional extra (``pip install neurotext[ray]``). Without ``--ray-address`` a local cluster is
started bound to 127.0.0.1.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import NeurotextError


def _ray():
    try:
        import ray
    except ImportError as e:
        raise NeurotextError("the Ray executor needs Ray: pip install 'neurotext[ray]'") from e
    return ray


def check_gpus_per_worker(gpus: float) -> None:
    """GPUs per actor: 0 (CPU actors) or a positive number, fractions allowed (0.5: two actors per GPU)."""
    if not isinstance(gpus, (int, float)) or isinstance(gpus, bool) or not gpus >= 0:
        raise NeurotextError(f"--gpus-per-worker must be 0 or a positive number (fractions allowed), got {gpus!r}")


def worker_device(device: str | None, gpus: float) -> str:
    """Where the actors compute: ``cuda`` (Ray makes each actor's GPUs its visible ones) when they ask for
    GPUs, else ``cpu``. ``--device cuda`` without GPUs per worker is refused: the actors would see none."""
    from ..model.devices import resolve_device

    spec = "auto" if device is None else str(device)
    if spec not in ("auto", "cpu") and not spec.startswith("cuda"):
        resolve_device(spec)  # names the valid spellings
    if spec.startswith("cuda") and not gpus:
        raise NeurotextError(f"--device {spec} with --executor ray needs --gpus-per-worker > 0 (Ray gives an actor "
                             "only the GPUs it asks for)")
    if spec == "cpu" and gpus:
        raise NeurotextError(f"--gpus-per-worker {gpus:g} asks for GPUs but --device is cpu")
    return "cuda" if gpus else "cpu"


def check_cluster_gpus(ray, gpus: float, workers: int) -> None:
    """Fail at once where the cluster cannot place the actors (Ray would wait for GPUs forever)."""
    if not gpus:
        return
    have = float(ray.cluster_resources().get("GPU", 0))
    need = gpus * workers
    if have < need:
        raise NeurotextError(f"--workers {workers} x --gpus-per-worker {gpus:g} needs {need:g} GPUs, but the Ray "
                             f"cluster has {have:g}; lower them, or run on a cluster with GPUs")


class _Worker:
    """Holds one Textualizer (model loaded once, on the actor's GPU if it has one) and turns shards into
    Arrow tables."""

    def __init__(self, source, cfg, cache_dir, threads, device="cpu", phrases=None, dictionaries=None):
        import torch

        from ..model.adapters import load_model
        from ..textualize import Textualizer

        torch.set_num_threads(threads)
        model = load_model(source, device=device)
        if dictionaries:
            model.attach(dictionaries)
        self.tx = Textualizer(model, cfg, cache_dir=cache_dir, progress=False)
        self.phraser = None
        if phrases is not None:
            from ..phrases import Phraser

            self.phraser = Phraser(self.tx.model, phrases, progress=False, scans=self.tx.scans)

    def run(self, neurons):
        from .shards import compute_shard

        return compute_shard(self.tx, self.phraser, neurons, int(self.tx.model.embeddings.shape[1]))


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nobody listens on (Ray itself retries for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise NeurotextError(f"could not connect to Ray at {address}: {e}") from e


@contextmanager
def cluster(address=None, workers: int = 1, gpus_per_worker: float = 0.0):
    """Ray, connected to ``address`` or a local cluster bound to 127.0.0.1 (shut down afterwards if started here)."""
    check_gpus_per_worker(gpus_per_worker)
    ray = _ray()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = False
    if address and address != "auto":
        _check_reachable(address)
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            else:  # a local cluster offers this machine's GPUs (Ray detects them)
                ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", _node_ip_address="127.0.0.1")
        except Exception as e:  # noqa: BLE001 - Ray raises many types for an unreachable cluster
            where = address or "a local cluster"
            raise NeurotextError(f"could not connect to Ray at {where}: {str(e).splitlines()[0]}") from e
        started = True
    try:
        check_cluster_gpus(ray, gpus_per_worker, max(workers, 1))
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_on_ray(shards, source, cfg, address=None, workers=1, cache_dir=None, gpus_per_worker: float = 0.0,
               phrases=None, dictionaries=None):
    """Yield (shard, table) as shards finish on Ray actors (each with ``gpus_per_worker`` GPUs; with
    ``phrases``, a PhraseConfig, each shard also holds its neurons' best real phrases; ``dictionaries``: paths
    every actor attaches, for feature units)."""
    import torch

    with cluster(address, workers, gpus_per_worker) as ray:
        threads = torch.get_num_threads()
        device = "cuda" if gpus_per_worker else "cpu"
        actor = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(_Worker)
        pool = ray.util.ActorPool([actor.remote(source, cfg, cache_dir, threads, device, phrases, dictionaries)
                                   for _ in range(max(workers, 1))])
        by_index = dict(enumerate(shards))
        results = pool.map_unordered(lambda a, item: a.run.remote(item[1].neurons), list(by_index.items()))
        # map_unordered does not say which item finished: tag the tables by their first neuron
        first = {s.neurons[0].name: s for s in shards}
        for table in results:
            yield first[table["neuron"][0].as_py()], table


class _ExamplesWorker:
    """Holds one corpus pass (model loaded once, the dictionaries attached from their paths) and a running state:
    chunks fold into it until the driver takes it (:meth:`flush`), so a state crosses to the driver once per
    flush, not once per chunk (at dictionary scale a state is gigabytes)."""

    def __init__(self, source, probes, names, config, threads, device="cpu", dictionaries=None):
        import torch

        from ..examples import CorpusRun, Examiner
        from ..model.adapters import load_model

        torch.set_num_threads(threads)
        model = load_model(source, device=device)
        if dictionaries:  # the probes of features read this actor's own copy of their dictionary
            model.attach(dictionaries)
            for p in probes:
                if p.dictionary is not None:
                    p.dictionary = model.dictionary(p.layer, p.site)
        ex = Examiner(model, config, progress=False)
        self.run = CorpusRun(ex, probes, names, corpus=None)
        self.state = None

    def fold(self, contexts) -> int:
        """Fold one chunk into the running state; returns its contexts."""
        if self.state is None:
            self.state = self.run.new_state()
        self.run.process(self.state, contexts, keep=False, progress=False)
        return len(contexts)

    def flush(self):
        """The running state (None if no chunk came since the last flush), and a fresh one from now on."""
        state, self.state = self.state, None
        return state


@dataclass
class Flush:
    """What the driver merges at a flush: every actor's partial state (:meth:`states`, one at a time), which holds
    exactly the chunks ``contexts`` came in (every chunk dispatched since the last flush), and the pass's position
    after them."""

    states: object  # a function: the iterator of partial states
    contexts: list
    position: dict
    redone: object  # a function: chunks folded again since the last call because an actor died with them


def run_examples_on_ray(run, source, probes, config, workers: int = 1, address=None, gpus_per_worker: float = 0.0,
                        dictionaries=None, flush_seconds: float = 60.0, worker=None, max_restarts: int = 3):
    """Fold the chunks of ``run`` on Ray actors, each into its own running state; yield a :class:`Flush` every
    ``flush_seconds`` (and after the last chunk): the driver merges the actors' states (exact: a state is a pure
    function of the contexts it holds), so after a flush it holds every chunk dispatched so far, a prefix of the
    corpus, and can checkpoint.

    An actor that dies (a killed process, a lost node) loses its running state, which was never merged: its
    chunks since the last flush are folded again by a new actor, so nothing is lost and nothing counted twice;
    a chunk whose actors die ``max_restarts`` times is an error. At most two chunks wait per actor, so the
    driver's memory does not grow with the corpus. ``worker``: the actor class (tests)."""
    import time

    import torch

    with cluster(address, workers, gpus_per_worker) as ray:
        device = "cuda" if gpus_per_worker else "cpu"
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(worker or _ExamplesWorker)
        threads = torch.get_num_threads()

        def start():
            return actor_cls.remote(source, probes, run.names, config, threads, device, dictionaries)

        n = max(workers, 1)
        actors = [start() for _ in range(n)]
        held: list[list] = [[] for _ in range(n)]  # per actor: the chunks folded since its last flush
        waiting: list[list] = [[] for _ in range(n)]  # per actor: refs of folds not yet confirmed
        deaths: dict[int, int] = {}  # first context of a chunk -> actors that died holding it
        redone = 0

        def take_redone() -> int:
            nonlocal redone
            n, redone = redone, 0
            return n

        def died(i) -> None:
            """Actor i died: a new actor folds its chunks since the last flush again."""
            nonlocal redone
            for contexts in held[i]:
                deaths[contexts[0].index] = deaths.get(contexts[0].index, 0) + 1
                if deaths[contexts[0].index] > max_restarts:
                    raise NeurotextError(f"Ray actors died {max_restarts + 1} times folding the chunk that starts "
                                         f"at context {contexts[0].index}; giving up")
            try:
                ray.kill(actors[i])
            except Exception:  # noqa: BLE001 - already gone
                pass
            actors[i] = start()
            waiting[i] = [actors[i].fold.remote(contexts) for contexts in held[i]]
            redone += len(held[i])

        def confirm(i, block: bool) -> None:
            """Collect actor i's finished folds (all of them with ``block``), restarting it where it died."""
            while waiting[i]:
                ready, _ = ray.wait(waiting[i], num_returns=len(waiting[i]) if block else 1,
                                    timeout=None if block else 0)
                if not ready:
                    return
                try:
                    ray.get(ready)
                except ray.exceptions.RayActorError:
                    died(i)
                    continue
                waiting[i] = [r for r in waiting[i] if r not in ready]

        def states():
            for i in range(n):
                while True:
                    confirm(i, block=True)
                    try:
                        state = ray.get(actors[i].flush.remote())
                    except ray.exceptions.RayActorError:
                        died(i)
                        continue
                    break
                held[i] = []
                if state is not None:
                    yield state

        last, dispatched, turn = time.monotonic(), [], 0
        for _, contexts in run.chunks():
            i = turn % n
            turn += 1
            while len(waiting[i]) >= 2:
                confirm(i, block=False)
                if len(waiting[i]) >= 2:
                    ray.wait(waiting[i], num_returns=1)
            held[i].append(contexts)
            waiting[i].append(actors[i].fold.remote(contexts))
            dispatched.append(contexts)
            if time.monotonic() - last >= flush_seconds:
                yield Flush(states, [c for chunk in dispatched for c in chunk], dict(run.position), take_redone)
                last, dispatched = time.monotonic(), []
        if dispatched:
            yield Flush(states, [c for chunk in dispatched for c in chunk], dict(run.position), take_redone)
