"""Q1 — do single neurons encode words? (DESIGN.md section 4; Baeumel et al. 2023.)

From a sweep store, per layer and site: the distributions of how word-like the FT vectors are, beside
two controls that the analysis computes itself through the same textualization:

- ``token``: each neuron's best real token (from the vocabulary scan) as the vector. A real word comes
  back as itself (cosine 1, retention 1): the reference for a perfectly word-like neuron.
- ``random``: a random direction scaled to the neuron's FT-vector norm: what "not word-like at all"
  looks like at the same norm.

A neuron is *word-like* only if its vector symbolizes well: its nearest token keeps at least
``min_retention`` of the activation, and that token is among the unit's ``best_k`` best real tokens.

:func:`analyze_store` returns a :class:`WordsResult`; ``to_dict`` gives the JSON document,
:func:`render_text` the tables, :func:`write_outputs` the plots and ``words.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import store
from ..engine.optimize import FTConfig, row_generator
from ..errors import NeurotextError
from ..model.adapters import Model, load_model
from ..model.tokens import CONVENTION, DECODED, display_tokens
from ..textualize import OVERLAP_K, Textualizer, retention_of
from . import reproducible
from .stats import quartiles, share

#: The statistics compared per layer and site (the one list the tables, JSON and plots read).
STATS = {
    "nearest_cosine": "cosine between the vector and its nearest vocabulary token",
    "retention": "activation with the vector replaced by its nearest token / activation of the vector "
                 "(undefined where the vector's activation <= 0)",
    "overlap_at_10": f"share of the vector's {OVERLAP_K} nearest tokens among the unit's {OVERLAP_K} best "
                     "real tokens (vocabulary scan)",
    "activation_ratio": "activation of the vector / the best real token's activation (undefined where "
                        "the best token's activation <= 0)",
}

#: What is measured: the sweep's FT vectors and the two controls.
SOURCES = {
    "ft": "the sweep's FT vectors",
    "token": "control: each neuron's best real token's embedding, through the same textualization",
    "random": "control: a random direction scaled to the neuron's FT-vector norm",
}

# Store columns and manifest fields the analysis needs.
COLUMNS = ("neuron", "layer", "site", "unit", "activation", "vector", "nearest_ids", "nearest_tokens",
           "nearest_cosine", "nearest_activation", "retention", "best_ids", "best_tokens", "best_activation",
           "overlap_at_10")
MANIFEST_FIELDS = {"model": ("name", "source", "n_layers", "sizes"), "config": ("seed",)}

# Output filenames, here and nowhere else.
WORDS_JSON = "words.json"
CORPUS_PNG = "words_corpus_{}.png"  # one per score (analysis.scores.SCORES)
TOKEN_IDENTITY_PNG = "words_token_identity.png"
OPTIMIZATION_PNG = "words_over_corpus_max.png"
WORD_LIKE_PNG = "words_word_like.png"
STABILITY_PNG = "words_stability.png"


def stat_png(stat: str) -> str:
    return f"words_{stat}.png"


@dataclass
class WordsConfig:
    """Q1 settings; written into the output document."""

    min_retention: float = 0.5  # word-like: the nearest token keeps at least half of the vector's activation
    best_k: int = 10  # word-like: ... and is among the unit's 10 best real tokens (vocabulary scan)
    top: int = 20  # most word-like neurons listed
    seed: int | None = None  # random control and stability baseline draws; None = the sweep's seed
    repro_quantile: float = reproducible.QUANTILE  # reproducible: restarts agree more than this quantile
    #                                                of the chance baseline (optima of different neurons)
    batch_size: int = 2048  # control vectors per forward pass

    def __post_init__(self):
        if not (isinstance(self.min_retention, (int, float)) and 0 < self.min_retention):
            raise NeurotextError(f"min_retention must be positive, got {self.min_retention!r}")
        for name in ("best_k", "top", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NeurotextError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.repro_quantile, (int, float)) and 0 < self.repro_quantile < 1):
            raise NeurotextError(f"repro_quantile must be in (0, 1), got {self.repro_quantile!r}")

    def criterion(self) -> str:
        return (f"retention >= {self.min_retention:g} and nearest token among the unit's {self.best_k} best "
                "real tokens (vocabulary scan)")


@dataclass
class Group:
    """Raw per-neuron values of one (layer, site): ``values[source][stat]`` and ``word_like[source]``."""

    layer: int
    site: str
    neurons: list[str]
    values: dict[str, dict[str, list]] = field(default_factory=dict)
    word_like: dict[str, list[bool]] = field(default_factory=dict)


@dataclass
class WordsResult:
    """Everything Q1 measured on one store."""

    store: str
    model: str
    config: WordsConfig
    sweep: dict  # the sweep's FT settings, from the manifest
    best_k_used: int  # best_k, limited by the number of best tokens the sweep kept
    groups: list[Group]
    top: list[dict]
    stability: list[dict] | None = None  # reproducible.analyze per (layer, site); None for an old store
    stability_note: str | None = None  # why stability is missing
    phrases: dict | None = None  # the real-text arm (:func:`phrase_arm`), where the sweep stored phrases
    token_kind: str = "plain"  # how the tables show tokens (neurotext.model.tokens); the JSON keeps them raw
    corpus: dict | None = None  # read-outs scored on held-out corpus text (analysis.scores), with examples

    def stability_rule(self) -> str:
        return (f"reproducible: at least two restarts counted, a consensus token, and a mean pairwise "
                f"Jaccard@10 of the restarts above the {100 * self.config.repro_quantile:g}th percentile of "
                "the chance baseline (the same measure over optima of different neurons of the layer and site)")

    def to_dict(self) -> dict:
        """The JSON document: settings, per-group quartiles and word-like shares, stability beside its
        chance baseline, the top list."""
        stab = {(g["layer"], g["site"]): reproducible.summarize(g) for g in self.stability or []}
        doc = {
            "store": self.store, "model": self.model,
            "criterion": {"min_retention": self.config.min_retention, "best_k": self.best_k_used,
                          "text": _criterion(self.config, self.best_k_used)},
            "config": asdict(self.config), "sweep": self.sweep,
            "definitions": {"stats": STATS, "sources": SOURCES},
            "groups": [{
                "layer": g.layer, "site": g.site, "n": len(g.neurons),
                "stats": {s: {src: quartiles(g.values[src][s]) for src in SOURCES} for s in STATS},
                "word_like": {src: share(g.word_like[src]) for src in SOURCES},
                "n_word_like": {src: int(sum(g.word_like[src])) for src in SOURCES},
                "stability": stab.get((g.layer, g.site)),
            } for g in self.groups],
            "top": self.top,
            "stability": {"rule": self.stability_rule(), "quantile": self.config.repro_quantile,
                          "definitions": reproducible.REPRO_STATS, "note": self.stability_note},
            "phrases": self.phrases,
            "token_kind": self.token_kind,
            "corpus": self.corpus,
        }
        return doc


def _criterion(cfg: WordsConfig, best_k: int) -> str:
    return WordsConfig(cfg.min_retention, best_k).criterion()


def check_store(directory) -> dict:
    """The store's manifest, after checking it has every field and column Q1 needs."""
    import pyarrow.parquet as pq

    manifest = store.read_manifest(directory)
    for part, keys in MANIFEST_FIELDS.items():
        missing = [k for k in keys if not isinstance(manifest.get(part), dict) or k not in manifest[part]]
        if missing:
            raise NeurotextError(f"{directory}: the store's manifest lacks {part}.{missing[0]}; "
                                 "it was not written by neurotext sweep")
    paths = store.shard_paths(directory)
    if not paths:
        raise NeurotextError(f"{directory}: the store has no shards yet (run neurotext sweep)")
    try:
        names = set(pq.read_schema(paths[0]).names)
    except Exception as e:  # noqa: BLE001 - any unreadable shard is named, never trusted
        raise NeurotextError(f"{paths[0]} is unreadable ({e}); rerun the sweep to recompute it") from e
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise NeurotextError(f"{directory}: the store lacks the column(s) {', '.join(missing)} that Q1 needs")
    return manifest


