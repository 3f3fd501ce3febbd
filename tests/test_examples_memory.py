"""Memory of the corpus pass at scale, on a tiny model with a wide dictionary: finalizing streams group by group
(its peak grows with the group, not with the number of units), and the registry of referred contexts stays within
what the state refers to (it does not grow with the documents)."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neurotext import load_model
from neurotext.corpus import Corpus
from neurotext.examples import CorpusRun, Examiner, ExamplesConfig
from neurotext.store import examples as ex_store

from conftest import WORDS, write_sae

warnings.filterwarnings("ignore", category=DeprecationWarning)
pytest.importorskip("sae_lens")

CFG = dict(top=4, random=3, per_range=2, max_length=6, chunk_size=64, batch_size=64, token_stats=False)
FEATURES = 2048


@pytest.fixture(scope="module")
def wide(tiny_models, tmp_path_factory):
    """The tiny BERT with a 2,048-feature TopK dictionary on L1.ffn."""
    path = write_sae(tmp_path_factory.mktemp("wide") / "sae", "topk", d_sae=FEATURES, k=48)
    return load_model(str(tiny_models["bert"]), device="cpu").attach(path)


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(n)]


def corpus_of(docs: list[str], times: int = 1) -> Corpus:
    def read(problems):
        for _ in range(times):
            yield from docs

    return Corpus(name=f"test x{times}", source=f"test x{times}", kind="txt", read=read)


def finished(model, units: str, corpus: Corpus):
    ex = Examiner(model, ExamplesConfig(**CFG), progress=False)
    probes, names = ex.probes([units])
    run = CorpusRun(ex, probes, names, corpus)
    state = run.new_state()
    for _, contexts in run.chunks():
        run.process(state, contexts, progress=False)
    return run, state


def group_peaks(run, state, group_units: int) -> tuple[list[int], int]:
    """Finalize group by group as a store does (each table dropped once taken); per group after the first: the
    bytes the making of the group took at its peak (numpy and Python objects, traced) plus its Arrow table's.
    Returns (those, units finalized)."""
    fin = run.finalizer(state, group_units=group_units)
    groups = fin.groups()
    next(groups)  # the first group carries the work done once (ranges, replays): not a group's own memory
    peaks, units = [], group_units
    tracemalloc.start()
    try:
        while True:
            tracemalloc.reset_peak()
            base, arrow = tracemalloc.get_traced_memory()[0], pa.total_allocated_bytes()
            try:
                _, table = next(groups)
            except StopIteration:
                break
            peaks.append(tracemalloc.get_traced_memory()[1] - base + pa.total_allocated_bytes() - arrow)
            units += table.num_rows
            del table
    finally:
        tracemalloc.stop()
    list(fin.contexts_tables())
    return peaks, units


def test_finalize_peak_grows_with_the_group_not_with_the_units(wide):
    corpus = corpus_of(texts(150))
    run, state = finished(wide, "L1.ffn.f*", corpus)
    small, n = group_peaks(run, state, 128)
    assert n == FEATURES and len(small) == FEATURES // 128 - 1
    large, _ = group_peaks(*finished(wide, "L1.ffn.f*", corpus), 512)
    # a group four times larger takes about four times the memory ...
    assert max(large) > 2.5 * max(small)
    # ... while four times the units, in groups of the same size, take no more per group
    run, state = finished(wide, "L1.ffn.f0-511", corpus)
    quarter, n = group_peaks(run, state, 128)
    assert n == 512 and max(small) < 1.3 * max(quarter)


def test_a_store_holds_one_group_at_a_time(wide, tmp_path):
    """The store writes each group as it comes: a point's file has a row group per group of units."""
    docs = tmp_path / "c.txt"
    docs.write_text("\n".join(texts(60)) + "\n")
    seen = []
    from neurotext.examples import tables

    make = tables.Finalizer._table

    def table(self, *a, **k):
        seen.append(pa.total_allocated_bytes())
        return make(self, *a, **k)

    tables.Finalizer._table = table
    try:
        ex_store.run_examples(["L1.ffn.f*"], tmp_path / "s", corpus=str(docs), model=wide,
                              config=ExamplesConfig(**CFG), log=lambda m: None)
    finally:
        tables.Finalizer._table = make
    f = pq.ParquetFile(ex_store.examples_dir(tmp_path / "s") / "L1.ffn.f.parquet")
    assert f.metadata.num_rows == FEATURES and f.metadata.num_row_groups == FEATURES // tables.GROUP_UNITS
    one = f.read_row_group(0).nbytes
    assert max(seen) < 1.5 * one  # when a group is made, no earlier group's table is still held


def test_release_frees_the_sample_slots_before_the_replay_and_changes_no_table(wide, monkeypatch):
    """A store's finalize (release) drops the sample slots once the range samples are drawn, before the replay
    allocates its values: the tables are those of a finalize that keeps the whole state."""
    from neurotext.examples import tables

    corpus = corpus_of(texts(80))
    kept = finished(wide, "L1.ffn.f*,L1.ffn.0-15", corpus)
    expected, expected_contexts = kept[0].finalizer(kept[1]).tables()
    assert all(ps.slot.numel() > 0 for ps in kept[1].points.values())  # without release the state stays whole
    replay, slots_at_replay = tables.Finalizer._replay_ranges, []

    def recording(self, ranges):
        slots_at_replay.append(sum(ps.slot.numel() + ps.slot_val.numel() + ps.slot_pos.numel()
                                   for ps in self.state.points.values()))
        return replay(self, ranges)

    monkeypatch.setattr(tables.Finalizer, "_replay_ranges", recording)
    run, state = finished(wide, "L1.ffn.f*,L1.ffn.0-15", corpus)
    fin = run.finalizer(state, release=True)
    got = {}
    for point, table in fin.groups():
        got.setdefault(point, []).append(table)
    assert slots_at_replay == [0]
    assert set(got) == set(expected)
    for point, parts in got.items():
        assert pa.concat_tables(parts).equals(expected[point])
    assert pa.concat_tables(list(fin.contexts_tables())).equals(expected_contexts)


def test_registry_stays_within_what_the_state_refers_to(wide):
    """Ten times the documents (the same texts again: new contexts, not better ones, ties going to the earlier
    context), and the registry of referred contexts holds no more than twice what the state refers to,
    which is what it referred to after one time: it does not grow with the documents."""
    from neurotext.examples.run import PRUNE_MIN

    docs = texts(600, seed=1)
    seen = {}
    for times in (1, 10):
        run, state = finished(wide, "L1.ffn.f0-63", corpus_of(docs, times))
        referenced = len(state.referenced())
        seen[times] = (int(state.contexts.sum()), referenced, len(run.registry))
        assert len(run.registry) <= max(2 * referenced, PRUNE_MIN) + CFG["chunk_size"]
    (one, ref_one, _), (ten, ref_ten, kept_ten) = seen[1], seen[10]
    assert ten == 10 * one and ten > 2 * PRUNE_MIN
    # about the same contexts (a later copy of a text can win by the rounding of another batch's padding)
    assert ref_ten <= 1.5 * ref_one
    assert kept_ten < ten / 3
