"""Q1 (``neurotext words``): plumbing on a tiny random BERT's sweep, the token control on the bundled model."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from neurotext import FTConfig, NeurotextError, Textualizer
from neurotext import store as store_mod
from neurotext.analysis.words import STATS, WordsConfig, analyze_store, measure
from neurotext.cli import main
from neurotext.store.sweep import run_sweep


def _quiet(_msg):
    pass


@pytest.fixture(scope="module")
def tiny_store(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("q1") / "store"
    run_sweep(["L0-2.ffn.0-7", "L1.out.0-3"], out, model=str(tiny_models["bert"]),
              config=FTConfig(steps=10, restarts=1), cache_dir=False, log=_quiet)
    return out


@pytest.fixture(scope="module")
def tiny_doc(tiny_store):
    return analyze_store(tiny_store, cache_dir=False, progress=False).to_dict()


def test_document_contract(tiny_doc, tiny_store):
    doc = tiny_doc
    assert doc["model"] == "bert" and doc["criterion"] == {
        "min_retention": 0.5, "best_k": 10,
        "text": "retention >= 0.5 and nearest token among the unit's 10 best real tokens (vocabulary scan)"}
    assert [(g["layer"], g["site"], g["n"]) for g in doc["groups"]] == [(0, "ffn", 8), (1, "ffn", 8), (1, "out", 4),
                                                                         (2, "ffn", 8)]
    table = store_mod.read_table(tiny_store)
    for g in doc["groups"]:
        assert set(g["stats"]) == set(STATS)
        for stat in STATS:
            assert set(g["stats"][stat]) == {"ft", "token", "random"}
        # the FT column is the store's own numbers
        cos = [c for c, lay, s in zip(*(table.column(n).to_pylist() for n in ("nearest_cosine", "layer", "site")))
               if (lay, s) == (g["layer"], g["site"])]
        assert g["stats"]["nearest_cosine"]["ft"]["median"] == pytest.approx(float(np.median(cos)))
        # a real token comes back as itself; a random direction does not
        assert g["stats"]["nearest_cosine"]["token"]["q1"] == pytest.approx(1.0, abs=1e-5)
        assert g["stats"]["nearest_cosine"]["random"]["q3"] < 0.99
        for src in ("ft", "token", "random"):
            assert 0.0 <= g["word_like"][src] <= 1.0
            assert g["n_word_like"][src] == round(g["word_like"][src] * g["n"])
        tok_ret = g["stats"]["retention"]["token"]
        assert tok_ret["n"] == 0 or tok_ret["q1"] == tok_ret["q3"] == pytest.approx(1.0)
    top = doc["top"]
    assert len(top) == 20 and top == sorted(top, key=lambda t: not t["word_like"])  # word-like first
    assert set(top[0]) >= {"neuron", "word_like", "retention", "nearest_tokens", "best_tokens", "nearest_in_best"}
    for t in top:
        assert t["word_like"] == (t["retention"] is not None and t["retention"] >= 0.5
                                  and t["nearest_in_best"] is not None)
    json.dumps(doc, allow_nan=False)


def test_same_seed_same_numbers(tiny_store, tiny_doc):
    assert analyze_store(tiny_store, cache_dir=False, progress=False).to_dict() == tiny_doc
    other = analyze_store(tiny_store, WordsConfig(seed=5), cache_dir=False, progress=False).to_dict()
    assert [g["stats"]["nearest_cosine"]["random"] for g in other["groups"]] != \
        [g["stats"]["nearest_cosine"]["random"] for g in tiny_doc["groups"]]


def test_thresholds_change_the_criterion(tiny_store):
    loose = analyze_store(tiny_store, WordsConfig(min_retention=1e-9, best_k=64), cache_dir=False).to_dict()
    assert loose["criterion"]["best_k"] == 10  # the sweep kept 10 best tokens: the criterion says so
    strict = analyze_store(tiny_store, WordsConfig(min_retention=100.0), cache_dir=False).to_dict()
    assert all(g["n_word_like"]["ft"] == 0 for g in strict["groups"])
    assert sum(g["n_word_like"]["ft"] for g in loose["groups"]) >= sum(g["n_word_like"]["ft"]
                                                                       for g in strict["groups"])


def test_cli_json_text_and_plots(tiny_store, tmp_path, capsys):
    out = tmp_path / "q1"
    assert main(["words", str(tiny_store), "--json", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert json.loads((out / "words.json").read_text()) == doc
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted([f"words_{s}.png" for s in STATS] + ["words_word_like.png", "words_stability.png"])
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert main(["words", str(tiny_store), "--top", "5"]) == 0
    text = capsys.readouterr().out
    assert "word-like criterion: retention >= 0.5 and nearest token among the unit's 10 best" in text
    assert "5 most word-like FT neurons" in text and "token control" in text and "random control" in text


def _broken_store(tiny_store, tmp_path, how):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_store, bad)
    if how == "manifest":
        m = json.loads((bad / "manifest.json").read_text())
        del m["model"]["source"]
        (bad / "manifest.json").write_text(json.dumps(m))
    else:
        for p in (bad / "shards").glob("*.parquet"):
            pq.write_table(pq.read_table(p).drop_columns(["retention"]), p)
    return bad


@pytest.mark.parametrize("how, message", [
    ("manifest", "the store's manifest lacks model.source"),
    ("column", "the store lacks the column(s) retention that Q1 needs"),
])
def test_store_without_needed_fields(tiny_store, tmp_path, capsys, how, message):
    assert main(["words", str(_broken_store(tiny_store, tmp_path, how))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurotext: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["words", "/nonexistent/store"], "no such store directory"),
    (["words", "{tmp}"], "is not a neurotext store"),
    (["words", "{store}", "--best-k", "0"], "--best-k: must be a positive integer"),
    (["words", "{store}", "--min-retention", "-1"], "--min-retention: must be positive"),
    (["words", "{store}", "--model", "{other}"], "is not the one the sweep used"),
])
def test_bad_input_one_line_exit_2(tiny_store, tiny_models, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, store=tiny_store, other=tiny_models["electra"]) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurotext: error: ") and message in err and err.count("\n") == 1


def test_store_without_shards(tiny_store, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(tiny_store / "manifest.json", empty / "manifest.json")
    with pytest.raises(NeurotextError, match="no shards yet"):
        analyze_store(empty)


# ----------------------------------------------------------------------------- bundled model
@pytest.mark.parametrize("layer, site", [(0, "ffn"), (3, "ffn"), (3, "out")])
def test_a_token_textualizes_to_itself(bundled, layer, site):
    """The Q1 token control on the bundled model: a real token's own embedding, put through the same
    textualization, is its own nearest token (cosine 1) and keeps all of its activation (retention 1)."""
    tx = Textualizer(bundled, FTConfig(top=10), progress=False)
    gen = torch.Generator().manual_seed(layer)
    ids = torch.randint(1996, bundled.embeddings.shape[0], (64,), generator=gen)  # past [unused*]: real tokens
    x = bundled.embeddings[ids]
    acts = bundled.capture(x, [(layer, site)])[(layer, site)].all()  # (64, U)
    units = acts.argmax(dim=1)  # each token's most active unit: a positive activation, so retention is defined
    cfg = WordsConfig()
    stats, flags = measure(tx, layer, site, units, x, [[int(i)] for i in ids], np.ones(64), cfg, cfg.best_k)
    _, near = tx.nearest(x, 1)
    assert torch.equal(near[:, 0], ids)
    assert stats["nearest_cosine"] == pytest.approx([1.0] * 64, abs=1e-5)
    assert stats["retention"] == pytest.approx([1.0] * 64, abs=1e-6)
    assert all(flags)  # a real token is word-like by the Q1 criterion


def test_bundled_store_end_to_end(bundled, tmp_path):
    """A small sweep of the bundled model through the whole Q1 analysis: the token control is word-like
    for every neuron (each best token's activation is positive at layer 0) and matches the store."""
    out = tmp_path / "store"
    run_sweep(["L0.ffn.0-7"], out, model=bundled, config=FTConfig(steps=8, restarts=1), log=_quiet)
    doc = analyze_store(out, progress=False).to_dict()
    [g] = doc["groups"]
    assert g["n"] == 8 and g["word_like"]["token"] == 1.0
    assert g["stats"]["activation_ratio"]["token"]["q1"] == pytest.approx(1.0, rel=1e-4)  # scan == forward pass
    assert g["stats"]["retention"]["token"]["median"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def restarts_store(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("q1stab") / "store"
    run_sweep(["L0-1.ffn.0-15", "L1.out.0-7"], out, model=str(tiny_models["bert"]),
              config=FTConfig(steps=16, restarts=4, stability_tol=0.5), cache_dir=False, log=_quiet)
    return out


def test_words_json_holds_stability_beside_the_baseline(restarts_store, capsys):
    from neurotext.analysis import reproducible

    assert main(["words", str(restarts_store), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stability"]["note"] is None and "95th percentile" in doc["stability"]["rule"]
    table = store_mod.read_table(restarts_store)
    rows = table.to_pylist()
    for g in doc["groups"]:
        st = g["stability"]
        mine = [r for r in rows if (r["layer"], r["site"]) == (g["layer"], g["site"])]
        for stat in reproducible.REPRO_STATS:
            assert set(st["stats"][stat]) == {"ft", "baseline"}
            assert st["stats"][stat]["baseline"]["n"] > 0
        # the FT distribution is the store's own per-neuron stability
        jac = [r["stability"]["jaccard_at_10"] for r in mine if r["stability"]["restarts"] >= 2]
        assert st["n_with_two_restarts"] == len(jac) > 0
        assert st["stats"]["jaccard_at_10"]["ft"]["median"] == pytest.approx(float(np.median(jac)))
        # the share reproducible follows the documented rule against the baseline's threshold
        limit = st["threshold_jaccard_at_10"]
        n_rep = sum(1 for r in mine if r["stability"]["restarts"] >= 2 and r["stability"]["consensus"]
                    and r["stability"]["jaccard_at_10"] > limit)
        assert st["n_reproducible"] == n_rep


def test_words_stability_plot_and_text(restarts_store, tmp_path, capsys):
    out = tmp_path / "q1"
    assert main(["words", str(restarts_store), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stability: how far each neuron's counted restarts agree" in text
    assert (out / "words_stability.png").stat().st_size > 10_000


def test_baseline_is_drawn_from_other_neurons_only():
    from neurotext.analysis import reproducible

    rng = np.random.default_rng(0)
    v = rng.standard_normal((5, 8)).astype(np.float32)
    ids = [[100 * i + k for k in range(10)] for i in range(5)]  # no two neurons share a token
    base = reproducible.group_baseline(v, ids, [4, 4, 4, 4, 4], seed=0)
    assert base["jaccard_at_10"] == [0.0] * 5 and base["consensus_size"] == [0] * 5
    # with 5 neurons and groups of 4, neuron i's group is exactly the other four
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    for i, got in enumerate(base["cosine"]):
        others = [j for j in range(5) if j != i]
        sims = [float(u[a] @ u[b]) for a in others for b in others if a < b]
        assert got == pytest.approx(sum(sims) / len(sims), abs=1e-5)