def _load_store_model(manifest: dict, model, device="auto") -> Model:
    """The sweep's model: ``model`` if given, else the recorded source (or name); weights must match."""
    info = manifest["model"]
    if isinstance(model, Model):
        m = model
    elif model is not None:
        m = load_model(model, device=device)
    else:
        try:
            m = load_model(info["source"], device=device)
        except NeurotextError:
            m = load_model(info["name"], device=device)  # a store moved from another machine: try the model by name
    want = info.get("fingerprint")
    if want and m.fingerprint() != want:
        raise NeurotextError(f"the model {m.name} loaded from {m.source} is not the one the sweep used "
                             "(its weights differ); pass the sweep's model with --model")
    return m


def word_like(retention, nearest_id: int, best_ids, cfg: WordsConfig, best_k: int) -> bool:
    """The Q1 criterion for one vector: retention >= min_retention and nearest token in the best_k."""
    return retention is not None and retention >= cfg.min_retention and nearest_id in list(best_ids)[:best_k]


@torch.no_grad()
def measure(tx: Textualizer, layer: int, site: str, units: torch.Tensor, x: torch.Tensor,
            best_ids: list[list[int]], best_act: np.ndarray, cfg: WordsConfig, best_k: int) -> tuple[dict, list]:
    """Textualize vectors x (N, d_emb) for units (N,) and measure them like the sweep measures FT vectors.

    Returns:
        ({stat: N values (None where undefined)}, N word-like flags).
    """
    model = tx.model
    stats = {s: [] for s in STATS}
    flags = []
    for start in range(0, len(x), cfg.batch_size):
        sl = slice(start, start + cfg.batch_size)
        xs, us = x[sl].float(), units[sl]
        cos, ids = tx.nearest(xs, OVERLAP_K)  # (n, 10)
        _, act = tx.activations_of(layer, site, xs, us)  # (n,)
        _, near_act = tx.activations_of(layer, site, model.embeddings[ids[:, 0]].float(), us)  # (n,)
        for i in range(len(xs)):
            j = start + i
            a, na = float(act[i]), float(near_act[i])
            ret = retention_of(na, a)
            near = ids[i].tolist()
            best = best_ids[j]
            stats["nearest_cosine"].append(float(cos[i, 0]))
            stats["retention"].append(ret)
            stats["overlap_at_10"].append(len(set(near) & set(best[:OVERLAP_K])) / min(OVERLAP_K, len(near)))
            stats["activation_ratio"].append(a / best_act[j] if best_act[j] > 0 else None)
            flags.append(word_like(ret, near[0], best, cfg, best_k))
    return stats, flags


