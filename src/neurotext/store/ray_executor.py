"""Ray executor: shards run on Ray actors, each loading the model once; the driver writes the store.

Ray is an optional extra (``pip install neurotext[ray]``). Without ``--ray-address`` a local cluster is
started bound to 127.0.0.1.
"""

from __future__ import annotations

import os

from ..errors import NeurotextError


def _ray():
    try:
        import ray
    except ImportError as e:
        raise NeurotextError("the Ray executor needs Ray: pip install 'neurotext[ray]'") from e
    return ray


class _Worker:
    """Holds one Textualizer (model loaded once) and turns shards into Arrow tables."""

    def __init__(self, source, cfg, cache_dir, threads, phrases=None):
        import torch

        from ..textualize import Textualizer

        torch.set_num_threads(threads)
        self.tx = Textualizer(source, cfg, cache_dir=cache_dir, progress=False)
        self.phraser = None
        if phrases is not None:
            from ..phrases import Phraser

            self.phraser = Phraser(self.tx.model, phrases, progress=False, scans=self.tx.scans)

    def run(self, neurons):
        from .sweep import compute_shard

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


def run_on_ray(shards, source, cfg, address=None, workers=1, cache_dir=None, phrases=None):
    """Yield (shard, table) as shards finish on Ray actors."""
    import torch

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
            else:
                ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", _node_ip_address="127.0.0.1")
        except Exception as e:  # noqa: BLE001 - Ray raises many types for an unreachable cluster
            where = address or "a local cluster"
            raise NeurotextError(f"could not connect to Ray at {where}: {str(e).splitlines()[0]}") from e
        started = True
    try:
        threads = torch.get_num_threads()
        actor = ray.remote(num_cpus=1)(_Worker)
        pool = ray.util.ActorPool([actor.remote(source, cfg, cache_dir, threads, phrases)
                                   for _ in range(max(workers, 1))])
        by_index = dict(enumerate(shards))
        results = pool.map_unordered(lambda a, item: a.run.remote(item[1].neurons), list(by_index.items()))
        # map_unordered does not say which item finished: tag the tables by their first neuron
        first = {s.neurons[0].name: s for s in shards}
        for table in results:
            yield first[table["neuron"][0].as_py()], table
    finally:
        if started:
            ray.shutdown()
