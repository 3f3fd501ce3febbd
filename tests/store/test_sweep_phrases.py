"""Sweeps with --phrases: phrase columns in the store, identical to a direct search, resumable, shown."""

import json

import pytest

from neurotext import FTConfig, NeurotextError, load_model, store
from neurotext.cli import main
from neurotext.engine.phrase import PhraseConfig
from neurotext.phrases import Phraser
from neurotext.store.sweep import run_sweep

CFG = FTConfig(steps=8, restarts=2, batch_size=16)  # 8 neurons per shard
PH = PhraseConfig(lengths=(1, 2, 3), iters=3, candidates=8, swaps=8, starts=2, patience=2)


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return load_model(str(tiny_models["bert"]))


def test_phrase_columns_match_a_direct_search(tmp_path, tiny):
    out = tmp_path / "s"
    run_sweep(["L1.ffn.0-9", "L2.out.0-3"], out, model=tiny, config=CFG, log=lambda *_: None, phrases=PH)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["phrases"]["lengths"] == [1, 2, 3] and manifest["phrases"]["iters"] == 3
    table = store.read_table(out).to_pylist()
    direct = {r.neuron: r for r in Phraser(tiny, PH, progress=False).run(["L1.ffn.0-9", "L2.out.0-3"])}
    assert len(table) == 14
    for row in table:
        r = direct[row["neuron"]]
        assert row["phrase_lengths"] == [1, 2, 3]
        assert row["phrase_ids"] == [[t["id"] for t in p["tokens"]] for p in r.phrases]
        assert row["phrase_activations"] == pytest.approx([p["activation"] for p in r.phrases])
        assert row["best_phrase"] == r.best_phrase["text"]
        assert row["best_phrase_activation"] == pytest.approx(r.best_phrase["activation"])
        back = store.row_to_phrases(row, "tiny")
        assert back.ft_activation == row["activation"] and back.best_phrase["length"] == row["best_phrase_length"]


def test_other_phrase_settings_are_refused_and_plain_sweeps_have_null_phrases(tmp_path, tiny):
    out = tmp_path / "s"
    run_sweep("L0.ffn.0-3", out, model=tiny, config=CFG, log=lambda *_: None, phrases=PH)
    with pytest.raises(NeurotextError, match="phrase settings"):
        run_sweep("L0.ffn.0-3", out, model=tiny, config=CFG, log=lambda *_: None,
                  phrases=PhraseConfig(lengths=(1, 2), iters=3, candidates=8, swaps=8, starts=2, patience=2))
    with pytest.raises(NeurotextError, match="phrase settings"):
        run_sweep("L0.ffn.0-3", out, model=tiny, config=CFG, log=lambda *_: None)
    plain = tmp_path / "plain"
    run_sweep("L0.ffn.0-3", plain, model=tiny, config=CFG, log=lambda *_: None)
    assert "phrases" not in json.loads((plain / "manifest.json").read_text())
    assert store.read_table(plain)["best_phrase"].null_count == 4


def test_cli_sweep_phrases_and_show(tmp_path, tiny_models, capsys):
    out = tmp_path / "s"
    model = str(tiny_models["bert"])
    assert main(["sweep", "L1.ffn.0-3", "--out", str(out), "--model", model, "--steps", "8", "--restarts", "2",
                 "--phrases", "1,2", "--iters", "2", "--swaps", "4", "--candidates", "4", "--starts", "2"]) == 0
    capsys.readouterr()
    assert main(["show", str(out), "L1.ffn.2"]) == 0
    text = capsys.readouterr().out
    assert "best real phrases" in text and "best phrase: length" in text
    assert main(["show", str(out), "L1.ffn.2", "--json", "--no-vector"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [p["length"] for p in d["phrases"]] == [1, 2] and d["ft_activation"] == d["activation"]
    assert main(["sweep", "L1.ffn.0-3", "--out", str(out), "--model", model, "--phrases", "0"]) == 2
    assert "phrase lengths must be integers 1-64, got 0" in capsys.readouterr().err
