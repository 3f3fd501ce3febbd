"""What a neuron writes (promotes / suppresses), recomputed from the checkpoint's weights with plain products."""

import pytest
import torch
from safetensors.torch import load_file

from neurotext import load_model, textualize
from neurotext.textualize import Textualizer


def _weights(path):
    sd = load_file(str(path / "model.safetensors"))
    return {k.removeprefix("model.").removeprefix("transformer.").removeprefix("gpt_neox."): v for k, v in sd.items()}


def _expected(path, arch, layer):
    """(V, U) logits of every unit's output vector, from the checkpoint's tensors alone."""
    w = _weights(path)
    if arch == "bert":  # encoder: input embeddings, no norm
        return w["embeddings.word_embeddings.weight"] @ w[f"encoder.layer.{layer}.output.dense.weight"]
    if arch == "gpt2":  # Conv1D c_proj (U, d); tied unembedding; LayerNorm: centre, then scale
        out = w[f"h.{layer}.mlp.c_proj.weight"].T  # (d, U)
        out = (out - out.mean(dim=0, keepdim=True)) * w["ln_f.weight"][:, None]
        return w["wte.weight"] @ out
    if arch == "gpt_neox":
        out = w[f"layers.{layer}.mlp.dense_4h_to_h.weight"]
        out = (out - out.mean(dim=0, keepdim=True)) * w["final_layer_norm.weight"][:, None]
        return w["embed_out.weight"] @ out
    unembed = w.get("lm_head.weight", w["embed_tokens.weight"])  # Qwen2 tiny is tied
    return unembed @ (w[f"layers.{layer}.mlp.down_proj.weight"] * w["norm.weight"][:, None])


@pytest.mark.parametrize("arch", ["bert", "gpt2", "gpt_neox", "llama", "qwen2"])
def test_promotes_recomputed_from_checkpoint(tiny_models, tiny_decoders, arch):
    path = tiny_models[arch] if arch in tiny_models else tiny_decoders[arch]
    m = load_model(str(path))
    tx = Textualizer(m)
    writes = tx.writes.get(1, "ffn")
    logits = _expected(path, arch, 1)[: m.embeddings.shape[0]]  # (V, U)
    k = 5
    for u in (0, 7, 33):
        hi, lo = logits[:, u].topk(k), logits[:, u].topk(k, largest=False)
        torch.testing.assert_close(writes.promote_logits[u, :k], hi.values, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(writes.suppress_logits[u, :k], lo.values, rtol=1e-4, atol=1e-5)
        assert writes.promote_ids[u, :k].tolist() == hi.indices.tolist()
        assert writes.suppress_ids[u, :k].tolist() == lo.indices.tolist()
    expected = "input embeddings" if arch == "bert" else ("tied" if arch in ("gpt2", "qwen2") else "output embeddings")
    assert expected in writes.readout


def test_result_carries_promotes(tiny_decoders):
    m = load_model(str(tiny_decoders["llama"]))
    [r] = textualize("L2.ffn.4", model=m, steps=5, restarts=1, top=4, cache_dir=False)
    logits = _expected(tiny_decoders["llama"], "llama", 2)[:, 4]
    assert [d["id"] for d in r.promotes] == logits.topk(4).indices.tolist()
    assert [d["id"] for d in r.suppresses] == logits.topk(4, largest=False).indices.tolist()
    assert r.promotes[0]["token"] == m.tokens[r.promotes[0]["id"]] and "RMSNorm" in r.readout
    d = r.to_dict()
    assert set(d["promotes"][0]) == {"token", "id", "logit"}
