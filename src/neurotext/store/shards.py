"""Shards of a sweep: which neurons go together (:func:`plan_shards`) and how one is computed
(:func:`compute_shard`), the same on the local executor (:mod:`neurotext.store.sweep`) and on Ray actors
(:mod:`neurotext.store.ray_executor`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..model.names import Neuron
from . import layout


@dataclass
class Shard:
    name: str
    neurons: list[Neuron]


def plan_shards(neurons: list[Neuron], shard_size: int) -> list[Shard]:
    """Split sorted neurons into shards of at most ``shard_size``, never mixing (layer, site)."""
    groups: dict[tuple[int, str], list[Neuron]] = {}
    for n in sorted(neurons):
        groups.setdefault((n.layer, n.site), []).append(n)
    shards = []
    for (layer, site), group in groups.items():
        for i in range(0, len(group), shard_size):
            chunk = group[i : i + shard_size]
            shards.append(Shard(layout.shard_name(layer, site, chunk[0].unit, chunk[-1].unit), chunk))
    return shards


def compute_shard(tx, phraser, neurons: list[Neuron], d_emb: int):
    """One shard's table: FT results, plus the phrases when ``phraser`` is set (FT activations beside them)."""
    results = tx.run(neurons)
    phrases = None
    if phraser is not None:
        ft = {r.neuron: r.activation for r in results}
        phrases = {p.neuron: p for p in phraser.run(neurons, ft)}
    return layout.results_to_table(results, d_emb, phrases)
