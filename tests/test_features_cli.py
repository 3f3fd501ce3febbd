"""Features are units in every command: textualize, phrase, sweep, show, query, examples and words take
``L1.ffn.f3`` with --dictionary (or the dictionaries a store records); bad dictionaries are one line and write
nothing."""

import json
import shutil

import numpy as np
import pytest

from neurotext.cli import main

from conftest import WORDS

sae_lens = pytest.importorskip("sae_lens")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models):
    import torch
    from sae_lens.saes.sae import SAEMetadata

    root = tmp_path_factory.mktemp("features")
    torch.manual_seed(0)
    sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=64, d_sae=16, k=4, metadata=SAEMetadata(
        model_name="bert", hook_name="blocks.1.mlp.hook_post")))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
    sae.save_model(str(root / "dict"))
    rng = np.random.default_rng(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 10))) for _ in range(120)) + "\n")
    return {"model": str(tiny_models["bert"]), "dict": str(root / "dict"), "corpus": str(corpus), "root": root}


def test_textualize_and_phrase_features(setup, capsys):
    m, d = setup["model"], setup["dict"]
    assert main(["textualize", "L1.ffn.f2", "L1.ffn.5", "--model", m, "--dictionary", d, "--steps", "8",
                 "--restarts", "2", "--json", "--no-vector"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [x["neuron"] for x in docs] == ["L1.ffn.5", "L1.ffn.f2"]
    feat, neuron = docs[1], docs[0]
    assert feat["support"]["d"] == 64 and feat["support"]["encoder"]["k90"] >= 1 and neuron["support"] is None
    assert len(feat["promotes"]) == 10
    assert main(["phrase", "L1.ffn.f2", "--model", m, "--dictionary", d, "--lengths", "1,2", "--iters", "2",
                 "--json"]) == 0
    [ph] = json.loads(capsys.readouterr().out)
    assert ph["neuron"] == "L1.ffn.f2" and [p["length"] for p in ph["phrases"]] == [1, 2]
    assert main(["textualize", "L1.ffn.f2", "--model", m, "--steps", "4"]) == 2  # no --dictionary
    assert "no dictionary is loaded on L1.ffn" in capsys.readouterr().err


def test_sweep_examples_show_query_words(setup, capsys):
    m, d, root = setup["model"], setup["dict"], setup["root"]
    out = str(root / "store")
    assert main(["sweep", "L1.ffn.f0-5", "L1.ffn.0-3", "--out", out, "--model", m, "--dictionary", d, "--steps", "8",
                 "--restarts", "2"]) == 0
    assert main(["examples", "L1.ffn.f0-5", "L1.ffn.0-3", "--out", out, "--model", m, "--dictionary", d,
                 "--corpus", setup["corpus"], "--max-length", "16"]) == 0
    capsys.readouterr()
    manifest = json.loads((root / "store" / "manifest.json").read_text())
    assert [x["site"] for x in manifest["dictionaries"]] == ["L1.ffn"] and manifest["dictionaries"][0]["width"] == 16
    assert main(["show", out, "L1.ffn.f3", "--json", "--no-vector"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["neuron"] == "L1.ffn.f3" and doc["examples"]["neuron"] == "L1.ffn.f3" and "scores" in doc
    assert doc["support"]["encoder"]["top_units"]
    assert main(["query", out, "SELECT site, count(*) AS n FROM neurons GROUP BY site ORDER BY site", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"site": "ffn", "n": 4}, {"site": "ffn.f", "n": 6}]
    assert main(["words", out, "--json"]) == 0
    words = json.loads(capsys.readouterr().out)
    sites = {(g["layer"], g["site"]) for g in words["groups"]}
    assert sites == {(1, "ffn"), (1, "ffn.f")}
    feature_scores = [r for r in words["corpus"]["neurons"] if r["site"] == "ffn.f"]
    assert feature_scores and all("ft_vector" in r["scores"] for r in feature_scores if r.get("evaluation"))
    # the store's dictionary moved: words says so in one line, and takes it back with --dictionary
    moved = root / "moved"
    shutil.move(d, moved)
    try:
        assert main(["words", out, "--json"]) == 2
        assert "gone from" in capsys.readouterr().err
        assert main(["words", out, "--json", "--dictionary", str(moved)]) == 0
        capsys.readouterr()
        # resuming the sweep with another dictionary is refused
        other = root / "other"
        shutil.copytree(moved, other)
        from safetensors.torch import load_file, save_file

        w = load_file(other / "sae_weights.safetensors")
        w["b_enc"] = w["b_enc"] + 1
        save_file(w, other / "sae_weights.safetensors")
        assert main(["sweep", "L1.ffn.f0-5", "L1.ffn.0-3", "--out", out, "--model", m, "--dictionary", str(other),
                     "--steps", "8", "--restarts", "2"]) == 2
        assert "with another dictionary" in capsys.readouterr().err
    finally:
        shutil.move(moved, d)


@pytest.mark.parametrize("spec, message", [("L1.ffn.f16", "feature 16 is out of range"),
                                           ("L0.ffn.f1", "no dictionary is loaded on L0.ffn")])
def test_bad_features_write_nothing(setup, tmp_path, capsys, spec, message):
    out = tmp_path / "s"
    assert main(["sweep", spec, "--out", str(out), "--model", setup["model"], "--dictionary", setup["dict"]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_corrupt_dictionary_writes_nothing(setup, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(setup["dict"], bad)
    (bad / "sae_weights.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "s"
    assert main(["examples", "L1.ffn.f1", "--out", str(out), "--model", setup["model"], "--dictionary", str(bad),
                 "--corpus", setup["corpus"]]) == 2
    err = capsys.readouterr().err
    assert "is unreadable" in err and err.count("\n") == 1
    assert not out.exists()
