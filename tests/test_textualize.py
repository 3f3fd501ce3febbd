"""Feature textualization checked against independent Hugging Face forward passes."""

import random

import pytest
import torch

from neurotext import FTConfig, Neuron, NeurotextError, Textualizer, textualize
from neurotext.engine import objectives
from neurotext.engine.optimize import maximize


def plain_forward(hf, tok, x):
    """No neurotext code: x (N, d_emb) in [CLS] x [SEP] through the full HF model; returns per-layer
    FFN pre-activations (via hooks on intermediate.dense) and hidden states at x's position."""
    cls = hf.get_input_embeddings().weight[tok.cls_token_id]
    sep = hf.get_input_embeddings().weight[tok.sep_token_id]
    embeds = torch.stack([cls.expand(len(x), -1), x, sep.expand(len(x), -1)], dim=1)
    pre = {}
    hooks = [layer.intermediate.dense.register_forward_hook(lambda m, a, o, i=i: pre.__setitem__(i, o[:, 1]))
             for i, layer in enumerate(hf.encoder.layer)]
    with torch.no_grad():
        out = hf(inputs_embeds=embeds, output_hidden_states=True)
    for h in hooks:
        h.remove()
    return pre, [h[:, 1] for h in out.hidden_states[1:]]


@pytest.fixture(scope="module")
def results(bundled):
    cfg = FTConfig(steps=48, restarts=2)
    return Textualizer(bundled, cfg, progress=False).run(["L0.ffn.11", "L3.ffn.42", "L5.ffn.7", "L2.out.5"])


def test_reported_activation_matches_plain_forward(results, hf_bundled):
    hf, tok = hf_bundled
    gelu = torch.nn.functional.gelu
    for r in results:
        n = Neuron(int(r.neuron.split(".")[0][1:]), r.neuron.split(".")[1], int(r.neuron.split(".")[2]))
        pre, hidden = plain_forward(hf, tok, torch.tensor(r.vector)[None])
        if n.site == "ffn":
            want_pre = float(pre[n.layer][0, n.unit])
            assert r.pre_activation == pytest.approx(want_pre, rel=1e-4, abs=1e-5)
            assert r.activation == pytest.approx(float(gelu(torch.tensor(want_pre))), rel=1e-4, abs=1e-5)
        else:
            assert r.activation == pytest.approx(float(hidden[n.layer][0, n.unit]), rel=1e-4, abs=1e-5)
        # the best real token's activation is a plain forward pass of that token in the template
        best = r.best_tokens[0]
        ids = torch.tensor([[tok.cls_token_id, best["id"], tok.sep_token_id]])
        with torch.no_grad():
            out = hf(input_ids=ids, output_hidden_states=True)
        if n.site == "out":
            assert best["activation"] == pytest.approx(float(out.hidden_states[n.layer + 1][0, 1, n.unit]),
                                                       rel=1e-4, abs=1e-5)
        else:
            tok_pre, _ = plain_forward(hf, tok, hf.get_input_embeddings().weight[best["id"]][None])
            assert best["activation"] == pytest.approx(float(gelu(tok_pre[n.layer][0, n.unit])), rel=1e-4, abs=1e-5)
        # nearest_activation is the activation of the nearest token in the template
        near_pre, near_hidden = plain_forward(hf, tok, hf.get_input_embeddings().weight[r.nearest[0]["id"]][None])
        want = gelu(near_pre[n.layer][0, n.unit]) if n.site == "ffn" else near_hidden[n.layer][0, n.unit]
        assert r.nearest_activation == pytest.approx(float(want), rel=1e-4, abs=1e-5)


def test_fields_are_consistent(results, bundled):
    radius = bundled.radius(99.0)
    for r in results:
        assert r.vector.dtype.name == "float32" and r.vector.shape == (384,)
        assert float(torch.tensor(r.vector).norm()) <= radius * (1 + 1e-5)  # inside the ball
        cos = [d["cosine"] for d in r.nearest]
        assert cos == sorted(cos, reverse=True) and len(cos) == 10
        x = torch.tensor(r.vector)
        e = bundled.embeddings[r.nearest[0]["id"]]
        assert cos[0] == pytest.approx(float(torch.cosine_similarity(x, e, dim=0)), abs=1e-5)
        acts = [d["activation"] for d in r.best_tokens]
        assert acts == sorted(acts, reverse=True)
        assert 0.0 <= r.overlap_at_10 <= 1.0
        if r.retention is not None:
            assert r.retention == pytest.approx(r.nearest_activation / r.activation)
        assert r.steps == 48 and r.restarts == 2 and r.seed == 0 and r.seconds > 0


