"""Does a reading of a neuron predict real text? Every read-out scored on held-out corpus text, beside chance.

A read-out is a set of tokens (the FT optimum's nearest tokens, the consensus of the restarts, the
centroid's nearest tokens, the vocabulary scan's best tokens, the best real phrase, the corpus lookup
table) or a vector (the FT vector, the centroid). It predicts the neuron's activation at a text position:
a token set by 1 where the token there is in the set, else 0; a vector by its cosine with the input
embedding of the token there (OpenAI's simulate-and-score, with the read-out as the simulator; no LLM).

**Evaluation set** (per neuron, the test part only: documents the lookup table was not fitted on): the
neuron's top test contexts (``top_test``, K of them) and as many random test contexts (``random_test``,
the first by sampling key that are not among the top ones): top-and-random scoring in OpenAI's 1:1
proportions. Scores:

- ``correlation``: Pearson correlation of prediction and true activation over every text position of the
  evaluation set (0 when the prediction is constant there, e.g. no read-out token occurs: it predicts
  nothing);
- ``detection_auroc``: how well a context's score (the number of its positions holding a read-out token;
  a vector's largest cosine) separates the top contexts (positives) from the random ones (negatives),
  ties counted half (0.5 = chance).

**Chance**: each read-out of another neuron of the same layer and site, paired by a seeded derangement (a
read-out ``R`` gets ``R_chance``), so every read-out has its own chance level. The **corpus lookup table**
is the reference from real text: the 10 tokens of highest mean activation on the train part (seen at least
3 times there).

Also per neuron: how much of its variance over every text position the token identity explains (omega
squared of a one-way analysis of variance by token id; a word neuron would be near 1) beside the same with
the token labels permuted (chance), and how far optimization exceeds the corpus: FT activation, the best
real token and the best real phrase of each length, each over the corpus maximum (Poerner et al. 2018).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import store
from ..engine import stability
from ..errors import NeurotextError
from ..store import examples as ex_store
from .stats import quartiles, share

#: The read-outs scored (the one list the tables, JSON, plots and pages read), in display order.
READOUTS = {
    "ft_nearest": "the best restart's 10 nearest tokens (FT)",
    "ft_consensus": "the consensus of the restarts: tokens in the top-10 of at least half of the counted restarts",
    "ft_centroid": "the 10 nearest tokens of the centroid of the counted restarts",
    "ft_vector": "the FT vector itself: at each position its cosine with the input embedding of the token there",
    "centroid_vector": "the centroid vector, likewise",
    "scan_best": "the vocabulary scan's 10 best real tokens",
    "phrase": "the tokens of the best real phrase (sweeps with --phrases)",
    "corpus_lookup": "the reference from real text: the 10 tokens of highest mean activation on the train part "
                     "(seen at least 3 times)",
}
VECTOR_READOUTS = ("ft_vector", "centroid_vector")
CHANCE = "_chance"
SCORES = {
    "correlation": "Pearson correlation of the read-out's prediction and the activation over every text position "
                   "of the evaluation set (0 where the prediction is constant there)",
    "detection_auroc": "AUROC of a context's read-out score (read-out tokens it holds; a vector: its largest "
                       "cosine) for the top test contexts against the random ones (0.5 = chance)",
}
EVALUATION = ("the neuron's top test contexts (top_test) and as many random test contexts (random_test, by "
              "sampling key, those not among the top ones): every text position of them")
K = 10  # tokens of the token-set read-outs
SWEEP_COLUMNS = ("neuron", "layer", "site", "unit", "activation", "vector", "nearest_ids", "centroid",
                 "restarts_detail", "stability", "best_ids", "best_activation")


def readout_names(phrases: bool = True) -> list[str]:
    return [r for r in READOUTS if phrases or r != "phrase"]


# --------------------------------------------------------------------------- scoring one neuron
def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation; 0 where x is constant (it predicts nothing), None where y is or there is no data."""
    if len(x) < 2 or np.ptp(y) == 0:
        return None
    if np.ptp(x) == 0:
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc * yc).sum() / math.sqrt((xc * xc).sum() * (yc * yc).sum()))


def auroc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """P(a positive scores above a negative), ties half (the Mann-Whitney U / (n_pos n_neg))."""
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