def random_directions(neurons: list[str], norms: np.ndarray, d: int, seed: int) -> torch.Tensor:
    """One random direction per neuron (seeded by neuron name), scaled to ``norms``: (N, d)."""
    out = torch.empty(len(neurons), d)
    for i, name in enumerate(neurons):
        v = torch.randn(d, generator=row_generator(seed, f"random-control|{name}"))
        out[i] = v * (float(norms[i]) / float(v.norm()))
    return out


def analyze_store(directory, config: WordsConfig | None = None, model=None, cache_dir=None,
                  progress: bool | None = None, device: str | None = "auto", examples=None,
                  dictionaries=None) -> WordsResult:
    """Q1 on a sweep store: per (layer, site) the FT statistics beside the token and random controls.

    Args:
        directory: a store written by ``neurotext sweep``.
        config: :class:`WordsConfig` (criterion thresholds, top-list size, control seed).
        model: the sweep's model (Model, name or path); None = the one recorded in the store.
        cache_dir: as for :class:`Textualizer` (the controls need no vocabulary scan).
        progress: as for :class:`Textualizer`.
        device: ``auto|cpu|cuda|cuda:N`` for a model loaded here (a given Model stays where it is).
        examples: corpus examples (``neurotext examples --out``) for the real-text scores; default the
            store's own when it holds them (``DIR/examples``), else none.
        dictionaries: ``--dictionary`` paths for a store of features whose recorded dictionaries moved (default:
            where the store records them); checked by their weight fingerprints.

    Returns:
        :class:`WordsResult`.

    Raises:
        NeurotextError: not a store, a store without the needed fields, or a model whose weights differ.
    """
    cfg = config or WordsConfig()
    manifest = check_store(directory)
    table = store.read_table(directory, columns=list(COLUMNS))
    m = _load_store_model(manifest, model, device)
    store.attach_recorded(m, manifest, dictionaries)  # the features' dictionaries, checked by their weights
    sweep_cfg = manifest["config"]
    seed = sweep_cfg["seed"] if cfg.seed is None else cfg.seed
    tx = Textualizer(m, FTConfig(top=OVERLAP_K), cache_dir=cache_dir, progress=progress)
    cols = {c: table.column(c).to_pylist() for c in COLUMNS if c != "vector"}
    d = int(m.embeddings.shape[1])
    vectors = np.asarray(table.column("vector").combine_chunks().flatten(), dtype=np.float32).reshape(-1, d)
    kept = min(len(b) for b in cols["best_ids"])
    best_k = min(cfg.best_k, kept)

    by_group: dict[tuple[int, str], list[int]] = {}
    for i, (layer, site) in enumerate(zip(cols["layer"], cols["site"])):
        by_group.setdefault((layer, site), []).append(i)
    groups, candidates = [], []
    for (layer, site), rows in sorted(by_group.items()):
        g = Group(layer, site, [cols["neuron"][i] for i in rows])
        units = torch.tensor([cols["unit"][i] for i in rows], device=m.device)
        best_ids = [cols["best_ids"][i] for i in rows]
        best_act = np.asarray([cols["best_activation"][i] for i in rows], dtype=np.float64)
        ft_ratio = [cols["activation"][i] / best_act[n] if best_act[n] > 0 else None for n, i in enumerate(rows)]
        g.values["ft"] = {"nearest_cosine": [cols["nearest_cosine"][i] for i in rows],
                          "retention": [cols["retention"][i] for i in rows],
                          "overlap_at_10": [cols["overlap_at_10"][i] for i in rows],
                          "activation_ratio": ft_ratio}
        g.word_like["ft"] = [word_like(cols["retention"][i], cols["nearest_ids"][i][0], cols["best_ids"][i], cfg,
                                       best_k) for i in rows]
        token_x = m.embeddings[torch.tensor([b[0] for b in best_ids], device=m.device)]
        g.values["token"], g.word_like["token"] = measure(tx, layer, site, units, token_x, best_ids, best_act,
                                                          cfg, best_k)
        norms = np.linalg.norm(vectors[rows], axis=1)
        rand_x = random_directions(g.neurons, norms, d, seed).to(m.device)
        g.values["random"], g.word_like["random"] = measure(tx, layer, site, units, rand_x, best_ids, best_act,
                                                            cfg, best_k)
        groups.append(g)
        for n, i in enumerate(rows):
            candidates.append({
                "neuron": cols["neuron"][i], "layer": layer, "site": site, "unit": cols["unit"][i],
                "word_like": g.word_like["ft"][n], "retention": cols["retention"][i],
                "nearest_cosine": cols["nearest_cosine"][i], "overlap_at_10": cols["overlap_at_10"][i],
                "activation_ratio": ft_ratio[n],
                "nearest_in_best": _position(cols["nearest_ids"][i][0], cols["best_ids"][i]),
                "nearest_tokens": cols["nearest_tokens"][i][:5], "best_tokens": cols["best_tokens"][i][:5],
            })
    candidates.sort(key=lambda c: (not c["word_like"], -(c["retention"] if c["retention"] is not None
                                                         else -np.inf), -c["nearest_cosine"], c["neuron"]))
    sweep = {k: sweep_cfg.get(k) for k in ("steps", "restarts", "lr", "seed", "percentile", "init", "top")}
    name = manifest["model"]["name"]  # the sweep's display name (a model loaded by path is named by its folder)
    result = WordsResult(str(directory), name, cfg, sweep, best_k, groups, candidates[: cfg.top],
                         phrases=phrase_arm(directory, manifest), token_kind=m.token_kind)
    from ..store import examples as ex_store

    ex_dir = examples if examples is not None else (directory if ex_store.has_examples(directory) else None)
    if ex_dir is not None:
        from . import scores

        verdicts = {n: v for g in groups for n, v in zip(g.neurons, g.word_like["ft"])}
        result.corpus = scores.corpus_arm(directory, ex_dir, scores.unit_embeddings(m), seed,
                                          verdicts).to_dict(neurons=True)
    missing = store.missing_columns(directory)
    if missing:
        result.stability_note = store.old_store_hint(directory, "the stability arm")
    else:
        rtable = store.read_table(directory, columns=list(reproducible.COLUMNS))
        result.stability = reproducible.analyze(rtable, seed, cfg.repro_quantile)
    return result


