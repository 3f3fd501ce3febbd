"""The atlas's read-out scores: does a reading of a neuron predict real text? (DESIGN.md section 4, corpus arm)

When a store holds a sweep and corpus examples of the same model, the build scores every read-out of every
neuron on held-out corpus text once (:func:`compute`: :func:`neurotext.analysis.scores.corpus_arm` over the
whole store), beside its chance level. A neuron page shows its record (:func:`neurotext.card.scores_section`);
the index gets sortable score columns (:data:`DATA_COLUMNS`, numbers only, so ``data/neurons.js`` stays small)
and a real-text section with the per-layer figures (:func:`write_plots`) and tables of the medians beside chance.

The vector read-outs (FT vector, centroid vector) need the model's input embeddings: the build loads the
store's model when it is available here (as ``neurotext show`` does); otherwise only the token-set read-outs
are scored, and the index says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..analysis import plots, scores
from ..errors import NeurotextError

#: Columns of each row in ``data/neurons.js`` that come from the scores (atlas.js reads them by name): the
#: correlation of the corpus lookup table, of the FT nearest tokens and of the best FT read-out (the highest of
#: :data:`FT_READOUTS`), each with its chance level, the read-out that was best (its index in
#: :data:`FT_READOUTS`), and the token identity's omega squared beside the permuted baseline.
DATA_COLUMNS = ["score_lookup", "score_lookup_chance", "score_ft_nearest", "score_ft_nearest_chance",
                "score_ft_best", "score_ft_best_chance", "score_ft_best_readout", "omega_squared",
                "omega_squared_permuted"]
#: The read-outs derived from feature textualization (the best of them is one index column).
FT_READOUTS = ("ft_nearest", "ft_consensus", "ft_centroid", "ft_vector", "centroid_vector")
#: What the index says when the model could not be loaded for the vector read-outs.
NO_VECTORS_NOTE = ("The store's model could not be loaded here (neither a local folder nor in the local model cache, "
                   "or not the weights the sweep was written with), so the vector read-outs (ft_vector, "
                   "centroid_vector), which need its input embeddings, are not scored: the token-set read-outs only.")


@dataclass
class Scores:
    """The read-out scores of one build.

    ``arm`` is None when they could not be computed (``note`` says why); ``vectors`` says whether the vector
    read-outs were scored; ``seed`` drew the chance pairs."""

    arm: scores.CorpusArm | None
    vectors: bool
    seed: int
    note: str | None = None
    by_neuron: dict = field(default_factory=dict)

    def record(self, neuron: str) -> dict | None:
        return self.by_neuron.get(neuron)


def compute(store_dir, seed: int, log=print) -> Scores:
    """Score every read-out of every neuron in both the sweep and the corpus examples of ``store_dir``.

    Args:
        store_dir: a folder holding a sweep and its corpus examples.
        seed: draws the chance pairs (the sweep's seed, as ``neurotext words`` uses).
        log: progress and warnings.
    """
    unit_emb = scores.store_unit_embeddings(store_dir)
    if unit_emb is None:
        log("neurotext: warning: the store's model is not available here; the vector read-outs are not scored")
    try:
        arm = scores.corpus_arm(store_dir, store_dir, unit_emb, seed)
    except NeurotextError as e:
        log(f"neurotext: warning: the read-outs are not scored on real text: {e}")
        return Scores(None, False, seed, note=str(e))
    return Scores(arm, unit_emb is not None, seed, None if unit_emb is not None else NO_VECTORS_NOTE,
                  {r["neuron"]: r for r in arm.neurons})


def best_ft(rec: dict) -> tuple[float | None, float | None, int | None]:
    """The highest correlation of the FT read-outs scored, the highest of the same read-outs of the chance
    partner (the chance level of picking the best), and the index in :data:`FT_READOUTS` of the best one."""
    got = [(rec["scores"][n]["correlation"], i) for i, n in enumerate(FT_READOUTS)
           if n in rec["scores"] and rec["scores"][n]["correlation"] is not None]
    chance = [rec["scores"][n + scores.CHANCE]["correlation"] for n in FT_READOUTS if n + scores.CHANCE in
              rec["scores"] and rec["scores"][n + scores.CHANCE]["correlation"] is not None]
    value, index = max(got) if got else (None, None)
    return value, max(chance) if chance else None, index


def summary(rec: dict | None, token_stats: dict | None = None) -> list:
    """A neuron's :data:`DATA_COLUMNS` values; without a record (a neuron with corpus examples and no FT result)
    only the token identity, from its examples' ``token_stats``."""

    def num(v):
        return None if v is None else float(f"{v:.4g}")

    def corr(name):
        s = rec["scores"]
        return [num((s.get(label) or {}).get("correlation")) for label in (name, name + scores.CHANCE)]

    if rec is None:
        ts = token_stats or {}
        return [None] * (len(DATA_COLUMNS) - 2) + [num(ts.get("omega_squared")), num(ts.get("omega_squared_permuted"))]
    best, best_chance, index = best_ft(rec)
    return [*corr("corpus_lookup"), *corr("ft_nearest"), num(best), num(best_chance), index,
            num(rec.get("omega_squared")), num(rec.get("omega_squared_permuted"))]


def write_plots(doc: dict, model_name: str, folder: Path, files: dict[str, str]) -> dict[str, str]:
    """The per-layer figures of the real-text arm (``doc``: :meth:`CorpusArm.to_dict`), drawn into ``folder``.

    Args:
        files: relative path of each figure by key: one per score of :data:`neurotext.analysis.scores.SCORES`,
            ``token_identity`` and ``optimization``.

    Returns:
        ``files`` (the figures written).
    """
    c = doc["corpus"]
    where = f"{model_name} on {c.get('name')}, test part (split seed {doc['split'].get('seed')})"
    for stat, text in scores.SCORES.items():
        plots.corpus_scores_figure(doc["corpus_scores"], stat, f"Which reading predicts real text? {where}: {text}",
                                   _path(folder, files[stat]))
    plots.token_identity_figure(doc["token_identity"], f"Does the token explain the activation? {where}: omega "
                                "squared by token id, and with the labels permuted",
                                _path(folder, files["token_identity"]))
    plots.optimization_figure(doc["optimization"], f"Optimization against real text, {model_name} on {c.get('name')}:"
                              " activation / the corpus maximum", _path(folder, files["optimization"]))
    return files


def _path(folder: Path, rel: str) -> Path:
    p = folder / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
