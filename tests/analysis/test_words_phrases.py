"""Q1 real-text arm: phrase / FT and phrase / best token per layer and length, from a sweep with --phrases."""

import json

import numpy as np
import pytest

from neurotext import FTConfig, load_model, store
from neurotext.analysis.words import PHRASE_STATS, analyze_store, phrase_png, render_text, write_outputs
from neurotext.cli import main
from neurotext.engine.phrase import PhraseConfig
from neurotext.store.sweep import run_sweep


@pytest.fixture(scope="module")
def phrase_store(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("wp") / "s"
    run_sweep(["L0-1.ffn.0-7"], out, model=load_model(str(tiny_models["bert"])),
              config=FTConfig(steps=8, restarts=2, batch_size=16), log=lambda *_: None,
              phrases=PhraseConfig(lengths=(1, 2, 4), iters=3, candidates=8, swaps=8, starts=2, patience=2))
    return out


def test_ratios_match_the_store(phrase_store):
    doc = analyze_store(phrase_store).to_dict()
    arm = doc["phrases"]
    assert arm["lengths"] == [1, 2, 4] and set(arm["definitions"]) == set(PHRASE_STATS)
    rows = store.read_table(phrase_store).to_pylist()
    for g in arm["groups"]:
        mine = [r for r in rows if (r["layer"], r["site"]) == (g["layer"], g["site"])]
        assert g["n"] == len(mine) == 8
        for i, n in enumerate([1, 2, 4]):
            ft = [r["phrase_activations"][i] / r["activation"] for r in mine if r["activation"] > 0]
            tok = [r["phrase_activations"][i] / r["phrase_token_activation"] for r in mine
                   if r["phrase_token_activation"] > 0]
            assert g["stats"]["over_ft"][str(n)]["median"] == pytest.approx(float(np.median(ft)))
            assert g["stats"]["over_token"][str(n)]["median"] == pytest.approx(float(np.median(tok)))
            beats = np.mean([r["phrase_activations"][i] > r["phrase_token_activation"] for r in mine])
            assert g["beats_token"][str(n)] == pytest.approx(beats)
        assert g["beats_token"]["1"] == 0.0  # length 1 is the best single token itself
    text = render_text(doc)
    assert "real text: the best real phrases" in text and "phrase over_ft" in text


def test_outputs_and_cli(phrase_store, tmp_path, capsys):
    result = analyze_store(phrase_store)
    paths = write_outputs(result, tmp_path / "w")
    names = {p.name for p in paths}
    assert {phrase_png(s) for s in PHRASE_STATS} <= names
    for s in PHRASE_STATS:
        assert (tmp_path / "w" / phrase_png(s)).read_bytes()[:4] == b"\x89PNG"
    assert main(["words", str(phrase_store), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = [r for r in store.read_table(phrase_store).to_pylist() if r["layer"] == 0]
    defined = sum(r["phrase_token_activation"] > 0 for r in rows)  # the ratio is undefined elsewhere
    assert doc["phrases"]["groups"][0]["stats"]["over_token"]["4"]["n"] == defined


def test_sweep_without_phrases_has_no_arm(tiny_models, tmp_path):
    out = tmp_path / "plain"
    run_sweep("L0.ffn.0-3", out, model=load_model(str(tiny_models["bert"])),
              config=FTConfig(steps=4, restarts=1, batch_size=16), log=lambda *_: None)
    doc = analyze_store(out).to_dict()
    assert doc["phrases"] is None and "real text" not in render_text(doc)
