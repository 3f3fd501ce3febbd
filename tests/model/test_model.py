"""The model adapter against plain Hugging Face forward passes, on every supported architecture."""

import pytest
import torch

from neurotext import NeurotextError, load_model
from neurotext.model.adapters import ARCHITECTURES

from conftest import TINY


def _get(obj, path):
    for p in path.split("."):
        obj = obj[int(p)] if p.isdigit() else getattr(obj, p)
    return obj


@pytest.mark.parametrize("arch", sorted(TINY))
def test_capture_matches_plain_forward(tiny_models, arch):
    from transformers import AutoModel, AutoTokenizer

    path = tiny_models[arch]
    m = load_model(str(path))
    assert m.model_type == arch and m.n_layers == 3 and m.sizes == {"ffn": 64, "out": 32}
    hf = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    ids = torch.tensor([[tok.cls_token_id, t, tok.sep_token_id] for t in range(5, 15)])
    ffn = {}
    hooks = [_get(hf, TINY[arch]["ffn"].format(i)).register_forward_hook(
        lambda mod, a, out, i=i: ffn.__setitem__(i, out[:, 1])) for i in range(3)]
    with torch.no_grad():
        hidden = hf(input_ids=ids, output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    x = m.embeddings[ids[:, 1]]
    for layer in range(3):
        found = m.capture(x, [(layer, "ffn"), (layer, "out")])
        torch.testing.assert_close(found[(layer, "ffn")].all(), ffn[layer], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(found[(layer, "out")].all(), hidden[layer + 1][:, 1], rtol=1e-4, atol=1e-5)
        units = torch.arange(10).view(-1, 1) % 64
        torch.testing.assert_close(found[(layer, "ffn")].units(units)[:, 0],
                                   ffn[layer][torch.arange(10), units[:, 0]], rtol=1e-4, atol=1e-5)


def test_capture_leaves_no_hooks(tiny_models):
    m = load_model(str(tiny_models["bert"]))
    x = m.embeddings[5:7]
    for _ in range(3):
        m.capture(x, [(1, "ffn")])
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.hf.modules())


def test_bundled_model_shape(bundled):
    assert bundled.name == "all-MiniLM-L6-v2"
    assert bundled.n_layers == 6 and bundled.sizes == {"ffn": 1536, "out": 384}
    assert bundled.embeddings.shape == (30522, 384)
    assert bundled.tokens[bundled.prefix_ids[0]] == "[CLS]" and bundled.tokens[bundled.suffix_ids[0]] == "[SEP]"


def test_adapter_table_is_the_only_registry():
    assert {"bert", "roberta", "distilbert", "electra"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("name, message", [
    ("bert-base-uncased", "not found offline"),
    ("./no/such/dir", "does not exist"),
])
def test_bad_model_names(name, message):
    with pytest.raises(NeurotextError, match=message):
        load_model(name)


def test_path_that_is_not_a_model(tmp_path):
    with pytest.raises(NeurotextError, match="not a model directory"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(NeurotextError, match="not a usable model directory"):
        load_model(str(tmp_path))


def test_unsupported_architecture(tmp_path):
    from transformers import GPTJConfig

    GPTJConfig(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(NeurotextError, match="unsupported architecture 'gptj'.*supported are bert, camembert"):
        load_model(str(tmp_path))