@dataclass
class EvalSet:
    """A neuron's evaluation set: every text position's token id and activation, and which context it is in."""

    ids: np.ndarray  # (N,) token ids at the text positions
    acts: np.ndarray  # (N,) activations there
    context: np.ndarray  # (N,) index of the context (0..C-1) each position belongs to
    label: np.ndarray  # (C,) 1 = a top test context, 0 = a random test context
    n_top: int = 0
    n_random: int = 0


def evaluation_set(top_test: list[dict], random_test: list[dict]) -> EvalSet | None:
    """The top test contexts and as many random test contexts not among them (None without a top context)."""
    if not top_test:
        return None
    top_ids = {e["context"] for e in top_test}
    rand = [e for e in random_test if e["context"] not in top_ids][:len(top_test)]
    ids, acts, ctx, label = [], [], [], []
    for c, (e, lab) in enumerate([(e, 1) for e in top_test] + [(e, 0) for e in rand]):
        for t, a in zip(e["ids"], e["activations"]):
            if a is not None:
                ids.append(t)
                acts.append(a)
                ctx.append(c)
        label.append(lab)
    return EvalSet(np.asarray(ids, dtype=np.int64), np.asarray(acts, dtype=np.float64),
                   np.asarray(ctx, dtype=np.int64), np.asarray(label, dtype=np.int64), len(top_test), len(rand))


def score(ev: EvalSet, tokens=None, vector: np.ndarray | None = None, unit_emb: np.ndarray | None = None) -> dict:
    """Correlation and detection AUROC of one read-out: a token set (``tokens``) or a ``vector`` (with the
    unit-normalized input embeddings ``unit_emb`` (V, d))."""
    if vector is not None:
        v = np.asarray(vector, dtype=np.float64)
        v = v / max(np.linalg.norm(v), 1e-12)
        pred = unit_emb[ev.ids] @ v  # (N,) cosine with the token's input embedding
        per_ctx = np.full(len(ev.label), -np.inf)
        np.maximum.at(per_ctx, ev.context, pred)
    else:
        pred = np.isin(ev.ids, np.asarray(list(tokens), dtype=np.int64)).astype(np.float64)
        per_ctx = np.bincount(ev.context, weights=pred, minlength=len(ev.label))
    return {"correlation": pearson(pred, ev.acts),
            "detection_auroc": auroc(per_ctx[ev.label == 1], per_ctx[ev.label == 0])}


# --------------------------------------------------------------------------- read-outs of one neuron
def readouts_of(sweep_row: dict | None, ex_row: dict, phrases: bool) -> dict:
    """A neuron's read-outs: token-id lists and vectors, by name (None where the store lacks one)."""
    out = {name: None for name in readout_names(phrases)}
    out["corpus_lookup"] = [d["id"] for d in (ex_row.get("lookup") or [])][:K] or None
    if sweep_row is None:
        return out
    out["ft_nearest"] = list(sweep_row["nearest_ids"] or [])[:K]
    st = sweep_row.get("stability") or {}
    out["ft_consensus"] = [c["id"] for c in st.get("consensus") or []] or None
    cent = sweep_row.get("centroid") or {}
    out["ft_centroid"] = list(cent.get("nearest_ids") or [])[:K] or None
    out["ft_vector"] = np.asarray(sweep_row["vector"], dtype=np.float32)
    detail = sweep_row.get("restarts_detail") or []
    if detail:
        keep = stability.counted([d["activation"] for d in detail])
        import torch

        vecs = torch.as_tensor(np.asarray([detail[i]["vector"] for i in keep], dtype=np.float32))
        out["centroid_vector"] = stability.centroid(vecs).numpy() if len(keep) >= 1 else None
    out["scan_best"] = list(sweep_row["best_ids"] or [])[:K]
    if phrases and sweep_row.get("phrase_activations"):
        acts = sweep_row["phrase_activations"]
        out["phrase"] = list(sweep_row["phrase_ids"][int(np.argmax(acts))])
    return out


