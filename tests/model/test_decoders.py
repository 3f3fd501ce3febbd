"""Decoder LMs (GPT-2, GPT-NeoX, Llama, Qwen2, Mistral) against plain Hugging Face forward passes.

The oracle is the full causal-LM forward on input ids ``BOS t`` with hooks on the Hugging Face modules
(the test's own module paths in conftest.TINY_DECODERS): the first projection's output
(pre-activation), the down projection's input (the activation it reads) and the block's output.
"""

import pytest
import torch
import torch.nn.functional as F

from neurotext import NeurotextError, load_model
from neurotext.engine.scan import ScanCache

from conftest import TINY_DECODERS, make_tiny_decoder


def _get(obj, path):
    for p in path.split("."):
        obj = obj[int(p)] if p.isdigit() else getattr(obj, p)
    return obj


def hf_reference(path, arch, ids):
    """{layer: (first projection output, down projection input, block output)} at the last position."""
    from transformers import AutoModelForCausalLM

    spec = TINY_DECODERS[arch]
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    base = hf.base_model
    got = {}
    hooks = []
    for layer in range(3):
        hooks.append(_get(base, spec["ffn"].format(layer)).register_forward_hook(
            lambda m, a, out, i=layer: got.__setitem__(("up", i), out[:, -1])))
        if spec["gate"]:
            hooks.append(_get(base, spec["gate"].format(layer)).register_forward_hook(
                lambda m, a, out, i=layer: got.__setitem__(("gate", i), out[:, -1])))
        hooks.append(_get(base, spec["down"].format(layer)).register_forward_pre_hook(
            lambda m, a, i=layer: got.__setitem__(("act", i), a[0][:, -1])))
        hooks.append(_get(base, spec["block"].format(layer)).register_forward_hook(
            lambda m, a, out, i=layer: got.__setitem__(("out", i), (out[0] if isinstance(out, tuple) else out)[:, -1])))
    with torch.no_grad():
        hidden = hf(input_ids=ids, output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    return got, hidden, hf


@pytest.mark.parametrize("arch", sorted(TINY_DECODERS))
def test_decoder_capture_matches_plain_forward(tiny_decoders, arch):
    path = tiny_decoders[arch]
    m = load_model(str(path))
    assert m.decoder and m.model_type == arch and m.n_layers == 3 and m.sizes == {"ffn": 64, "out": 32}
    assert m.prefix_ids == [0] and m.suffix_ids == [] and m.x_pos == 1  # BOS x, x last
    toks = torch.arange(3, 15)
    ids = torch.stack([torch.zeros_like(toks), toks], dim=1)  # (12, 2): BOS t
    ref, hidden, _ = hf_reference(path, arch, ids)
    x = m.embeddings[toks]
    gated = TINY_DECODERS[arch]["gate"] is not None
    m.capture(x[:1], [(0, "out")])
    assert m._prefix_kv, "the BOS keys and values are cached (x runs alone after them)"
    for layer in range(3):
        found = m.capture(x, [(layer, "ffn"), (layer, "out")])
        ffn = found[(layer, "ffn")].all()
        # what is optimized: the pre-activation, or for a gated MLP act(gate) * up itself
        torch.testing.assert_close(ffn, ref[("act", layer)] if gated else ref[("up", layer)], rtol=1e-4, atol=1e-5)
        # what is reported: the down projection's input
        torch.testing.assert_close(m.post(layer, "ffn", ffn), ref[("act", layer)], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(found[(layer, "out")].all(), ref[("out", layer)], rtol=1e-4, atol=1e-5)
        if layer < 2:  # the last hidden state of HF has the final norm applied
            torch.testing.assert_close(found[(layer, "out")].all(), hidden[layer + 1][:, -1], rtol=1e-4, atol=1e-5)
        units = (torch.arange(12) * 5 % 64).view(-1, 1)
        torch.testing.assert_close(found[(layer, "ffn")].units(units)[:, 0], ffn[torch.arange(12), units[:, 0]],
                                   rtol=1e-4, atol=1e-5)
        # a stop at the FFN input gives the same values as a pass that goes on to the block output
        alone = m.capture(x, [(layer, "ffn")])[(layer, "ffn")].all()
        torch.testing.assert_close(alone, ffn)
    if gated:  # the gate really is act(gate) * up
        act = m.act(1)
        torch.testing.assert_close(act(ref[("gate", 1)]) * ref[("up", 1)], ref[("act", 1)], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_decoder_scan_matches_plain_forward(tiny_decoders, arch):
    path = tiny_decoders[arch]
    m = load_model(str(path))
    n = m.embeddings.shape[0]
    toks = torch.arange(n)
    ref, _, _ = hf_reference(path, arch, torch.stack([torch.zeros_like(toks), toks], dim=1))
    scans = ScanCache(m, cache_dir=False)
    gated = TINY_DECODERS[arch]["gate"] is not None
    for layer in range(3):
        scan = scans.get(layer, "ffn")
        act = ref[("act", layer)]  # (V, U) reported activation of every token
        obj = act if gated else ref[("up", layer)]
        best = act.max(dim=0)
        torch.testing.assert_close(scan.top_vals[:, 0], best.values, rtol=1e-4, atol=1e-5)
        units = torch.arange(act.shape[1])
        torch.testing.assert_close(act[scan.top_ids[:, 0], units], best.values)  # the argmax, up to ties
        torch.testing.assert_close(scan.mean, obj.mean(dim=0), rtol=1e-4, atol=1e-5)
        out = scans.get(layer, "out")
        torch.testing.assert_close(out.top_vals[:, 0], ref[("out", layer)].max(dim=0).values, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_decoder_span_matches_plain_forward(tiny_decoders, arch):
    """Phrase search's span pass ``BOS x1 x2 x3``: every position against a plain forward of ``BOS t1..ti``
    (causal, so position i sees only what that shorter input holds)."""
    path = tiny_decoders[arch]
    m = load_model(str(path))
    phrases = torch.tensor([[3, 4, 5], [9, 2, 7], [6, 6, 11]])  # (3, 3) token ids
    span_ffn = m.capture_span(m.embeddings[phrases], 2, "ffn").all().view(3, 3, -1)  # (B, n, U)
    span_out = m.capture_span(m.embeddings[phrases], 1, "out").all().view(3, 3, -1)
    ids = torch.cat([torch.zeros(3, 1, dtype=torch.long), phrases], dim=1)  # BOS t1 t2 t3
    gated = TINY_DECODERS[arch]["gate"] is not None
    for i in range(3):
        ref, _, _ = hf_reference(path, arch, ids[:, : i + 2])
        torch.testing.assert_close(span_ffn[:, i], ref[("act", 2)] if gated else ref[("up", 2)], rtol=1e-4,
                                   atol=1e-5)
        torch.testing.assert_close(span_out[:, i], ref[("out", 1)], rtol=1e-4, atol=1e-5)


def test_prefix_cache_fallback_warns_and_agrees(tiny_decoders, monkeypatch):
    """Where the prefix cannot be cached (another transformers cache layout), a warning says so and the
    full-template passes give the same values."""
    import transformers.cache_utils

    m = load_model(str(tiny_decoders["llama"]))
    x = m.embeddings[3:9]
    cached = m.capture(x, [(2, "ffn")])[(2, "ffn")].all()
    other = load_model(str(tiny_decoders["llama"]))
    monkeypatch.delattr(transformers.cache_utils, "DynamicCache")
    with pytest.warns(UserWarning, match="cannot be cached"):
        full = other.capture(x, [(2, "ffn")])[(2, "ffn")].all()
    assert other._prefix_kv is False
    torch.testing.assert_close(full, cached, rtol=1e-4, atol=1e-5)


def test_prefix_cache_under_autocast(tiny_decoders):
    """bfloat16 steps run the cached prefix in bfloat16 too: close to the float32 values, gradient to x."""
    m = load_model(str(tiny_decoders["llama"]))
    x = m.embeddings[3:9].clone().requires_grad_(True)
    full = m.capture(x, [(2, "ffn")])[(2, "ffn")].all().detach()
    with torch.autocast("cpu", torch.bfloat16):
        low = m.capture(x, [(2, "ffn")])[(2, "ffn")].all()
    low.float().sum().backward()
    assert x.grad.abs().sum() > 0
    assert low.dtype == torch.bfloat16
    assert F.cosine_similarity(low.float().flatten(), full.flatten(), dim=0) > 0.999  # bfloat16 rounding only


def test_gradient_flows_to_x_through_the_decoder(tiny_decoders):
    m = load_model(str(tiny_decoders["llama"]))
    x = m.embeddings[3:5].clone().requires_grad_(True)
    m.capture(x, [(2, "ffn")])[(2, "ffn")].units(torch.tensor([[1], [2]])).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.hf.modules())


def test_longer_fixed_prefix(tiny_decoders):
    path = tiny_decoders["llama"]
    m = load_model(str(path), prefix="the cat")
    assert m.prefix_ids == [0, 3, 6] and m.x_pos == 3
    toks = torch.arange(3, 9)
    ids = torch.cat([torch.tensor([[0, 3, 6]]).expand(6, -1), toks.view(-1, 1)], dim=1)
    ref, _, _ = hf_reference(path, "llama", ids)
    torch.testing.assert_close(m.capture(m.embeddings[toks], [(2, "out")])[(2, "out")].all(), ref[("out", 2)],
                               rtol=1e-4, atol=1e-5)


def test_decoder_without_bos(tmp_path):
    path = make_tiny_decoder(tmp_path / "nobos", "llama", bos=False)
    with pytest.raises(NeurotextError, match="nor the config has a BOS token.*--prefix TEXT"):
        load_model(str(path))
    m = load_model(str(path), prefix="the")
    assert m.prefix_ids == [m.tokenizer.convert_tokens_to_ids("the")]


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    import transformers

    cfg = transformers.GPTJConfig(vocab_size=40, n_embd=32, n_layer=1, n_head=2, n_positions=16)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    with pytest.raises(NeurotextError, match="unsupported architecture 'gptj'.*gpt2, gpt_neox, llama, mistral, qwen2"):
        load_model(str(tmp_path))


def test_prefix_is_for_decoders_only(tiny_models):
    with pytest.raises(NeurotextError, match="prefix is for decoder"):
        load_model(str(tiny_models["bert"]), prefix="the")