# ----------------------------------------------------------------------------- real text (phrases)
#: The real-text arm's ratios, per phrase length (DESIGN.md section 4).
PHRASE_STATS = {
    "over_ft": "activation of the best real phrase of n tokens / the FT vector's activation (undefined where "
               "the FT activation <= 0)",
    "over_token": "activation of the best real phrase of n tokens / the best single token's activation "
                  "(special tokens excluded unless the sweep included them; undefined where it is <= 0)",
}
PHRASE_COLUMNS = ("layer", "site", "activation", "phrase_lengths", "phrase_activations", "phrase_token_activation")


def phrase_png(stat: str) -> str:
    return f"words_phrases_{stat}.png"


def phrase_arm(directory, manifest: dict | None = None) -> dict | None:
    """Q1, real text: per (layer, site) and phrase length, quartiles of phrase / FT and phrase / best token,
    and the share of neurons whose phrase beats the best single token. None for a sweep without phrases."""
    manifest = manifest or store.read_manifest(directory)
    if "phrases" not in manifest:
        return None
    table = store.read_table(directory, columns=list(PHRASE_COLUMNS)).to_pylist()
    by_group: dict[tuple[int, str], list[dict]] = {}
    for row in table:
        if row["phrase_lengths"]:
            by_group.setdefault((row["layer"], row["site"]), []).append(row)
    lengths = sorted({n for rows in by_group.values() for r in rows for n in r["phrase_lengths"]})

    def ratio(a, b):
        return a / b if b is not None and b > 0 else None

    groups = []
    for (layer, site), rows in sorted(by_group.items()):
        vals = [dict(zip(r["phrase_lengths"], r["phrase_activations"])) for r in rows]
        stats = {"over_ft": {}, "over_token": {}}
        beats = {}
        for n in lengths:
            over_ft = [ratio(v[n], r["activation"]) for v, r in zip(vals, rows) if n in v]
            over_tok = [ratio(v[n], r["phrase_token_activation"]) for v, r in zip(vals, rows) if n in v]
            stats["over_ft"][str(n)] = quartiles(over_ft)
            stats["over_token"][str(n)] = quartiles(over_tok)
            beats[str(n)] = share(v[n] > r["phrase_token_activation"] for v, r in zip(vals, rows) if n in v)
        groups.append({"layer": layer, "site": site, "n": len(rows), "stats": stats, "beats_token": beats})
    return {"definitions": PHRASE_STATS, "settings": manifest["phrases"], "lengths": lengths, "groups": groups}


