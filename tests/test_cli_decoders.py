"""--model DIR of a saved tiny GPT-2 and a tiny Llama, end to end from the command line: textualize, sweep,
phrase, show, words (Q1), report."""

import json

import pytest
import torch

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
    assert main(["sweep", "L*.ffn.0-5", "--out", str(store), *ft, "--phrases", "1,3"]) == 0
    assert main(["show", str(store), "L2.ffn.5", "--json", "--no-vector"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["promotes"]) == 4 and len(shown["suppresses"]) == 4
    assert [p["length"] for p in shown["phrases"]] == [1, 3]
    # a phrase's activation is what a plain forward pass of BOS + the phrase gives at its position
    assert main(["phrase", "L2.ffn.5", "--model", model, "--lengths", "1,3", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)[0]
    assert [p["text"] for p in found["phrases"]] == [p["text"] for p in shown["phrases"]]
    best = found["best_phrase"]
    assert best["length"] == 3 and best["activation"] >= found["phrases"][0]["activation"]
    assert _plain_activation(model, arch, [t["id"] for t in best["tokens"]], best["position"], 2, 5) == \
        pytest.approx(best["activation"], rel=1e-4, abs=1e-5)
    assert main(["words", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert main(["report", str(store), "--out", str(site)]) == 0
    page = (site / "neurons" / "L2.ffn.5.html").read_text()
    assert "Promotes" in page and "Suppresses" in page and shown["promotes"][0]["token"] in page
    # the page words the unit for the architecture: a gated MLP's unit is act(gate) x up, no GELU anywhere
    assert ("act(gate) x up" in page) == (arch == "llama") and "GELU" not in page
    assert "BOS t1 ... tn" in page and "[CLS]" not in page


def _plain_activation(model_dir, arch, ids, position, layer, unit):
    """The ffn unit's value read by the down projection, from a plain Hugging Face forward of ``BOS ids``."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    block = hf.transformer.h[layer].mlp.c_proj if arch == "gpt2" else hf.model.layers[layer].mlp.down_proj
    got = []
    handle = block.register_forward_pre_hook(lambda m, a: got.append(a[0][0, position, unit]))
    with torch.no_grad():
        hf(input_ids=torch.tensor([[0, *ids]]))
    handle.remove()
    return float(got[0])
