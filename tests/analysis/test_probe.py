"""Q2 on real text (neurotext probe): checked against an independent probe on a tiny random BERT and a corpus
written here.

The independent probe reads the activations through a plain Hugging Face forward pass with its own hook, and
fits its own logistic regression (scikit-learn, L2, on every train position, no sampling); it confirms that each
word's selected units (the ranking cut at k95) keep most of a full probe's average precision on unseen text and
beat as many random units."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import pytest
import torch

from neurotext.cli import main
from neurotext.engine.contexts import SplitConfig, doc_part, text_digest

from conftest import WORDS, make_tiny_model

sk_linear = pytest.importorskip("sklearn.linear_model")
sk_metrics = pytest.importorskip("sklearn.metrics")

LAYER = 1
PROBED = ["rain", "king", "blue", "the"]
ONLY_TRAIN = "hill"  # occurs in train documents only


def _corpus(rng) -> list[str]:
    vocab = [w for w in WORDS if w != ONLY_TRAIN]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    docs = [" ".join(rng.choice(vocab, size=int(rng.integers(5, 14)), p=p / p.sum())) for _ in range(360)]
    extra = 0
    while extra < 3:  # a few train documents with the word that has no held-out occurrence
        doc = f"{ONLY_TRAIN} " + " ".join(rng.choice(vocab, size=6))
        if doc_part(text_digest(doc), SplitConfig()) == 0:
            docs.append(doc)
            extra += 1
    return docs


def _run(args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    model = make_tiny_model(root / "bert", "bert", words=WORDS + ["##s"])  # "rains" splits into rain ##s
    docs = _corpus(np.random.default_rng(0))
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(docs) + "\n")
    # a dictionary on L1.ffn written with SAELens's own classes
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=64, d_sae=128, k=8, metadata=SAEMetadata(
        hook_name=f"blocks.{LAYER}.mlp.hook_post", model_name="bert")))
    sae.save_model(str(root / "dictionary"))
    # FT's counts (an encode document, written by hand: its smallest k for two words at the layer)
    encode = {"model": "bert", "site": "ffn", "smallest_k": [
        {"word": "rain", "layer": LAYER, "select": "zscore", "k": 4},
        {"word": "king", "layer": LAYER, "select": "zscore", "k": None}],
        "per_word": [{"word": "rain", "token": "rain"}, {"word": "king", "token": "king"}]}
    (root / "encode.json").write_text(json.dumps(encode))
    out = root / "out"
    code, stdout, err = _run(["probe", *PROBED, "rains", "zebra", ONLY_TRAIN, "--at", f"L{LAYER}.ffn,L{LAYER}.out",
                              "--model", str(model), "--corpus", str(corpus), "--dictionary", str(root / "dictionary"),
                              "--encode", str(root / "encode.json"), "--device", "cpu", "--json", "--out", str(out)])
    assert code == 0, err
    return {"root": root, "model": model, "corpus": corpus, "docs": docs, "records": json.loads(stdout), "out": out,
            "err": err}


def _done(setup, units="neurons"):
    return [r for r in setup["records"] if "skipped" not in r and r["units"] == units]


# ----------------------------------------------------------------------------- the independent probe
def _activations(setup):
    """Every text position of every document: (values per site, token ids, part), through a plain Hugging Face
    forward pass and a hook of the test's own (the FFN's activation output, the layer's output)."""
    from transformers import AutoModel, AutoTokenizer

    hf = AutoModel.from_pretrained(setup["model"]).eval()
    tok = AutoTokenizer.from_pretrained(setup["model"])
    grabbed = {}
    hook = hf.encoder.layer[LAYER].intermediate.register_forward_hook(lambda m, i, o: grabbed.__setitem__("ffn", o))
    vals = {"ffn": [], "out": []}
    ids, parts = [], []
    try:
        with torch.no_grad():
            for doc in setup["docs"]:
                enc = tok(doc, return_tensors="pt")
                hidden = hf(**enc, output_hidden_states=True).hidden_states[LAYER + 1]
                vals["ffn"].append(grabbed["ffn"][0, 1:-1])
                vals["out"].append(hidden[0, 1:-1])
                ids.append(enc["input_ids"][0, 1:-1])
                parts.append(np.full(enc["input_ids"].shape[1] - 2, doc_part(text_digest(doc), SplitConfig())))
    finally:
        hook.remove()
    return ({k: torch.cat(v).numpy() for k, v in vals.items()}, torch.cat(ids).numpy(), np.concatenate(parts), tok)


def _ap(x, y, part, units) -> float:
    """Train on every train position, score every test position: an L2 logistic regression of its own."""
    from sklearn.preprocessing import StandardScaler

    tr, te = part == 0, part == 1
    scaler = StandardScaler().fit(x[tr][:, units])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = sk_linear.LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        clf.fit(scaler.transform(x[tr][:, units]), y[tr])
    return sk_metrics.average_precision_score(y[te], clf.decision_function(scaler.transform(x[te][:, units])))


def test_selected_units_keep_the_full_probes_precision_and_beat_random_units(setup):
    acts, ids, part, tok = _activations(setup)
    rng = np.random.default_rng(1)
    checked = 0
    for r in _done(setup):
        x, y = acts[r["site"]], ids == tok.convert_tokens_to_ids(r["word"])
        full = _ap(x, y, part, np.arange(x.shape[1]))
        chosen = _ap(x, y, part, np.asarray(r["ranking"][:r["k95"]]))
        random = np.mean([_ap(x, y, part, rng.choice(x.shape[1], r["k95"], replace=False)) for _ in range(5)])
        assert chosen >= 0.9 * full, (r["word"], r["site"], chosen, full)
        assert chosen >= random - 0.01, (r["word"], r["site"], chosen, random)
        # the counts are those of the text
        assert r["occurrences_train"] == int((y & (part == 0)).sum())
        assert r["positives_test"] == min(int((y & (part == 1)).sum()), r["sampling"]["max_positives"])
        checked += 1
    assert checked == 2 * len(PROBED)


