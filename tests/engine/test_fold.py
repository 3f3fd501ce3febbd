"""The fold and the merge of the corpus pass: a dictionary's features fold sparsely and give exactly what the dense
fold of the same values gives; chunk states merge into the state of one pass; the state's size is its formula."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from neurotext import load_model
from neurotext.engine import fold as fold_module
from neurotext.engine import threads
from neurotext.engine.pass_state import state_bytes
from neurotext.examples import CorpusRun, Examiner, ExamplesConfig

from conftest import WORDS, write_sae

warnings.filterwarnings("ignore", category=DeprecationWarning)
pytest.importorskip("sae_lens")

CFG = dict(top=4, random=3, per_range=2, max_length=6, test_share=0.3, token_stats=True, hist_every=2, chunk_size=16,
           batch_size=8)
UNITS = ["L1.ffn.f*", "L1.ffn.0-9", "L0.out.*"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("fold") / "c.txt"
    p.write_text("\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 14))) for _ in range(120)) + "\n")
    return str(p)


@pytest.fixture(scope="module", params=[("topk", {"k": 24}), ("jumprelu", {})], ids=["topk", "jumprelu"])
def model(request, tiny_models, tmp_path_factory):
    arch, kw = request.param
    path = write_sae(tmp_path_factory.mktemp("sae") / arch, arch, d_sae=128, **kw)
    return load_model(str(tiny_models["bert"]), device="cpu").attach(path)


def run_pass(model, corpus, sparse: bool, units=UNITS):
    """A pass's results, its features folded sparsely or densely."""
    ex = Examiner(model, ExamplesConfig(**CFG), progress=False)
    probes, names = ex.probes(units)
    run = CorpusRun(ex, probes, names, ex.open(corpus))
    run.engine.settings.sparse = sparse
    state = run.new_state()
    for _, contexts in run.chunks():
        run.process(state, contexts, progress=False)
    return run, state


def split_sums(r) -> tuple[dict, list]:
    """A result as (a dict compared exactly, the floating-point sums compared up to rounding: mean, std, omega
    squared, lookup means, which the sparse fold and a merge sum in another order)."""
    d = r.to_dict(parts=True)
    sums = [d["stats"].pop("mean"), d["stats"].pop("std")]
    ts = d["token_stats"]
    sums += [ts.pop("omega_squared"), ts.pop("omega_squared_permuted")] + [e.pop("mean") for e in ts["lookup"]]
    return d, sums


def assert_same(got, want) -> None:
    for a, b in zip(got, want, strict=True):
        (da, sa), (db, sb) = split_sums(a), split_sums(b)
        assert da == db, a.neuron
        assert [x is None for x in sa] == [x is None for x in sb], a.neuron
        assert [x for x in sa if x is not None] == pytest.approx([x for x in sb if x is not None], rel=1e-5,
                                                                 abs=1e-5), a.neuron


def test_sparse_fold_equals_the_dense_fold(model, corpus, monkeypatch):
    """Features folded sparsely give, unit by unit, the dense fold's top contexts (zero contexts included, by context
    index), positions, values at every position, samples, ranges, histograms and statistics; the sparse fold never
    makes the dense values."""
    dense_run, dense_state = run_pass(model, corpus, sparse=False)
    want = dense_run.finalize(dense_state)

    def refuse(self):
        raise AssertionError("the sparse fold made the dense values")

    monkeypatch.setattr(fold_module.SparseValues, "dense", refuse)
    run, state = run_pass(model, corpus, sparse=True)
    assert all(ps.sparse == (point[1] == "ffn.f") for point, ps in state.points.items())
    monkeypatch.undo()
    got = run.finalize(state)
    assert [r.neuron for r in got] == [r.neuron for r in want]
    features = [r for r in got if ".ffn.f" in r.neuron]
    assert len(features) == 128
    # the cases that matter are there: features that never fire, some that fire in fewer than K contexts of a
    # part (their top is filled with zero contexts), and some with a full top of positive contexts
    zeros = [sum(e["activation"] == 0 for e in r.split["test"]["top"]) for r in features]
    assert 0 in zeros and any(0 < z < CFG["top"] for z in zeros) and CFG["top"] in zeros
    assert any(r.ranges for r in features)
    assert_same(got, want)


def test_sparse_state_is_smaller_and_its_size_is_the_formula(model, corpus):
    for sparse in (False, True):
        run, state = run_pass(model, corpus, sparse=sparse)
        held = sum(t.nbytes for ps in state.points.values() for name, v in vars(ps).items()
                   for t in (v if isinstance(v, list) else [v]) if isinstance(t, torch.Tensor))
        assert held == run.engine.state_bytes()
    s = run.settings
    w = run.engine.width
    assert state_bytes(1, s.top, s.slots, w, 2, True) < state_bytes(1, s.top, s.slots, w, 2, False)
    # the defaults: 25,864 bytes a neuron and 23,808 a feature (the formula of the docs)
    assert state_bytes(1, 20, 3, 66, 2, False) == 25_864 and state_bytes(1, 20, 3, 66, 2, True) == 23_808