def render_phrase_text(arm: dict) -> str:
    """The real-text arm's table: per layer and site, median [q1, q3] of each ratio for each length."""
    lines = [f"real text: the best real phrases of n tokens (lengths {', '.join(map(str, arm['lengths']))}; "
             f"search {arm['settings'].get('iters')} iterations, {arm['settings'].get('starts')} starts)"]
    for stat, text in PHRASE_STATS.items():
        lines += ["", f"phrase {stat}: {text}", "  median [q1, q3]",
                  f"  {'layer':<5} {'site':<5} {'n':>6}   " + "".join(f"{'n=' + str(n):<24}" for n in arm["lengths"])]
        for g in arm["groups"]:
            cells = "".join(_q(g["stats"][stat][str(n)]) + "  " for n in arm["lengths"])
            lines.append(f"  {g['layer']:<5} {g['site']:<5} {g['n']:>6}   {cells}".rstrip())
    lines += ["", "share of neurons whose best phrase of n tokens beats the best single token",
              f"  {'layer':<5} {'site':<5} {'n':>6}   " + "".join(f"{'n=' + str(n):>8}" for n in arm["lengths"])]
    for g in arm["groups"]:
        cells = "".join(f"{'n/a' if g['beats_token'][str(n)] is None else format(g['beats_token'][str(n)], '.3f'):>8}"
                        for n in arm["lengths"])
        lines.append(f"  {g['layer']:<5} {g['site']:<5} {g['n']:>6}   {cells}")
    return "\n".join(lines)


