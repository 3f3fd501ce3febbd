"""Q2 on real text: how many neurons, and how many dictionary features, does a word need when it is read from a
corpus? (DESIGN.md section 1, "Q2 on real text"; Dalvi et al. 2019, Durrani et al. 2020: NeuroX's probe ranking.)

For each word and each site (``L3.ffn``, ``L3.out``, and the features of a dictionary on the site): a binary probe
"the token at this position is the word" over the site's units, trained on text positions of the corpus's train
part and evaluated on the held-out test part. The probe is elastic-net logistic regression with class weighting
(:mod:`neurotext.analysis.linear`) on units standardized by their mean and standard deviation over the word's
training sample (as a scaler fitted on the training data does; standardizing by the whole corpus instead left the
word's positives many standard deviations out, and the solver needed ten times the steps). Units are ranked by the
absolute weight of the full probe; the probe is retrained on the top k units for k = 1, 2, 4, ... up to the site
width, and the smallest k that keeps 95% and 99% of the full probe's average precision is the word's count.
Baselines, as STYLE.md asks (Hewitt and Liang 2019 for the control task):

- **random units**: the same retraining on k units drawn at random (seeded per word, layer and site; nested in k);
- **control task**: the labels of a random word type of the same corpus frequency (a token that occurs in both
  parts, within 10% of the word's train count where one exists, else the nearest), probed with the same settings
  and units; ``selectivity`` = the word's full-probe average precision minus the control's.

**Sampling** (:data:`SAMPLING`): per part, every occurrence of a word (up to ``max_positives``, a seeded uniform
sample beyond that) are its positives; its negatives are positions drawn uniformly at random from the part (one
seeded sample shared by every word, the word's and its control's tokens left out), ``negatives`` times as many in
the train part (4: the fits' cost grows with it) and ``test_negatives`` times as many in the test part (32: average
precision depends on the share of positives, and a 1:4 test sample flatters a few units; on a tiny model the
independent check of the tests found k95 units at 0.79 of the full AP on every test position when they were chosen
at 1:4, at 1.0 when chosen at 1:16). The average precision of chance is 1 / (1 + ``test_negatives``).

**One corpus pass**: a tokenization-only pass counts every token of each part (the control words need the
frequencies, the sampling needs the positions), then :func:`neurotext.engine.activations.stream_sites` runs once
over the train part and once over the test part for all sites at once, keeping only the sampled positions.

A word is a vocabulary token: its forms are the single tokens the word alone and the word after a space map to
(one for WordPiece, ``the`` and ``Ġthe`` for byte-level BPE); positions holding any form are positives. A word
with no single-token form (``textualization``: several WordPiece tokens) is skipped and reported with the reason,
as are unknown words and words without a train or a held-out occurrence.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..engine.activations import stream_sites
from ..engine.contexts import PARTS, SplitConfig, Tokenize
from ..engine.optimize import row_generator
from ..engine.scan import tqdm_disable
from ..engine.threads import one_thread
from ..errors import NeurotextError
from ..model.names import SITES, base_site, feature_site, is_feature_site, parse_layers
from .encode import default_ks, default_words
from .linear import auroc, average_precision, fit_logistic

KEEP = (0.95, 0.99)  # k95 and k99: the smallest k keeping this share of the full probe's average precision
CONTROL_TOLERANCE = 0.10  # a control word type's train count is within this share of the word's, where one exists
BEST_SINGLE_CANDIDATES = 32  # the best single unit is sought among this many by probe rank and as many by mean gap
SMALL_K = 64  # the k-sweeps fit the ks up to this apart from the larger ones (see _sweep)
STD_MIN = 1e-6  # a unit whose standard deviation is below this is left unscaled (constant: it carries nothing)

# Output filenames, here and nowhere else.
PROBE_JSON = "probe.json"
PROBE_CSV = "probe_per_word.csv"
PROBE_PNG = "probe.png"
CURVES_PNG = "probe_curves_L{layer}_{site}.png"

SAMPLING = ("per part (train, test): every occurrence of the word is a positive (a seeded uniform sample of "
            "max_positives where there are more); negatives are positions drawn uniformly at random from the part "
            "(one seeded sample shared by all words; the word's and its control word's tokens left out), "
            "negatives_per_positive times as many as the positives in the train part and test_negatives_per_positive "
            "times as many in the test part (fewer where the part is too small); chance average precision = "
            "positives / (positives + negatives) of the test sample")

DEFINITIONS = {
    "ap": "average precision of the probe's scores on the test sample (scikit-learn's definition)",
    "auroc": "area under the ROC curve on the test sample (ties count half)",
    "ranking": "unit indices, best first: by the full probe's absolute weight, ties (weight 0) by the absolute "
               "difference of the positives' and negatives' mean standardized value",
    "ap_by_k": "the probe retrained on the top k units of the ranking, its test average precision",
    "random_ap_by_k": "the probe retrained on k random units (seeded, nested in k), its test average precision",
    "k95": "smallest k whose retrained probe keeps 95% of the full probe's average precision (k99: 99%)",
    "selectivity": "ap_full minus the control task's ap_full (a random word type of the same corpus frequency, "
                   "probed with the same settings; Hewitt and Liang 2019)",
    "best_single": "the single unit whose value (signed by its mean gap) best ranks the word on the train sample, "
                   f"among the top {BEST_SINGLE_CANDIDATES} of the ranking and the {BEST_SINGLE_CANDIDATES} of "
                   "largest mean gap; its test average precision",
    "ft": "FT's smallest recovering k (neurotext encode, z-score selection) for the word at the layer; "
          "shared: units in both FT's selection at that k and the probe's top k95; chance_shared: k_ft * k95 / width",
}


@dataclass
class ProbeConfig:
    """Probe settings; written into every record (``probe``, ``sampling``)."""

    ks: tuple[int, ...] | None = None  # None: 1, 2, 4, ... below each site's width, and the width
    negatives: int = 4  # train negatives per positive (a fixed multiple; the fits' cost grows with it)
    test_negatives: int = 32  # test negatives per positive: chance AP = 1/33
    max_positives: int = 256  # positives per word and part at most (a seeded uniform sample beyond)
    alpha: float = 1e-2  # elastic-net strength per (class-weighted, averaged) sample; sklearn C = 1 / (alpha n)
    l1_ratio: float = 0.5  # share of the penalty that is L1 (sparse rankings); the rest is L2
    steps: int = 500  # most proximal-gradient steps per working-set round
    tol: float = 1e-4  # a round stops when no weight moves by more than this (relative) over a step
    seed: int = 0  # positives' and negatives' samples, random units, control words
    max_length: int = 64  # text tokens per context (longer documents are cut into consecutive contexts)
    split_seed: int = 0  # the corpus's train/test split of documents (as neurotext examples)
    test_share: float = 0.2
    max_tokens: int | None = None  # per part: stop before the context that would pass this many text tokens
    batch_size: int = 64  # contexts per forward batch
    chunk_mb: int = 256  # memory of one fitting chunk (words fitted together) at most, about
    storage: str = "float16"  # kept neuron activations (float16 halves the memory; features are kept sparse)

    def __post_init__(self):
        for name in ("negatives", "test_negatives", "max_positives", "steps", "max_length", "batch_size", "chunk_mb"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NeurotextError(f"{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if not self.alpha > 0:
            raise NeurotextError(f"alpha must be positive, got {self.alpha!r}")
        if not 0 <= self.l1_ratio <= 1:
            raise NeurotextError(f"l1-ratio must be in [0, 1], got {self.l1_ratio!r}")
        if self.storage not in ("float16", "float32"):
            raise NeurotextError(f"storage must be float16 or float32, got {self.storage!r}")
        if self.ks is not None:
            self.ks = tuple(self.ks)
            if not self.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks):
                raise NeurotextError(f"ks must be positive integers, got {self.ks!r}")
        SplitConfig(self.test_share, self.split_seed)  # validates the share

    def sampling(self) -> dict:
        return {"negatives_per_positive": self.negatives, "test_negatives_per_positive": self.test_negatives,
                "max_positives": self.max_positives, "seed": self.seed,
                "split_seed": self.split_seed, "test_share": self.test_share, "max_length": self.max_length,
                "max_tokens": self.max_tokens, "rule": SAMPLING}

    def probe(self) -> dict:
        return {"alpha": self.alpha, "l1_ratio": self.l1_ratio, "class_weight": "balanced", "steps": self.steps,
                "tol": self.tol, "standardized": "by each unit's mean and std over the word's training sample",
                "solver": "working sets and accelerated proximal gradient (torch) on the objective of scikit-learn's "
                          "LogisticRegression(C=1/(alpha*n), l1_ratio, class_weight='balanced')"}


# ----------------------------------------------------------------------------- words and sites
@dataclass(frozen=True)
class ProbeWord:
    """A word probed on real text: the single vocabulary tokens it appears as."""

    text: str
    forms: tuple[int, ...]  # token ids: the word alone, and after a space, where each is one token
    tokens: tuple[str, ...]  # their vocabulary strings


def _forms(model, text: str) -> tuple[tuple[int, ...], str | None]:
    tok = model.tokenizer
    special = set(tok.all_special_ids)
    forms, pieces = [], []
    for variant in (text, " " + text):
        ids = tok(variant, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] != tok.unk_token_id and ids[0] not in special and ids[0] < len(model.tokens):
            if ids[0] not in forms:
                forms.append(int(ids[0]))
        elif ids:
            pieces.append(ids)
    if forms:
        return tuple(forms), None
    if not pieces:
        return (), "tokenizes to nothing"
    ids = min(pieces, key=len)
    if len(ids) == 1:
        return (), (f"not in the vocabulary (maps to {tok.unk_token})" if ids[0] == tok.unk_token_id
                    else "a special token")
    return (), (f"not a single token: splits into {len(ids)} tokens ({' '.join(tok.convert_ids_to_tokens(ids))}); "
                "probe one vocabulary token")


def resolve_probe_words(model, words) -> tuple[list[ProbeWord], list[dict]]:
    """Words -> their single-token forms; (usable in order, skipped as ``{"word", "reason"}``)."""
    usable, skipped, seen = [], [], {}
    for text in (str(w).strip() for w in words):
        if not text:
            continue
        forms, reason = _forms(model, text)
        clash = next((seen[f] for f in forms if f in seen), None)
        if reason is None and clash is not None:
            reason = f"same token as {clash!r}"
        if reason is not None:
            skipped.append({"word": text, "reason": reason})
            continue
        for f in forms:
            seen[f] = text
        usable.append(ProbeWord(text, forms, tuple(model.tokens[f] for f in forms)))
    return usable, skipped


def parse_sites(spec: str, model) -> list[tuple[int, str]]:
    """``--at`` -> (layer, site) points: ``L3.ffn``, ``L0-5.out``, ``L*.ffn,L*.out``; a neuron site with a dictionary
    attached adds its features (site ``ffn.f``); ``L3.ffn.f`` names the features alone."""
    valid = [*SITES, *(feature_site(s) for s in SITES)]
    points: set[tuple[int, str]] = set()
    items = [p.strip() for p in str(spec or "").split(",") if p.strip()]
    if not items:
        raise NeurotextError("no site given: use --at L{layer}.{site}, e.g. --at L3.ffn or --at 'L*.ffn,L*.out'")
    for item in items:
        head, _, site = item.partition(".")
        if not head.startswith("L") or not site:
            raise NeurotextError(f"--at {item!r} is not a site: use L{{layer}}.{{site}}, e.g. L3.ffn, L0-5.out, L*.ffn")
        if site not in valid:
            raise NeurotextError(f"--at {item!r}: {model.name} has no site {site!r}; sites are {', '.join(valid)}")
        for layer in parse_layers(head[1:], model.n_layers, model.name):
            if is_feature_site(site):
                model.dictionary(layer, site)  # one line when none is attached there
                points.add((layer, site))
                continue
            points.add((layer, site))
            if (layer, site) in model.dictionaries:
                points.add((layer, feature_site(site)))
    return sorted(points)


def point_ks(width: int, ks) -> list[int]:
    """The k values run at a site: the given ones up to its width (default powers of two), and the width."""
    base = default_ks(width) if ks is None else [k for k in ks if k < width]
    return sorted(set(base) | {width})


# ----------------------------------------------------------------------------- sampling
def _rng(seed: int, *key) -> np.random.Generator:
    digest = hashlib.blake2b("|".join(map(str, (seed, *key))).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@dataclass
class _PartIndex:
    """Every text token of one part in corpus order, and where each context starts."""

    ids: np.ndarray  # (N,) int32
    start: dict  # context index -> position of its first token in ``ids``


def index_parts(model, corpus, cfg: ProbeConfig) -> dict[str, _PartIndex]:
    """The tokenization-only pass: the same contexts, split and ``max_tokens`` rule as ``stream_sites``."""
    tok = Tokenize(model.tokenizer, cfg.max_length, 0, SplitConfig(cfg.test_share, cfg.split_seed),
                   vocab_size=int(model.embeddings.shape[0]))
    ids: list[list[np.ndarray]] = [[], []]
    start: list[dict] = [{}, {}]
    seen, stopped = [0, 0], [False, False]
    for c in tok.contexts(corpus.documents()):
        p = c.part
        if stopped[p]:
            if all(stopped):
                break
            continue
        if cfg.max_tokens is not None and seen[p] + len(c.ids) > cfg.max_tokens:
            stopped[p] = True
            continue
        start[p][c.index] = seen[p]
        seen[p] += len(c.ids)
        ids[p].append(c.ids)
    return {name: _PartIndex(np.concatenate(ids[p]) if ids[p] else np.zeros(0, np.int32), start[p])
            for p, name in enumerate(PARTS)}


def _alphabetic(model, ids: np.ndarray) -> np.ndarray:
    tok = model.tokenizer
    out = np.zeros(len(ids), dtype=bool)
    for i, t in enumerate(ids):
        s = model.tokens[t]
        if s.startswith("##"):
            continue
        text = tok.convert_tokens_to_string([s]).strip()
        out[i] = text.isalpha()
    return out


def choose_controls(model, words: list[ProbeWord], counts: dict[str, np.ndarray], seed: int) -> dict[str, int | None]:
    """For each word a control token: a word type (alphabetic, not a probed word, not special) seen in both parts,
    of the same train frequency (within :data:`CONTROL_TOLERANCE` where one exists, else the nearest); seeded."""
    taken = {f for w in words for f in w.forms} | set(model.tokenizer.all_special_ids)
    cand = np.flatnonzero((counts["train"] > 0) & (counts["test"] > 0))
    cand = cand[~np.isin(cand, list(taken))]
    cand = cand[_alphabetic(model, cand)] if len(cand) else cand
    used: set[int] = set()
    out = {}
    for w in words:
        f = int(counts["train"][list(w.forms)].sum())
        if not len(cand) or f == 0:
            out[w.text] = None
            continue
        gap = np.abs(np.log(counts["train"][cand]) - math.log(f))
        near = cand[gap <= math.log1p(CONTROL_TOLERANCE)]
        if not len(near):
            near = cand[gap <= gap.min() + 1e-12]
        fresh = near[~np.isin(near, list(used))]
        pool = fresh if len(fresh) else near
        pick = int(pool[_rng(seed, "control", w.text).integers(len(pool))])
        used.add(pick)
        out[w.text] = pick
    return out


@dataclass
class _Sample:
    """What one part keeps: the sampled positions, the positives of every target, the negative pool."""

    positions: np.ndarray  # (R,) int64 kept positions of the part, sorted
    tokens: np.ndarray  # (R,) token at each kept row
    positives: dict  # target key -> rows (into the kept rows) of its sampled positives
    occurrences: dict  # target key -> occurrences in the part
    pool: np.ndarray  # rows of the negative pool, in the pool's (random) order


def sample_part(index: _PartIndex, targets: dict[str, tuple[int, ...]], part: str, cfg: ProbeConfig) -> _Sample:
    """Sample positives (all occurrences, up to ``max_positives``) and the shared negative pool of one part."""
    picked, occ = {}, {}
    for key, forms in targets.items():
        where = np.flatnonzero(np.isin(index.ids, forms))
        occ[key] = len(where)
        if len(where) > cfg.max_positives:
            where = np.sort(_rng(cfg.seed, "positives", part, key).choice(where, cfg.max_positives, replace=False))
        picked[key] = where
    most = max([len(v) for v in picked.values()] + [1])
    multiple = cfg.negatives if part == "train" else cfg.test_negatives
    # room for the left-out tokens: a word and its control (of about the same frequency) leave out twice its share
    share = max([occ[k] / max(len(index.ids), 1) for k in targets] + [0.0])
    n_pool = min(len(index.ids), int(math.ceil(multiple * most * 1.1 / max(1 - 2 * share, 0.05))) + 16)
    pool = _rng(cfg.seed, "negatives", part).choice(len(index.ids), n_pool, replace=False) if n_pool else \
        np.zeros(0, np.int64)
    positions = np.unique(np.concatenate([pool, *picked.values()]).astype(np.int64))
    rows = lambda pos: np.searchsorted(positions, pos)  # noqa: E731 - positions are sorted and unique
    return _Sample(positions, index.ids[positions], {k: rows(v) for k, v in picked.items()}, occ, rows(pool))


def negatives(sample: _Sample, exclude, n: int) -> np.ndarray:
    """The first ``n`` rows of the pool whose token is none of ``exclude``."""
    ok = ~np.isin(sample.tokens[sample.pool], list(exclude))
    return sample.pool[ok][:n]


# ----------------------------------------------------------------------------- the corpus pass
class _Rows:
    """The kept rows of one site: dense (R, U) for neurons, sparse (nonzero entries) for dictionary features."""

    def __init__(self, n: int, width: int, sparse: bool, dtype: torch.dtype):
        self.width, self.sparse = width, sparse
        self.dense = None if sparse else torch.zeros(n, width, dtype=dtype)
        self.parts: list = []  # sparse: (rows, cols, values) per batch
        self.n = n

    def put(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        if not self.sparse:
            self.dense[rows] = values.to(self.dense.dtype)
            return
        r, c = values.nonzero(as_tuple=True)
        self.parts.append((rows[r], c, values[r, c].float()))

    def finish(self) -> None:
        if not self.sparse:
            return
        empty = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0))
        r, c, v = (torch.cat(x) for x in zip(*self.parts)) if self.parts else empty
        order = torch.argsort(r, stable=True)
        self.cols, self.vals = c[order], v[order]  # the nonzero entries, row by row
        self.crow = torch.zeros(self.n + 1, dtype=torch.long)
        self.crow[1:] = torch.bincount(r, minlength=self.n).cumsum(0)
        self.parts = []

    def get(self, rows) -> torch.Tensor:
        """Rows (m,) as float32 (m, U)."""
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        if not self.sparse:
            return self.dense[rows].float()
        lo, hi = self.crow[rows], self.crow[rows + 1]
        lengths = hi - lo
        out = torch.zeros(len(rows), self.width)
        if int(lengths.sum()):
            which = torch.repeat_interleave(torch.arange(len(rows)), lengths)
            first = torch.repeat_interleave(lo - torch.cumsum(lengths, 0) + lengths, lengths)
            src = first + torch.arange(int(lengths.sum()))
            out[which, self.cols[src]] = self.vals[src]
        return out


@dataclass
class ProbeData:
    """The sampled activations of one corpus pass: per part its sample and per site its kept rows."""

    samples: dict  # part -> _Sample
    rows: dict  # part -> {(layer, site): _Rows}
    widths: dict  # (layer, site) -> units
    tokens: dict  # part -> text tokens in the part

    def values(self, point, part: str, rows) -> torch.Tensor:
        """A site's values at kept rows of a part: (m, U) float32."""
        return self.rows[part][point].get(rows)


