"""The atlas's read-out scores: does a reading of a neuron predict real text? (DESIGN.md section 4, corpus arm)

When a store holds a sweep and corpus examples of the same model, the build scores every read-out of every
neuron on held-out corpus text once (:func:`compute`: :func:`neurotext.analysis.scores.corpus_arm` over the
whole store), beside its chance level. A neuron page shows its record (:func:`scores_section`);
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
from ..analysis.scores import CHANCE, READOUTS, SCORES, VECTOR_READOUTS
from ..display.card import Chips, esc, fmt
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


# --------------------------------------------------------------------------- a neuron page's scores
#: How the scores of :data:`neurotext.analysis.scores.SCORES` are named in a table.
SCORE_LABELS = {"correlation": "correlation", "detection_auroc": "detection AUROC"}


def score_definitions() -> str:
    """One sentence defining every score (under a table of them)."""
    return "; ".join(f"{SCORE_LABELS.get(k, k)}: {v}" for k, v in SCORES.items())


def _score_cell(value, chance, spec: str = ".3f") -> str:
    """A score's cell, marked ``above`` when it exceeds its chance level."""
    above = value is not None and chance is not None and value > chance
    return f'<td class="num score{" above" if above else ""}">{fmt(value, spec)}</td>'


def scores_section(rec: dict, tokens: dict | None = None, chips: Chips | None = None, feature: bool = False) -> str:
    """Which reading predicts real text? Every read-out of a neuron scored on held-out corpus text, each score
    beside its chance level in the same row, then the token identity share and optimization over the corpus max.

    Args:
        rec: the neuron's record of :func:`neurotext.analysis.scores.corpus_arm` (``scores``, ``evaluation``,
            ``omega_squared``, ``omega_squared_permuted``, ``optimization``).
        tokens: the token strings of its token-set read-outs
            (:func:`neurotext.analysis.scores.readout_tokens`), shown as chips beside their scores.
        chips: how tokens are shown and linked.
        feature: the unit is a dictionary feature (its chance partner is another feature of the same dictionary).

    Returns:
        HTML without a script, every value escaped; one row per read-out scored (``data-readout`` its name).
    """
    chips, tokens = chips or Chips(), tokens or {}
    noun, partner = ("feature", "another feature of the same dictionary") if feature else \
        ("neuron", "another neuron of this layer")
    ev = rec.get("evaluation")
    if ev is None:
        lead = (f'<p class="muted">No test context for this {noun}: the test part of the corpus pass holds none of its '
                'top contexts, so its read-outs are not scored on held-out text.</p>')
    else:
        lead = (f'<p class="lead">Each reading of this {noun} used as a prediction of its activation on held-out '
                f'corpus text: {esc(ev["top"])} top + {esc(ev["random"])} random test contexts, '
                f'{esc(ev["positions"])} text positions. A token set predicts 1 where the token there is in it, a '
                f'vector its cosine with the input embedding of the token there. Beside every score its chance '
                f'level: the same read-out of {partner}.</p>')
    rows = []
    for name, text in READOUTS.items():
        s, c = rec["scores"].get(name), rec["scores"].get(name + CHANCE)
        if s is None:
            continue
        c = c or {}
        toks = tokens.get(name)
        shown = ('<span class="tok ftvec">vector</span>' if name in VECTOR_READOUTS else
                 " ".join(chips(t) for t in toks) if toks else '<span class="muted">none</span>')
        cells = "".join(_score_cell(s.get(stat), c.get(stat)) + f'<td class="num chance">{fmt(c.get(stat), ".3f")}</td>'
                        for stat in SCORES)
        rows.append(f'<tr data-readout="{esc(name)}"><th><code>{esc(name)}</code><div class="hint">{esc(text)}</div>'
                    f'</th><td class="toks">{shown}</td>{cells}</tr>')
    defs = score_definitions()
    heads = "".join(f'<th class="num">{esc(SCORE_LABELS.get(stat, stat))}</th><th class="num">chance</th>'
                    for stat in SCORES)
    table = (f'<table class="scores readouts"><thead><tr><th>read-out</th><th>its tokens</th>{heads}</tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>'
             f'<p class="note">{esc(defs)}. A score above its chance level is bold; n/a: the store holds no such '
             f'read-out for this {noun} (or its partner), or the activation is constant there.</p>') if rows else ""
    opt = rec.get("optimization") or {}
    measures = [("token identity \u03c9\u00b2", rec.get("omega_squared"), ".3f",
                 f'labels permuted (chance): {fmt(rec.get("omega_squared_permuted"), ".3f")}',
                 "share of the activation's variance over every text position that the token there explains "
                 "(1 = a word neuron)"),
                ("FT activation / corpus max", opt.get("ft"), ".3g", "1 = the corpus max",
                 "how far the FT vector exceeds the best position of real text"),
                ("best real token / corpus max", opt.get("scan_best"), ".3g", "1 = the corpus max",
                 "the vocabulary scan's best token in the template, over the corpus max")]
    for n, v in sorted((opt.get("phrase") or {}).items(), key=lambda kv: int(kv[0])):
        measures.append((f"best phrase of {n} token{'s' if n != '1' else ''} / corpus max", v, ".3g",
                         "1 = the corpus max", "the best real phrase of this length, over the corpus max"))
    mrows = "".join(f'<tr data-measure="{esc(k)}"><th>{esc(k)}<div class="hint">{esc(h)}</div></th>'
                    f'<td class="num score">{fmt(v, spec)}</td><td class="chance">{esc(ref)}</td></tr>'
                    for k, v, spec, ref, h in measures)
    return (f'<section class="scores" id="scores"><h2>Which reading predicts real text?</h2>{lead}{table}'
            f'<table class="scores measures"><thead><tr><th>measure</th><th class="num">value</th><th>baseline</th>'
            f'</tr></thead><tbody>{mrows}</tbody></table></section>')