def _position(token_id: int, best_ids) -> int | None:
    """1-based position of a token among a unit's best tokens, None if absent."""
    best_ids = list(best_ids)
    return best_ids.index(token_id) + 1 if token_id in best_ids else None


# ----------------------------------------------------------------------------- output
def _q(q: dict) -> str:
    if q["n"] == 0:
        return f"{'n/a':<22}"
    return f"{q['median']:.3f} [{q['q1']:.3f}, {q['q3']:.3f}]".ljust(22)


def render_text(doc: dict) -> str:
    """Readable tables: per statistic the FT distribution beside both controls; word-like shares; top list."""
    sw = doc["sweep"]
    n = sum(g["n"] for g in doc["groups"])
    lines = [
        f"Q1: do single neurons encode words?  store {doc['store']}: {doc['model']}, {n} neurons "
        f"(FT {sw.get('steps')} steps x {sw.get('restarts')} restarts, seed {sw.get('seed')})",
        f"word-like criterion: {doc['criterion']['text']}",
    ]
    lines += [f"  {src}: {text}" for src, text in SOURCES.items()]
    head = f"  {'layer':<5} {'site':<5} {'n':>6}   " + "".join(f"{h:<24}" for h in ("FT", "token control",
                                                                                   "random control"))
    for stat, text in STATS.items():
        lines += ["", f"{stat}: {text}", "  median [q1, q3]", head]
        for g in doc["groups"]:
            cells = "".join(_q(g["stats"][stat][src]) + "  " for src in SOURCES)
            lines.append(f"  {g['layer']:<5} {g['site']:<5} {g['n']:>6}   {cells}".rstrip())
    lines += ["", f"share of word-like neurons ({doc['criterion']['text']})",
              f"  {'layer':<5} {'site':<5} {'n':>6}   {'FT':>8} {'token':>8} {'random':>8}"]
    for g in doc["groups"]:
        cells = " ".join(f"{'n/a' if g['word_like'][s] is None else format(g['word_like'][s], '.3f'):>8}"
                         for s in SOURCES)
        lines.append(f"  {g['layer']:<5} {g['site']:<5} {g['n']:>6}   {cells}")
    lines += _render_stability(doc)
    lines += ["", f"{len(doc['top'])} most word-like FT neurons (word-like first, then by retention)",
              f"  {'neuron':<13} {'word-like':<9} {'retention':>9} {'cosine':>7} {'rank':>5}  "
              f"{'FT nearest tokens':<40} best real tokens"]
    kind = doc.get("token_kind") or "plain"
    for t in doc["top"]:
        near, best = (", ".join(display_tokens(t[key], kind)) for key in ("nearest_tokens", "best_tokens"))
        ret = "n/a" if t["retention"] is None else f"{t['retention']:.3f}"
        pos = "-" if t["nearest_in_best"] is None else str(t["nearest_in_best"])
        lines.append(f"  {t['neuron']:<13} {'yes' if t['word_like'] else 'no':<9} {ret:>9} "
                     f"{t['nearest_cosine']:>7.3f} {pos:>5}  {near:<40} {best}")
    lines.append("  (rank: the nearest token's position among the unit's best real tokens; - = not among them)")
    if doc.get("token_kind") in DECODED:
        lines.append(f"  ({CONVENTION})")
    if doc.get("phrases"):
        lines += ["", render_phrase_text(doc["phrases"])]
    if doc.get("corpus"):
        from .scores import render_text as render_corpus

        lines += ["", render_corpus(doc["corpus"])]
    return "\n".join(lines)


