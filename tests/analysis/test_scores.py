"""Read-outs scored on held-out corpus text: known answers, an independent recomputation with scipy, the split,
seeds, the CLI and bad input."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from neurotext.analysis import scores
from neurotext.cli import main
from neurotext.errors import NeurotextError
from neurotext.examples import ExamplesConfig, omega_squared
from neurotext.store import examples as ex_store
from neurotext.store.examples import run_examples

WORDS = ["the", "rain", "sun", "cat", "dog", "run", "blue", "red", "house", "tree", "water", "fire", "stone",
         "bird", "fish", "king", "queen", "city", "road", "ship", "star", "moon", "wind", "snow", "leaf"]


def quiet(*a, **k):
    pass


def example(ids, acts, ctx, pad=(0, 0)):
    """An example record with template positions (None) around the text."""
    return {"ids": [0] * pad[0] + list(ids) + [0] * pad[1], "context": ctx,
            "activations": [None] * pad[0] + list(acts) + [None] * pad[1]}


# ------------------------------------------------------------------ known answers
def test_a_token_unit_is_predicted_perfectly_by_its_token_and_not_by_another():
    rng = np.random.default_rng(0)
    t = 7
    top, rand = [], []
    for c in range(10):  # top contexts hold the token (activation 1 there, 0 elsewhere)
        ids = list(rng.integers(10, 50, 8))
        ids[c % 8] = t
        top.append(example(ids, [float(i == t) for i in ids], c, (1, 1)))
    for c in range(10, 30):  # random contexts do not
        ids = list(rng.integers(10, 50, 8))
        rand.append(example(ids, [0.0] * 8, c, (1, 1)))
    ev = scores.evaluation_set(top, rand)
    assert ev.n_top == 10 and ev.n_random == 10 and len(ev.ids) == 160  # as many random as top; template dropped
    assert scores.score(ev, tokens=[t]) == {"correlation": pytest.approx(1.0), "detection_auroc": 1.0}
    assert scores.score(ev, tokens=[3, 4]) == {"correlation": 0.0, "detection_auroc": 0.5}  # never present: chance
    assert scores.score(ev, tokens=[t, 3])["correlation"] == pytest.approx(1.0)


def test_auroc_and_pearson_edge_cases():
    assert scores.auroc(np.array([1.0, 2.0]), np.array([0.0])) == 1.0
    assert scores.auroc(np.array([1.0]), np.array([1.0])) == 0.5
    assert scores.auroc(np.array([]), np.array([1.0])) is None
    assert scores.pearson(np.array([1.0, 1.0]), np.array([0.0, 1.0])) == 0.0
    assert scores.pearson(np.array([0.0, 1.0]), np.array([2.0, 2.0])) is None
    assert scores.evaluation_set([], [example([1], [0.5], 0)]) is None


def test_omega_squared_of_a_lookup_unit_is_one_and_of_noise_about_zero():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 200, 20000)
    value = rng.normal(size=200)
    lookup = value[tokens]
    noise = rng.normal(size=len(tokens))
    for vals, want, tol in ((lookup, 1.0, 1e-9), (noise, 0.0, 0.01)):
        counts = np.bincount(tokens, minlength=200)
        sums = np.bincount(tokens, weights=vals, minlength=200)
        got = omega_squared(counts, sums, float(vals.sum()), float((vals ** 2).sum()))
        assert got == pytest.approx(want, abs=tol)
    assert omega_squared(np.array([3, 2]), np.array([3.0, 2.0]), 5.0, 5.0) is None  # constant values


def test_derangement_pairs_every_neuron_with_another_and_depends_on_the_seed():
    names = [f"L1.ffn.{i}" for i in range(9)]
    a = scores.derangement(names, 0, "L1.ffn")
    assert set(a) == set(names) and all(k != v for k, v in a.items()) and sorted(a.values()) == sorted(names)
    assert a == scores.derangement(names, 0, "L1.ffn") and a != scores.derangement(names, 1, "L1.ffn")
    assert scores.derangement(names[:1], 0, "x") == {}


# ------------------------------------------------------------------ a real (tiny) store
def sentences(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def joined(tmp_path_factory, tiny_models):
    """A tiny BERT's sweep (with phrases) and its corpus examples in one directory."""
    root = tmp_path_factory.mktemp("scores")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(sentences(400)) + "\n")
    out = root / "store"
    model = str(tiny_models["bert"])
    assert main(["sweep", "L1.ffn.0-11", "--model", model, "--out", str(out), "--steps", "12", "--restarts", "3",
                 "--phrases", "1,2", "--iters", "2", "--device", "cpu"]) == 0
    run_examples("L1.ffn.0-11", out, corpus=str(corpus), model=model, device="cpu", log=quiet,
                 config=ExamplesConfig(top=6, random=6, max_length=8, token_stats=True))
    return {"dir": out, "corpus": corpus, "model": model}


