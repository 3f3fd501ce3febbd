"""--model DIR of a saved tiny GPT-2 and a tiny Llama, end to end from the command line: textualize, sweep,
show, words (Q1), report."""

import json

import pytest

from neurotext.cli import main

from conftest import make_tiny_decoder


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_decoder_end_to_end(tmp_path, capsys, arch):
    model = str(make_tiny_decoder(tmp_path / arch, arch))
    ft = ["--model", model, "--steps", "8", "--restarts", "2", "--top", "4"]
    assert main(["textualize", "L1.ffn.3", "L2.out.4", *ft, "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["neuron"] for d in docs] == ["L1.ffn.3", "L2.out.4"] and docs[0]["model"] == arch
    assert all(len(d["nearest"]) == 4 and len(d["promotes"]) == 4 and d["readout"] for d in docs)
    store, site = tmp_path / "store", tmp_path / "site"
    assert main(["sweep", "L*.ffn.0-5", "--out", str(store), *ft]) == 0
    assert main(["show", str(store), "L2.ffn.5", "--json", "--no-vector"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["promotes"]) == 4 and len(shown["suppresses"]) == 4
    assert main(["words", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert main(["report", str(store), "--out", str(site)]) == 0
    page = (site / "neurons" / "L2.ffn.5.html").read_text()
    assert "Promotes" in page and "Suppresses" in page and shown["promotes"][0]["token"] in page