def test_best_tokens_are_the_exhaustive_maximum(bundled):
    """The scan's best token for a unit beats every token, checked by a second full pass in chunks."""
    tx = Textualizer(bundled, FTConfig(steps=1, restarts=1), progress=False)
    scan = tx.scans.get(1, "ffn")
    units = torch.tensor([3, 700, 1500])
    best = torch.full((3,), -float("inf"))
    for start in range(0, bundled.embeddings.shape[0], 4096):
        x = bundled.embeddings[start:start + 4096]
        acts = bundled.capture(x, [(1, "ffn")])[(1, "ffn")].all()[:, units]
        best = torch.maximum(best, bundled.post(1, "ffn", acts).max(dim=0).values)
    torch.testing.assert_close(scan.top_vals[units, 0], best, rtol=1e-5, atol=1e-6)


def test_objective_rises(bundled):
    """The property every objective must have: gradient ascent increases it."""
    tx = Textualizer(bundled, FTConfig(steps=30, restarts=1), progress=False)
    units = torch.tensor([5, 6, 7, 8])
    idx = torch.tensor([[1, 2, 3, 4]] * 4)
    target = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    x0 = bundled.embeddings[[100, 2000, 3000, 4000]].float()
    for obj in [objectives.unit(units), objectives.mean_of(idx), objectives.pattern(idx, target),
                objectives.unit(units) - 0.5 * objectives.mean_of(idx)]:
        trace = maximize(bundled, 2, "ffn", obj, x0, tx.radius, tx.config)
        assert (trace.value > trace.curve[0]).all(), obj
        assert torch.equal(trace.value, trace.curve.max(dim=0).values)


def test_same_seed_same_vectors_and_batch_independence(bundled):
    cfg = FTConfig(steps=40, restarts=2, seed=7)
    tx = Textualizer(bundled, cfg, progress=False)
    alone = tx.run("L2.ffn.100")[0]
    again = tx.run("L2.ffn.100")[0]
    assert (alone.vector == again.vector).all()
    batched = {r.neuron: r for r in tx.run(["L2.ffn.0-15", "L2.ffn.100", "L4.ffn.3"])}["L2.ffn.100"]
    assert batched.activation == pytest.approx(alone.activation, rel=1e-3)
    assert batched.nearest[0]["id"] == alone.nearest[0]["id"]
    other_seed = Textualizer(bundled, FTConfig(steps=40, restarts=2, seed=8), progress=False).run("L2.ffn.100")[0]
    assert not (other_seed.vector == alone.vector).all()


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "electra"])
def test_every_architecture_textualizes(tiny_models, arch):
    [r] = textualize("L2.ffn.3", model=str(tiny_models[arch]), steps=40, restarts=2, cache_dir=False)
    assert r.neuron == "L2.ffn.3" and r.activation >= r.best_tokens[0]["activation"] - 1e-6
    assert r.vector.shape == ((16,) if arch == "electra" else (32,))  # ELECTRA: embedding_size 16
    [o] = textualize("L0.out.1", model=str(tiny_models[arch]), steps=20, restarts=1, cache_dir=False)
    assert o.pre_activation == o.activation


def test_scan_init_starts_at_the_best_tokens(tiny_models):
    """init="scan": restart j starts at the neuron's j-th best scanned token. With a step too small to
    move, the FT vector is that token's embedding (projected onto the ball), so its nearest token is
    the best token and its activation equals the scan's (checked only where the token lies in the ball)."""
    tx = Textualizer(str(tiny_models["bert"]), FTConfig(steps=1, restarts=1, lr=1e-9, init="scan"),
                     cache_dir=False, progress=False)
    norms = tx.model.embeddings.norm(dim=1)
    checked = 0
    for r in tx.run("L1.ffn.0-15"):
        best = r.best_tokens[0]
        if norms[best["id"]] > tx.radius:
            continue
        checked += 1
        assert r.nearest[0]["id"] == best["id"] and r.nearest[0]["cosine"] == pytest.approx(1.0, abs=1e-5)
        assert r.activation == pytest.approx(best["activation"], rel=1e-4, abs=1e-5)
    assert checked >= 8
    with pytest.raises(NeurotextError, match="restarts must be at most 64"):
        Textualizer(tx.model, FTConfig(restarts=65, init="scan"), cache_dir=False)


@pytest.mark.parametrize("kw, message", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(restarts=-1), "restarts must be a positive integer"),
    (dict(top=0), "top must be a positive integer"),
    (dict(lr=0), "lr must be positive"),
    (dict(init="zeros"), "init must be one of"),
    (dict(bogus=1), "unknown setting"),
])
def test_bad_settings(kw, message):
    with pytest.raises(NeurotextError, match=message):
        textualize("L0.ffn.1", **kw)


def test_optimization_quality_64_neurons(bundled):
    """Default settings: FT reaches at least the best real token for >= 99% of 64 FFN neurons."""
    rng = random.Random(0)
    neurons = [Neuron(layer, "ffn", u) for layer in range(6) for u in rng.sample(range(1536), 11)][:64]
    results = Textualizer(bundled, progress=False).run(neurons)
    ok = [r.activation >= r.best_tokens[0]["activation"] for r in results]
    assert len(results) == 64 and sum(ok) / len(ok) >= 0.99
