"""Real text for a neuron: its max-activating contexts in a corpus, samples below the top, and its statistics.

Everything else neurotext says about a neuron comes from inputs it synthesizes (FT vectors, one-token scans,
phrases). This is the other half of reading a neuron (Neuroscope, OpenAI's neuron viewer, Neuronpedia): one
streaming pass over a corpus (:mod:`neurotext.engine.corpus_pass`) computes every requested unit at every
text position and keeps, per neuron:

- ``top``: the K contexts of highest activation (a context's activation is its maximum over its text
  positions), best first;
- ``ranges``: a few contexts sampled uniformly from each of R equal-width ranges below the top fifth of the
  maximum, so a reader sees more than the extremes;
- ``random``: R random contexts (the same for every neuron of a pass);
- ``stats``: count, mean, standard deviation, maximum and the share of positions above 0 over every text
  position, with histograms.

Documents are split into a train and a test part by a seeded hash of their text (default 80 / 20); the
top and random contexts of each part are kept too, for scoring read-outs on held-out text.

An example is ``{"text", "tokens", "ids", "activations", "position", "activation", "doc", "context", "part",
"spans"}``: ``ids`` is the whole model input (template included), ``position`` indexes it, ``activations``
holds the unit's value at every position of ``ids`` (None at template positions), so it can be replayed.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .corpus import Corpus, open_corpus
from .engine.contexts import PARTS, Context, SplitConfig, Tokenize, batches, chunks
from .engine.corpus_pass import (
    EMPTY,
    HIST_BINS,
    NB,
    WORST,
    CorpusPass,
    PassSettings,
    PassState,
    Probe,
    bucket_edges,
    sample_ctx,
    top_parts,
)
from .engine.scan import tqdm_disable
from .errors import NeurotextError
from .model.adapters import Model, load_model
from .model.names import Neuron
from .notebook import Results

DTYPES = ("float32", "bfloat16")
TOKEN_STATS_BUDGET = 1 << 30  # bytes: per-token sums are kept by default when they fit in this much memory
LOOKUP_K = 10  # tokens of the corpus lookup table
LOOKUP_MIN_COUNT = 3  # a token enters the lookup table when seen at least this often (train part)


@dataclass
class ExamplesConfig:
    """Settings of a corpus pass; written next to every result (the fields that change results)."""

    top: int = 20  # contexts of highest activation kept per neuron (and per part)
    ranges: int = 4  # equal-width ranges below the top fifth: (0, m/5], (m/5, 2m/5], ... for max m (R + 1 = 5)
    per_range: int = 3  # contexts sampled uniformly from each range
    random: int = 20  # random contexts per part (the same for every neuron; as many as top: 1:1 scoring)
    max_length: int = 64  # text tokens per context at most; a longer document is cut into consecutive contexts
    seed: int = 0  # sampling keys: which contexts the range and random samples draw
    split_seed: int = 0  # which documents are held out
    test_share: float = 0.2  # share of documents held out (the test part)
    max_docs: int | None = None  # read at most this many documents
    max_tokens: int | None = None  # stop before the context that would pass this many text tokens
    hist_every: int = 16  # the position histogram bins the positions of one context in this many (by key)
    token_stats: bool | None = None  # per-token sums (token identity, lookup table); None: when they fit in 1 GiB
    dtype: str = "float32"  # arithmetic of the forward pass ("bfloat16": autocast)
    batch_size: int = 64  # contexts per forward batch at most
    batch_tokens: int = 8192  # padded text tokens per forward batch at most
    chunk_size: int = 1024  # contexts per chunk: the unit of work for resumption and Ray

    def __post_init__(self):
        for name in ("top", "ranges", "per_range", "random", "max_length", "hist_every", "batch_size", "batch_tokens",
                     "chunk_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NeurotextError(f"{name.replace('_', ' ')} must be a whole number >= 1, got {v!r}")
        for name in ("max_docs", "max_tokens"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise NeurotextError(f"{name.replace('_', ' ')} must be a whole number >= 1, got {v!r}")
        if self.dtype not in DTYPES:
            raise NeurotextError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        SplitConfig(self.test_share, self.split_seed)  # validates the share

    def identity(self) -> dict:
        """The settings that change results (batching, chunking and dtype of nothing else but rounding are
        kept too: a store continues only with what it started with)."""
        return asdict(self)


@dataclass
class NeuronExamples:
    """One neuron's real text: its top contexts, range and random samples, and statistics."""

    neuron: str
    model: str
    corpus: dict  # {"name", "source", "fingerprint"}
    contexts: int  # contexts seen (both parts)
    tokens: int  # text tokens seen
    stats: dict  # {"count", "mean", "std", "max", "share_positive", "histogram", "context_histogram", "parts"}
    top: list[dict]  # best first
    ranges: list[dict]  # [{"range", "lo", "hi", "contexts", "examples"}], lowest range first
    random: list[dict]  # by sampling key
    split: dict = field(default_factory=dict)  # {"test_share", "seed", "train": {...}, "test": {...}}
    token_stats: dict | None = None  # {"omega_squared", "omega_squared_permuted", "distinct", "lookup": [...]}
    settings: dict = field(default_factory=dict)

    def _repr_html_(self) -> str:
        """In Jupyter: the real-text section of the neuron's atlas page (:mod:`neurotext.notebook`)."""
        from .notebook import examples_html

        return examples_html(self)

    def to_dict(self, parts: bool = False) -> dict:
        """JSON-ready; ``parts``: also the top and random contexts of the train and test parts."""
        d = asdict(self)
        if not parts:
            for p in PARTS:
                if p in d["split"]:
                    d["split"][p] = {k: v for k, v in d["split"][p].items() if k not in ("top", "random")}
        return d


