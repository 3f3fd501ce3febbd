"""Stability of a textualization: every restart kept, agreement measures recomputed independently, known answers."""

import itertools

import pytest
import torch

from neurotext import FTConfig, Textualizer
from neurotext.analysis import reproducible
from neurotext.engine import stability


def _independent(result, embeddings: torch.Tensor, tol: float):
    """Stability from the returned per-restart vectors only: plain torch cosines against the embedding
    matrix, python sets."""
    det = result.restarts_detail
    best = max(d["activation"] for d in det)
    keep = [d for d in det if d["activation"] >= best - tol * abs(best)]
    vecs = torch.stack([torch.as_tensor(d["vector"], dtype=torch.float32) for d in keep])
    emb = embeddings.float()
    cos_all = torch.nn.functional.cosine_similarity(vecs[:, None, :], emb[None, :, :], dim=-1)  # (c, V)
    tops = [set(cos_all[i].argsort(descending=True)[:10].tolist()) for i in range(len(keep))]
    pairs = list(itertools.combinations(range(len(keep)), 2))
    cosine = sum(float(torch.nn.functional.cosine_similarity(vecs[i], vecs[j], dim=0)) for i, j in pairs) / len(pairs)
    jac = sum(len(tops[i] & tops[j]) / len(tops[i] | tops[j]) for i, j in pairs) / len(pairs)
    support = {}
    for t in tops:
        for tok in t:
            support[tok] = support.get(tok, 0) + 1
    cons = {tok for tok, c in support.items() if c >= max(2, len(keep) / 2)}
    acts = [d["activation"] for d in det]
    return {"cosine": cosine, "jaccard_at_10": jac, "consensus": cons, "restarts": len(keep),
            "activation_spread": min(acts) / max(acts)}


@pytest.fixture(scope="module")
def results(bundled):
    tx = Textualizer(bundled, FTConfig(steps=48, restarts=4, seed=3), progress=False)
    return tx, {r.neuron: r for r in tx.run(["L1.ffn.11", "L3.ffn.42", "L4.out.7"])}


def test_every_restart_is_kept_best_first(results):
    tx, res = results
    for r in res.values():
        det = r.restarts_detail
        assert sorted(d["restart"] for d in det) == list(range(4))
        assert [d["pre_activation"] for d in det] == sorted((d["pre_activation"] for d in det), reverse=True)
        # the headline result is the best restart
        assert det[0]["activation"] == pytest.approx(r.activation, rel=1e-5)
        assert (det[0]["vector"] == r.vector).all()
        assert [t["id"] for t in det[0]["nearest"]] == [t["id"] for t in r.nearest]


def test_reported_restart_activations_match_plain_forward(results, hf_bundled):
    """Every restart's reported activation equals a plain Hugging Face forward pass of its vector."""
    tx, res = results
    r = res["L3.ffn.42"]
    hf, tok = hf_bundled
    captured = {}
    h = hf.encoder.layer[3].intermediate.register_forward_hook(lambda m, i, o: captured.__setitem__("a", o))
    try:
        for d in r.restarts_detail:
            x = torch.as_tensor(d["vector"])[None, None, :]
            cls = hf.embeddings.word_embeddings.weight[tok.cls_token_id][None, None, :]
            sep = hf.embeddings.word_embeddings.weight[tok.sep_token_id][None, None, :]
            with torch.no_grad():
                hf(inputs_embeds=torch.cat([cls, x, sep], dim=1))
            assert float(captured["a"][0, 1, 42]) == pytest.approx(d["activation"], rel=1e-4, abs=1e-5)
    finally:
        h.remove()


def test_stability_recomputed_independently(results, bundled):
    tx, res = results
    for r in res.values():
        want = _independent(r, bundled.embeddings, tx.config.stability_tol)
        st = r.stability
        assert st["restarts"] == want["restarts"]
        assert st["activation_spread"] == pytest.approx(want["activation_spread"], rel=1e-6)
        if want["restarts"] >= 2:
            assert st["cosine"] == pytest.approx(want["cosine"], abs=1e-5)
            assert st["jaccard_at_10"] == pytest.approx(want["jaccard_at_10"], abs=1e-9)
            assert {c["id"] for c in st["consensus"]} == want["consensus"]
            supports = [c["support"] for c in st["consensus"]]
            assert supports == sorted(supports, reverse=True)


def test_same_seed_same_stability_alone_or_batched(bundled):
    cfg = FTConfig(steps=32, restarts=3, seed=5)
    tx = Textualizer(bundled, cfg, progress=False)
    alone = tx.run("L2.ffn.77")[0]
    again = tx.run("L2.ffn.77")[0]
    batched = {r.neuron: r for r in tx.run(["L2.ffn.70-80", "L5.ffn.1"])}["L2.ffn.77"]
    assert alone.stability == again.stability
    assert batched.stability["restarts"] == alone.stability["restarts"]
    assert batched.stability["cosine"] == pytest.approx(alone.stability["cosine"], abs=1e-3)
    assert [c["id"] for c in batched.stability["consensus"]] == [c["id"] for c in alone.stability["consensus"]]


def test_unique_optimum_scores_near_one(bundled):
    """Layer 0 of the bundled model: every restart of an FFN unit converges to the same point."""
    tx = Textualizer(bundled, FTConfig(steps=256, restarts=4), progress=False)
    for r in tx.run("L0.ffn.3,5,9"):
        assert r.stability["restarts"] >= 3
        assert r.stability["cosine"] > 0.97
        assert r.stability["jaccard_at_10"] > 0.6
        assert len(r.stability["consensus"]) >= 6


def test_random_vectors_score_at_the_baseline(bundled):
    """Random vectors in place of optima agree no more than the chance baseline of unrelated vectors."""
    g = torch.Generator().manual_seed(0)
    emb = bundled.embeddings.float()
    unit = emb / emb.norm(dim=1, keepdim=True)

    def top10(v):
        return (unit @ (v / v.norm())).topk(10).indices.tolist()

    vecs = torch.randn(64, emb.shape[1], generator=g)
    ids = [top10(v) for v in vecs]
    groups = [stability.measure(vecs[i:i + 4], ids[i:i + 4], [1.0] * 4, bundled.tokens) for i in range(0, 64, 4)]
    base = reproducible.group_baseline(vecs.numpy(), ids, [4] * 64, seed=1)
    mean_j = sum(s["jaccard_at_10"] for s in groups) / len(groups)
    mean_c = sum(s["cosine"] for s in groups) / len(groups)
    assert abs(mean_j - sum(base["jaccard_at_10"]) / len(base["jaccard_at_10"])) < 0.02
    assert abs(mean_c - sum(base["cosine"]) / len(base["cosine"])) < 0.03
    assert mean_j < 0.03 and abs(mean_c) < 0.05
    limit = reproducible.threshold(base["jaccard_at_10"])
    assert sum(reproducible.is_reproducible(s, limit) for s in groups) <= 2


def test_counting_rule():
    assert stability.counted([10.0, 9.6, 9.4, 2.0], tol=0.05) == [0, 1]
    assert stability.counted([-1.0, -1.04, -2.0], tol=0.05) == [0, 1]
    one = stability.measure(torch.randn(3, 8), [[1, 2], [3, 4], [5, 6]], [5.0, 1.0, 0.5], ["a"] * 10)
    assert one["restarts"] == 1 and one["cosine"] is None and one["jaccard_at_10"] is None
    assert one["consensus"] == [] and one["activation_spread"] == pytest.approx(0.1)