def test_scores_recomputed_independently_with_scipy(joined):
    from scipy import stats

    from neurotext import load_model

    m = load_model(joined["model"], device="cpu")
    emb = m.embeddings.float().numpy()
    arm = scores.corpus_arm(joined["dir"], None, scores.unit_embeddings(m), seed=0)
    assert set(arm.readouts) == set(scores.READOUTS)
    _, rows = ex_store.read_rows(joined["dir"])
    by = {r["neuron"]: r for r in rows}
    import pyarrow.parquet as pq

    sweep = {r["neuron"]: r for r in pq.read_table(sorted((joined["dir"] / "shards").glob("*.parquet"))[0]).to_pylist()}
    checked = 0
    for rec in arm.neurons[:4]:
        ex = by[rec["neuron"]]
        top = ex["top_test"]
        top_ctx = {e["context"] for e in top}
        rand = [e for e in ex["random_test"] if e["context"] not in top_ctx][:len(top)]
        pos = [(t, a, c, lab) for c, (e, lab) in enumerate([(e, 1) for e in top] + [(e, 0) for e in rand])
               for t, a in zip(e["ids"], e["activations"]) if a is not None]
        ids = np.array([p[0] for p in pos])
        acts = np.array([p[1] for p in pos])
        ctx = np.array([p[2] for p in pos])
        labels = np.array([1] * len(top) + [0] * len(rand))
        s = sweep[rec["neuron"]]
        for name, tokens in (("ft_nearest", s["nearest_ids"][:10]), ("scan_best", s["best_ids"][:10]),
                             ("corpus_lookup", [d["id"] for d in ex["lookup"]])):
            pred = np.isin(ids, tokens).astype(float)
            want = stats.pearsonr(pred, acts).statistic if pred.std() > 0 else 0.0
            assert rec["scores"][name]["correlation"] == pytest.approx(want, abs=1e-9), name
            per = np.array([pred[ctx == c].sum() for c in range(len(labels))])
            u = stats.mannwhitneyu(per[labels == 1], per[labels == 0]).statistic
            assert rec["scores"][name]["detection_auroc"] == pytest.approx(u / (labels.sum() * (1 - labels).sum()))
            checked += 1
        v = np.asarray(s["vector"], dtype=np.float64)
        cos = (emb[ids] @ v) / (np.linalg.norm(emb[ids], axis=1) * np.linalg.norm(v))
        assert rec["scores"]["ft_vector"]["correlation"] == pytest.approx(stats.pearsonr(cos, acts).statistic,
                                                                           abs=1e-5)
    assert checked == 12
    # a group's chance scores are the scores of the paired neuron's read-outs
    pair = scores.derangement([r["neuron"] for r in arm.neurons], 0, "L1.ffn")
    for rec in arm.neurons[:3]:
        assert pair[rec["neuron"]] != rec["neuron"]
        assert "ft_nearest_chance" in rec["scores"] and "corpus_lookup_chance" in rec["scores"]