def collect(model, corpus, points, index: dict[str, _PartIndex], samples: dict[str, _Sample], cfg: ProbeConfig,
            progress: bool | None = None) -> ProbeData:
    """One forward pass per batch over each part, every site at once, keeping only the sampled positions."""
    dtype = torch.float16 if cfg.storage == "float16" else torch.float32
    split = SplitConfig(cfg.test_share, cfg.split_seed)
    rows = {}
    for part in PARTS:
        ix, sample = index[part], samples[part]
        row_of = np.full(len(ix.ids), -1, dtype=np.int64)
        row_of[sample.positions] = np.arange(len(sample.positions))
        store = {p: _Rows(len(sample.positions), model.width(*p), is_feature_site(p[1]), dtype) for p in points}
        starts = np.full(max(ix.start, default=-1) + 1, -1, dtype=np.int64)
        starts[list(ix.start)] = list(ix.start.values())
        bar = tqdm(total=len(ix.ids), desc=f"probe: {part} pass", unit="tok", disable=tqdm_disable(progress))
        for sb in stream_sites(model, corpus, points, part=part, max_length=cfg.max_length, split=split,
                               max_tokens=cfg.max_tokens, batch_size=cfg.batch_size):
            lengths = sb.lengths.numpy()
            first = starts[[c.index for c in sb.contexts]]
            pos = np.repeat(first - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
            assert np.array_equal(ix.ids[pos], sb.token_ids.numpy()), "the stream and the index disagree"
            r = row_of[pos]
            keep = np.flatnonzero(r >= 0)
            if len(keep):
                kept_rows, keep = torch.from_numpy(r[keep]), torch.from_numpy(keep)
                for p, v in sb.values.items():
                    store[p].put(kept_rows, v.index_select(0, keep))
            bar.update(len(pos))
        bar.close()
        for s in store.values():
            s.finish()
        rows[part] = store
    return ProbeData(samples, rows, {p: model.width(*p) for p in points}, {p: len(index[p].ids) for p in PARTS})


# ----------------------------------------------------------------------------- probing one site
@dataclass
class _Plan:
    """One word's rows at a site: [its positives | its control's positives | shared negatives] per part."""

    word: ProbeWord
    control: int | None
    rows: dict  # part -> rows of the layout
    counts: dict  # part -> (positives, control positives, negatives for the word, negatives for the control)


def plan_word(word: ProbeWord, control: int | None, samples: dict[str, _Sample], cfg: ProbeConfig) -> _Plan:
    rows, counts = {}, {}
    for part, s in samples.items():
        m = cfg.negatives if part == "train" else cfg.test_negatives
        pw = s.positives[word.text]
        pc = s.positives.get(f"control:{control}", np.zeros(0, np.int64)) if control is not None else \
            np.zeros(0, np.int64)
        neg = negatives(s, set(word.forms) | ({control} if control is not None else set()), m * max(len(pw), len(pc)))
        nw, nc = min(len(neg), m * len(pw)), min(len(neg), m * len(pc))
        rows[part] = np.concatenate([pw, neg[:max(nw, nc)], pc])  # the word's rows first: [pw | negatives | pc]
        counts[part] = (len(pw), len(pc), nw, nc)
    return _Plan(word, control, rows, counts)


def _labels(plans: list[_Plan], part: str, n: int, which: str):
    """Labels (W, n), sample weights (W, n) summing to 1 per word, and valid (W, n), for the word or its control
    (rows laid out as [word's positives | shared negatives | control's positives])."""
    y, a, valid = np.zeros((len(plans), n), np.float32), np.zeros((len(plans), n), np.float32), \
        np.zeros((len(plans), n), bool)
    for i, pl in enumerate(plans):
        pw, pc, nw, nc = pl.counts[part]
        lo, p, nn = (0, pw, nw) if which == "word" else (pw + max(nw, nc), pc, nc)
        if p == 0 or nn == 0:
            continue
        y[i, lo:lo + p] = 1
        a[i, lo:lo + p] = 0.5 / p
        a[i, pw:pw + nn] = 0.5 / nn
        valid[i, lo:lo + p] = True
        valid[i, pw:pw + nn] = True
    return y, a, valid


def _design(data: ProbeData, point, plans: list[_Plan]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The words' train rows, standardized by each word's own training sample, unit-major: (W, U, n) (padding rows
    0), and the mean and scale of each word's units (W, U), for its test rows."""
    n = max(len(pl.rows["train"]) for pl in plans)
    xt = torch.zeros(len(plans), data.widths[point], n)
    mean, scale = torch.zeros(len(plans), xt.shape[1]), torch.ones(len(plans), xt.shape[1])
    for i, pl in enumerate(plans):
        v = data.values(point, "train", pl.rows["train"])  # (m, U)
        mean[i] = v.mean(0)
        sd = v.std(0, correction=0)
        scale[i] = torch.where(sd < STD_MIN, torch.ones_like(sd), sd)
        xt[i, :, :len(v)] = ((v - mean[i]) / scale[i]).T
    return xt, mean, scale


def _metrics(scores: torch.Tensor, y: np.ndarray, valid: np.ndarray):
    """AP and AUROC of each probe's scores (F, n) against one word's labels and valid rows (n,): two (F,) arrays."""
    f, n = scores.shape
    s = scores.double().numpy()
    lab, ok = np.broadcast_to(y > 0, (f, n)), np.broadcast_to(valid, (f, n))
    return average_precision(s, lab, ok), auroc(s, lab, ok)


def _sweep(x, y, a, order: torch.Tensor, ks: list[int], cfg: ProbeConfig, w0=None):
    """Probes retrained on the first k units of each word's ``order`` (W, U) for every k: (w (W, F, U), b (W, F),
    steps). The ks up to :data:`SMALL_K` are fitted apart from the larger ones: a batch iterates over the union of
    its probes' working sets until its slowest probe converges, and the small ones need few units and steps."""
    width = x.shape[2]
    pos = torch.empty_like(order)
    pos.scatter_(1, order, torch.arange(width, device=order.device).expand_as(order).contiguous())  # unit's place
    ws, bs, steps = [], [], 0
    for group in ([k for k in ks if k <= SMALL_K], [k for k in ks if k > SMALL_K]):
        if not group:
            continue
        mask = pos.unsqueeze(1) < torch.tensor(group, device=x.device).view(1, -1, 1)  # (W, F, U)
        f = len(group)
        fit = fit_logistic(x, y.expand(-1, f, -1), a.expand(-1, f, -1), mask, cfg.alpha, cfg.l1_ratio, cfg.steps,
                           cfg.tol, w0=None if w0 is None else w0.expand(-1, f, -1))
        ws.append(fit.w)
        bs.append(fit.b)
        steps += fit.steps
    return torch.cat(ws, 1), torch.cat(bs, 1), steps


def _smallest(ap_by_k: dict, target: float):
    for k in sorted(ap_by_k):
        if ap_by_k[k] >= target:
            return k
    return None


def _clean(v):
    return None if v is None or not np.isfinite(v) else float(v)


def probe_site(data: ProbeData, point, plans: list[_Plan], cfg: ProbeConfig, device=None, bar=None) -> list[dict]:
    """Every word's probes at one site: full probe, control task, ranking, k-sweeps of ranked and random units,
    the best single unit. Returns one record per word (without the run's shared fields)."""
    width = data.widths[point]
    ks = point_ks(width, cfg.ks)
    sweep = [k for k in ks if k < width]
    dev = torch.device(device or "cpu")
    rows = max(len(pl.rows["train"]) for pl in plans)
    per_word = 4 * width * (3 * rows + 8 * 2 * len(ks))  # float32 designs (and copies), weights, masks, gradients
    chunk = max(1, int(cfg.chunk_mb * 2**20 // per_word))
    order_keys = sorted(range(len(plans)), key=lambda i: len(plans[i].rows["train"]))
    out: dict[int, dict] = {}
    for c0 in range(0, len(plans), chunk):
        idx = order_keys[c0:c0 + chunk]
        chunk_plans = [plans[i] for i in idx]
        recs = _probe_chunk(data, point, chunk_plans, ks, sweep, width, cfg, dev)
        for i, r in zip(idx, recs):
            out[i] = r
        if bar is not None:
            bar.update(len(idx))
    return [out[i] for i in range(len(plans))]


def _probe_chunk(data, point, plans, ks, sweep, width, cfg, dev) -> list[dict]:
    layer, site = point
    xt, mean, scale = _design(data, point, plans)  # (W, U, n): the solver streams a unit's values contiguously
    xt = xt.to(dev)
    n_tr = xt.shape[2]
    yw, aw, _ = _labels(plans, "train", n_tr, "word")
    yc, ac, _ = _labels(plans, "train", n_tr, "control")
    t = lambda a: torch.from_numpy(a).to(dev)  # noqa: E731

    # the full probes: the word's and its control task's, on the same rows
    ones = torch.ones(len(plans), 2, width, device=dev)
    full = fit_logistic(xt.transpose(1, 2), t(np.stack([yw, yc], 1)), t(np.stack([aw, ac], 1)), ones, cfg.alpha,
                        cfg.l1_ratio, cfg.steps, cfg.tol)  # w (W, 2, U)

    # the ranking: |weight|, ties by the mean gap of the standardized values
    xc = xt.cpu()
    a_pos = torch.from_numpy(np.where(yw > 0, aw, 0) * 2).unsqueeze(2)  # (W, n, 1): each class's mean
    a_neg = torch.from_numpy(np.where(yw > 0, 0, aw) * 2).unsqueeze(2)
    gap = (torch.bmm(xc, a_pos) - torch.bmm(xc, a_neg))[:, :, 0]  # (W, U)
    wabs = full.w[:, 0].abs().cpu().double().numpy()
    gabs = gap.abs().double().numpy()
    ranking = np.stack([np.lexsort((-gabs[i], -wabs[i])) for i in range(len(plans))])  # (W, U)
    singles = _single_candidates(xc, yw, aw > 0, ranking, gap)
    nonzero = (full.w[:, 0] != 0).sum(1).cpu()  # (W,)

    # the k-sweeps on the words' own rows: the top k and k random units (nested in k), retrained from the full
    # probe's weights there. The full probe restricted to its top k units is already optimal where k >= its
    # nonzero count (it meets the optimality conditions of the smaller problem), so the ranked sweep stops below.
    randoms = np.stack([torch.randperm(width, generator=row_generator(
        cfg.seed, f"probe-random|{pl.word.text}|L{layer}|{site}")).numpy() for pl in plans])
    steps = {"full": full.steps}
    f = len(sweep)
    w_r, b_r = full.w[:, :1].expand(-1, f, -1).clone(), full.b[:, :1].expand(-1, f).clone()
    w_q, b_q = w_r.clone(), b_r.clone()
    if sweep:
        n_w = max(pl.counts["train"][0] + pl.counts["train"][2] for pl in plans)
        xw = xt[:, :, :n_w].contiguous().transpose(1, 2)  # (W, n_w, U)
        y2, a2, w0 = t(yw[:, :n_w]).unsqueeze(1), t(aw[:, :n_w]).unsqueeze(1), full.w[:, :1]
        below = [k for k in sweep if k < int(nonzero.max())]
        if below:
            w, b, steps["ranked"] = _sweep(xw, y2, a2, torch.from_numpy(ranking).to(dev), below, cfg, w0)
            w_r[:, :len(below)], b_r[:, :len(below)] = w, b
        w_q, b_q, steps["random"] = _sweep(xw, y2, a2, torch.from_numpy(randoms).to(dev), sweep, cfg, w0)
        del xw
    del xt, xc
    w_all = torch.cat([full.w, w_r, w_q], 1).cpu()  # (W, 2 + 2 len(sweep), U)
    b_all = torch.cat([full.b, b_r, b_q], 1).cpu()

    # the held-out part, word by word (its sample is larger than the train part's)
    f = len(sweep)
    ap_w, au_w, ap_c, au_c = (np.full(len(plans), np.nan) for _ in range(4))
    ap_r, au_r, ap_q = (np.full((len(plans), f), np.nan) for _ in range(3))
    best = []
    for i, pl in enumerate(plans):
        rows = pl.rows["test"]
        x_te = (data.values(point, "test", rows) - mean[i]) / scale[i]  # (n, U), as the word's train rows
        scores = w_all[i] @ x_te.T + b_all[i].unsqueeze(1)  # (2 + 2f, n)
        yt, _, vt = (v[0] for v in _labels([pl], "test", len(rows), "word"))
        yct, _, vct = (v[0] for v in _labels([pl], "test", len(rows), "control"))
        ap, au = _metrics(scores[:1], yt, vt)
        ap_w[i], au_w[i] = ap[0], au[0]
        ap, au = _metrics(scores[1:2], yct, vct)
        ap_c[i], au_c[i] = ap[0], au[0]
        if f:
            ap, au = _metrics(scores[2:], yt, vt)
            ap_r[i], au_r[i], ap_q[i] = ap[:f], au[:f], ap[f:]
        unit, sign, ap_train = singles[i]
        test_ap = average_precision((x_te[:, unit].double().numpy() * sign)[None], yt[None] > 0, vt[None])[0]
        best.append({"unit": unit, "sign": sign, "ap": _clean(test_ap), "ap_train": _clean(ap_train)})

    recs = []
    for i, pl in enumerate(plans):
        ap_full, au_full = _clean(ap_w[i]), _clean(au_w[i])
        ap_by_k = {k: _clean(ap_r[i, j]) for j, k in enumerate(sweep)} if sweep else {}
        rnd_by_k = {k: _clean(ap_q[i, j]) for j, k in enumerate(sweep)} if sweep else {}
        au_by_k = {k: _clean(au_r[i, j]) for j, k in enumerate(sweep)} if sweep else {}
        ap_by_k[width], rnd_by_k[width], au_by_k[width] = ap_full, ap_full, au_full
        keep = {f"k{round(q * 100)}": _smallest({k: v for k, v in ap_by_k.items() if v is not None},
                                                q * ap_full) if ap_full is not None else None for q in KEEP}
        rkeep = {f"random_k{round(q * 100)}": _smallest({k: v for k, v in rnd_by_k.items() if v is not None},
                                                        q * ap_full) if ap_full is not None else None for q in KEEP}
        pw, pc, nw, nc = pl.counts["train"]
        tpw, tpc, tnw, tnc = pl.counts["test"]
        control = None
        if pl.control is not None and pc and tpc:
            control = {"token": None, "id": pl.control, "positives_train": pc, "positives_test": tpc,
                       "ap_full": _clean(ap_c[i]), "auroc_full": _clean(au_c[i])}
        recs.append({
            "ranking": [int(u) for u in ranking[i]], **keep,
            "ap_full": ap_full, "auroc_full": au_full,
            "ap_by_k": {str(k): ap_by_k[k] for k in ks}, "auroc_by_k": {str(k): au_by_k[k] for k in ks},
            "random_ap_by_k": {str(k): rnd_by_k[k] for k in ks}, **rkeep,
            "selectivity": None if control is None or control["ap_full"] is None or ap_full is None
            else ap_full - control["ap_full"],
            "control": control,
            "best_single": best[i],
            "positives_train": pw, "positives_test": tpw, "negatives_train": nw, "negatives_test": tnw,
            "chance_ap": tpw / (tpw + tnw) if tpw + tnw else None,
            "full_probe_nonzero": int(nonzero[i]), "solver_steps": steps,
        })
    return recs


def _single_candidates(x_tr, y, valid, ranking, gap) -> list[tuple[int, int, float]]:
    """Each word's best single unit on the train sample: (unit, sign, train AP), among the top of the ranking and
    of the mean gap (the unit's value times the sign of its gap is the score)."""
    out = []
    for i in range(x_tr.shape[0]):
        cand = np.unique(np.concatenate([ranking[i, :BEST_SINGLE_CANDIDATES],
                                         np.argsort(-gap[i].abs().numpy(), kind="stable")[:BEST_SINGLE_CANDIDATES]]))
        sign = np.sign(gap[i, cand].numpy())
        sign[sign == 0] = 1
        tr = x_tr[i][cand].double().numpy() * sign[:, None]  # (C, n): x_tr is unit-major (W, U, n)
        ap_tr = average_precision(tr, np.broadcast_to(y[i] > 0, tr.shape), np.broadcast_to(valid[i], tr.shape))
        j = int(np.nanargmax(ap_tr)) if np.isfinite(ap_tr).any() else 0
        out.append((int(cand[j]), int(sign[j]), float(ap_tr[j])))
    return out


# ----------------------------------------------------------------------------- the run
@dataclass
class ProbeResult:
    """The records (one per word, layer, site and kind of unit; skipped words as ``{"word", "skipped"}``) and the
    time each stage took."""

    records: list[dict]
    seconds: dict = field(default_factory=dict)


def run_probe(model, words=None, at: str = "L*.ffn,L*.out", corpus=None, config: ProbeConfig | None = None,
              num_words: int = 100, encode: dict | None = None, progress: bool | None = None,
              log=None) -> ProbeResult:
    """Q2 on real text for words at sites of a loaded model (dictionaries attached for features).

    Args:
        model: a loaded :class:`neurotext.model.Model` (``model.attach`` for features).
        words: words (strings); None = ``encode``'s default words (the ``num_words`` most frequent English words
            that are single tokens; :func:`neurotext.analysis.encode.default_words`).
        at: sites (:func:`parse_sites`), e.g. ``"L3.ffn"`` or ``"L*.ffn,L*.out"``.
        corpus: an opened :class:`neurotext.corpus.Corpus` (None: the default fortune corpus).
        config: :class:`ProbeConfig`.
        encode: an ``encode.json`` document: FT's smallest k beside each record (:func:`compare_encode`).
        log: a callable for one-line progress notes (stderr in the CLI), or None.

    Returns:
        :class:`ProbeResult`.

    Raises:
        NeurotextError: a site the model lacks, no usable word (the first one's reason), bad settings.
    """
    cfg = config or ProbeConfig()
    say = log or (lambda _m: None)
    points = parse_sites(at, model)
    if encode is not None and encode.get("model") != model.name:
        raise NeurotextError(f"--encode holds results of {encode.get('model')}, not {model.name}")
    if words is None:
        words = [w.text for w in default_words(model, num_words)]
    words = [words] if isinstance(words, str) else list(words)
    if not any(str(w).strip() for w in words):
        raise NeurotextError("empty word list: give at least one word")
    usable, skipped = resolve_probe_words(model, words)
    if not usable:
        raise NeurotextError(f"no usable word: {skipped[0]['word']!r}: {skipped[0]['reason']}")
    if corpus is None:
        from ..corpus import open_corpus

        corpus = open_corpus(None)
    seconds = {}
    t0 = time.perf_counter()
    index = index_parts(model, corpus, cfg)
    counts = {p: np.bincount(index[p].ids, minlength=len(model.tokens)) for p in PARTS}
    ready = []
    for w in usable:
        tr, te = int(counts["train"][list(w.forms)].sum()), int(counts["test"][list(w.forms)].sum())
        if tr == 0:
            skipped.append({"word": w.text, "reason": "no occurrence in the corpus's train part"})
        elif te == 0:
            skipped.append({"word": w.text, "reason": f"no held-out occurrence ({tr} in the train part, none in "
                                                      "the test part)"})
        else:
            ready.append(w)
    controls = choose_controls(model, ready, counts, cfg.seed) if ready else {}
    seconds["index"] = time.perf_counter() - t0
    records = [{"word": s["word"], "skipped": s["reason"], "layer": None, "site": None, "units": None}
               for s in skipped]
    for s in skipped:
        say(f"skipped {s['word']!r}: {s['reason']}")
    if not ready:
        return ProbeResult(records, seconds)

    t0 = time.perf_counter()
    targets = {w.text: w.forms for w in ready}
    targets.update({f"control:{c}": (c,) for c in controls.values() if c is not None})
    samples = {p: sample_part(index[p], targets, p, cfg) for p in PARTS}
    data = collect(model, corpus, points, index, samples, cfg, progress)
    seconds["pass"] = time.perf_counter() - t0
    say(f"corpus pass: {data.tokens['train']} train and {data.tokens['test']} test tokens, "
        f"{len(samples['train'].positions)} + {len(samples['test'].positions)} positions kept, "
        f"{seconds['pass']:.1f} s")

    t0 = time.perf_counter()
    plans = [plan_word(w, controls[w.text], samples, cfg) for w in ready]
    shared = {"model": model.name, "corpus": corpus.name, "corpus_tokens": dict(data.tokens), "probe": cfg.probe(),
              "sampling": cfg.sampling()}
    bar = tqdm(total=len(plans) * len(points), desc="probe: fit", unit="word", disable=tqdm_disable(progress))
    # one thread on the CPU: the fits' products are small, and on two busy cores torch's thread synchronization
    # made them up to 25 times slower than one thread (measured; see docs/cli/probe.md)
    threads = one_thread() if model.device.type == "cpu" else nullcontext()
    with threads:
        fitted = {point: probe_site(data, point, plans, cfg, model.device, bar) for point in points}
    for point in points:
        layer, site = point
        for pl, rec in zip(plans, fitted[point]):
            if rec["control"] is not None:
                rec["control"]["token"] = model.tokens[rec["control"]["id"]]
            records.append({"word": pl.word.text, "tokens": list(pl.word.tokens), "layer": layer,
                            "site": base_site(site), "units": "features" if is_feature_site(site) else "neurons",
                            "width": data.widths[point], **rec,
                            "occurrences_train": int(samples["train"].occurrences[pl.word.text]),
                            "occurrences_test": int(samples["test"].occurrences[pl.word.text]), **shared})
    bar.close()
    seconds["fit"] = time.perf_counter() - t0
    if encode is not None:
        compare_encode(records, encode, model)
    return ProbeResult(records, seconds)


# ----------------------------------------------------------------------------- FT beside the probe
def read_encode(path) -> dict:
    """An ``encode.json`` document (``neurotext encode --json`` or ``--out``), from the file or its folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "encode.json"
    if not p.is_file():
        raise NeurotextError(f"--encode {path}: no such file (give encode.json of neurotext encode --out, or its "
                             "folder)")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NeurotextError(f"--encode {path} is not readable JSON: {e}") from e
    if not isinstance(doc, dict) or not all(k in doc for k in ("smallest_k", "site", "model")):
        raise NeurotextError(f"--encode {path} is not a neurotext encode document (no smallest_k, site, model)")
    return doc


def compare_encode(records: list[dict], encode: dict, model, cache_dir=None) -> None:
    """Add FT's smallest recovering k (z-score selection) to each record of encode's layers and site, and for
    neurons the overlap of FT's selected units with the probe's top k95 (``ft``), in place.

    FT's units are recomputed as ``encode`` selects them (largest |z| against the vocabulary scan)."""
    if encode["model"] != model.name:
        raise NeurotextError(f"--encode holds results of {encode['model']}, not {model.name}")
    site = encode["site"]
    ft_k = {(r["word"], r["layer"]): r["k"] for r in encode["smallest_k"] if r["select"] == "zscore"}
    tokens = {r["word"]: r["token"] for r in encode.get("per_word", [])}
    wanted = [r for r in records if "skipped" not in r and r["site"] == site and (r["word"], r["layer"]) in ft_k]
    orders = {}
    neuron_layers = sorted({r["layer"] for r in wanted if r["units"] == "neurons"})
    if neuron_layers:
        from ..engine.scan import ScanCache
        from .encode import Word, unit_order, word_patterns

        scans = ScanCache(model, cache_dir)
        scans.prefetch(max(neuron_layers))
        for layer in neuron_layers:
            names = sorted({r["word"] for r in wanted if r["layer"] == layer and r["units"] == "neurons"})
            ws = [Word(w, tokens.get(w, w), model.tokenizer.convert_tokens_to_ids(tokens.get(w, w))) for w in names]
            scan = scans.get(layer, site)
            a = word_patterns(model, layer, site, ws)
            z = (a - scan.mean.to(a.device)) / scan.std.to(a.device).clamp_min(1e-6)
            order = unit_order("zscore", z, ws, layer, site, 0).cpu().numpy()
            orders.update({(w.text, layer): order[i] for i, w in enumerate(ws)})
    for r in records:
        if "skipped" in r or r["site"] != site:
            continue
        k = ft_k.get((r["word"], r["layer"]), "absent")
        if k == "absent":
            r["ft"] = None
            continue
        ft = {"k": k, "site": site}
        order = orders.get((r["word"], r["layer"]))
        if r["units"] == "neurons" and order is not None and k is not None and r["k95"] is not None:
            a, b = set(order[:k].tolist()), set(r["ranking"][:r["k95"]])
            ft.update({"probe_k": r["k95"], "shared": len(a & b), "jaccard": len(a & b) / len(a | b),
                       "chance_shared": k * r["k95"] / r["width"]})
        r["ft"] = ft


# ----------------------------------------------------------------------------- output
def render_text(records: list[dict]) -> str:
    """Readable tables: per site and kind of unit, one row per word."""
    done = [r for r in records if "skipped" not in r]
    lines = []
    if done:
        r0 = done[0]
        s = r0["sampling"]
        lines.append(f"Q2 on real text: {r0['model']}, corpus {r0['corpus']}; probes on "
                     f"{s['negatives_per_positive']} negatives per positive, tested on "
                     f"{s['test_negatives_per_positive']} (at most {s['max_positives']} positives per part; "
                     "chance AP about "
                     f"{1 / (1 + s['test_negatives_per_positive']):.2f}); elastic net alpha "
                     f"{r0['probe']['alpha']:g}, l1_ratio {r0['probe']['l1_ratio']:g}")
        lines.append("k95/k99: smallest k of ranked units keeping 95%/99% of the full probe's AP; rnd95: the same "
                     "with random units; sel: selectivity (AP minus the control task's)")
    groups: dict = {}
    for r in done:
        groups.setdefault((r["layer"], r["site"], r["units"]), []).append(r)
    has_ft = any(r.get("ft") for r in done)
    width = max([len(r["word"]) for r in done] + [4])
    for (layer, site, units), rows in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1], g[0][2] != "neurons")):
        lines += ["", f"L{layer}.{site} {units} ({rows[0]['width']})",
                  f"  {'word':<{width}} {'pos':>9} {'AP':>5} {'AUROC':>5} {'k95':>5} {'k99':>5} {'rnd95':>5} "
                  f"{'best1':>5} {'ctrl':>5} {'sel':>5}" + (f" {'FT k':>5} {'shared':>10}" if has_ft else "")]
        for r in rows:
            cells = [f"{r['positives_train']:>4}/{r['positives_test']:<4}", _f(r["ap_full"]), _f(r["auroc_full"]),
                     _k(r["k95"]), _k(r["k99"]), _k(r["random_k95"]), _f(r["best_single"]["ap"]),
                     _f(r["control"]["ap_full"] if r["control"] else None), _f(r["selectivity"])]
            if has_ft:
                ft = r.get("ft") or {}
                shared = f"{ft['shared']}/{ft['chance_shared']:.2f}" if "shared" in ft else "-"
                cells += [_k(ft.get("k")) if ft else "  n/a", f"{shared:>10}"]
            lines.append(f"  {r['word']:<{width}} " + " ".join(cells))
    skipped = [r for r in records if "skipped" in r]
    if skipped:
        lines += ["", f"skipped {len(skipped)}: " + "; ".join(f"{r['word']!r} ({r['skipped']})" for r in skipped)]
    return "\n".join(lines).lstrip("\n")


def _f(v) -> str:
    return f"{'-':>5}" if v is None else f"{v:>5.2f}"


def _k(v) -> str:
    return f"{'-':>5}" if v is None else f"{v:>5}"


CSV_COLUMNS = ("word", "layer", "site", "units", "width", "positives_train", "positives_test", "ap_full",
               "auroc_full", "k95", "k99", "random_k95", "random_k99", "best_single_unit", "best_single_ap",
               "control_token", "control_ap", "selectivity", "ft_k", "ft_shared", "ft_chance_shared", "skipped")


def _csv_row(r: dict) -> list:
    if "skipped" in r:
        return [r["word"]] + [""] * (len(CSV_COLUMNS) - 2) + [r["skipped"]]
    ft = r.get("ft") or {}
    ctrl = r["control"] or {}
    return [r["word"], r["layer"], r["site"], r["units"], r["width"], r["positives_train"], r["positives_test"],
            r["ap_full"], r["auroc_full"], r["k95"], r["k99"], r["random_k95"], r["random_k99"],
            r["best_single"]["unit"], r["best_single"]["ap"], ctrl.get("token", ""), ctrl.get("ap_full", ""),
            r["selectivity"], ft.get("k", ""), ft.get("shared", ""), ft.get("chance_shared", ""), ""]


def write_outputs(records: list[dict], out) -> list[Path]:
    """Write ``probe.json`` (the records, as ``--json``), ``probe_per_word.csv``, ``probe.png`` (per layer the
    median k of probe neurons, random units, features and FT) and one ``probe_curves_L{layer}_{site}.png`` per
    layer and site (each word's recovery curves). Returns the paths written."""
    from .plots import probe_curves_figure, probe_summary_figure

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NeurotextError(f"--out {out} exists and is not a directory")
    paths = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths.append(out / PROBE_JSON)
        tmp = paths[0].with_suffix(".json.tmp")
        tmp.write_text(json.dumps(records, allow_nan=False) + "\n")
        tmp.replace(paths[0])
        paths.append(out / PROBE_CSV)
        with open(paths[1], "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            w.writerows(_csv_row(r) for r in records)
        done = [r for r in records if "skipped" not in r]
        if done:
            paths.append(probe_summary_figure(summary_groups(done), out / PROBE_PNG,
                                              f"{done[0]['model']}, corpus {done[0]['corpus']}"))
            for (layer, site), curves in curve_groups(done).items():
                paths.append(probe_curves_figure(curves, out / CURVES_PNG.format(layer=layer, site=site),
                                                 f"L{layer}.{site}, {done[0]['model']}, corpus {done[0]['corpus']}"))
    except OSError as e:
        raise NeurotextError(f"cannot write to {out}: {e.strerror or e}") from e
    return paths


def summary_groups(records: list[dict]) -> list[dict]:
    """Per (site, layer): quartiles of k95 for ranked neurons, random neurons, features, and FT's k."""
    from .stats import quartiles

    out = []
    for site in sorted({r["site"] for r in records}):
        for layer in sorted({r["layer"] for r in records if r["site"] == site}):
            rows = [r for r in records if r["site"] == site and r["layer"] == layer]
            series = {}
            for label, units, key in (("probe, neurons", "neurons", "k95"), ("random neurons", "neurons", "random_k95"),
                                      ("probe, features", "features", "k95")):
                vals = [r[key] for r in rows if r["units"] == units and r[key] is not None]
                if vals:
                    series[label] = quartiles(vals)
            ft = [r["ft"]["k"] for r in rows if r["units"] == "neurons" and r.get("ft") and r["ft"]["k"] is not None]
            if ft:
                series["FT (encode)"] = quartiles(ft)
            out.append({"site": site, "layer": layer, "series": series})
    return out


def curve_groups(records: list[dict]) -> dict:
    """Per (layer, site): each word's curves (AP at k / full AP) for ranked and random neurons and features, and
    FT's k."""
    out: dict = {}
    for r in records:
        by = out.setdefault((r["layer"], r["site"]), {}).setdefault(r["word"], {"word": r["word"], "series": {},
                                                                                 "ft_k": None})
        full = r["ap_full"] or float("nan")
        for label, key in (("ranked", "ap_by_k"), ("random", "random_ap_by_k")):
            by["series"][f"{r['units']}, {label}"] = [(int(k), v / full) for k, v in r[key].items() if v is not None]
        if r.get("ft") and r["units"] == "neurons":
            by["ft_k"] = r["ft"]["k"]
    return {key: list(words.values()) for key, words in sorted(out.items())}
