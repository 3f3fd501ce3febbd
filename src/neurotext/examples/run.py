"""The pass over a corpus: :class:`Examiner` (neurons, corpora, settings) and :class:`CorpusRun` (one pass: its
contexts, chunks and batches, the state they fold into, the contexts kept for their text)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from ..corpus import Corpus, open_corpus
from ..display.notebook import Results
from ..engine.contexts import PARTS, Context, SplitConfig, Tokenize, batches, chunks
from ..engine.corpus_pass import CorpusPass, PassSettings, Probe
from ..engine.pass_state import PassState
from ..engine.threads import Behind
from ..errors import NeurotextError
from ..model.adapters import Model, load_model
from ..model.names import Neuron, is_feature_site
from .config import TOKEN_STATS_BUDGET, ExamplesConfig
from .records import NeuronExamples, tables_to_examples
from .registry import Registry
from .tables import Finalizer

PROGRESS_EVERY = 30.0  # seconds between progress lines where stderr is not a terminal
PRUNE_MIN = 4096  # contexts kept before the registry is first cut to what the state refers to


def overlap() -> bool:
    """Whether a pass folds each batch on a background thread while the next batch's forward pass runs
    (``NEUROTEXT_OVERLAP=1``; the same contexts, positions, values and counts either way, the statistics' sums up to
    float rounding). Off by default: on a 2-core CPU it saved nothing on the bundled model's neurons once the fold
    got cheaper, and two batches' values in flight raised the peak of a pass with an 8x dictionary per layer by
    300 MB (docs/performance.md)."""
    return os.environ.get("NEUROTEXT_OVERLAP", "0") == "1"


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
            from ..textualize import resolve_neurons

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
        in Jupyter (:class:`neurotext.display.notebook.Results`)."""
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
        self.registry = Registry()  # the contexts a state refers to (and some it no longer does), as numbers
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
        with Behind(overlap()) as behind:  # with the overlap, a batch's fold runs during the next forward pass
            for batch in batches(contexts, max_contexts, max_tokens):
                for prepared, found in self.forward(batch):
                    behind.submit(self.engine.fold, state, prepared, found)
        if keep:
            self.keep(state, contexts)
        if progress:
            self._progress(contexts)
        return state

    def keep(self, state: PassState, contexts: list[Context], cut: bool = True) -> None:
        """Register the contexts ``state`` may refer to (:class:`Registry`: numbers, not text): this chunk's are
        added, and the registry is cut to the referenced ones whenever it has doubled since the last cut
        (scanning the state is not free: every chunk would cost seconds on a whole model), so it stays within
        twice what the state refers to. ``cut=False``: add only (``state`` does not hold every added context
        yet, as on Ray between two merges)."""
        self.registry.add(contexts)
        if cut and len(self.registry) > max(PRUNE_MIN, 2 * self.registry.kept):
            self.registry.cut(state.referenced())

    def _batch_limits(self) -> tuple[int, int]:
        """(contexts, padded tokens) per batch: the settings, fewer where device memory is short."""
        from ..engine.memory import corpus_batch_limits

        return corpus_batch_limits(self.model, self.engine, self.config.batch_size, self.config.batch_tokens)

    def forward(self, batch: list[Context], probes: dict | None = None):
        """Yield (prepared batch, values) for ``batch`` (every probe's, or ``probes``'; a dictionary's as
        :class:`neurotext.engine.fold.SparseValues`), or for its halves (recursively) where a batch runs out of
        memory: an out-of-memory error costs time, never a context."""
        try:
            b = self.engine.prepare(batch)
            found = self.engine.forward(b, probes, sparse=True)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            found = None
        if found is None:  # retried outside the except block, so the failed batch's tensors are freed
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(batch) // 2
            yield from self.forward(batch[:half], probes)
            yield from self.forward(batch[half:], probes)
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
    def finalizer(self, state: PassState, group_units: int | None = None, release: bool = False) -> Finalizer:
        """A :class:`Finalizer` of a finished pass: its ``groups()`` yield the results group of units by group of
        units, so a store writes them as they come (``release``: each point's state is dropped once its tables
        are made)."""
        return Finalizer(self, state, group_units=group_units, release=release)

    def finalize_tables(self, state: PassState) -> tuple[dict, pa.Table]:
        """The results of a finished pass as Arrow tables: ({(layer, site): one row per neuron}, the contexts they
        refer to), every unit's at once (a store writes :meth:`finalizer`'s groups instead)."""
        return self.finalizer(state).tables()

    def describe_corpus(self) -> dict:
        return {"name": self.corpus.name, "source": self.corpus.source, "fingerprint": self.corpus.fingerprint()}

    def finalize(self, state: PassState) -> list[NeuronExamples]:
        """The per-neuron results of a finished pass as :class:`NeuronExamples` (for many neurons, prefer
        :meth:`finalize_tables`: the examples as Python objects take much memory)."""
        tables, contexts = self.finalize_tables(state)
        return tables_to_examples(tables, contexts, self.model.name, self.describe_corpus(), self.config.identity())


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
        of them in Jupyter (:class:`neurotext.display.notebook.Results`).
    """
    try:
        cfg = ExamplesConfig(**config)
    except TypeError as e:
        raise NeurotextError(f"unknown setting: {e}") from e
    return Examiner(model, cfg, progress=progress, device=device).run(neurons, corpus)