def test_histogram_counts_widen_before_int32_could_overflow(model, corpus, monkeypatch):
    """Counts are int32 until a pass nears 2**30 contexts or sampled positions, then int64; the results are the
    same (here the limit is lowered to a few contexts)."""
    from neurotext.engine import pass_state

    run, state = run_pass(model, corpus, sparse=True)
    assert {ps.hist.dtype for ps in state.points.values()} == {torch.int32}
    want = run.finalize(state)
    monkeypatch.setattr(pass_state, "COUNT_LIMIT", 50)
    run, state = run_pass(model, corpus, sparse=True)
    assert {ps.hist.dtype for ps in state.points.values()} == {ps.ctx_hist.dtype for ps in state.points.values()} \
        == {torch.int64}
    assert_same(run.finalize(state), want)


def test_chunk_states_merge_into_the_state_of_one_pass(model, corpus):
    """Chunks folded into states of their own (as on Ray actors) and merged, in another order than the corpus's,
    give the results of one pass."""
    run, state = run_pass(model, corpus, sparse=True)
    want = run.finalize(state)
    ex = Examiner(model, ExamplesConfig(**CFG), progress=False)
    probes, names = ex.probes(UNITS)
    other = CorpusRun(ex, probes, names, ex.open(corpus))
    merged = other.new_state()
    chunks = list(other.chunks())
    for _, contexts in reversed(chunks):
        part = other.process(other.new_state(), contexts, keep=False, progress=False)
        other.engine.merge(merged, part)
    for _, contexts in chunks:
        other.keep(merged, contexts)
    assert_same(other.finalize(merged), want)


def test_points_folded_side_by_side_equal_points_folded_one_by_one(model, corpus, monkeypatch):
    """The points' merges on three threads at once give exactly (every figure, sums included) what one thread gives."""
    results, workers_seen = {}, []
    for workers in (1, 3):
        def forced(calls, _workers, workers=workers):
            workers_seen.append(len(calls))
            threads.side_by_side(calls, workers)

        monkeypatch.setattr(fold_module, "side_by_side", forced)
        run, state = run_pass(model, corpus, sparse=True)
        results[workers] = [r.to_dict(parts=True) for r in run.finalize(state)]
    assert min(workers_seen) == 3  # every batch had a sparse point and two dense ones to spread
    assert results[3] == results[1]


@pytest.mark.parametrize("compiled", ["1", "0"])
def test_reduce_equals_a_numpy_reduction(compiled, monkeypatch):
    """The one pass over a point's values (compiled, and eager) against NumPy: each (context, unit)'s maximum over
    text positions and the first position holding it (ties, negative values and -0.0 beside 0.0 included), the
    sums, sums of squares and counts of positive values, the samples' buckets and the top orders."""
    from neurotext.engine.pass_state import NB, positive_bucket, signed_bin, top_order

    monkeypatch.setenv("NEUROTEXT_COMPILE", compiled)
    g = torch.Generator().manual_seed(0)
    b, t, u = 7, 11, 13
    vals = (torch.randint(-6, 7, (b, t, u), generator=g) / 4.0).float()  # coarse: many ties
    vals[vals == 0] = -0.0  # GELU's zeros can be negative
    vals[1] = -torch.rand((t, u), generator=g) - 0.5  # a context below zero everywhere
    vals[2, :, :4] = -1.0
    vals[2, 2, :4], vals[2, 4, :4] = -0.0, 0.0  # a maximum of 0 first held by -0.0
    text = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):
        text[i, 1:2 + (i * 3) % (t - 2)] = True  # [CLS] text [SEP] padding
    ctx = torch.arange(100, 100 + b)
    order = torch.randint(0, 1 << 40, (b,), generator=g)
    top_worst = torch.randint(-(1 << 62), 1 << 62, (u,), generator=g)
    slot_worst = torch.randint(0, 1 << 40, (u, NB), generator=g)
    cmax, cpos, rs, rss, rpos, sbin, bucket, enters, top, units = fold_module.reduce(vals, text, ctx, order,
                                                                                    top_worst, slot_worst)
    v, m = vals.numpy().astype(np.float64), text.numpy()
    for i in range(b):
        x = v[i][m[i]]  # (n, u) text positions
        want_max = x.max(0)
        np.testing.assert_array_equal(cmax[i].numpy(), want_max)
        np.testing.assert_array_equal(cpos[i].numpy(), np.nonzero(m[i])[0][(x == want_max).argmax(0)])
        np.testing.assert_allclose(rs[i].numpy(), x.sum(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(rss[i].numpy(), (x * x).sum(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(rpos[i].numpy(), (x > 0).sum(0))
    pos = cmax > 0
    assert torch.equal(sbin, signed_bin(cmax) + torch.arange(u) * (2 * NB + 1))
    assert torch.equal(bucket, torch.where(pos, positive_bucket(cmax), 0))
    assert torch.equal(enters, pos & (order.unsqueeze(1) < slot_worst[torch.arange(u), bucket]))
    assert torch.equal(top, top_order(cmax, ctx.unsqueeze(1)).T)
    assert torch.equal(units, (top > top_worst.unsqueeze(1)).any(1))
    assert bool(pos.any()) and not bool(pos.all()) and cpos[2, :4].tolist() == [2] * 4
