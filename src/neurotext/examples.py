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
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow as pa
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
from .errors import NeurotextError
from .model.adapters import Model, load_model
from .model.names import Neuron, is_feature_site
from .notebook import Results

DTYPES = ("float32", "bfloat16")
TOKEN_STATS_BUDGET = 1 << 30  # bytes: per-token sums are kept by default when they fit in this much memory
LOOKUP_K = 10  # tokens of the corpus lookup table
LOOKUP_MIN_COUNT = 3  # a token enters the lookup table when seen at least this often (train part)
PROGRESS_EVERY = 30.0  # seconds between progress lines where stderr is not a terminal
PRUNE_MIN = 4096  # contexts kept before the registry is first cut to what the state refers to


@dataclass
class ExamplesConfig:
    """Settings of a corpus pass; written next to every result (the fields that change results)."""

    top: int = 20  # contexts of highest activation kept per neuron (and per part)
    ranges: int = 4  # equal-width ranges below the top fifth: (0, m/5], (m/5, 2m/5], ... for max m (R + 1 = 5)
    per_range: int = 3  # contexts sampled uniformly from each range
    random: int = 25  # random contexts per part (the same for every neuron); scoring takes as many as top
    #                   that are not top contexts (1:1), so a few more than top are kept
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
        >>> [r] = Examiner(config=ExamplesConfig(max_docs=500)).run("L3.ffn.42")   # bundled model, default corpus
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
                dic = self.model.dictionary(layer, site) if is_feature_site(site) else None
                probes.append(Probe(layer, site, units=torch.tensor([n.unit for n in group]), dictionary=dic))
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
        """A corpus bounded by the config's ``max_docs`` (an opened :class:`Corpus` too: the tighter bound)."""
        if not isinstance(corpus, Corpus):
            return open_corpus(corpus, max_docs=self.config.max_docs)
        limit = self.config.max_docs
        if limit is not None and (corpus.max_docs is None or corpus.max_docs > limit):
            corpus = replace(corpus, max_docs=limit)
        return corpus

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
        self.registry: dict[int, Context] = {}  # the contexts a state refers to (and some it no longer does)
        self._kept = 0  # registry size after its last cut
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
        """Keep the text of the contexts ``state`` refers to: this chunk's are added, and the registry is cut to
        the referenced ones whenever it has doubled since the last cut (scanning the state is not free: every
        chunk would cost seconds on a whole model), so it stays within twice what the state refers to."""
        for ctx in contexts:
            self.registry[ctx.index] = ctx
        if len(self.registry) > max(PRUNE_MIN, 2 * self._kept):
            ref = set(state.referenced().tolist())
            self.registry = {i: ctx for i, ctx in self.registry.items() if i in ref}
            self._kept = len(self.registry)

    def _batch_limits(self) -> tuple[int, int]:
        """(contexts, padded tokens) per batch: the settings, fewer where device memory is short."""
        from .engine.memory import corpus_batch_limits

        return corpus_batch_limits(self.model, self.engine, self.config.batch_size, self.config.batch_tokens)

    def _fold(self, state: PassState, batch: list[Context]) -> None:
        """One batch (on an out-of-memory error its halves, each exactly once)."""
        for prepared, found in self.forward(batch):
            self.engine.fold(state, prepared, found)

    def forward(self, batch: list[Context]):
        """Yield (prepared batch, values) for ``batch``, or for its halves (recursively) where a batch runs out
        of memory: an out-of-memory error costs time, never a context."""
        try:
            b = self.engine.prepare(batch)
            found = self.engine.forward(b)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            found = None
        if found is None:  # retried outside the except block, so the failed batch's tensors are freed
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(batch) // 2
            yield from self.forward(batch[:half])
            yield from self.forward(batch[half:])
            return
        yield b, found

    # ------------------------------------------------------------------ progress
    def _progress(self, contexts: list[Context]) -> None:
        """A tqdm bar of text tokens (documents beside it) on a terminal; elsewhere, unless progress is off, a
        line every PROGRESS_EVERY seconds (logs of long runs)."""
        n = sum(len(c.ids) for c in contexts)
        docs = contexts[-1].doc + 1
        if self._bar is None:
            self._t0 = self._last = time.perf_counter()
            self._done = self._tokens_at_start
            if sys.stderr.isatty() and self.examiner.progress is not False:
                self._bar = tqdm(total=self.config.max_tokens, initial=self._tokens_at_start, desc="examples",
                                 unit="tok", unit_scale=True, file=sys.stderr)
            else:
                self._bar = False
        self._done += n
        if self._bar:
            self._bar.update(n)
            self._bar.set_postfix(docs=docs, refresh=False)
        elif self.examiner.progress is not False and time.perf_counter() - self._last >= PROGRESS_EVERY:
            self._last = now = time.perf_counter()
            rate = (self._done - self._tokens_at_start) / max(now - self._t0, 1e-9)
            print(f"examples: {docs} documents, {self._done} text tokens, {rate:.0f} tokens/s", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self._bar:
            self._bar.close()
        self._bar = None

    # ------------------------------------------------------------------ results
    def finalize_tables(self, state: PassState) -> tuple[dict, pa.Table]:
        """The results of a finished pass as Arrow tables: ({(layer, site): one row per neuron}, the contexts they
        refer to). The range samples' values are computed again here, in one batched pass over just those
        contexts."""
        return Finalizer(self, state).tables()

    def describe_corpus(self) -> dict:
        return {"name": self.corpus.name, "source": self.corpus.source, "fingerprint": self.corpus.fingerprint()}

    def finalize(self, state: PassState) -> list[NeuronExamples]:
        """The per-neuron results of a finished pass as :class:`NeuronExamples` (for many neurons, prefer
        :meth:`finalize_tables`: the examples as Python objects take much memory)."""
        tables, contexts = self.finalize_tables(state)
        return tables_to_examples(tables, contexts, self.model.name, self.describe_corpus(), self.config.identity())


#: One example in a results table: the context (its text, tokens and ids are in the contexts table), the max
#: position in the model input, the activation there, and the unit's value at every position (null at template
#: positions).
EXAMPLE = pa.struct([("context", pa.int64()), ("position", pa.int32()), ("activation", pa.float32()),
                     ("activations", pa.list_(pa.float32()))])
RANGE = pa.struct([("range", pa.int32()), ("lo", pa.float64()), ("hi", pa.float64()),
                   ("nominal", pa.list_(pa.float64())), ("contexts", pa.int64()), ("examples", pa.list_(EXAMPLE))])
HIST = pa.struct([("lo", pa.list_(pa.float64())), ("hi", pa.list_(pa.float64())), ("count", pa.list_(pa.int64()))])
LOOKUP = pa.struct([("token", pa.string()), ("id", pa.int32()), ("mean", pa.float64()), ("count", pa.int64())])
EXAMPLE_LISTS = ("top", "random", "top_train", "top_test", "random_train", "random_test")


def results_schema() -> pa.Schema:
    """One row per neuron (or direction) of a (layer, site); example lists best first (random: by sampling key)."""
    f64, i64 = pa.float64(), pa.int64()
    return pa.schema([
        ("neuron", pa.string()), ("layer", pa.int32()), ("site", pa.string()), ("unit", pa.int32()),
        ("contexts", i64), ("tokens", i64), ("mean", f64), ("std", f64), ("max", f64), ("share_positive", f64),
        ("histogram", HIST), ("histogram_positions", i64), ("histogram_contexts", i64), ("context_histogram", HIST),
        *[(name, pa.list_(EXAMPLE)) for name in EXAMPLE_LISTS], ("ranges", pa.list_(RANGE)),
        ("train_contexts", i64), ("train_tokens", i64), ("train_max", f64),
        ("test_contexts", i64), ("test_tokens", i64), ("test_max", f64),
        ("omega_squared", f64), ("omega_squared_permuted", f64), ("distinct_tokens", i64), ("lookup", pa.list_(LOOKUP)),
    ])


def contexts_schema() -> pa.Schema:
    """The contexts the examples refer to, once each: the whole model input (``ids``, ``tokens``: template
    included), the text and each token's characters in it (``spans``; null at template positions)."""
    return pa.schema([("context", pa.int64()), ("doc", pa.int64()), ("piece", pa.int32()), ("part", pa.string()),
                      ("text", pa.string()), ("ids", pa.list_(pa.int32())), ("tokens", pa.list_(pa.string())),
                      ("spans", pa.list_(pa.list_(pa.int32())))])


def _example_list(counts, ctx, pos, act, acts, lengths) -> pa.ListArray:
    """A list<EXAMPLE> column from flat arrays: ``counts`` (rows,) examples per row; ctx, pos, act (E,); acts (E, W)
    the values at every position (NaN = null), cut to each context's model-input length ``lengths`` (E,)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    acts = np.asarray(acts, dtype=np.float32)
    acts = acts.reshape(len(ctx), -1) if acts.size else np.zeros((len(ctx), 0), dtype=np.float32)
    keep = np.arange(acts.shape[1])[None, :] < lengths[:, None]
    values = acts[keep]
    inner = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)),
                                     pa.array(values, mask=np.isnan(values), type=pa.float32()))
    struct = pa.StructArray.from_arrays(
        [pa.array(np.asarray(ctx, dtype=np.int64)), pa.array(np.asarray(pos, dtype=np.int32)),
         pa.array(np.asarray(act, dtype=np.float32)), inner], fields=list(EXAMPLE))
    return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)), struct)


class Finalizer:
    """Turns a finished :class:`PassState` into Arrow tables: one per (layer, site), one row per neuron, and one
    of the contexts they refer to. Vectorized over the units of a point: nothing per example is a Python
    object, so finalizing every unit of a model costs little memory."""

    def __init__(self, run: CorpusRun, state: PassState):
        self.run, self.state = run, state
        self.model, self.engine, self.config = run.model, run.engine, run.config
        self.edges = bucket_edges()
        self.used: set[int] = set()  # contexts the tables refer to

    def tables(self) -> tuple[dict, pa.Table]:
        """({(layer, site): results table}, contexts table)."""
        ranges = {point: self._ranges(point) for point in self.state.points}
        replayed = self._replay(ranges)
        out = {point: self._point_table(point, ranges[point], replayed) for point in self.state.points}
        return out, self._contexts_table()

    def _length(self, ctx: int) -> int:
        return len(self.engine.prefix) + len(self.run.registry[ctx].ids) + len(self.engine.suffix)

    def _contexts_table(self) -> pa.Table:
        rows = []
        p = len(self.engine.prefix)
        for i in sorted(self.used):
            c = self.run.registry[i]
            ids = self.engine.model_input(c)
            spans = [None] * len(ids)
            if c.spans is not None:
                for k, (a, b) in enumerate(c.spans.tolist()):
                    spans[p + k] = [a, b]
            rows.append({"context": c.index, "doc": c.doc, "piece": c.piece, "part": PARTS[c.part], "text": c.text,
                         "ids": ids, "tokens": [self.model.tokens[t] for t in ids], "spans": spans})
        return pa.Table.from_pylist(rows, schema=contexts_schema())

    # ------------------------------------------------------------------ one point
    def _sorted_top(self, ps, p: int):
        """A part's top-K of every unit, best first: (valid (u, K), value, ctx, pos, acts (u, K, W))."""
        order, idx = ps.top[p].sort(dim=1, descending=True)
        vals, ctxs = top_parts(order)
        acts = ps.top_acts[p].gather(1, idx.unsqueeze(-1).expand(-1, -1, ps.top_acts[p].shape[2]))
        return order != WORST, vals, ctxs, ps.top_pos[p].gather(1, idx), acts

    def _flatten(self, valid, vals, ctxs, pos, acts):
        """Flat arrays of the valid entries (row-major) and the examples column built from them."""
        counts = valid.sum(1).numpy()
        m = valid.numpy()
        ctx = ctxs.numpy()[m]
        self.used.update(ctx.tolist())
        col = _example_list(counts, ctx, pos.numpy()[m], vals.numpy()[m], acts.numpy()[m],
                            [self._length(c) for c in ctx.tolist()])
        return col

    def _random(self, ps, p: int, u: int):
        """A part's random contexts, the same for every unit, with each unit's values: the tensors of
        :meth:`_flatten`, rows = units."""
        order = self.state.rand[p]
        keep = (order != EMPTY).nonzero().flatten()
        keep = keep[torch.argsort(order[keep])]
        r = len(keep)
        acts = ps.rand_acts[p][keep].permute(2, 0, 1)  # (u, r, W)
        masked = torch.where(torch.isfinite(acts), acts, torch.tensor(-float("inf")))
        vals, pos = masked.max(dim=2)  # (u, r)
        ctxs = sample_ctx(order[keep]).unsqueeze(0).expand(u, -1)
        return torch.ones((u, r), dtype=torch.bool), vals, ctxs, pos, acts, order[keep]

    def _point_table(self, point, ranges: list, replayed: dict) -> pa.Table:
        st, c = self.state, self.config
        ps = st.points[point]
        u = ps.slot.shape[0]
        layer, site = point
        names = self.run.names[point]
        units = self.run.engine.probes[point].units
        cols: dict = {}
        tops = [self._sorted_top(ps, p) for p in range(len(PARTS))]
        for p, part in enumerate(PARTS):
            cols[f"top_{part}"] = self._flatten(*tops[p])
        # over both parts: the K best of the parts' tops
        allo = torch.cat([ps.top[p] for p in range(len(PARTS))], 1)  # (u, 2K)
        best = torch.topk(allo, c.top, dim=1).indices  # (u, K), best first
        acts_all = torch.cat([ps.top_acts[p] for p in range(len(PARTS))], 1)
        pos_all = torch.cat([ps.top_pos[p] for p in range(len(PARTS))], 1)
        order = allo.gather(1, best)
        vals, ctxs = top_parts(order)
        cols["top"] = self._flatten(order != WORST, vals, ctxs, pos_all.gather(1, best),
                                    acts_all.gather(1, best.unsqueeze(-1).expand(-1, -1, acts_all.shape[2])))
        rands = [self._random(ps, p, u) for p in range(len(PARTS))]
        for p, part in enumerate(PARTS):
            cols[f"random_{part}"] = self._flatten(*rands[p][:5])
        allr = torch.cat([r[5] for r in rands])  # sample orders of both parts
        pick = torch.argsort(allr)[:c.random]
        cols["random"] = self._flatten(*(torch.cat([r[i] for r in rands], 1)[:, pick] for i in range(5)))
        cols["ranges"] = self._ranges_column(point, ranges, replayed)
        n = float(st.tokens.sum())
        s, ss = ps.s.sum(0).numpy(), ps.ss.sum(0).numpy()
        mean = s / n if n else np.full(u, np.nan)
        std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0)) if n else np.full(u, np.nan)
        top_val = [_finite(v) for v in top_parts(allo.max(1).values)[0].tolist()]
        part_max = [[_finite(v) for v in top_parts(ps.top[p].max(1).values)[0].tolist()] for p in range(len(PARTS))]
        hist = [_histogram(ps.hist[j]) for j in range(u)]
        ctx_hist = [_histogram(ps.ctx_hist[j]) for j in range(u)]
        tok = self._token_stats(ps)
        data = {
            "neuron": names, "layer": [layer] * u, "site": [site] * u,
            "unit": [int(x) for x in units.tolist()] if units is not None else [None] * u,
            "contexts": [int(st.contexts.sum())] * u, "tokens": [int(n)] * u,
            "mean": [_finite(v) for v in mean.tolist()], "std": [_finite(v) for v in std.tolist()], "max": top_val,
            "share_positive": [v / n if n else None for v in ps.npos.sum(0).tolist()],
            "histogram": hist, "histogram_positions": [int(x) for x in ps.hist.sum(1).tolist()],
            "histogram_contexts": [int(st.hist_contexts.sum())] * u, "context_histogram": ctx_hist,
            "train_contexts": [int(st.contexts[0])] * u, "train_tokens": [int(st.tokens[0])] * u,
            "train_max": part_max[0], "test_contexts": [int(st.contexts[1])] * u,
            "test_tokens": [int(st.tokens[1])] * u, "test_max": part_max[1], **tok,
        }
        schema = results_schema()
        arrays = [cols[f.name] if f.name in cols else pa.array(data[f.name], type=f.type) for f in schema]
        return pa.Table.from_arrays(arrays, schema=schema)

    # ------------------------------------------------------------------ ranges
    def _ranges(self, point) -> list[list[dict]]:
        """Per unit: the ranges below the top fifth, each with its snapped bounds, its context count and the
        entries (context, position, activation) drawn for it."""
        ps, c, e = self.state.points[point], self.config, self.edges
        tops = torch.stack([t.max(1).values for t in ps.top]).max(0).values
        top_vals = top_parts(tops)[0].tolist()
        out = []
        for j, top in enumerate(top_vals):
            ranges = []
            if top > 0 and math.isfinite(top) and tops[j] != WORST:
                width = top / (c.ranges + 1)
                for r in range(c.ranges):
                    lo_b = 0 if r == 0 else int(np.abs(e - r * width).argmin())
                    hi_b = int(np.abs(e - (r + 1) * width).argmin())
                    lo, hi = (0.0 if lo_b == 0 else float(e[lo_b])), float(e[hi_b])
                    entries, count = [], 0
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

    def _ranges_column(self, point, ranges: list[list[dict]], replayed: dict) -> pa.ListArray:
        flat = [g for unit in ranges for g in unit]
        ctx = [e[0] for g in flat for e in g["entries"]]
        self.used.update(ctx)
        w = self.engine.width
        acts = np.full((len(ctx), w), np.nan, dtype=np.float32)
        k = 0
        for j, unit in enumerate(ranges):
            for g in unit:
                for cx, _, _ in g["entries"]:
                    acts[k] = replayed[(point, j, cx)]
                    k += 1
        examples = _example_list([len(g["entries"]) for g in flat], ctx, [e[1] for g in flat for e in g["entries"]],
                                 [e[2] for g in flat for e in g["entries"]], acts, [self._length(x) for x in ctx])
        struct = pa.StructArray.from_arrays(
            [pa.array([g["range"] for g in flat], type=pa.int32()),
             pa.array([g["lo"] for g in flat], type=pa.float64()),
             pa.array([g["hi"] for g in flat], type=pa.float64()),
             pa.array([g["nominal"] for g in flat], type=pa.list_(pa.float64())),
             pa.array([g["contexts"] for g in flat], type=pa.int64()), examples], fields=list(RANGE))
        counts = [len(unit) for unit in ranges]
        return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)), struct)

    def _replay(self, ranges: dict) -> dict:
        """Every position's values of the range samples' contexts: {(point, unit, context): (W,) array}, from one
        batched pass over just those contexts."""
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
        max_contexts, max_tokens = self.run._batch_limits()
        i = 0
        while i < len(contexts):
            group = [contexts[i]]
            while (i + len(group) < len(contexts) and len(group) < max_contexts
                   and len(contexts[i + len(group)].ids) * (len(group) + 1) <= max_tokens):
                group.append(contexts[i + len(group)])
            i += len(group)
            same_part = [Context(c.index, c.doc, c.piece, 0, c.key, c.ids, c.text, c.spans) for c in group]
            for batch, found in self.run.forward(same_part):
                for row, ctx_index in enumerate(batch.ctx.tolist()):
                    full = {}
                    for point, j in need[ctx_index]:
                        if point not in full:
                            v = found[point][row].masked_fill(~batch.text[row].unsqueeze(-1), float("nan"))
                            f = torch.full((eng.width, v.shape[-1]), float("nan"))
                            f[:v.shape[0]] = v
                            full[point] = f.numpy()
                        out[(point, j, ctx_index)] = full[point][:, j]
        return out

    # ------------------------------------------------------------------ token statistics
    def _token_stats(self, ps) -> dict:
        """Per unit: how much of its variance over every text position the token there explains (omega squared
        of a one-way analysis of variance by token id; a word neuron would be near 1), the same with the token
        labels permuted (the chance level), and the corpus lookup table: the train part's tokens of highest mean
        activation (seen at least LOOKUP_MIN_COUNT times). Nulls without per-token sums."""
        st = self.state
        u = ps.slot.shape[0]
        if ps.tok_sum is None:
            return {"omega_squared": [None] * u, "omega_squared_permuted": [None] * u,
                    "distinct_tokens": [None] * u, "lookup": [None] * u}
        counts = (st.tok_count[0] + st.tok_count[1]).double()  # (V,)
        total, total_sq = ps.s.sum(0), ps.ss.sum(0)  # (u,)
        omega = omega_squared(counts, (ps.tok_sum[0] + ps.tok_sum[1]).double(), total, total_sq)
        perm = omega_squared(counts, ps.perm_sum.double(), total, total_sq)
        train_n = st.tok_count[0].double()
        ok = train_n >= LOOKUP_MIN_COUNT
        means = ps.tok_sum[0].double() / train_n.clamp_min(1).unsqueeze(1)  # (V, u)
        means[~ok] = -float("inf")
        kk = min(LOOKUP_K, int(ok.sum()))
        lookup = [[] for _ in range(u)]
        if kk:
            top = torch.topk(means, kk, dim=0)  # (kk, u)
            for j in range(u):
                lookup[j] = [{"token": self.model.tokens[t], "id": t, "mean": float(v), "count": int(train_n[t])}
                             for t, v in zip(top.indices[:, j].tolist(), top.values[:, j].tolist())]
        return {"omega_squared": omega, "omega_squared_permuted": perm,
                "distinct_tokens": [int((counts > 0).sum())] * u, "lookup": lookup}