def readout_tokens(sweep_row: dict | None, lookup: list[dict] | None, phrases: bool = True) -> dict:
    """The token strings of a neuron's token-set read-outs, as :func:`readouts_of` takes their ids (what a page
    shows beside each read-out's scores); None where the store lacks one, vector read-outs left out.

    Args:
        sweep_row: the neuron's sweep row (``nearest_tokens``, ``stability``, ``centroid``, ``best_tokens``,
            ``phrase_tokens`` and ``phrase_activations`` read), or None.
        lookup: the corpus lookup table (``token_stats["lookup"]`` of its examples: ``{"token", "id", ...}``).
        phrases: whether the sweep searched phrases.
    """
    out = {name: None for name in readout_names(phrases) if name not in VECTOR_READOUTS}
    out["corpus_lookup"] = [d["token"] for d in (lookup or [])][:K] or None
    if sweep_row is None:
        return out
    out["ft_nearest"] = list(sweep_row.get("nearest_tokens") or [])[:K]
    st = sweep_row.get("stability") or {}
    out["ft_consensus"] = [c["token"] for c in st.get("consensus") or []] or None
    cent = sweep_row.get("centroid") or {}
    out["ft_centroid"] = list(cent.get("nearest_tokens") or [])[:K] or None
    out["scan_best"] = list(sweep_row.get("best_tokens") or [])[:K]
    if phrases and sweep_row.get("phrase_activations"):
        acts = sweep_row["phrase_activations"]
        out["phrase"] = list(sweep_row["phrase_tokens"][int(np.argmax(acts))])
    return out


def derangement(names: list[str], seed: int, salt: str) -> dict[str, str]:
    """Pair every neuron of a group with another one of the group (a seeded shuffle, each to the next)."""
    if len(names) < 2:
        return {}
    import hashlib

    h = int.from_bytes(hashlib.blake2b(f"chance|{seed}|{salt}".encode(), digest_size=8).digest(), "little")
    order = list(np.random.default_rng(h).permutation(len(names)))
    return {names[order[i]]: names[order[(i + 1) % len(order)]] for i in range(len(order))}


# --------------------------------------------------------------------------- a store
@dataclass
class CorpusArm:
    """The real-text arm of Q1 on one sweep and its corpus examples."""

    sweep: str | None
    examples: str
    corpus: dict
    split: dict
    neurons: list[dict]  # per neuron: layer, site, scores {readout: {score: value}}, omega2, ratios, reasons
    groups: list[dict]
    missing: dict  # how many neurons were in one store only, and why scores are null
    readouts: list[str]
    seed: int = 0
    word_like: dict = field(default_factory=dict)  # {neuron: the FT word-like verdict}, where Q1 ran

    def to_dict(self, neurons: bool = False) -> dict:
        doc = {"sweep": self.sweep, "examples": self.examples, "corpus": self.corpus, "split": self.split,
               "evaluation": EVALUATION, "definitions": {"readouts": {r: READOUTS[r] for r in self.readouts},
                                                         "scores": SCORES, "chance": "each read-out of another "
                                                         "neuron of the same layer and site (a seeded derangement)"},
               "chance_seed": self.seed, "missing": self.missing,
               "corpus_scores": [r for g in self.groups for r in g["scores"]],
               "token_identity": [g["token_identity"] for g in self.groups],
               "optimization": [g["optimization"] for g in self.groups]}
        if neurons:
            doc["neurons"] = self.neurons
        return doc


def _sweep_rows(directory) -> tuple[dict, dict]:
    import pyarrow.parquet as pq

    manifest = store.read_manifest(directory)
    have = set(pq.read_schema(store.shard_paths(directory)[0]).names) if store.shard_paths(directory) else set()
    cols = [c for c in SWEEP_COLUMNS if c in have] + ([c for c in ("phrase_ids", "phrase_activations",
                                                                     "phrase_lengths") if c in have])
    rows = store.read_table(directory, columns=cols).to_pylist()
    return manifest, {r["neuron"]: r for r in rows}