# ----------------------------------------------------------------------------- the records
def test_record_layout_baselines_and_sampling(setup):
    records = _done(setup)
    for r in records:
        width = r["width"]
        for key in ("word", "layer", "site", "units", "ranking", "k95", "k99", "ap_full", "auroc_full", "ap_by_k",
                    "random_ap_by_k", "selectivity", "positives_train", "positives_test", "control", "best_single"):
            assert key in r, key
        assert sorted(r["ranking"]) == list(range(width))
        assert list(r["ap_by_k"]) == [str(k) for k in sorted(int(k) for k in r["ap_by_k"])]
        assert r["ap_by_k"][str(width)] == r["random_ap_by_k"][str(width)] == r["ap_full"]
        assert 1 <= r["k95"] <= r["k99"] <= width
        assert r["ap_by_k"][str(r["k95"])] >= 0.95 * r["ap_full"]
        assert r["control"]["token"] not in PROBED and r["selectivity"] == pytest.approx(
            r["ap_full"] - r["control"]["ap_full"])
        assert r["negatives_train"] == r["sampling"]["negatives_per_positive"] * r["positives_train"]
        # the test part is small: every test position that is not the word's or its control's is a negative
        others = r["corpus_tokens"]["test"] - r["occurrences_test"] - r["control"]["positives_test"]
        assert r["negatives_test"] == min(r["sampling"]["test_negatives_per_positive"] * r["positives_test"], others)
        assert "uniformly at random" in r["sampling"]["rule"]
        assert r["chance_ap"] == pytest.approx(r["positives_test"] / (r["positives_test"] + r["negatives_test"]))
    # the random-units control stays below the ranked units
    gaps = [r["ap_by_k"][k] - r["random_ap_by_k"][k] for r in records for k in r["ap_by_k"] if int(k) < r["width"]]
    assert np.mean(gaps) > 0.05 and np.mean(np.asarray(gaps) >= -0.02) > 0.9
    assert all((r["random_k95"] or r["width"]) >= r["k95"] for r in records)


def test_features_of_a_saelens_dictionary_are_probed(setup):
    feats = _done(setup, "features")
    assert {r["word"] for r in feats} == set(PROBED)
    for r in feats:
        assert (r["layer"], r["site"], r["width"]) == (LAYER, "ffn", 128)
        assert r["k95"] is not None and 0 <= r["best_single"]["unit"] < 128 and r["best_single"]["ap"] is not None
        assert r["ap_full"] > r["chance_ap"]


def test_ft_beside_the_probe(setup):
    by = {(r["word"], r["site"], r["units"]): r for r in _done(setup) + _done(setup, "features")}
    rain = by[("rain", "ffn", "neurons")]["ft"]
    assert rain["k"] == 4 and 0 <= rain["shared"] <= min(4, rain["probe_k"])
    assert rain["chance_shared"] == pytest.approx(4 * rain["probe_k"] / 64)
    assert by[("rain", "ffn", "features")]["ft"] == {"k": 4, "site": "ffn"}
    assert by[("king", "ffn", "neurons")]["ft"] == {"k": None, "site": "ffn"}  # FT never recovered it
    assert by[("blue", "ffn", "neurons")]["ft"] is None  # not in the encode document
    assert "ft" not in by[("rain", "out", "neurons")]  # encode ran at ffn


def test_skipped_words_are_reported_with_their_reason(setup):
    skipped = {r["word"]: r["skipped"] for r in setup["records"] if "skipped" in r}
    assert "not in the vocabulary" in skipped["zebra"]
    assert "splits into 2 tokens (rain ##s)" in skipped["rains"]
    assert "no held-out occurrence" in skipped[ONLY_TRAIN]
    assert "skipped 'zebra'" in setup["err"]


def test_out_writes_json_csv_and_figures(setup):
    out = setup["out"]
    assert json.loads((out / "probe.json").read_text()) == setup["records"]
    rows = (out / "probe_per_word.csv").read_text().splitlines()
    assert rows[0].startswith("word,layer,site,units") and len(rows) == 1 + len(setup["records"])
    for name in ("probe.png", f"probe_curves_L{LAYER}_ffn.png", f"probe_curves_L{LAYER}_out.png"):
        assert (out / name).stat().st_size > 1000, name


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("words,at,expect", [
    (["zebra"], f"L{LAYER}.ffn", "no usable word: 'zebra': not in the vocabulary"),
    (["rains"], f"L{LAYER}.ffn", "splits into 2 tokens"),
    (["rain"], f"L{LAYER}.attn", "has no site 'attn'"),
    (["rain"], "L7.ffn", "layers are 0-2"),
    (["rain"], f"L{LAYER}.ffn.f", "no dictionary is loaded on L1.ffn"),
])
def test_bad_input_is_one_line_and_writes_nothing(setup, tmp_path, words, at, expect):
    out = tmp_path / "out"
    code, stdout, err = _run(["probe", *words, "--at", at, "--model", str(setup["model"]), "--corpus",
                              str(setup["corpus"]), "--device", "cpu", "--out", str(out)])
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("neurotext: error:") and expect in err, err
    assert not out.exists()