class Examiner:
    """Corpus examples for one model: validates neurons, opens corpora, runs and finalizes passes.

    Example:
        >>> [r] = Examiner().run("L3.ffn.42", max_docs=500)   # bundled model, default corpus
        >>> [(e["activation"], e["text"]) for e in r.top[:3]]
    """

    def __init__(self, model: Model | str | None = None, config: ExamplesConfig | None = None,
                 progress: bool | None = None, device: str | None = "auto"):
        self.model = model if isinstance(model, Model) else load_model(model, device=device)
        self.config = config or ExamplesConfig()
        self.progress = progress
        limit = self.model.hf.config.max_position_embeddings if hasattr(self.model.hf.config,
                                                                         "max_position_embeddings") else None
        template = len(self.model.prefix_ids[:1] if not self.model.decoder else self.model.prefix_ids) \
            + len(self.model.suffix_ids)
        if limit is not None and self.config.max_length + template > int(limit):
            raise NeurotextError(f"max length {self.config.max_length} is beyond {self.model.name}'s positions: at "
                                 f"most {int(limit) - template} text tokens per context ({int(limit)} positions, "
                                 f"{template} for the template)")

    # ------------------------------------------------------------------ what to read
    def probes(self, neurons=None, directions=None) -> tuple[list[Probe], dict]:
        """Probes for neurons (specs or :class:`Neuron`) and/or directions ``((layer, site), (N, U), names)``.

        Returns (probes, {(layer, site): names of the probe's columns}); neurons and directions at the same
        point are not combined (one probe per point)."""
        probes, names = [], {}
        if neurons is not None and (not isinstance(neurons, (list, tuple)) or len(neurons)):
            from .textualize import resolve_neurons

            groups: dict[tuple[int, str], list[Neuron]] = {}
            for n in resolve_neurons(self.model, neurons):
                groups.setdefault((n.layer, n.site), []).append(n)
            for (layer, site), group in groups.items():
                probes.append(Probe(layer, site, units=torch.tensor([n.unit for n in group])))
                names[(layer, site)] = [n.name for n in group]
        if directions is not None:
            (layer, site), rows, row_names = directions
            if (layer, site) in names:
                raise NeurotextError(f"directions at L{layer}.{site} and neurons of the same layer and site: run "
                                     "them separately")
            d = torch.as_tensor(np.asarray(rows), dtype=torch.float32)  # (N, U)
            probes.append(Probe(layer, site, directions=d.T.contiguous()))
            names[(layer, site)] = list(row_names)
        if not probes:
            raise NeurotextError("no neurons given: name at least one, e.g. L3.ffn.42")
        return probes, names

    def settings(self, probes) -> PassSettings:
        c = self.config
        units = sum(p.size for p in probes)
        vocab = int(self.model.embeddings.shape[0])
        stats = c.token_stats if c.token_stats is not None else 3 * 4 * units * vocab <= TOKEN_STATS_BUDGET
        return PassSettings(top=c.top, random=c.random, slots=c.per_range, max_length=c.max_length, parts=len(PARTS),
                            hist_every=c.hist_every, token_stats=bool(stats), dtype=c.dtype)

    def open(self, corpus) -> Corpus:
        return corpus if isinstance(corpus, Corpus) else open_corpus(corpus, max_docs=self.config.max_docs)

    # ------------------------------------------------------------------ running
    def run(self, neurons=None, corpus=None, directions=None) -> Results:
        """One pass over ``corpus`` (a :class:`Corpus`, a source such as ``"fortune"`` or a path; None: the
        default corpus) for every neuron; results in the neurons' order, a list that displays a table of them
        in Jupyter (:class:`neurotext.notebook.Results`)."""
        probes, names = self.probes(neurons, directions)
        run = CorpusRun(self, probes, names, self.open(corpus))
        run.check_nonempty()
        state = run.new_state()
        for _, contexts in run.chunks():
            run.process(state, contexts)
        run.close()
        return Results(run.finalize(state))