def corpus_arm(sweep_dir, examples_dir=None, unit_emb: np.ndarray | None = None, seed: int = 0,
               word_like: dict | None = None, point: tuple[int, str] | None = None) -> CorpusArm:
    """Score every read-out of every neuron that has both an FT result and corpus examples.

    Args:
        sweep_dir: a sweep store (None: the examples store alone; only the lookup table is scored).
        examples_dir: where ``neurotext examples --out`` wrote (default: ``sweep_dir``).
        unit_emb: (V, d) unit-normalized input embeddings of the model, for the vector read-outs (None: they
            are left out).
        seed: draws the chance pairs.
        word_like: {neuron: FT word-like verdict} from Q1, shown beside the token-identity share.
        point: only this (layer, site) (its neurons are each other's chance).

    Raises:
        NeurotextError: the two stores are of different models, or no neuron is in both.
    """
    examples_dir = examples_dir if examples_dir is not None else sweep_dir
    ex_manifest, ex_rows = ex_store.read_rows(examples_dir)
    ex_by = {r["neuron"]: r for r in ex_rows}
    sweep_rows, phrases = {}, False
    if sweep_dir is not None:
        manifest, sweep_rows = _sweep_rows(sweep_dir)
        fp_s, fp_e = manifest.get("model", {}).get("fingerprint"), ex_manifest.get("model", {}).get("fingerprint")
        if fp_s != fp_e:
            raise NeurotextError(f"the corpus examples in {examples_dir} are of another model ("
                                 f"{ex_manifest.get('model', {}).get('name')}, weights {fp_e}) than the sweep "
                                 f"{sweep_dir} ({manifest.get('model', {}).get('name')}, weights {fp_s})")
        phrases = "phrases" in manifest
    both = [n for n in ex_by if (sweep_dir is None or n in sweep_rows)
            and (point is None or (ex_by[n]["layer"], ex_by[n]["site"]) == tuple(point))]
    missing = {"sweep_only": 0 if sweep_dir is None else sum(n not in ex_by for n in sweep_rows),
               "examples_only": 0 if sweep_dir is None else sum(n not in sweep_rows for n in ex_by),
               "no_test_context": 0}
    if not both:
        raise NeurotextError(f"no neuron has both an FT result in {sweep_dir} and corpus examples in {examples_dir}")
    names = readout_names(phrases)
    if unit_emb is None:
        names = [r for r in names if r not in VECTOR_READOUTS]
    if sweep_dir is None:
        names = ["corpus_lookup"]
    groups_of: dict[tuple[int, str], list[str]] = {}
    for n in both:
        r = ex_by[n]
        groups_of.setdefault((r["layer"], r["site"]), []).append(n)
    neurons, groups = [], []
    for (layer, site), group in sorted(groups_of.items()):
        group.sort(key=lambda n: (ex_by[n]["unit"] if ex_by[n]["unit"] is not None else -1, n))
        reads = {n: readouts_of(sweep_rows.get(n), ex_by[n], phrases) for n in group}
        pair = derangement(group, seed, f"L{layer}.{site}")
        per = []
        for n in group:
            ex = ex_by[n]
            ev = evaluation_set(ex["top_test"] or [], ex["random_test"] or [])
            rec = {"neuron": n, "layer": layer, "site": site, "unit": ex["unit"], "scores": {},
                   "evaluation": None if ev is None else {"top": ev.n_top, "random": ev.n_random,
                                                         "positions": int(len(ev.ids))},
                   "omega_squared": ex.get("omega_squared"), "omega_squared_permuted": ex.get("omega_squared_permuted"),
                   "corpus_max": ex.get("max"), "word_like": (word_like or {}).get(n)}
            if ev is None:
                missing["no_test_context"] += 1
            for name in names:
                for label, source in ((name, n), (name + CHANCE, pair.get(n))):
                    val = None if source is None else reads[source].get(name)
                    if ev is None or val is None or (not isinstance(val, np.ndarray) and not len(val)):
                        rec["scores"][label] = {"correlation": None, "detection_auroc": None}
                    elif name in VECTOR_READOUTS:
                        rec["scores"][label] = score(ev, vector=val, unit_emb=unit_emb)
                    else:
                        rec["scores"][label] = score(ev, tokens=val)
            srow = sweep_rows.get(n)
            mx = ex.get("max")

            def over(v, mx=mx):
                return v / mx if v is not None and mx is not None and mx > 0 else None

            rec["optimization"] = {"ft": over(srow["activation"]) if srow else None,
                                   "scan_best": over(srow["best_activation"]) if srow else None,
                                   "phrase": {str(ln): over(a) for ln, a in zip(srow.get("phrase_lengths") or [],
                                                                                 srow.get("phrase_activations") or [])}
                                   if srow else {}}
            per.append(rec)
        neurons += per
        groups.append(_summarize(layer, site, per, names, word_like is not None))
    return CorpusArm(str(sweep_dir) if sweep_dir is not None else None, str(examples_dir),
                     {k: ex_manifest.get("corpus", {}).get(k) for k in ("name", "source", "fingerprint")} |
                     {"contexts": ex_manifest.get("contexts"), "tokens": ex_manifest.get("tokens")},
                     {"test_share": ex_manifest.get("settings", {}).get("test_share"),
                      "seed": ex_manifest.get("settings", {}).get("split_seed"), **ex_manifest.get("parts", {})},
                     neurons, groups, missing, names, seed, word_like or {})