def test_train_and_test_never_share_a_document(joined):
    _, rows = ex_store.read_rows(joined["dir"])
    train = {e["doc"] for r in rows for e in r["top_train"] + r["random_train"]}
    test = {e["doc"] for r in rows for e in r["top_test"] + r["random_test"]}
    assert train and test and not train & test
    assert all(e["part"] == "test" for r in rows for e in r["top_test"] + r["random_test"])
    from neurotext.engine.contexts import SplitConfig, doc_part, text_digest

    docs = joined["corpus"].read_text().splitlines()
    parts = [doc_part(text_digest(d), SplitConfig(0.2, 0)) for d in docs]
    assert 0.1 < np.mean(parts) < 0.3  # about the test share
    assert all(parts[e["doc"]] == 1 for r in rows for e in r["top_test"])


def test_same_seeds_same_scores_and_words_cli(joined, capsys, tmp_path):
    a = scores.corpus_arm(joined["dir"], seed=0).to_dict(neurons=True)
    b = scores.corpus_arm(joined["dir"], seed=0).to_dict(neurons=True)
    c = scores.corpus_arm(joined["dir"], seed=1).to_dict(neurons=True)
    assert a == b
    chance = [n["scores"]["ft_nearest_chance"] for n in a["neurons"]]
    assert chance != [n["scores"]["ft_nearest_chance"] for n in c["neurons"]]
    assert [n["scores"]["ft_nearest"] for n in a["neurons"]] == [n["scores"]["ft_nearest"] for n in c["neurons"]]
    assert main(["words", str(joined["dir"]), "--json", "--out", str(tmp_path / "q1"), "--device", "cpu"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cs = doc["corpus"]["corpus_scores"]
    names = {r["readout"] for r in cs}
    for name in scores.READOUTS:
        assert name in names and name + "_chance" in names
    for r in cs:
        assert {"layer", "site", "readout", "n", "correlation", "detection_auroc"} <= set(r)
        assert {"median", "q1", "q3", "n", "mean"} <= set(r["correlation"])
    assert doc["corpus"]["token_identity"][0]["omega_squared"]["n"] == 12
    assert "word_like_ft" in doc["corpus"]["token_identity"][0]
    assert "2" in doc["corpus"]["optimization"][0]["phrase_over_corpus_max"]
    for png in ("words_corpus_correlation.png", "words_corpus_detection_auroc.png", "words_token_identity.png",
                "words_over_corpus_max.png"):
        assert (tmp_path / "q1" / png).stat().st_size > 1000
    assert main(["words", str(joined["dir"]), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "read-outs scored on held-out text" in text and "corpus_lookup" in text and "omega" in text


def test_refusals_and_partial_overlap(joined, tiny_models, tmp_path):
    other = tmp_path / "other"
    run_examples("L1.ffn.0-3", other, corpus=str(joined["corpus"]), model=str(tiny_models["distilbert"]),
                 device="cpu", log=quiet, config=ExamplesConfig(top=4, random=4, max_length=8))
    with pytest.raises(NeurotextError, match="another model"):
        scores.corpus_arm(joined["dir"], other)
    some = tmp_path / "some"  # examples of a subset of the swept neurons, and one more
    run_examples("L1.ffn.8-13", some, corpus=str(joined["corpus"]), model=joined["model"], device="cpu", log=quiet,
                 config=ExamplesConfig(top=4, random=4, max_length=8))
    arm = scores.corpus_arm(joined["dir"], some)
    assert len(arm.neurons) == 4 and arm.missing["sweep_only"] == 8 and arm.missing["examples_only"] == 2
    tiny = tmp_path / "tiny.txt"  # too small for the split: no document in the test part
    tiny.write_text("the rain\n")
    run_examples("L1.ffn.0-11", tmp_path / "small", corpus=str(tiny), model=joined["model"], device="cpu",
                 log=quiet, config=ExamplesConfig(top=4, random=4, max_length=8, test_share=0.0))
    arm = scores.corpus_arm(joined["dir"], tmp_path / "small")
    assert arm.missing["no_test_context"] == 12
    assert all(v["correlation"] is None for n in arm.neurons for v in n["scores"].values())