def _join(row: dict, contexts: dict) -> dict:
    """A stored example joined with its context: the record of the module docstring."""
    c = contexts[row["context"]]
    return {"text": c["text"], "tokens": c["tokens"], "ids": c["ids"], "activations": row["activations"],
            "position": row["position"], "activation": float(row["activation"]), "doc": c["doc"],
            "context": row["context"], "part": c["part"], "spans": c["spans"]}


def row_to_examples(row: dict, contexts: dict, model: str, corpus: dict, settings: dict) -> NeuronExamples:
    """A results-table row and the contexts table ({context: row}) -> :class:`NeuronExamples`."""
    def ex(name):
        return [_join(e, contexts) for e in row[name] or []]

    hist = dict(row["histogram"] or {}, positions=row["histogram_positions"], contexts=row["histogram_contexts"],
                sample=f"every text position of the contexts whose sampling key is in the lowest "
                       f"1/{settings.get('hist_every', '?')} (a uniform sample of contexts)")
    stats = {"count": row["tokens"], "mean": row["mean"], "std": row["std"], "max": row["max"],
             "share_positive": row["share_positive"], "histogram": hist,
             "context_histogram": dict(row["context_histogram"] or {}, contexts=row["contexts"]),
             "parts": {p: {"count": row[f"{p}_tokens"], "max": row[f"{p}_max"]} for p in PARTS}}
    split = {"test_share": settings.get("test_share"), "seed": settings.get("split_seed")}
    for p in PARTS:
        split[p] = {"contexts": row[f"{p}_contexts"], "tokens": row[f"{p}_tokens"], "max": row[f"{p}_max"],
                    "top": ex(f"top_{p}"), "random": ex(f"random_{p}")}
    ranges = [{**{k: g[k] for k in ("range", "lo", "hi", "nominal", "contexts")},
               "examples": [_join(e, contexts) for e in g["examples"] or []]} for g in row["ranges"] or []]
    ts = None
    if row.get("omega_squared") is not None or row.get("lookup"):
        ts = {"omega_squared": row["omega_squared"], "omega_squared_permuted": row["omega_squared_permuted"],
              "distinct": row["distinct_tokens"], "positions": row["tokens"], "lookup": row["lookup"] or []}
    return NeuronExamples(neuron=row["neuron"], model=model, corpus=corpus, contexts=row["contexts"],
                          tokens=row["tokens"], stats=stats, top=ex("top"), ranges=ranges, random=ex("random"),
                          split=split, token_stats=ts, settings=settings)