def _summarize(layer: int, site: str, per: list[dict], names: list[str], with_word_like: bool) -> dict:
    scores = []
    for name in names:
        for label in (name, name + CHANCE):
            vals = [r["scores"][label] for r in per]
            row = {"layer": layer, "site": site, "readout": label,
                   "n": sum(v["correlation"] is not None for v in vals)}
            for stat in SCORES:
                got = [v[stat] for v in vals]
                row[stat] = {**quartiles(got), "mean": _mean(got)}
            if label == name:  # paired with its own chance level, neuron by neuron
                row["above_chance"] = {stat: share(r["scores"][name][stat] > r["scores"][name + CHANCE][stat]
                                                   for r in per if r["scores"][name][stat] is not None
                                                   and r["scores"][name + CHANCE][stat] is not None)
                                       for stat in SCORES}
            scores.append(row)
    omega = [r["omega_squared"] for r in per]
    ti = {"layer": layer, "site": site, "n": len(per), "omega_squared": quartiles(omega),
          "omega_squared_permuted": quartiles(r["omega_squared_permuted"] for r in per),
          "above_half": share(o is not None and o > 0.5 for o in omega)}
    if with_word_like:
        wl = [r for r in per if r["word_like"] is not None]
        ti["word_like_ft"] = share(r["word_like"] for r in wl)
        ti["omega_squared_word_like"] = quartiles(r["omega_squared"] for r in wl if r["word_like"])
        ti["omega_squared_not_word_like"] = quartiles(r["omega_squared"] for r in wl if not r["word_like"])
    lengths = sorted({k for r in per for k in r["optimization"]["phrase"]}, key=int)
    opt = {"layer": layer, "site": site, "n": len(per),
           "ft_over_corpus_max": quartiles(r["optimization"]["ft"] for r in per),
           "scan_best_over_corpus_max": quartiles(r["optimization"]["scan_best"] for r in per),
           "phrase_over_corpus_max": {n: quartiles(r["optimization"]["phrase"].get(n) for r in per) for n in lengths}}
    return {"layer": layer, "site": site, "scores": scores, "token_identity": ti, "optimization": opt}


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def unit_embeddings(model) -> np.ndarray:
    """(V, d) the model's input embeddings, each scaled to unit length (float32)."""
    e = model.embeddings.float().cpu().numpy()
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def store_unit_embeddings(directory) -> np.ndarray | None:
    """The unit input embeddings (:func:`unit_embeddings`) of the model a sweep store records, for the vector
    read-outs; None where that model cannot be loaded here (neither a local folder nor in the local cache) or
    its weights are not the ones the store was written with."""
    from ..model.adapters import load_model

    info = store.read_manifest(directory)["model"]
    try:
        m = load_model(info["source"], device="cpu")
    except NeurotextError:
        return None
    return unit_embeddings(m) if m.fingerprint() == info.get("fingerprint") else None


def neuron_scores(sweep_dir, examples_dir, neuron: str, unit_emb=None, seed: int = 0) -> dict | None:
    """One neuron's record (scores beside chance, omega squared, ratios) from :func:`corpus_arm` over its layer
    and site, or None when it is not in both stores."""
    from ..model.names import parse_name

    n = parse_name(neuron)
    try:
        arm = corpus_arm(sweep_dir, examples_dir, unit_emb, seed, point=(n.layer, n.site) if n else None)
    except NeurotextError:
        return None
    return next((r for r in arm.neurons if r["neuron"] == neuron), None)


def render_neuron(rec: dict) -> str:
    """One neuron's read-outs on held-out text: each score beside its chance level."""
    ev = rec.get("evaluation")
    if ev is None:
        return "  read-outs on held-out text: no test context for this neuron (the test part is too small)"
    lines = [f"  read-outs scored on held-out text ({ev['top']} top + {ev['random']} random test contexts, "
             f"{ev['positions']} positions; chance: the read-out of another neuron of the layer)",
             f"    {'read-out':<16} {'correlation':>11} {'chance':>8}   {'AUROC':>6} {'chance':>7}"]
    for name in READOUTS:
        s, c = rec["scores"].get(name), rec["scores"].get(name + CHANCE)
        if s is None:
            continue
        lines.append(f"    {name:<16} {_f(s['correlation']):>11} {_f(c['correlation']):>8}   "
                     f"{_f(s['detection_auroc']):>6} {_f(c['detection_auroc']):>7}")
    lines.append(f"  token identity: omega squared {_f(rec['omega_squared'])} (labels permuted "
                 f"{_f(rec['omega_squared_permuted'])}); FT / corpus max {_f(rec['optimization']['ft'], '.2f')}, "
                 f"best token / corpus max {_f(rec['optimization']['scan_best'], '.2f')}")
    return "\n".join(lines)