class CorpusRun:
    """One pass: its contexts, chunks and batches, the state they fold into, and the contexts kept for text.

    Used by :meth:`Examiner.run` and by the resumable store runner (:mod:`neurotext.store.examples`).
    """

    def __init__(self, examiner: Examiner, probes: list[Probe], names: dict, corpus: Corpus | None):
        self.examiner, self.model, self.config = examiner, examiner.model, examiner.config
        self.names, self.corpus = names, corpus
        self.settings = examiner.settings(probes)
        self.engine = CorpusPass(self.model, probes, self.settings)
        split = SplitConfig(self.config.test_share, self.config.split_seed)
        self.tokenize = Tokenize(self.model.tokenizer, self.config.max_length, self.config.seed, split,
                                 vocab_size=int(self.model.embeddings.shape[0]))
        self.registry: dict[int, Context] = {}  # the contexts a state refers to
        self.position = {"chunk": 0, "doc": 0, "piece": 0, "index": 0, "tokens": 0}
        self._bar = None
        self._t0 = time.perf_counter()
        self._tokens_at_start = 0

    def new_state(self) -> PassState:
        return self.engine.empty_state()

    def check_nonempty(self) -> None:
        """A corpus without a single text token for this tokenizer is an error before the pass starts."""
        if next(iter(self.tokenize.contexts(self.corpus.documents())), None) is None:
            raise NeurotextError(f"{self.corpus.source}: the corpus yields no text token for {self.model.name}'s "
                                 "tokenizer")

    # ------------------------------------------------------------------ contexts
    def chunks(self):
        """(chunk number, contexts) from the current position; stops at ``max_tokens``."""
        pos = self.position
        limit = self.config.max_tokens
        seen = pos["tokens"]
        self._tokens_at_start = seen

        def bounded():
            nonlocal seen
            for c in self.tokenize.contexts(self.corpus.documents(), (pos["doc"], pos["piece"], pos["index"])):
                if limit is not None and seen + len(c.ids) > limit:
                    return
                seen += len(c.ids)
                yield c

        for number, contexts in chunks(bounded(), self.config.chunk_size, pos["chunk"]):
            last = contexts[-1]
            # where the pass continues after this chunk: recorded with the state that holds the chunk
            self.position = pos = {"chunk": number + 1, "doc": last.doc, "piece": last.piece + 1,
                                   "index": last.index + 1, "tokens": pos["tokens"] + sum(len(c.ids) for c in contexts)}
            yield number, contexts

    def process(self, state: PassState, contexts: list[Context], keep: bool = True,
                progress: bool = True) -> PassState:
        """Fold one chunk's contexts into ``state`` (batch by batch); keep the text of what it refers to."""
        max_contexts, max_tokens = self._batch_limits()
        for batch in batches(contexts, max_contexts, max_tokens):
            self._fold(state, batch)
        if keep:
            self.keep(state, contexts)
        if progress:
            self._progress(contexts)
        return state

    def keep(self, state: PassState, contexts: list[Context]) -> None:
        """Keep the registry to the contexts ``state`` refers to (plus this chunk's, if referred to)."""
        for ctx in contexts:
            self.registry[ctx.index] = ctx
        ref = set(state.referenced().tolist())
        self.registry = {i: ctx for i, ctx in self.registry.items() if i in ref}

    def _batch_limits(self) -> tuple[int, int]:
        """(contexts, padded tokens) per batch: the settings, fewer where device memory is short."""
        from .engine.memory import corpus_batch_limits

        return corpus_batch_limits(self.model, self.engine, self.config.batch_size, self.config.batch_tokens)

    def _fold(self, state: PassState, batch: list[Context]) -> None:
        """One batch; on an out-of-memory error its halves, each exactly once."""
        try:
            b = self.engine.prepare(batch)
            found = self.engine.forward(b)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            found = None
        if found is None:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(batch) // 2
            self._fold(state, batch[:half])
            self._fold(state, batch[half:])
            return
        self.engine.fold(state, b, found)

    # ------------------------------------------------------------------ progress
    def _progress(self, contexts: list[Context]) -> None:
        if self._bar is None:
            total = None
            if self.config.max_tokens is not None:
                total = self.config.max_tokens
            self._bar = tqdm(total=total, initial=self._tokens_at_start, desc="examples", unit="tok",
                             unit_scale=True, file=sys.stderr, disable=tqdm_disable(self.examiner.progress))
            self._t0 = time.perf_counter()
        n = sum(len(c.ids) for c in contexts)
        self._bar.update(n)
        self._bar.set_postfix(docs=contexts[-1].doc + 1, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ results
    def finalize(self, state: PassState) -> list[NeuronExamples]:
        """The per-neuron results of a finished pass (the range samples' values are computed again here, in
        one batched pass over just those contexts)."""
        return Finalizer(self, state).results()


class Finalizer:
    """Turns a finished :class:`PassState` into :class:`NeuronExamples`."""

    def __init__(self, run: CorpusRun, state: PassState):
        self.run, self.state = run, state
        self.model, self.engine, self.config = run.model, run.engine, run.config
        self.edges = bucket_edges()

    def results(self) -> list[NeuronExamples]:
        st, c = self.state, self.config
        corpus = {"name": self.run.corpus.name, "source": self.run.corpus.source,
                  "fingerprint": self.run.corpus.fingerprint()}
        ranges = {point: self._ranges(point) for point in st.points}
        replayed = self._replay(ranges)
        out = []
        n_all = int(st.tokens.sum())
        for point, ps in st.points.items():
            for j, name in enumerate(self.run.names[point]):
                tops = [self._top(ps, p, j) for p in range(len(PARTS))]
                top = sorted((e for t in tops for e in t), key=lambda e: (-e["activation"], e["context"]))[:c.top]
                rands = [self._random(ps, p, j) for p in range(len(PARTS))]
                rand = sorted((e for r in rands for e in r), key=lambda e: e["_order"])[:c.random]
                for e in rand + [e for r in rands for e in r]:
                    e.pop("_order", None)
                rng = []
                for r in ranges[point][j]:
                    ex = [self._example(self.run.registry[ctx], replayed[(point, j, ctx)], pos, val)
                          for ctx, pos, val in r.pop("entries")]
                    rng.append({**r, "examples": ex})
                split = {"test_share": c.test_share, "seed": c.split_seed}
                for p, part in enumerate(PARTS):
                    split[part] = {"contexts": int(st.contexts[p]), "tokens": int(st.tokens[p]),
                                   "max": _finite(top_parts(ps.top[p][j].max())[0]), "top": tops[p],
                                   "random": rands[p]}
                out.append(NeuronExamples(
                    neuron=name, model=self.model.name, corpus=corpus, contexts=int(st.contexts.sum()), tokens=n_all,
                    stats=self._stats(ps, j, top), top=top, ranges=rng, random=rand, split=split,
                    token_stats=self._token_stats(ps, j), settings=c.identity()))
        return out

    # ------------------------------------------------------------------ pieces
    def _example(self, ctx: Context, acts: np.ndarray, pos: int, val: float) -> dict:
        ids = self.engine.model_input(ctx)
        p = len(self.engine.prefix)
        spans = [None] * len(ids)
        if ctx.spans is not None:
            for i, (a, b) in enumerate(ctx.spans.tolist()):
                spans[p + i] = [a, b]
        return {"text": ctx.text, "tokens": [self.model.tokens[i] for i in ids], "ids": ids,
                "activations": [float(a) if math.isfinite(a) else None for a in acts[:len(ids)].tolist()],
                "position": int(pos), "activation": float(val), "doc": ctx.doc, "context": ctx.index,
                "part": PARTS[ctx.part], "spans": spans}

    def _top(self, ps, p: int, j: int) -> list[dict]:
        order = ps.top[p][j]
        keep = (order != WORST).nonzero().flatten()
        keep = keep[torch.argsort(order[keep], descending=True)]
        vals, ctxs = top_parts(order[keep])
        return [self._example(self.run.registry[int(c)], ps.top_acts[p][j, k].numpy(), int(ps.top_pos[p][j, k]),
                              float(v)) for k, v, c in zip(keep.tolist(), vals.tolist(), ctxs.tolist())]

    def _random(self, ps, p: int, j: int) -> list[dict]:
        order = self.state.rand[p]
        keep = (order != EMPTY).nonzero().flatten()
        keep = keep[torch.argsort(order[keep])]
        out = []
        for k in keep.tolist():
            acts = ps.rand_acts[p][k, :, j].numpy()
            masked = np.where(np.isfinite(acts), acts, -np.inf)
            pos = int(masked.argmax())
            e = self._example(self.run.registry[int(sample_ctx(order[k]))], acts, pos, float(masked[pos]))
            e["_order"] = int(order[k])
            out.append(e)
        return out

    def _ranges(self, point) -> list[list[dict]]:
        """Per unit: the ranges below the top fifth, each with its snapped bounds, its context count and the
        entries (context, position, activation) drawn for it."""
        ps, c, e = self.state.points[point], self.config, self.edges
        out = []
        for j in range(ps.slot.shape[0]):
            top = max(float(top_parts(t[j].max())[0]) for t in ps.top)
            ranges = []
            if top > 0 and math.isfinite(top):
                width = top / (c.ranges + 1)
                for r in range(c.ranges):
                    lo_b = 0 if r == 0 else int(np.abs(e - r * width).argmin())
                    hi_b = int(np.abs(e - (r + 1) * width).argmin())
                    lo, hi = (0.0 if lo_b == 0 else float(e[lo_b])), float(e[hi_b])
                    entries = []
                    count = 0
                    if hi_b > lo_b:
                        order = ps.slot[j, lo_b:hi_b].reshape(-1)
                        sel = (order != EMPTY).nonzero().flatten()
                        sel = sel[torch.argsort(order[sel])][:c.per_range]
                        vals = ps.slot_val[j, lo_b:hi_b].reshape(-1)
                        poss = ps.slot_pos[j, lo_b:hi_b].reshape(-1)
                        entries = [(int(sample_ctx(order[i])), int(poss[i]), float(vals[i])) for i in sel.tolist()]
                        count = int(ps.ctx_hist[j, NB + 1 + lo_b:NB + 1 + hi_b].sum())
                    ranges.append({"range": r, "lo": lo, "hi": hi, "nominal": [r * width, (r + 1) * width],
                                   "contexts": count, "entries": entries})
            out.append(ranges)
        return out

    def _replay(self, ranges: dict) -> dict:
        """Every position's values of the range samples' contexts: {(point, unit, context): (W,) array}."""
        need: dict[int, list] = {}
        for point, units in ranges.items():
            for j, rs in enumerate(units):
                for r in rs:
                    for ctx, _, _ in r["entries"]:
                        need.setdefault(ctx, []).append((point, j))
        out = {}
        if not need:
            return out
        contexts = sorted((self.run.registry[i] for i in need), key=lambda c: (len(c.ids), c.index))
        eng = self.engine
        step = max(1, min(self.config.batch_size, self.config.batch_tokens // max(1, len(contexts[-1].ids))))
        for i in range(0, len(contexts), step):
            group = contexts[i:i + step]
            parts = {c.part for c in group}
            batch = eng.prepare([Context(c.index, c.doc, c.piece, 0, c.key, c.ids, c.text, c.spans) for c in group]) \
                if len(parts) > 1 else eng.prepare(group)
            found = eng.forward(batch)
            for row, ctx in enumerate(group):
                vals_by_point = {}
                for point, j in need[ctx.index]:
                    if point not in vals_by_point:
                        v = found[point][row].masked_fill(~batch.text[row].unsqueeze(-1), float("nan"))
                        full = torch.full((eng.width, v.shape[-1]), float("nan"))
                        full[:v.shape[0]] = v
                        vals_by_point[point] = full
                    out[(point, j, ctx.index)] = vals_by_point[point][:, j].numpy()
        return out

    def _stats(self, ps, j: int, top: list[dict]) -> dict:
        st = self.state
        n = int(st.tokens.sum())
        s, ss = float(ps.s[:, j].sum()), float(ps.ss[:, j].sum())
        mean = s / n if n else None
        std = math.sqrt(max(ss / n - mean * mean, 0.0)) if n else None
        parts = {}
        for p, part in enumerate(PARTS):
            np_ = int(st.tokens[p])
            parts[part] = {"count": np_, "mean": float(ps.s[p, j]) / np_ if np_ else None,
                           "max": _finite(top_parts(ps.top[p][j].max())[0])}
        return {
            "count": n, "mean": mean, "std": std, "max": top[0]["activation"] if top else None,
            "share_positive": int(ps.npos[:, j].sum()) / n if n else None,
            "histogram": {**_histogram(ps.hist[j]), "positions": int(ps.hist[j].sum()),
                          "contexts": int(st.hist_contexts.sum()),
                          "sample": f"every text position of the contexts whose sampling key is in the lowest "
                                    f"1/{self.config.hist_every} (a uniform sample of contexts)"},
            "context_histogram": {**_histogram(ps.ctx_hist[j]), "contexts": int(ps.ctx_hist[j].sum())},
            "parts": parts,
        }

    def _token_stats(self, ps, j: int) -> dict | None:
        """How much of the unit's variance over every text position the token there explains (omega squared of
        a one-way analysis of variance by token id; a word neuron would be near 1), the same with the token
        labels permuted (the chance level), and the corpus lookup table: the train part's tokens of highest
        mean activation (seen at least LOOKUP_MIN_COUNT times)."""
        st = self.state
        if ps.tok_sum is None:
            return None
        counts = (st.tok_count[0] + st.tok_count[1]).double()  # (V,)
        n = float(counts.sum())
        s_all = float(ps.s[:, j].sum())
        ss_t = float(ps.ss[:, j].sum()) - s_all * s_all / n
        seen = counts > 0
        k = int(seen.sum())

        def omega(sums):
            ss_b = float((sums[seen] ** 2 / counts[seen]).sum()) - s_all * s_all / n
            ms_w = (ss_t - ss_b) / max(n - k, 1.0)
            return (ss_b - (k - 1) * ms_w) / (ss_t + ms_w) if ss_t > 0 else None

        sums = (ps.tok_sum[0][:, j] + ps.tok_sum[1][:, j]).double()
        train_n = st.tok_count[0].double()
        ok = train_n >= LOOKUP_MIN_COUNT
        means = torch.where(ok, ps.tok_sum[0][:, j].double() / train_n.clamp_min(1), torch.tensor(-float("inf"),
                                                                                                 dtype=torch.float64))
        kk = min(LOOKUP_K, int(ok.sum()))
        best = torch.topk(means, kk).indices.tolist() if kk else []
        return {"omega_squared": omega(sums), "omega_squared_permuted": omega(ps.perm_sum[:, j].double()),
                "distinct": k, "positions": int(n),
                "lookup": [{"token": self.model.tokens[t], "id": t, "mean": float(means[t]), "count": int(train_n[t])}
                           for t in best]}


def _finite(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _histogram(counts: torch.Tensor) -> dict:
    """The occupied span of a signed-grid histogram: {"lo", "hi", "count"} lists (bin i spans [lo[i], hi[i]])."""
    nz = counts.nonzero().flatten()
    if len(nz) == 0:
        return {"lo": [], "hi": [], "count": []}
    a, b = int(nz[0]), int(nz[-1]) + 1
    e = bucket_edges()
    lo, hi = [], []
    for i in range(a, b):
        if i < NB:  # negative bucket NB-1-i: (-edge[k+1], -edge[k]]
            k = NB - 1 - i
            lo.append(-float(e[k + 1]))
            hi.append(-float(e[k]) if k else 0.0)
        elif i == NB:
            lo.append(0.0)
            hi.append(0.0)
        else:
            k = i - NB - 1
            lo.append(float(e[k]) if k else 0.0)
            hi.append(float(e[k + 1]))
    assert len(counts) == HIST_BINS
    return {"lo": lo, "hi": hi, "count": counts[a:b].tolist()}


def examples(neurons, corpus=None, model: Model | str | None = None, progress: bool | None = False,
             device: str | None = "auto", **config) -> Results:
    """Corpus examples of neurons in one call.

    Args:
        neurons: a spec such as ``"L3.ffn.42"`` or ``"L0-5.ffn.0-9"``, or a list of them.
        corpus: a source (``"fortune"``, a path, ``"hf:NAME"``) or an opened :class:`Corpus`; None: the
            default corpus.
        model: a loaded :class:`Model`, a name or a directory; None: the bundled all-MiniLM-L6-v2.
        **config: :class:`ExamplesConfig` fields (top, max_docs, max_length, ...).

    Returns:
        One :class:`NeuronExamples` per neuron, in (layer, site, unit) order, in a list that displays a table
        of them in Jupyter (:class:`neurotext.notebook.Results`).
    """
    try:
        cfg = ExamplesConfig(**config)
    except TypeError as e:
        raise NeurotextError(f"unknown setting: {e}") from e
    return Examiner(model, cfg, progress=progress, device=device).run(neurons, corpus)