def tables_to_examples(tables: dict, contexts: pa.Table, model: str, corpus: dict, settings: dict) -> list:
    """Results tables and their contexts table -> :class:`NeuronExamples`, in the tables' order."""
    ctx = {r["context"]: r for r in contexts.to_pylist()}
    return [row_to_examples(r, ctx, model, corpus, settings) for t in tables.values() for r in t.to_pylist()]


def omega_squared(counts, sums, total, total_sq):
    """Omega squared of a one-way analysis of variance of values by group (here: by token id).

    The share of the values' variance the group explains, corrected for the number of groups k (Hays):
    ``(SS_between - (k - 1) MS_within) / (SS_total + MS_within)``. 1 for values that are a function of the
    group, about 0 for values unrelated to it (it can dip below 0).

    Args:
        counts: (G,) values per group (groups with 0 are ignored).
        sums: (G,) sum of the values of each group, or (G, u) for u units at once.
        total: sum of all values (a scalar, or (u,)).
        total_sq: sum of their squares (likewise).

    Returns:
        Omega squared (a float, or a list for u units); None where the values do not vary.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    sums = torch.as_tensor(sums, dtype=torch.float64)
    one = sums.dim() == 1
    sums = sums.reshape(len(counts), -1)  # (G, u)
    total = torch.as_tensor(total, dtype=torch.float64).reshape(-1)
    total_sq = torch.as_tensor(total_sq, dtype=torch.float64).reshape(-1)
    seen = counts > 0
    n, k = float(counts.sum()), int(seen.sum())
    ss_t = total_sq - total * total / n
    ss_b = (sums[seen] ** 2 / counts[seen].unsqueeze(1)).sum(0) - total * total / n
    ms_w = (ss_t - ss_b) / max(n - k, 1.0)
    omega = (ss_b - (k - 1) * ms_w) / (ss_t + ms_w)
    out = [float(o) if t > 0 else None for o, t in zip(omega.tolist(), ss_t.tolist())]
    return out[0] if one else out


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