def _f(v, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


# --------------------------------------------------------------------------- text
def _q(q: dict, spec: str = ".3f") -> str:
    if not q or q.get("n", 0) == 0 or q.get("median") is None:
        return f"{'n/a':<22}"
    return f"{format(q['median'], spec)} [{format(q['q1'], spec)}, {format(q['q3'], spec)}]".ljust(22)


def render_text(doc: dict) -> str:
    """The real-text arm's tables: per layer and site each read-out's scores beside its chance level, the token
    identity share, and optimization over the corpus maximum."""
    c = doc["corpus"]
    lines = [f"real text: read-outs scored on held-out text of {c.get('name')} ({c.get('contexts')} contexts, "
             f"{c.get('tokens')} text tokens; test part {doc['split'].get('test_share')}, split seed "
             f"{doc['split'].get('seed')}; chance seed {doc['chance_seed']})",
             f"  evaluation set: {doc['evaluation']}"]
    miss = doc["missing"]
    if any(miss.values()):
        lines.append(f"  left out: {miss['sweep_only']} neurons with no corpus examples, {miss['examples_only']} "
                     f"with no FT result; null scores: {miss['no_test_context']} neurons with no test context")
    groups = sorted({(r["layer"], r["site"]) for r in doc["corpus_scores"]})
    for stat, text in SCORES.items():
        lines += ["", f"{stat}: {text}", "  median [q1, q3]; chance: the read-out of another neuron of the layer"]
        lines.append(f"  {'layer':<5} {'site':<5} {'read-out':<16} {'n':>5}   {'score':<22}  {'chance':<22}")
        for layer, site in groups:
            rows = {r["readout"]: r for r in doc["corpus_scores"] if (r["layer"], r["site"]) == (layer, site)}
            for name in doc["definitions"]["readouts"]:
                r, ch = rows.get(name), rows.get(name + CHANCE)
                if r is None:
                    continue
                lines.append(f"  {layer:<5} {site:<5} {name:<16} {r['n']:>5}   {_q(r[stat])}  {_q(ch[stat])}")
    lines += ["", "token identity: omega squared of the activation over every text position by token id (1 = a "
              "word neuron), beside the same with the token labels permuted",
              f"  {'layer':<5} {'site':<5} {'n':>5}   {'omega^2':<22}  {'permuted':<22}  {'> 0.5':>6}"]
    for t in doc["token_identity"]:
        above = "n/a" if t["above_half"] is None else f"{t['above_half']:.3f}"
        extra = ""
        if "word_like_ft" in t:
            wl = t["word_like_ft"]
            extra = f"  FT word-like {'n/a' if wl is None else format(wl, '.3f')}"
        lines.append(f"  {t['layer']:<5} {t['site']:<5} {t['n']:>5}   {_q(t['omega_squared'])}  "
                     f"{_q(t['omega_squared_permuted'])}  {above:>6}{extra}")
    lines += ["", "optimization against real text: activation / the corpus maximum (median [q1, q3])"]
    lengths = sorted({n for o in doc["optimization"] for n in o["phrase_over_corpus_max"]}, key=int)
    lines.append(f"  {'layer':<5} {'site':<5} {'n':>5}   {'FT':<22}  {'best token':<22}  "
                 + "  ".join(f"{'phrase n=' + n:<22}" for n in lengths))
    for o in doc["optimization"]:
        lines.append(f"  {o['layer']:<5} {o['site']:<5} {o['n']:>5}   {_q(o['ft_over_corpus_max'], '.2f')}  "
                     f"{_q(o['scan_best_over_corpus_max'], '.2f')}  "
                     + "  ".join(_q(o["phrase_over_corpus_max"].get(n, {}), ".2f") for n in lengths))
    return "\n".join(line.rstrip() for line in lines)