def _render_stability(doc: dict) -> list[str]:
    """The stability arm: per layer and site the restarts' agreement beside the chance baseline."""
    st = doc["stability"]
    if st["note"]:
        return ["", f"stability: {st['note']}"]
    lines = ["", "stability: how far each neuron's counted restarts agree, beside the chance baseline "
             "(optima of different neurons of the same layer and site)", f"  {st['rule']}"]
    for stat, text in st["definitions"].items():
        lines += [f"  {stat}: {text}", f"    {'layer':<5} {'site':<5} {'n':>6}   {'FT restarts':<24}{'baseline':<24}"]
        for g in doc["groups"]:
            s = g["stability"]
            if s is None:
                continue
            lines.append(f"    {g['layer']:<5} {g['site']:<5} {s['n_with_two_restarts']:>6}   "
                         f"{_q(s['stats'][stat]['ft'])}  {_q(s['stats'][stat]['baseline'])}".rstrip())
    lines += ["  share reproducible (of all neurons; n: those with at least two counted restarts)",
              f"    {'layer':<5} {'site':<5} {'n':>6} {'share':>7} {'threshold':>10}"]
    for g in doc["groups"]:
        s = g["stability"]
        if s is None:
            continue
        share_ = "n/a" if s["reproducible"] is None else f"{s['reproducible']:.3f}"
        thr = "n/a" if s["threshold_jaccard_at_10"] is None else f"{s['threshold_jaccard_at_10']:.3f}"
        lines.append(f"    {g['layer']:<5} {g['site']:<5} {s['n_with_two_restarts']:>6} {share_:>7} {thr:>10}")
    return lines


def write_outputs(result: WordsResult, out, doc: dict | None = None) -> list[Path]:
    """Write ``words.json`` and one PNG per statistic plus the word-like shares into ``out``.

    Returns:
        The paths written.
    """
    from .plots import stability_figure, word_like_figure, words_stat_figure

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NeurotextError(f"--out {out} exists and is not a directory")
    doc = doc or result.to_dict()
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / WORDS_JSON]
        paths[0].write_text(json.dumps(doc, allow_nan=False) + "\n")
        for stat, text in STATS.items():
            title = f"Q1 {result.model}: {stat} = {text}"
            paths.append(words_stat_figure(result.groups, stat, title, out / stat_png(stat)))
        paths.append(word_like_figure(doc["groups"], f"Q1 {result.model}: word-like neurons, "
                                      f"{doc['criterion']['text']}", out / WORD_LIKE_PNG))
        if result.stability:
            paths.append(stability_figure(result.stability, f"Q1 {result.model}: how reproducible is a "
                                          "textualization? restarts of one neuron vs optima of different "
                                          "neurons (chance)", out / STABILITY_PNG))
        if doc.get("phrases"):
            from .plots import phrase_figure

            for stat, text in PHRASE_STATS.items():
                paths.append(phrase_figure(doc["phrases"]["groups"], stat, f"Q1 {result.model}, real text: {text}",
                                           f"phrase {stat.replace('_', ' ')}", out / phrase_png(stat)))
        if doc.get("corpus"):
            from .plots import corpus_scores_figure, optimization_figure, token_identity_figure
            from .scores import SCORES

            c = doc["corpus"]
            where = f"{result.model} on {c['corpus'].get('name')}, test part (split seed {c['split'].get('seed')})"
            for stat, text in SCORES.items():
                paths.append(corpus_scores_figure(c["corpus_scores"], stat, f"Which reading predicts real text? "
                                                  f"{where}: {text}", out / CORPUS_PNG.format(stat)))
            paths.append(token_identity_figure(c["token_identity"], f"Does the token explain the activation? {where}:"
                                               " omega squared by token id, and with the labels permuted",
                                               out / TOKEN_IDENTITY_PNG))
            paths.append(optimization_figure(c["optimization"], f"Optimization against real text, {result.model} on "
                                             f"{c['corpus'].get('name')}: activation / the corpus maximum",
                                             out / OPTIMIZATION_PNG))
    except OSError as e:
        raise NeurotextError(f"cannot write to {out}: {e.strerror or e}") from e
    return paths
