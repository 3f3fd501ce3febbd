"""Q2 — how many neurons are needed to encode a word? (DESIGN.md section 4; Baeumel et al. 2023.)

For a word w (one vocabulary token) at a layer and site: take w's activation pattern ``a_w`` over the
site's units (w alone in the template; pre-activations for ``ffn``, the quantity the objectives read),
select k units (by z-score against the layer's vocabulary scan, or at random as the control), run
feature textualization with the pattern objective on those k units jointly, and record the rank of w
among the FT vector's nearest tokens over the whole vocabulary. k sweeps powers of two up to the
site width. All (word, selection, k, restart) rows of a layer are optimized together.

:func:`run_encode` returns one JSON-ready document; :func:`render_text` and :func:`write_outputs` turn
it into tables, CSV, a plot and ``encode.json``.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..engine import objectives
from ..engine.optimize import FTConfig, best_of_restarts, initial_points, row_generator
from ..engine.scan import tqdm_disable
from ..errors import NeurotextError
from ..model.names import SITES, parse_layers
from ..textualize import Textualizer

#: Unit selections (``--select``): the one registry the CLI, the docs and the runner read.
SELECTIONS = {
    "zscore": "the k units where the word deviates most from the vocabulary: largest |z|, "
              "z = (a_w - vocabulary mean) / vocabulary std, per unit",
    "zhigh": "the k units the word drives furthest above the vocabulary mean: largest z (signed)",
    "random": "k units drawn at random (seeded per word, layer and site; nested in k): the control",
}

#: Objectives (``--objective``) over the selected units.
OBJECTIVES = {
    "pattern": "cosine between the centred activations of the k units and the word's centred pattern "
               "(k = 1: the unit's value times the sign of the word's value)",
    "mean": "mean activation of the k units (an option for comparison; ignores the word's pattern)",
}

RECOVERED_TOP = 10  # "top10": the word is among the FT vector's 10 nearest tokens
Z_STD_MIN = 1e-6  # a unit whose vocabulary std is below this has z ~ 0 (it is specific to no token)

# Output filenames, here and nowhere else.
ENCODE_JSON = "encode.json"
ENCODE_CSV = "encode_per_word.csv"
ENCODE_PNG = "encode.png"

DEFINITIONS = {
    "rank": "1-based rank of the word among all vocabulary tokens by cosine to the FT vector "
            "(1 = the word is the nearest token; ties count in the word's favour)",
    "top1": "share of words recovered at rank 1",
    "top10": f"share of words with rank <= {RECOVERED_TOP}",
    "median_rank": "median of the words' ranks",
    "smallest_k": "smallest k (of those run) at which the word is recovered at rank 1; null if never",
    "z": "z = (a_w - mean) / std per unit, mean and std over every vocabulary token in the same template "
         "(ffn: pre-activations)",
}


@dataclass
class EncodeConfig:
    """Q2 settings; written into the output document."""

    layers: str | tuple[int, ...] | None = None  # e.g. "0-5", "0,3" or (0, 3); None: every layer
    site: str = "ffn"  # ffn: FFN neurons (pre-activations); out: dimensions of the layer's output
    ks: tuple[int, ...] | None = None  # None: 1, 2, 4, ... below the site width, and the width itself
    select: tuple[str, ...] = ("zscore", "random")  # both by default: every result carries its control
    objective: str = "pattern"  # DESIGN 4: the pattern objective; "mean" for comparison
    ft: FTConfig = field(default_factory=FTConfig)  # steps, restarts, lr, seed, batch_size (rows per batch)

    def __post_init__(self):
        if self.site not in SITES:
            raise NeurotextError(f"unknown site {self.site!r}: valid sites are {', '.join(SITES)}")
        self.select = tuple(self.select)
        if not self.select:
            raise NeurotextError(f"no selection given: choose from {', '.join(SELECTIONS)}")
        bad = [s for s in self.select if s not in SELECTIONS]
        if bad:
            raise NeurotextError(f"unknown selection {bad[0]!r}: valid are {', '.join(SELECTIONS)}")
        if len(set(self.select)) != len(self.select):
            raise NeurotextError(f"selection listed twice in {','.join(self.select)}")
        if self.objective not in OBJECTIVES:
            raise NeurotextError(f"unknown objective {self.objective!r}: valid are {', '.join(OBJECTIVES)}")
        if self.ft.init == "scan":
            raise NeurotextError("init 'scan' starts from one neuron's best tokens; Q2 optimizes sets of units "
                                 "towards a word's pattern: use init 'token' or 'normal'")
        if self.ks is not None:
            self.ks = tuple(self.ks)
            if not self.ks:
                raise NeurotextError("no k given: list at least one, e.g. --ks 1,16,256")
            for k in self.ks:
                if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                    raise NeurotextError(f"k must be a positive integer, got {k!r}")


def resolve_layers(layers, model) -> list[int]:
    """A layer spec (``"0-5"``, ``"0,3"``, ``"*"``, a list of ints or None = all) -> sorted unique layers."""
    if layers is None:
        return list(range(model.n_layers))
    if isinstance(layers, str):
        return parse_layers(layers, model.n_layers, model.name)
    out = sorted(set(layers))
    if not out:
        raise NeurotextError("no layers given")
    for layer in out:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.n_layers:
            raise NeurotextError(f"layer {layer!r} is out of range for {model.name}: layers are 0-{model.n_layers - 1}")
    return out


def default_ks(width: int) -> list[int]:
    """Powers of two below ``width``, then ``width`` itself (e.g. 1, 2, ..., 1024, 1536)."""
    ks, k = [], 1
    while k < width:
        ks.append(k)
        k *= 2
    return ks + [width]


def parse_ks(spec: str) -> list[int]:
    """``"1,2,16"`` -> [1, 2, 16]; bad entries raise :class:`NeurotextError`."""
    out = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise NeurotextError(f"malformed k {part!r} in --ks {spec!r}: expected integers, e.g. 1,16,256") from None
    if not out:
        raise NeurotextError(f"no k given in --ks {spec!r}: list at least one, e.g. 1,16,256")
    return out


# ----------------------------------------------------------------------------- words
@dataclass(frozen=True)
class Word:
    """A word that is exactly one vocabulary token."""

    text: str  # as given
    token: str  # the vocabulary token it maps to (lower-cased by uncased tokenizers)
    id: int


def _single_token(model, text: str) -> tuple[int | None, str | None]:
    """(token id, None) when ``text`` is one usable vocabulary token, else (None, reason)."""
    tok = model.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) == 0:
        return None, "tokenizes to nothing"
    if len(ids) > 1:
        pieces = " ".join(tok.convert_ids_to_tokens(ids))
        return None, f"not a single token: splits into {len(ids)} tokens ({pieces})"
    i = ids[0]
    if i == tok.unk_token_id:
        return None, f"not in the vocabulary (maps to {tok.unk_token})"
    if i in tok.all_special_ids:
        return None, "a special token"
    if i >= len(model.tokens):
        return None, "token id outside the embedding matrix"
    return i, None


def resolve_words(model, words) -> tuple[list[Word], list[dict]]:
    """Map words to single vocabulary tokens.

    Args:
        model: a :class:`neurotext.model.adapters.Model`.
        words: strings; blanks are ignored.

    Returns:
        (usable words in the given order, skipped as ``{"word", "reason"}``). A word is skipped when it
        is not exactly one token, is unknown, special, or maps to the same token as an earlier word.
    """
    usable, skipped, seen = [], [], {}
    for text in (str(w).strip() for w in words):
        if not text:
            continue
        i, reason = _single_token(model, text)
        if reason is None and i in seen:
            reason = f"same token {model.tokens[i]!r} as {seen[i]!r}"
        if reason is not None:
            skipped.append({"word": text, "reason": reason})
            continue
        seen[i] = text
        usable.append(Word(text, model.tokens[i], i))
    return usable, skipped


def default_words(model, n: int) -> list[Word]:
    """The ``n`` most frequent English words (``wordfreq``) that are one vocabulary token, alphabetic
    and at least 3 letters long, most frequent first."""
    if not isinstance(n, int) or n < 1:
        raise NeurotextError(f"the number of words must be a positive integer, got {n!r}")
    from wordfreq import top_n_list

    out, seen = [], set()
    for w in top_n_list("en", max(2000, 40 * n)):
        if len(out) == n:
            break
        if not (w.isalpha() and len(w) >= 3):
            continue
        i, reason = _single_token(model, w)
        if reason is None and i not in seen:
            seen.add(i)
            out.append(Word(w, model.tokens[i], i))
    if len(out) < n:
        raise NeurotextError(f"only {len(out)} frequent English words are single tokens of {model.name}; "
                             f"ask for at most that many")
    return out


def read_word_file(path) -> list[str]:
    """Words from a text file: separated by whitespace, commas or newlines; ``#`` starts a comment."""
    p = Path(path)
    if not p.is_file():
        raise NeurotextError(f"word file {path}: no such file" if not p.exists() else f"word file {path} is not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NeurotextError(f"word file {path} is unreadable: {e}") from e
    words = [w for line in text.splitlines() for w in line.split("#", 1)[0].replace(",", " ").split()]
    if not words:
        raise NeurotextError(f"word file {path} holds no words")
    return words


# ----------------------------------------------------------------------------- selection
def unit_order(select: str, z: torch.Tensor, words: list[Word], layer: int, site: str, seed: int) -> torch.Tensor:
    """Units in selection order for every word: (W, U) long; the first k are the k selected units.

    Orders are nested in k, so a larger k always adds units to a smaller k's set.
    """
    if select == "zscore":
        return z.abs().argsort(dim=1, descending=True, stable=True)
    if select == "zhigh":
        return z.argsort(dim=1, descending=True, stable=True)
    assert select == "random", select
    u = z.shape[1]
    perms = [torch.randperm(u, generator=row_generator(seed, f"random-units|{w.token}|L{layer}|{site}"))
             for w in words]
    return torch.stack(perms).to(z.device)


def word_patterns(model, layer: int, site: str, words: list[Word]) -> torch.Tensor:
    """Each word's activation pattern over the site's units, the word alone in the template: (W, U).
    For ``ffn`` these are pre-activations (the quantity the objectives and the scan statistics use)."""
    ids = torch.tensor([w.id for w in words], device=model.device)
    with torch.no_grad():
        return model.capture(model.embeddings[ids].float(), [(layer, site)])[(layer, site)].all().float()


# ----------------------------------------------------------------------------- run
def _optimize(model, layer: int, site: str, objective, x0: torch.Tensor, n_groups: int, radius: float,
              ft: FTConfig, bar) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimize G groups with ``ft.restarts`` restarts each (x0: (G*R, d_emb), restarts adjacent), whole
    groups per batch of at most ``ft.batch_size`` rows.

    Each batch keeps its groups' best restarts with :func:`neurotext.engine.optimize.best_of_restarts` (as
    :class:`Textualizer` does); with a low-precision ``dtype`` the reported value is recomputed in
    float32 at the chosen x.

    Returns:
        The best x per group (G, d_emb) and its objective value (G,).
    """
    r = ft.restarts
    per_batch = max(1, ft.batch_size // r)  # groups per optimizer batch
    xs, values = [], []
    for g0 in range(0, n_groups, per_batch):
        sl = slice(g0, min(g0 + per_batch, n_groups))
        n = sl.stop - sl.start
        trace = best_of_restarts(model, layer, site, lambda rep, sl=sl: objective(sl, rep),
                                 x0[sl.start * r:sl.stop * r], n, radius, ft)
        x, value = trace.x, trace.value  # (n, d_emb), (n,)
        if ft.dtype != "float32":
            with torch.no_grad():
                value = objective(sl, 1)(model.capture(x, [(layer, site)])[(layer, site)]).float()
        xs.append(x)
        values.append(value)
        bar.update(n * r)
    return torch.cat(xs), torch.cat(values)


def _encode_layer(tx: Textualizer, layer: int, words: list[Word], ks: list[int], cfg: EncodeConfig,
                  bar) -> list[dict]:
    """All (word, selection, k) rows of one layer, optimized in batches of ``cfg.ft.batch_size`` rows."""
    model, ft, site = tx.model, cfg.ft, cfg.site
    radius = model.radius(ft.percentile)
    width = model.sizes[site]
    scan = tx.scans.get(layer, site)
    a = word_patterns(model, layer, site, words)  # (W, U)
    z = (a - scan.mean.to(a.device)) / scan.std.to(a.device).clamp_min(Z_STD_MIN)  # (W, U)
    orders = {s: unit_order(s, z, words, layer, site, ft.seed) for s in cfg.select}

    # Groups (word, selection, k). At k == width every selection is the whole site: one group serves all.
    groups, aliases = [], {}
    for wi in range(len(words)):
        for s in cfg.select:
            for k in ks:
                if k == width and s != cfg.select[0]:
                    aliases[(wi, s, k)] = (wi, cfg.select[0], k)
                else:
                    groups.append((wi, s, k))
    n_groups, r = len(groups), ft.restarts
    mask = torch.zeros(n_groups, width, dtype=torch.bool, device=a.device)  # (G, U)
    for g, (wi, s, k) in enumerate(groups):
        mask[g, orders[s][wi, :k]] = True
    word_of = torch.tensor([wi for wi, _, _ in groups], device=a.device)  # (G,)

    # Rows = groups x restarts. A word's restarts start from the same points for every selection and k
    # (a paired comparison), and never depend on the batch.
    keys = [f"encode|{words[wi].token}|{j}" for wi, _, _ in groups for j in range(r)]
    x0 = initial_points(model.embeddings, keys, ft.seed, ft.init)  # (G*R, d_emb)
    target = a[word_of]  # (G, U)

    def objective(sl: slice, rep: int):
        """The objective for groups ``sl``, each repeated ``rep`` times (restarts adjacent)."""
        m = mask[sl].repeat_interleave(rep, dim=0)  # (g*rep, U)
        if cfg.objective == "pattern":
            return objectives.pattern_masked(m, target[sl].repeat_interleave(rep, dim=0))
        return objectives.mean_masked(m)

    x, value = _optimize(model, layer, site, objective, x0, n_groups, radius, ft, bar)  # (G, d_emb), (G,)

    ids = torch.tensor([words[wi].id for wi, _, _ in groups], device=x.device)  # (G,)
    rank = tx.rank_of(x, ids)  # (G,)
    _, near = tx.nearest(x, ft.top)  # (G, top)
    own_cos = F.cosine_similarity(x.float(), model.embeddings[ids].float(), dim=1)  # (G,)
    found = {}
    for g, (wi, s, k) in enumerate(groups):
        found[(wi, s, k)] = {
            "rank": int(rank[g]), "cosine": float(own_cos[g]), "value": float(value[g]),
            "nearest": [model.tokens[t] for t in near[g].tolist()],
        }
    out = []
    for wi, w in enumerate(words):
        for s in cfg.select:
            for k in ks:
                res = found[aliases.get((wi, s, k), (wi, s, k))]
                out.append({"word": w.text, "token": w.token, "layer": layer, "select": s, "k": k, **res})
    return out


def run_encode(model=None, words=None, num_words: int = 100, config: EncodeConfig | None = None,
               cache_dir=None, progress: bool | None = None) -> dict:
    """Q2 for a set of words over layers and k: how many units does FT need to recover each word?

    Args:
        model: a :class:`Textualizer`, a loaded Model, a name/path, or None for the bundled model.
        words: words to encode (strings); None = the ``num_words`` most frequent English words that are
            single tokens (:func:`default_words`).
        num_words: size of the default word list.
        config: :class:`EncodeConfig` (layers, site, ks, selections, objective, FT settings).
        cache_dir: vocabulary-scan cache (see :class:`neurotext.engine.scan.ScanCache`).
        progress: progress bar on stderr (None: only on a terminal).

    Returns:
        One JSON-ready dict: ``model, site, objective, layers, ks, select, words, skipped, results,
        per_word, smallest_k, smallest_k_summary, config, definitions, seconds``.

    Raises:
        NeurotextError: no usable word, a k outside 1..width, a layer out of range.
    """
    cfg = config or EncodeConfig()
    # A given Textualizer lends its model and scan cache; the FT settings are always cfg.ft.
    tx = model if isinstance(model, Textualizer) else Textualizer(model, cfg.ft, cache_dir=cache_dir,
                                                                   progress=progress)
    m, site = tx.model, cfg.site
    width = m.sizes[site]
    layers = resolve_layers(cfg.layers, m)
    ks = sorted(set(cfg.ks or default_ks(width)))
    for k in ks:
        if k > width:
            raise NeurotextError(f"k = {k} is larger than the {site} width of {m.name} ({width} units): "
                                 f"k must be 1-{width}")
    if words is None:
        usable, skipped = default_words(m, num_words), []
        source = f"the {num_words} most frequent English words (wordfreq) that are single tokens, " \
                 "alphabetic and at least 3 letters"
    else:
        words = [words] if isinstance(words, str) else list(words)
        if not any(str(w).strip() for w in words):
            raise NeurotextError("empty word list: give at least one word")
        usable, skipped = resolve_words(m, words)
        if not usable:
            raise NeurotextError(f"no usable word: all {len(skipped)} skipped "
                                 f"({skipped[0]['word']!r}: {skipped[0]['reason']})")
        source = "given"

    t0 = time.perf_counter()
    tx.scans.prefetch(max(layers))  # one scan pass to the deepest layer yields every layer up to it
    shared = (len(cfg.select) - 1) if width in ks else 0  # k = width: one group serves every selection
    rows_per_layer = len(usable) * (len(cfg.select) * len(ks) - shared) * cfg.ft.restarts
    bar = tqdm(total=rows_per_layer * len(layers), desc="encode", unit="row", disable=tqdm_disable(progress))
    per_word = []
    for layer in layers:
        per_word += _encode_layer(tx, layer, usable, ks, cfg, bar)
    bar.close()
    seconds = time.perf_counter() - t0
    doc = {
        "model": m.name, "site": site, "width": width, "objective": cfg.objective, "layers": layers, "ks": ks,
        "select": list(cfg.select), "words": [w.text for w in usable], "skipped": skipped, "word_source": source,
        "vocab_size": len(m.tokens),
        "results": summarize(per_word, layers, cfg.select, ks),
        "per_word": per_word,
        "smallest_k": smallest_k(per_word),
    }
    doc["smallest_k_summary"] = smallest_k_summary(doc["smallest_k"], layers, cfg.select, len(usable))
    doc["config"] = asdict(cfg.ft)
    doc["definitions"] = {**DEFINITIONS, "selections": {s: SELECTIONS[s] for s in cfg.select},
                          "objective": OBJECTIVES[cfg.objective]}
    doc["seconds"] = seconds
    return doc


# ----------------------------------------------------------------------------- summaries
def summarize(per_word: list[dict], layers, selects, ks) -> list[dict]:
    """Recovery curve rows: per (layer, select, k) the share at rank 1, within top 10, and the median rank."""
    by = {}
    for row in per_word:
        by.setdefault((row["layer"], row["select"], row["k"]), []).append(row["rank"])
    out = []
    for layer in layers:
        for s in selects:
            for k in ks:
                ranks = np.asarray(by.get((layer, s, k), []))
                if ranks.size == 0:
                    continue
                out.append({"layer": layer, "select": s, "k": k, "n": int(ranks.size),
                            "top1": float((ranks == 1).mean()), "top10": float((ranks <= RECOVERED_TOP).mean()),
                            "median_rank": float(np.median(ranks))})
    return out


def smallest_k(per_word: list[dict]) -> list[dict]:
    """Per (word, layer, select): the smallest k with rank 1, or None if no k recovered the word."""
    best: dict[tuple, int | None] = {}
    for row in per_word:
        key = (row["word"], row["layer"], row["select"])
        cur = best.get(key)
        if row["rank"] == 1 and (cur is None or row["k"] < cur):
            best[key] = row["k"]
        else:
            best.setdefault(key, None)
    return [{"word": w, "layer": layer, "select": s, "k": k} for (w, layer, s), k in best.items()]


def smallest_k_summary(rows: list[dict], layers, selects, n_words: int) -> list[dict]:
    """Median smallest recovering k with its quartiles per (layer, select). Never-recovered words count
    as larger than every k, so a median can be None ("not recovered"); quartiles are observed ks."""
    out = []
    for layer in layers:
        for s in selects:
            ks = [r["k"] for r in rows if r["layer"] == layer and r["select"] == s]
            if not ks:
                continue
            v = np.asarray([np.inf if k is None else k for k in ks], dtype=np.float64)
            q1, med, q3 = (np.quantile(v, q, method="inverted_cdf") for q in (0.25, 0.5, 0.75))
            out.append({"layer": layer, "select": s, "n": len(ks), "recovered": int(np.isfinite(v).sum()),
                        **{name: (int(q) if np.isfinite(q) else None)
                           for name, q in (("median", med), ("q1", q1), ("q3", q3))}})
    return out


# ----------------------------------------------------------------------------- output
def render_text(doc: dict) -> str:
    """Readable tables: per layer the recovery curves and the smallest recovering k; then per word."""
    sel = doc["select"]
    lines = [
        f"Q2: how many neurons encode a word?  {doc['model']}, site {doc['site']} ({doc['width']} units), "
        f"objective {doc['objective']}",
        f"{len(doc['words'])} words ({doc['word_source']}); FT {doc['config']['steps']} steps x "
        f"{doc['config']['restarts']} restarts, seed {doc['config']['seed']}",
    ]
    if doc["skipped"]:
        lines.append(f"skipped {len(doc['skipped'])}: " + "; ".join(f"{s['word']!r} ({s['reason']})"
                                                                   for s in doc["skipped"]))
    lines.append(f"recovered: top1 = the word is the FT vector's nearest token (rank 1 of {doc['vocab_size']}); "
                 f"top10 = rank <= {RECOVERED_TOP}; smallest k = smallest k with rank 1")
    for s in sel:
        lines.append(f"  {s}: {doc['definitions']['selections'][s]}")
    res = {(r["layer"], r["select"], r["k"]): r for r in doc["results"]}
    summ = {(r["layer"], r["select"]): r for r in doc["smallest_k_summary"]}
    head = "  ".join(f"{s + ' top1':>12} {'top10':>6} {'med.rank':>8}" for s in sel)
    for layer in doc["layers"]:
        lines += ["", f"layer {layer}", f"  {'k':>5}  {head}"]
        for k in doc["ks"]:
            cells = []
            for s in sel:
                r = res.get((layer, s, k))
                cells.append(f"{r['top1']:>12.2f} {r['top10']:>6.2f} {r['median_rank']:>8g}" if r else " " * 28)
            lines.append(f"  {k:>5}  " + "  ".join(cells))
        for s in sel:
            sm = summ.get((layer, s))
            if sm:
                med = "never (most words)" if sm["median"] is None else str(sm["median"])
                spread = f"[q1 {_k(sm['q1'])}, q3 {_k(sm['q3'])}]"
                lines.append(f"  smallest recovering k, {s}: median {med} {spread}, "
                             f"{sm['recovered']}/{sm['n']} words recovered at some k")
    lines += ["", "smallest recovering k per word (" + " / ".join(sel) + "; - = never)"]
    sk = {(r["word"], r["layer"], r["select"]): r["k"] for r in doc["smallest_k"]}
    width = max([len(w) for w in doc["words"]] + [4])
    lines.append(f"  {'word':<{width}}  " + "  ".join(f"{'L' + str(layer):>11}" for layer in doc["layers"]))
    for w in doc["words"]:
        cells = ["/".join(_k(sk.get((w, layer, s))) for s in sel) for layer in doc["layers"]]
        lines.append(f"  {w:<{width}}  " + "  ".join(f"{c:>11}" for c in cells))
    return "\n".join(lines)


def _k(k) -> str:
    return "-" if k is None else str(k)


def write_outputs(doc: dict, out) -> list[Path]:
    """Write ``encode.json`` (the document), ``encode_per_word.csv`` and ``encode.png`` into ``out``.

    Returns:
        The paths written.
    """
    from .plots import q2_figure

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NeurotextError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / ENCODE_JSON, out / ENCODE_CSV, out / ENCODE_PNG]
        paths[0].write_text(json.dumps(doc, allow_nan=False) + "\n")
        with open(paths[1], "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["word", "token", "layer", "select", "k", "rank", "cosine", "value", "nearest"])
            for r in doc["per_word"]:
                w.writerow([r["word"], r["token"], r["layer"], r["select"], r["k"], r["rank"],
                            f"{r['cosine']:.6f}", f"{r['value']:.6f}", " ".join(r["nearest"])])
        q2_figure(doc["results"], paths[2], site=f"{doc['site']}, {doc['objective']} objective")
    except OSError as e:
        raise NeurotextError(f"cannot write to {out}: {e.strerror or e}") from e
    return paths


